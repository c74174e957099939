"""Start-up failures as a new user meets them: ``vpn-bot serve`` and ``vpn-bot sandbox`` in real
processes print the problem and its fix in a line or two and exit 2, with no traceback.

Slack's answers to ``auth.test`` come from the local Slack stand-in; the database failures are real
(a closed port, a missing database, a missing directory, a read-only file).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netproxy import running_proxy
from sqlalchemy.engine import make_url

from bot.sandbox.local import LOCAL_BOT_TOKEN
from bot.sandbox.slack import SlackStandin
from bot.sandbox.vpc import RunningSandbox

from .support import (
    BotProcess,
    bot_env,
    child_env,
    free_port,
    fresh_postgres_database,
    run_to_exit,
    sandbox_and_slack,
)

pytestmark = pytest.mark.process


@dataclass
class World:
    vpc: RunningSandbox
    slack: SlackStandin
    home: Path

    def env(self, **overrides: str) -> dict[str, str]:
        url = f"sqlite:///{self.home / 'bot.db'}"
        return bot_env(self.home, database_url=url, vpc=self.vpc, slack=self.slack, **overrides)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with sandbox_and_slack(update_seconds=0.2) as (vpc, slack):
        yield World(vpc=vpc, slack=slack, home=tmp_path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other process is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class SocketBotProcess(BotProcess):
    """``python -m bot serve --socket``."""

    @staticmethod
    def command(*, port: int) -> list[str]:
        return [sys.executable, "-m", "bot", "serve", "--socket", "--host", "127.0.0.1", "--port", str(port)]


def records(log: str) -> list[dict[str, object]]:
    """The JSON log records of a bot process's output."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


async def serve_fails(env: dict[str, str], cwd: Path, *, port: int | None = None) -> str:
    """Run ``vpn-bot serve``; check it exits 2 with a short message and no traceback; return stderr."""
    status, _, err = await run_to_exit(
        BotProcess.command(port=port or free_port()), env=env, cwd=cwd, within=30
    )
    assert status == 2, err
    assert "Traceback" not in err
    assert "Unclosed" not in err  # nothing opened before the failure is left open (aiohttp says so)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    assert lines[0].startswith("vpn-bot: "), err
    assert len(lines) <= 3, err  # the problem and its fix, not a stack
    return err


async def sandbox_fails(cwd: Path, *args: str) -> str:
    command = [sys.executable, "-m", "bot", "sandbox", *args]
    status, _, err = await run_to_exit(command, env=child_env(cwd), cwd=cwd, within=30)
    assert status == 2, err
    assert "Traceback" not in err
    assert err.startswith("vpn-bot: "), err
    assert len(err.strip().splitlines()) == 2, err
    return err


# --- the database ---------------------------------------------------------------------------------


async def test_postgres_server_down(world: World) -> None:
    closed = free_port()
    err = await serve_fails(
        world.env(
            VPNBOT_DATABASE_URL=f"postgresql://vpnbot:pw-not-shown@127.0.0.1:{closed}/vpnbot",
            VPNBOT_DATABASE_WAIT_SECONDS="0",
        ),
        world.home,
    )
    assert f"cannot reach PostgreSQL on 127.0.0.1:{closed} (connection refused)" in err
    assert "start the database server" in err
    assert "pw-not-shown" not in err


async def test_postgres_server_down_is_waited_for_then_given_up_on(world: World) -> None:
    """VPNBOT_DATABASE_WAIT_SECONDS: one line saying it waits, then the same exit 2 as without a wait."""
    closed = free_port()
    url = f"postgresql://vpnbot:pw-not-shown@127.0.0.1:{closed}/vpnbot"
    err = await serve_fails(world.env(VPNBOT_DATABASE_URL=url, VPNBOT_DATABASE_WAIT_SECONDS="2"), world.home)
    assert f"cannot reach PostgreSQL on 127.0.0.1:{closed} (connection refused)" in err
    waits = [r for r in records(err) if "waiting up to 2 s" in str(r["message"])]
    assert len(waits) == 1, err
    assert "pw-not-shown" not in err


