"""The ``vpn-bot`` command: ``serve`` | ``sandbox`` | ``demo`` | ``doctor`` | ``audit export``.

Configuration and start-up problems (database, port, faults file, a refused Slack token) print
one clear message listing each problem and exit with status 2; no traceback reaches the terminal.
``serve`` and ``sandbox`` stop on SIGINT or SIGTERM through one signal path (:func:`_until_stopped`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bot import __version__
from bot.config import Settings, load_settings
from bot.errors import ConfigError, StartupError
from bot.logs import configure_logging, secret_values

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.app import BotApp

log = logging.getLogger("bot")

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C


FAULTS_FORMAT = """\
faults file (--faults): YAML or JSON, a list of faults (or {"faults": [...]}); each fault is a mapping:
  action          the API action it matches, e.g. DeleteVpnConnection (default: every action)
  params          parameters the request must carry, e.g. {VpnConnectionId: vco-123}
  after, times    let the first `after` matches pass (default 0), then fire `times` times (default: always)
  latency         seconds to wait before answering (default 0)
  and one way to answer (default: the real answer, after the latency):
  code            answer Alibaba's error JSON for this code, e.g. VpnGateway.Configuring
  message         the error message to send with `code`
  http_status     the HTTP status (default: the one Alibaba uses for `code`; alone: a bare status)
  drop            true: close the connection without an answer
  non_json        true: answer a body that is not JSON
  after_processing  true: carry the call out first, then spoil only the answer
  retry_after_ms  a Retry-After hint to send with the error
example:
  - {action: DeleteVpnConnection, code: VpnGateway.Configuring, times: 2}
  - {action: DescribeVpnGateway, latency: 3}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpn-bot",
        description="Delete Alibaba Cloud IPsec-VPN connections from Slack, with approval. "
        "Settings come from the environment and a .env file (see the README or .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"vpn-bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_sandbox(sub)
    sub.add_parser(
        "demo",
        help="run the whole flow locally: bot, VPC sandbox and Slack stand-in (no options)",
        description="Run a scripted conversation against the real bot on loopback and print the channel.",
    )
    sub.add_parser(
        "doctor",
        help="check settings, Slack, Alibaba Cloud and the database before going live (no options)",
        description="Check every setting and connection and print one line per check; exit 1 on a FAIL.",
    )
    _add_audit(sub)
    return parser


def _add_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="export the audit trail from VPNBOT_DATABASE_URL (`vpn-bot audit export`)",
        description="Write every audit record (every field, times in UTC ISO 8601) to stdout or a file, "
        "as JSON lines or CSV. CSV cells starting with = + - @ (or ') get a leading ' so no "
        "spreadsheet runs them as formulas; read back by dropping one leading '.",
    )
    audit.add_argument("action", choices=["export"], help="what to do: export (default: none, required)")
    audit.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only records at or after this ISO 8601 date or time, e.g. 2026-12-01 or "
        "2026-12-01T08:00+08:00; without an offset it is UTC (default: all)",
    )
    audit.add_argument(
        "--format",
        dest="fmt",
        choices=["jsonl", "csv"],
        default="jsonl",
        help="output format (default: jsonl)",
    )
    audit.add_argument(
        "--output", default=None, metavar="FILE", help="write to FILE instead of stdout (default: stdout)"
    )


