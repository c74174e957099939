"""Helpers for the end-to-end tests: starting the local stack, reading the Slack stand-in, and running
``vpn-bot serve`` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from aiohttp import web

# Re-exported for the e2e modules.
from pgtools import fresh_postgres_database as fresh_postgres_database
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.models.blocks import Block

from bot.app import BotApp, create_app
from bot.ports import Clock
from bot.sandbox.local import (
    LOCAL_BOT_TOKEN,
    LOCAL_SIGNING_SECRET,
    LocalStack,
    local_settings,
    start_local_stack,
)
from bot.sandbox.slack import SlackStandin, demo_workspace, find_button, start_slack_standin
from bot.sandbox.slack_api import DEFAULT_APP_TOKEN, Message, StandinState
from bot.sandbox.sts import SandboxAccount
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SandboxState
from bot.slack.block_ids import ActionId

CHANNEL = "C0VPNOPS"
ALICE = "U0ALICE"
BOB = "U0BOB"
# The audit channel the tests set (VPNBOT_AUDIT_CHANNEL).
AUDIT = "C0AUDIT"

# Variables that would let the developer's own configuration leak into a child bot.
_ISOLATED_PREFIXES = ("SLACK_", "VPNBOT_", "ALIBABA_CLOUD_")
_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy"})


# What every bot a test starts runs with, on top of the local stand-ins' settings: the outbox tries
# Slack again a tenth of a second after a transient failure (doubling), not two seconds, so that
# outage tests do not sit through the production back-off. Tests of the back-off set their own.
TEST_SETTINGS: dict[str, Any] = {"slack_retry_base_seconds": 0.1}
TEST_ENV = {"VPNBOT_SLACK_RETRY_BASE_SECONDS": "0.1"}


# --- starting the local stack --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def local_stack(
    database_url: str,
    *,
    update_seconds: float = 0.5,
    settings: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    replicas: int = 1,
    accounts: Mapping[str, SandboxAccount] | None = None,
    sts_lifetime_s: float | None = None,
) -> AsyncIterator[LocalStack]:
    """The VPC sandbox, the Slack stand-in and ``replicas`` bots on ``database_url`` for the block.

    :func:`bot.sandbox.local.start_local_stack` with :data:`TEST_SETTINGS` under ``settings`` (by
    Settings field name); all of it is stopped when the block ends, however it ends.
    """
    stack = await start_local_stack(
        database_url=database_url,
        update_seconds=update_seconds,
        settings={**TEST_SETTINGS, **(settings or {})},
        clock=clock,
        replicas=replicas,
        accounts=accounts,
        sts_lifetime_s=sts_lifetime_s,
    )
    try:
        yield stack
    finally:
        await stack.aclose()


@contextlib.asynccontextmanager
async def sandbox_and_slack(
    *, update_seconds: float, app_token: str | None = None
) -> AsyncIterator[tuple[RunningSandbox, SlackStandin]]:
    """The VPC sandbox and the Slack stand-in (with Socket Mode if ``app_token``), no bot: for tests
    that start the bot themselves (as a process, or in Socket Mode)."""
    async with contextlib.AsyncExitStack() as cleanup:
        vpc = await start_vpc_sandbox(state=SandboxState(update_seconds=update_seconds))
        cleanup.push_async_callback(vpc.close)
        slack = await start_slack_standin(
            bot_token=LOCAL_BOT_TOKEN, app_token=app_token or DEFAULT_APP_TOKEN, workspace=demo_workspace()
        )
        cleanup.push_async_callback(slack.close)
        yield vpc, slack


# --- reading what people see in Slack ------------------------------------------------------------


def all_text(message: Message) -> str:
    """Everything a person reads in a message: its text and every text in its blocks."""
    parts = [message.text]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return "\n".join(parts)


def valid_block_kit(message: Message) -> None:
    """Valid Block Kit by slack_sdk's own models, with a fallback text (not blank)."""
    assert message.text.strip()
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()


def audit_lines(stack: LocalStack, op_id: str) -> list[Message]:
    """The audit channel's lines about ``op_id``, oldest first."""
    return [m for m in stack.slack.state.messages(AUDIT) if op_id in all_text(m)]


async def wait_audit_lines(stack: LocalStack, op_id: str, count: int) -> list[Message]:
    """At least ``count`` of :func:`audit_lines` for ``op_id`` (all of them, once there)."""

    def arrived() -> list[Message] | None:
        found = audit_lines(stack, op_id)
        return found if len(found) >= count else None

    return await stack.slack.state.wait_for(arrived, timeout=15, what=f"{count} audit lines for {op_id}")