@pytest.mark.postgres
async def test_a_database_that_comes_up_during_the_wait_is_used(world: World) -> None:
    """The pod starts before its database: serve waits, then starts without a restart."""
    async with fresh_postgres_database() as real:
        target = make_url(real)
        async with running_proxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
            proxy.cut()
            env = world.env(VPNBOT_DATABASE_URL=proxy.url_for(real), VPNBOT_DATABASE_WAIT_SECONDS="30")
            bot = BotProcess(env=env, cwd=world.home, log_path=world.home / "wait.log")
            try:
                await wait_for_log(bot, "waiting up to 30 s")
                proxy.restore()
                await bot.wait_healthy(within=20)
                assert bot.log().count("waiting up to 30 s") == 1
                bot.terminate()
                assert await bot.wait_exit(within=20) == 0
            finally:
                bot.close()


async def wait_for_log(bot: BotProcess, needle: str, *, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while needle not in bot.log():
        if bot.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {needle!r} in the log:\n{bot.log()}")
        await asyncio.sleep(0.05)


@pytest.mark.postgres
async def test_postgres_database_missing(world: World) -> None:
    """A missing database is a misconfiguration: no wait, whatever VPNBOT_DATABASE_WAIT_SECONDS says."""
    async with fresh_postgres_database() as existing:
        missing = f"vpnbot_missing_{uuid.uuid4().hex[:8]}"
        url = f"{existing.rpartition('/')[0]}/{missing}"
        started = time.monotonic()
        err = await serve_fails(
            world.env(VPNBOT_DATABASE_URL=url, VPNBOT_DATABASE_WAIT_SECONDS="600"), world.home
        )
        assert time.monotonic() - started < 30
    assert f"PostgreSQL database '{missing}' does not exist" in err
    assert f"createdb -h 127.0.0.1 {missing}" in err


async def test_sqlite_directory_missing(world: World) -> None:
    path = world.home / "no" / "such" / "dir" / "bot.db"
    err = await serve_fails(world.env(VPNBOT_DATABASE_URL=f"sqlite:///{path}"), world.home)
    assert f"the directory of the SQLite database {path} does not exist" in err
    assert f"mkdir -p {path.parent}" in err


async def test_sqlite_file_not_writable(world: World) -> None:
    """A database file the bot may only read. Opened read-only through SQLite's URI form, because
    file permissions do not stop root (tests may run as root in containers); SQLite reports both
    the same way (SQLITE_READONLY)."""
    path = world.home / "readonly.db"
    sqlite3.connect(path).close()  # an existing, empty database
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    err = await serve_fails(world.env(VPNBOT_DATABASE_URL=url), world.home)
    assert f"the SQLite database {path} is not writable" in err
    assert "write access" in err


# --- the port -------------------------------------------------------------------------------------


async def test_serve_port_already_in_use(world: World, busy_port: int) -> None:
    err = await serve_fails(world.env(), world.home, port=busy_port)
    assert f"port {busy_port} is already in use" in err
    assert "--port or VPNBOT_PORT" in err


async def test_sandbox_port_already_in_use(tmp_path: Path, busy_port: int) -> None:
    err = await sandbox_fails(tmp_path, "--port", str(busy_port))
    assert f"port {busy_port} is already in use" in err


async def test_sandbox_slack_port_already_in_use(tmp_path: Path, busy_port: int) -> None:
    err = await sandbox_fails(tmp_path, "--port", str(free_port()), "--slack", "--slack-port", str(busy_port))
    assert f"port {busy_port} is already in use" in err
    assert "--slack-port" in err


# --- the faults file ------------------------------------------------------------------------------


async def test_sandbox_faults_file_missing(tmp_path: Path) -> None:
    err = await sandbox_fails(tmp_path, "--port", str(free_port()), "--faults", "nope.yml")
    assert "cannot read the faults file nope.yml (No such file or directory)" in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("- {action: DeleteVpnConnection\n", "is not YAML or JSON, line 2"),
        ("- {acton: DeleteVpnConnection}\n", "unknown fault field(s): acton"),
        ("- {action: DescribeVpnGateway, latency: soon}\n", "a value of the wrong type"),
        ("just words\n", "faults must be a mapping or a list of mappings"),
        ("[]\n", "holds no faults"),
    ],
)
async def test_sandbox_faults_file_malformed(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "faults.yml").write_text(content)
    err = await sandbox_fails(tmp_path, "--port", str(free_port()), "--faults", "faults.yml")
    assert needle in err
    assert "vpn-bot sandbox --help" in err