def _audit_export(args: argparse.Namespace) -> int:
    """``vpn-bot audit export``: exit 0 written, 2 for bad options, settings or database."""
    from sqlalchemy.engine import make_url

    from bot.audit_export import export_audit, parse_since
    from bot.store import Store

    settings = _settings_or_exit()
    try:
        since = parse_since(args.since) if args.since is not None else None
    except ValueError:
        print(
            f"vpn-bot: --since {args.since!r} is not an ISO 8601 date or time (e.g. 2026-12-01)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        print(f"vpn-bot: no database at {url.database or '(memory)'} (VPNBOT_DATABASE_URL)", file=sys.stderr)
        return EXIT_CONFIG

    async def export(out: IO[str]) -> int:
        store = Store.open_existing(settings.database_url)
        try:
            return await export_audit(store, out, fmt=args.fmt, since=since)
        finally:
            await store.close()

    with contextlib.ExitStack() as files:
        out: IO[str] = sys.stdout
        if args.output is not None:
            try:
                out = files.enter_context(Path(args.output).open("w", encoding="utf-8", newline=""))
            except OSError as exc:
                print(
                    f"vpn-bot: cannot write {args.output}: {exc.strerror or type(exc).__name__}",
                    file=sys.stderr,
                )
                return EXIT_CONFIG
        try:
            count = asyncio.run(export(out))
        except Exception as exc:  # noqa: BLE001 - one line, no traceback: the database or its schema
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"vpn-bot: could not read the audit trail ({reason})", file=sys.stderr)
            return EXIT_CONFIG
    if args.output is not None:
        print(f"vpn-bot: {count} audit records written to {args.output}", file=sys.stderr)
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the bot (HTTP mode, or Socket Mode when SLACK_APP_TOKEN is set)",
        description="Run the bot until SIGINT or SIGTERM. Problems with settings, the database or "
        "the port are printed in one or two lines, exit status 2.",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="HTTP port for Slack, HTTP mode only (default: VPNBOT_PORT, which defaults to 3000)",
    )
    serve.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - Slack must reach it; /metrics listens on VPNBOT_METRICS_HOST
        help="address of the Slack port (default: 0.0.0.0); /metrics and the probes listen on "
        "VPNBOT_METRICS_HOST:VPNBOT_METRICS_PORT (default: 127.0.0.1:9464)",
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument(
        "--socket", action="store_true", help="use Socket Mode (default: on when SLACK_APP_TOKEN is set)"
    )
    mode.add_argument(
        "--http", action="store_true", help="use HTTP mode even when SLACK_APP_TOKEN is set (default: off)"
    )