def has_buttons(message: Message) -> bool:
    """Whether the message still asks for a decision: an Approve (Delete/Recreate) or Cancel button.

    A deleted card's Recreate… button (an offer, not a decision) does not count: see offers_recreate.
    """
    decision = {ActionId.APPROVE.value, ActionId.CANCEL.value}
    return any(
        element.get("action_id") in decision
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    )


def offers_recreate(message: Message) -> bool:
    """Whether a deleted card still carries its Recreate… button."""
    return any(
        element.get("action_id") == ActionId.RECREATE_OPEN.value
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    )


def op_id_of(message: Message) -> str:
    """The operation id carried by the Delete button of a confirmation."""
    found = find_button(message.blocks, ActionId.APPROVE)
    assert found is not None, "no Delete button on the confirmation"
    return str(found[1]["value"])


def thread_text(state: StandinState, ts: str, channel: str = CHANNEL) -> str:
    return "\n".join(all_text(m) for m in state.thread(channel, ts))


async def wait_confirmation(state: StandinState, vco_id: str, *, within: float = 10) -> Message:
    """Wait for the confirmation (with buttons) of ``vco_id`` in the channel."""

    def found() -> Message | None:
        for message in state.messages(CHANNEL):
            if vco_id in all_text(message) and has_buttons(message):
                return message
        return None

    return await state.wait_for(found, timeout=within, what=f"confirmation for {vco_id}")


async def wait_parent(state: StandinState, ts: str, needle: str, *, within: float = 15) -> Message:
    """Wait until the confirmation message ``ts`` reads ``needle``."""

    def done() -> Message | None:
        message = state.message(CHANNEL, ts)
        return message if message is not None and needle in all_text(message) else None

    return await state.wait_for(done, timeout=within, what=f"parent saying {needle!r}")


async def wait_thread(state: StandinState, ts: str, needle: str, *, within: float = 15) -> str:
    """Wait until the thread under ``ts`` contains ``needle``; return the whole thread text."""

    def done() -> str | None:
        text = thread_text(state, ts)
        return text if needle in text else None

    return await state.wait_for(done, timeout=within, what=f"thread saying {needle!r}")


def parent_updates(state: StandinState, ts: str) -> list[str]:
    """The fallback texts of every successful chat.update of the message ``ts``, in order."""
    return [
        str(c.params.get("text", "")) for c in state.calls("chat.update") if c.ok and c.params.get("ts") == ts
    ]


# --- the operations listener of an in-process bot -------------------------------------------------


@contextlib.asynccontextmanager
async def ops_listener(app: BotApp) -> AsyncIterator[str]:
    """Serve ``app.ops`` (/metrics and the probes) on a loopback port of its own; yield its URL."""
    runner = web.AppRunner(app.ops, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# --- a bot in its own process --------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any bot, Slack, Alibaba or proxy setting, plus ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_ISOLATED_PREFIXES) and key.lower() not in _PROXY_VARS
    }
    env["HOME"] = str(home)  # no ~/.aliyun profile
    env.update(settings)
    return env