# --- the Slack token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        ("xoxb-your-bot-token", "'xoxb-your-bot-token' is the .env.example placeholder"),
        ("xapp-1-A0APP-1-0123456789abcdef", "'xapp-…' (masked) is an app-level token"),
        ("not-a-token-0123456789", "the value (masked) is not a bot token"),
    ],
)
async def test_bot_token_of_the_wrong_kind(world: World, token: str, needle: str) -> None:
    err = await serve_fails(world.env(SLACK_BOT_TOKEN=token), world.home)
    assert f"SLACK_BOT_TOKEN: {needle}" in err
    assert "xoxb-…" in err  # what to set instead
    assert token not in err or token == "xoxb-your-bot-token"
    assert world.slack.state.calls("auth.test") == []  # refused before asking Slack


@pytest.mark.parametrize("error", ["invalid_auth", "not_authed", "token_revoked", "account_inactive"])
async def test_bot_token_refused_by_auth_test(world: World, error: str) -> None:
    world.slack.state.fail("auth.test", error)
    err = await serve_fails(world.env(), world.home)
    assert f"SLACK_BOT_TOKEN: Slack refused it ({error})" in err
    assert LOCAL_BOT_TOKEN not in err
    assert not (world.home / "bot.db").exists()  # stopped before creating anything


async def test_slack_unreachable_is_one_warning_and_the_bot_starts(world: World) -> None:
    closed = free_port()
    env = world.env(VPNBOT_SLACK_API_URL=f"http://127.0.0.1:{closed}/api/")
    process = BotProcess(env=env, cwd=world.home, log_path=world.home / "unreachable.log")
    try:
        await process.wait_healthy()
        process.terminate()
        assert await process.wait_exit(within=10) == 0, process.log()
        log = process.log()
    finally:
        process.close()
    warnings = [r for r in records(log) if "Slack is unreachable" in str(r["message"])]
    assert [r["level"] for r in warnings] == ["WARNING"], log
    assert "Traceback" not in log


async def test_socket_mode_retries_are_one_short_line_each(world: World) -> None:
    """Slack unreachable in Socket Mode: the SDK's retry is a one-line warning, not a traceback."""
    closed = free_port()
    env = world.env(
        VPNBOT_SLACK_API_URL=f"http://127.0.0.1:{closed}/api/", SLACK_APP_TOKEN="xapp-1-A0APP-1-unreachable"
    )
    del env["SLACK_SIGNING_SECRET"]
    process = SocketBotProcess(env=env, cwd=world.home, log_path=world.home / "socket.log")
    try:
        await process.wait_healthy()
        await world.slack.state.wait_for(
            lambda: "Socket Mode: Failed to connect" in process.log(), timeout=20, what="a retry warning"
        )
        process.terminate()
        assert await process.wait_exit(within=10) == 0, process.log()
        log = process.log()
    finally:
        process.close()
    assert "Traceback" not in log
    retries = [r for r in records(log) if "Socket Mode: Failed to connect" in str(r["message"])]
    assert retries, log
    assert {r["level"] for r in retries} == {"WARNING"}
    assert all("\n" not in str(r["message"]) and "exc_info" not in r for r in retries), retries
