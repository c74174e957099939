"""The ``vpn-bot`` command: ``serve`` | ``sandbox`` | ``demo`` | ``doctor``.

Configuration problems print one clear message listing each problem and exit with status 2;
no traceback reaches the terminal for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot import __version__
from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.logs import configure_logging, secret_values

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.app import BotApp

log = logging.getLogger("bot")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpn-bot",
        description="Delete Alibaba Cloud IPsec-VPN connections from Slack, with approval.",
    )
    parser.add_argument("--version", action="version", version=f"vpn-bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the bot (HTTP mode, or Socket Mode with SLACK_APP_TOKEN)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default VPNBOT_PORT or 3000)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104 - a server
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument(
        "--socket", action="store_true", help="use Socket Mode (default when SLACK_APP_TOKEN is set)"
    )
    mode.add_argument("--http", action="store_true", help="use HTTP mode even when SLACK_APP_TOKEN is set")

    sandbox = sub.add_parser("sandbox", help="run the local VPC OpenAPI sandbox (no Alibaba account needed)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=9000)
    sandbox.add_argument(
        "--faults", default=None, metavar="FILE", help="JSON or YAML file of faults to inject"
    )
    sandbox.add_argument(
        "--update-seconds", type=float, default=5.0, help="how long a gateway stays 'updating' after a delete"
    )

    sub.add_parser("demo", help="run the whole flow locally: bot, VPC sandbox and Slack stand-in")
    sub.add_parser("doctor", help="check settings, Slack, Alibaba Cloud and the database before going live")
    return parser


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"vpn-bot: {exc.message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _defaults_for(env_names: Sequence[str]) -> dict[str, Any]:
    """Default values for the named settings, keyed by env name so they override the bad values."""
    by_env = {str(info.validation_alias): info for info in Settings.model_fields.values()}
    return {name: by_env[name].get_default(call_default_factory=True) for name in env_names if name in by_env}


def _serve_settings_or_exit(args: argparse.Namespace) -> tuple[Settings, bool]:
    """Settings and mode for ``serve``; exit 2 listing every problem, the Slack ones included."""
    from bot.app import require_slack_settings

    problems: list[str] = []
    try:
        settings = load_settings()
    except ConfigError as exc:
        problems += exc.problems
        # Check the Slack settings too, with the invalid values set aside, so one run lists everything.
        try:
            settings = load_settings(**_defaults_for(exc.fields))
        except ConfigError:
            settings = None
    socket_mode = False
    if settings is not None:
        socket_mode = bool(args.socket or (settings.slack_app_token is not None and not args.http))
        try:
            require_slack_settings(settings, socket_mode=socket_mode)
        except ConfigError as exc:
            problems += exc.problems
    if problems or settings is None:
        print(f"vpn-bot: {ConfigError(problems).message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return settings, socket_mode


async def _connect_socket_mode(app: BotApp, token: str, stop: asyncio.Event) -> AsyncSocketModeHandler | None:
    """Connect over Socket Mode; a refused token is a ConfigError, and ``stop`` ends the retries.

    Returns None when ``stop`` was set before the connection was up.
    """
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.slack.codes import SLACK_FAILURES, lookup, translate

    # Bolt's handler opens URLs with the app's client, so with its base_url (VPNBOT_SLACK_API_URL).
    handler = AsyncSocketModeHandler(app.bolt, token)
    try:
        # The SDK retries every failure to connect forever, a wrong token included; ask once ourselves.
        opened = await app.slack.apps_connections_open(app_token=token)
        handler.client.wss_uri = str(opened["url"])  # the SDK connects to this URL first
    except SLACK_FAILURES as exc:
        error = translate(exc)
        if lookup(error.error).token_refused:
            await handler.close_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
            raise ConfigError(
                [
                    f"SLACK_APP_TOKEN: Slack refused it ({error.error}); use an app-level token (xapp-…) "
                    "with the connections:write scope (Basic Information → App-Level Tokens)"
                ]
            ) from None
        log.warning("Socket Mode: apps.connections.open failed (%s); retrying", error.error)
    except Exception as exc:  # network errors vary by transport; the SDK's own loop retries them
        log.warning("Socket Mode: apps.connections.open failed (%s); retrying", type(exc).__name__)
    connecting = asyncio.ensure_future(handler.connect_async())  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # Race SIGTERM: while Slack is unreachable the SDK's connect() loops and never returns.
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
    if connecting.cancelled() or connecting.exception() is not None:
        await handler.close_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
        if not connecting.cancelled():
            connecting.result()  # re-raise the failure
        return None
    return handler


async def _serve(settings: Settings, *, host: str, port: int, socket_mode: bool) -> None:
    from aiohttp import web

    from bot.app import create_app

    app = await create_app(settings, socket_mode=socket_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app.web, handle_signals=False)
    socket_handler = None
    if socket_mode:  # the HTTP listener then serves only /healthz and /metrics
        port = settings.metrics_port or port
    try:
        await app.start()
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        if socket_mode:
            assert settings.slack_app_token is not None  # noqa: S101 - create_app checked it
            token = settings.slack_app_token.get_secret_value()
            socket_handler = await _connect_socket_mode(app, token, stop)
            if socket_handler is not None:
                log.info("vpn-bot serving in Socket Mode; /healthz and /metrics on http://%s:%d", host, port)
        else:
            log.info("vpn-bot serving Slack on http://%s:%d/slack/events", host, port)
        await stop.wait()
        log.info("shutting down: finishing requests, releasing operation leases")
    finally:
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
        await runner.cleanup()
        await app.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_CONFIG

    if args.command == "sandbox":
        from bot.sandbox.vpc import serve_forever

        configure_logging(level="INFO", fmt="text")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve_forever(
                    args.host, args.port, faults_file=args.faults, update_seconds=args.update_seconds
                )
            )
        return 0

    if args.command == "demo":
        from bot.demo import run_demo

        # Expected refusals in the script (FinancialLocked) log warnings; keep the transcript readable.
        configure_logging(level="ERROR", fmt="text")
        status: int = asyncio.run(run_demo())
        return status

    if args.command == "doctor":
        settings = _settings_or_exit()
        configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=secret_values(settings))
        from bot.doctor import run_doctor

        doctor_status: int = asyncio.run(run_doctor(settings))
        return doctor_status

    settings, socket_mode = _serve_settings_or_exit(args)
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=secret_values(settings))
    try:
        asyncio.run(
            _serve(settings, host=args.host, port=args.port or settings.port, socket_mode=socket_mode)
        )
    except ConfigError as exc:
        print(f"vpn-bot: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