async def run_to_exit(
    command: list[str], *, env: Mapping[str, str], cwd: Path, within: float = 60
) -> tuple[int, str, str]:
    """Run a command with no input until it exits; return (status, stdout, stderr). Killed on timeout."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=within)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def bot_env(
    home: Path, *, database_url: str, vpc: RunningSandbox, slack: SlackStandin, **overrides: str
) -> dict[str, str]:
    """The environment of a ``vpn-bot serve`` pointed at the in-test sandbox and Slack stand-in."""
    settings = {
        "SLACK_BOT_TOKEN": LOCAL_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": LOCAL_SIGNING_SECRET,
        "VPNBOT_SLACK_API_URL": slack.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
        "VPNBOT_VPC_ENDPOINT": vpc.url,
        "VPNBOT_DATABASE_URL": database_url,
        "VPNBOT_POLL_INTERVAL_SECONDS": "0.2",
        "VPNBOT_BUSY_RETRY_BASE_SECONDS": "0.2",
        "VPNBOT_LEASE_SECONDS": "2",
        "VPNBOT_LOG_FORMAT": "json",
        "VPNBOT_APPROVERS": "*",
        **TEST_ENV,
    }
    return child_env(home, **{**settings, **overrides})


class BotProcess:
    """``python -m bot serve --http`` in a child process; stderr goes to ``log_path``."""

    def __init__(
        self, *, env: Mapping[str, str], cwd: Path, log_path: Path, wrap: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # /metrics and the probes: a port of its own (VPNBOT_METRICS_PORT), one per process.
        env = {"VPNBOT_METRICS_PORT": str(free_port()), **env}
        self.metrics_port = int(env["VPNBOT_METRICS_PORT"])
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*(wrap or []), *self.command(port=self.port)],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @staticmethod
    def command(*, port: int) -> list[str]:
        """The command line of a bot serving HTTP on loopback ``port``."""
        return [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port)]

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    def log(self) -> str:
        """What the process wrote so far (for assertions and failure messages)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    async def wait_healthy(self, *, within: float = 20.0) -> dict[str, Any]:
        """Wait until the bot serves: ``GET /livez`` answers 200 and it logged that it serves.

        Returns ``{"instance": …}``, the instance id from the JSON log (the probes do not tell it;
        None with VPNBOT_LOG_FORMAT=text).
        """
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as http:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"the bot exited with {self.proc.returncode} before serving:\n{self.log()}")
                try:
                    reply = await http.get(f"{self.metrics_url}/livez")
                    if reply.status_code == 200 and "vpn-bot serving" in self.log():
                        serving = [r for r in self.records() if "instance" in r]
                        return {"instance": serving[0]["instance"] if serving else None}
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the bot did not become healthy within {within}s:\n{self.log()}")
                await asyncio.sleep(0.05)

    async def wait_exit(self, *, within: float) -> int:
        """Wait for the process to end and return its status; fail if it takes longer than ``within``."""
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the bot did not exit within {within}s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup at all."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: what an orchestrator sends before stopping a container."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Make sure the process is gone and its log is closed (call in ``finally``)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            self._log.close()


@dataclass
class SocketWorld:
    """The bot in Socket Mode, connected to the stand-in, with the VPC sandbox behind it."""

    vpc: RunningSandbox
    slack: SlackStandin
    app: BotApp


@contextlib.asynccontextmanager
async def socket_mode_bot(
    database_url: str, monkeypatch: pytest.MonkeyPatch, *, app_token: str, **settings: Any
) -> AsyncIterator[SocketWorld]:
    """Start the sandbox, the stand-in and the bot in Socket Mode; tear all of it down after."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)  # slack_sdk's socket client reads them itself
    async with contextlib.AsyncExitStack() as cleanup:
        vpc, slack = await cleanup.enter_async_context(
            sandbox_and_slack(update_seconds=0.3, app_token=app_token)
        )
        bot_settings = local_settings(
            database_url=database_url,
            vpc_url=vpc.url,
            slack_url=slack.url,
            slack_app_token=app_token,
            slack_signing_secret=None,
            **{**TEST_SETTINGS, **settings},
        )
        app = await create_app(bot_settings, socket_mode=True)
        cleanup.push_async_callback(app.aclose)
        await app.start()
        handler = AsyncSocketModeHandler(app.bolt, app_token)
        cleanup.push_async_callback(handler.close_async)
        await handler.connect_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
        await slack.state.socket_mode.wait_connected()
        yield SocketWorld(vpc=vpc, slack=slack, app=app)


class LogLines(logging.Handler):
    """Every record, formatted with its extras, at DEBUG, with no redaction (to look for secrets)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.lines.append(f"{record.getMessage()} {record.__dict__!r} {exc}")


@contextlib.contextmanager
def all_logs() -> Iterator[LogLines]:
    """Capture every log line of the process at DEBUG inside the block."""
    root = logging.getLogger()
    handler, level = LogLines(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def deny(stack: Any, user: str, ts: str, reason: str | None = None, *, channel: str = CHANNEL) -> Any:
    """Click Cancel as ``user`` and submit the reason modal it opens (``reason`` None: left empty)."""
    state: StandinState = stack.slack.state
    before = set(state.views)
    reply = await stack.agent.click(user, channel, ts, ActionId.CANCEL)
    assert reply.status == 200, reply.body

    def opened() -> str | None:
        return next(
            (
                v
                for v, view in state.views.items()
                if v not in before and view.get("callback_id") == "vpn-cancel"
            ),
            None,
        )

    view_id = await state.wait_for(opened, timeout=5, what=f"the Cancel modal for {user}")
    values: dict[str, dict[str, Any]] = {}
    if reason is not None:
        values = {
            "vpn-cancel-reason-block": {"vpn-cancel-reason": {"type": "plain_text_input", "value": reason}}
        }
    return await stack.agent.submit(user, view_id, values)


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Give back the root logger's handlers and every logger's level after a test that set up logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in list(logging.Logger.manager.loggerDict)}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