def _add_sandbox(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = sub.add_parser(
        "sandbox",
        help="run the local VPC OpenAPI sandbox, and with --slack the Slack stand-in (no accounts needed)",
        description="Serve Alibaba Cloud's VPC OpenAPI (signature-checked) on loopback, and with --slack "
        "the Slack Web API stand-in, until Ctrl-C. Prints the `export` lines that point "
        "`vpn-bot serve` and `vpn-bot doctor` at them.",
        epilog=FAULTS_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=9000, help="VPC sandbox port (default: 9000)")
    sandbox.add_argument(
        "--faults", default=None, metavar="FILE", help="YAML or JSON file of faults to inject (default: none)"
    )
    sandbox.add_argument(
        "--update-seconds",
        type=float,
        default=5.0,
        help="how long a gateway stays 'updating' after a delete (default: 5.0)",
    )
    sandbox.add_argument(
        "--slack", action="store_true", help="also start the Slack Web API stand-in (default: off)"
    )
    sandbox.add_argument(
        "--slack-port", type=int, default=9001, help="Slack stand-in port, with --slack (default: 9001)"
    )
    sandbox.add_argument(
        "--accounts",
        action="store_true",
        help="also serve STS AssumeRole over TLS (local CA) for two demo accounts, prod and staging, "
        "each with its own connections (default: off)",
    )
    sandbox.add_argument(
        "--sts-port", type=int, default=9002, help="STS sandbox port, with --accounts (default: 9002)"
    )
    sandbox.add_argument(
        "--sts-lifetime-seconds",
        type=float,
        default=None,
        help="how long issued credentials live, with --accounts (default: the DurationSeconds asked for)",
    )


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
    from bot.app import require_serve_settings

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
            require_serve_settings(settings, socket_mode=socket_mode)
        except ConfigError as exc:
            # A setting already reported as invalid is not "required" on top of that.
            reported = {line.partition(":")[0] for line in problems}
            problems += [p for p in exc.problems if p.partition(":")[0] not in reported]
    if problems or settings is None:
        print(f"vpn-bot: {ConfigError(problems).message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return settings, socket_mode


class _OneLineRetries(logging.Filter):
    """Shorten the Socket Mode client's failures to one WARNING line each.

    slack_sdk logs every failed connection attempt with a full traceback, once per retry (10 s)
    for as long as Slack is unreachable; the exception's one-line text says all a reader needs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None:
            first_line = record.getMessage().splitlines()[0] if record.getMessage() else "failed"
            record.msg, record.args = "Socket Mode: %s", (first_line,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def _socket_mode_logger() -> logging.Logger:
    """The logger handed to the Socket Mode client, with tracebacks shortened to one line."""
    logger = logging.getLogger("bot.socket_mode")
    if not any(isinstance(f, _OneLineRetries) for f in logger.filters):
        logger.addFilter(_OneLineRetries())
    return logger


async def _connect_socket_mode(app: BotApp, token: str, stop: asyncio.Event) -> AsyncSocketModeHandler | None:
    """Connect over Socket Mode; a refused token is a ConfigError, and ``stop`` ends the retries.

    Returns None when ``stop`` was set before the connection was up.
    """
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.slack.codes import SLACK_FAILURES, lookup, translate

    # Bolt's handler opens URLs with the app's client, so with its base_url (VPNBOT_SLACK_API_URL).
    handler = AsyncSocketModeHandler(app.bolt, token, logger=_socket_mode_logger())
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
    except Exception as exc:  # noqa: BLE001 - the Socket Mode connect: network errors vary by transport; the SDK's loop retries
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


async def _until_stopped(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``run(stop)``, where SIGINT and SIGTERM set ``stop``: the one signal path of every command.

    The handlers are installed on the loop explicitly. Python's own KeyboardInterrupt is not enough:
    a process started in the background without job control inherits SIGINT *ignored*, and then
    Ctrl-C (or a test's SIGINT) never reaches it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def _run(run: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run a long-running command; settings and start-up problems print one message and exit 2."""
    try:
        asyncio.run(_until_stopped(run))
    except (ConfigError, StartupError) as exc:
        print(f"vpn-bot: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed (during start-up)
        return EXIT_INTERRUPTED
    return 0


async def _open_app(settings: Settings, *, socket_mode: bool, stop: asyncio.Event | None = None) -> BotApp:
    """Build the app; a database that cannot be opened is a StartupError saying how to fix it.

    A PostgreSQL server out of reach is waited for up to VPNBOT_DATABASE_WAIT_SECONDS (a pod often
    starts before its database), with one log line when the wait begins; a misconfiguration, or
    ``stop`` set meanwhile, ends it at once.
    """
    from sqlalchemy.exc import DBAPIError

    from bot.app import create_app
    from bot.errors import StoreUnavailable
    from bot.startup import database_error, database_unreachable

    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + settings.database_wait_seconds
    pause, told = 0.5, False
    while True:
        try:
            return await create_app(settings, socket_mode=socket_mode)
        except (StoreUnavailable, DBAPIError, OSError, TimeoutError) as exc:
            error = database_error(settings.database_url, exc)
            if error is None:
                raise
            left = give_up_at - loop.time()
            if not database_unreachable(settings.database_url, exc) or left <= 0 or (stop and stop.is_set()):
                raise error from None
            if not told:  # one line when the wait begins, not one per retry
                told = True
                log.warning(
                    "%s; waiting up to %d s for it (VPNBOT_DATABASE_WAIT_SECONDS)",
                    error.problem,
                    settings.database_wait_seconds,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_stopped(stop), timeout=min(pause, left))
            pause = min(pause * 2, 5.0)


async def _stopped(stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.Future()  # never: only the timeout ends the pause
    else:
        await stop.wait()


# The operations listener (/metrics and probes) needs few connections: a scraper and the kubelet.
_OPS_MAX_CONNECTIONS = 64


async def _serve(settings: Settings, stop: asyncio.Event, *, host: str, port: int, socket_mode: bool) -> None:
    from aiohttp import web

    from bot.app import check_bot_token
    from bot.logs import LogThrottle
    from bot.serving import Listener, fit_connection_caps, listen, quiet_accept_errors
    from bot.startup import listen_error

    await check_bot_token(settings)
    app = await _open_app(settings, socket_mode=socket_mode, stop=stop)
    throttle = LogThrottle(logging.getLogger("bot.serving"))
    quiet_accept_errors(asyncio.get_running_loop(), throttle)
    slack_cap, ops_cap = fit_connection_caps(
        0 if socket_mode else settings.max_connections, min(settings.max_connections, _OPS_MAX_CONNECTIONS)
    )
    listeners: list[Listener] = []

    async def serve_on(
        web_app: web.Application, where: str, at: int, *, name: str, cap: int, setting: str, host_setting: str
    ) -> None:
        try:
            listeners.append(
                await listen(
                    web_app,
                    where,
                    at,
                    name=name,
                    max_connections=cap,
                    header_timeout_s=settings.header_timeout_seconds,
                    throttle=throttle,
                )
            )
        except OSError as exc:
            raise listen_error(where, at, exc, setting=setting, host_setting=host_setting) from None

    socket_handler = None
    try:
        if settings.anyone_may_approve:
            log.warning("VPNBOT_APPROVERS=*: anyone who can see a confirmation may approve the deletion")
        if not socket_mode:  # Socket Mode receives Slack over its WebSocket: no Slack port at all
            await serve_on(
                app.web,
                host,
                port,
                name="slack",
                cap=slack_cap,
                setting="--port or VPNBOT_PORT",
                host_setting="--host",
            )
        ops_host, ops_port = settings.metrics_host, settings.metrics_port
        await serve_on(
            app.ops,
            ops_host,
            ops_port,
            name="ops",
            cap=ops_cap,
            setting="VPNBOT_METRICS_PORT",
            host_setting="VPNBOT_METRICS_HOST",
        )
        await app.start()
        ops = f"/metrics, /livez and /readyz on http://{ops_host}:{ops_port}"
        instance = {"instance": app.workflow.instance_id}
        if socket_mode:
            assert settings.slack_app_token is not None  # noqa: S101 - create_app checked it
            log.info("vpn-bot serving %s; connecting to Slack over Socket Mode", ops, extra=instance)
            token = settings.slack_app_token.get_secret_value()
            socket_handler = await _connect_socket_mode(app, token, stop)
            if socket_handler is not None:
                log.info("vpn-bot serving in Socket Mode; %s", ops, extra=instance)
        else:
            log.info(
                "vpn-bot serving Slack on http://%s:%d/slack/events; %s", host, port, ops, extra=instance
            )
        await stop.wait()
        log.info("shutting down: finishing requests, releasing operation leases")
    finally:
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
        for listener in reversed(listeners):
            await listener.close()
        await app.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_CONFIG

    if args.command == "sandbox":
        from bot.sandbox.local import serve_local_tools

        configure_logging(level="INFO", fmt="text")
        return _run(
            lambda stop: serve_local_tools(
                stop,
                host=args.host,
                port=args.port,
                faults_file=args.faults,
                update_seconds=args.update_seconds,
                slack_port=args.slack_port if args.slack else None,
                sts_port=args.sts_port if args.accounts else None,
                sts_lifetime_s=args.sts_lifetime_seconds,
            )
        )

    if args.command == "demo":
        from bot.demo import run_demo

        # Expected refusals in the script (FinancialLocked) log warnings; keep the transcript readable.
        configure_logging(level="ERROR", fmt="text")
        status: int = asyncio.run(run_demo())
        return status

    if args.command == "audit":
        configure_logging(level="WARNING", fmt="text")
        return _audit_export(args)

    if args.command == "doctor":
        settings = _settings_or_exit()
        configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=secret_values(settings))
        from bot.doctor import run_doctor

        doctor_status: int = asyncio.run(run_doctor(settings))
        return doctor_status

    settings, socket_mode = _serve_settings_or_exit(args)
    configure_logging(level=settings.log_level, fmt=settings.log_format, secrets=secret_values(settings))
    port = args.port or settings.port
    return _run(lambda stop: _serve(settings, stop, host=args.host, port=port, socket_mode=socket_mode))


if __name__ == "__main__":
    raise SystemExit(main())
