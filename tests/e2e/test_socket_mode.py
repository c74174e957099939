"""Socket Mode end to end, with no real Slack: the bot opens a connection with its app-level token
(``apps.connections.open`` on the stand-in), and slash commands and clicks arrive as envelopes over
the stand-in's WebSocket. In process through Bolt's AsyncSocketModeHandler, and as ``vpn-bot serve``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import BotApp, create_app
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET, local_settings
from bot.sandbox.slack import SlackStandin, render_transcript
from bot.sandbox.slack_user import SocketModeUser
from bot.sandbox.vpc import RunningSandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    TEST_SETTINGS,
    BotProcess,
    all_text,
    bot_env,
    child_env,
    run_to_exit,
    sandbox_and_slack,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

APP_TOKEN = "xapp-1-A0VPNBOT-1-socket-e2e"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk's SocketModeClient reads HTTP(S)_PROXY itself; loopback must not go through one."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class World:
    """The VPC sandbox and the Slack stand-in (which also speaks Socket Mode)."""

    vpc: RunningSandbox
    slack: SlackStandin


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with sandbox_and_slack(update_seconds=0.3, app_token=APP_TOKEN) as (vpc, slack):
        yield World(vpc=vpc, slack=slack)


@pytest.fixture
async def socket_bot(world: World, sqlite_url: str) -> AsyncIterator[BotApp]:
    """The bot in Socket Mode, in this process: no signing secret, only the app-level token."""
    settings = local_settings(
        database_url=sqlite_url,
        vpc_url=world.vpc.url,
        slack_url=world.slack.url,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=None,
        **TEST_SETTINGS,
    )
    app = await create_app(settings, socket_mode=True)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(app.aclose)
        await app.start()
        # As `vpn-bot serve` does: Bolt's handler opens the URL with the app's own client (its base_url).
        handler = AsyncSocketModeHandler(app.bolt, APP_TOKEN)
        cleanup.push_async_callback(handler.close_async)
        await handler.connect_async()  # type: ignore[no-untyped-call]  # Bolt's handler is untyped
        await world.slack.state.socket_mode.wait_connected()
        yield app


async def test_delete_flow_over_socket_mode(world: World, socket_bot: BotApp) -> None:
    """Slash command → confirmation → Delete click → deleted, every interaction over the WebSocket."""
    state = world.slack.state
    user = SocketModeUser(state=state)
    assert all(
        route.resource is None or route.resource.canonical != "/slack/events"
        for route in socket_bot.web.router.routes()
    )

    ack = await user.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    assert ack.payload is not None  # the "looking it up" reply rides on the ack…
    [looking] = state.ephemerals(ALICE, CHANNEL)
    assert looking.via == "ack"  # …and alice alone sees it, as in Slack
    assert SEED_VCO_HANGZHOU in all_text(looking)

    confirmation = await wait_confirmation(state, SEED_VCO_HANGZHOU)
    click = await user.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    assert click.payload is None

    thread = await wait_thread(state, confirmation.ts, "Deleted in", within=15)
    await wait_parent(state, confirmation.ts, "Deleted", within=5)
    assert "updating" in thread.lower()
    assert len(world.vpc.state.accepted("DeleteVpnConnection")) == 1
    assert SEED_VCO_HANGZHOU not in world.vpc.state.connections

    server = state.socket_mode
    assert [e.type for e in server.envelopes] == ["slash_commands", "interactive"]
    assert [a.envelope_id for a in server.acks] == [e.envelope_id for e in server.envelopes]
    assert all(a.seconds < 3 for a in server.acks)  # acked within Slack's deadline
    assert [c.ok for c in state.calls("apps.connections.open")] == [True]
    transcript = render_transcript(state, CHANNEL)
    assert f"alice ran /vpn delete {SEED_VCO_HANGZHOU}" in transcript
    assert "bob clicked [Delete]" in transcript


async def test_unknown_command_text_gets_usage_on_the_ack(world: World, socket_bot: BotApp) -> None:
    """A usage reply is the ack's own payload, shown only to the person who typed the command."""
    ack = await SocketModeUser(state=world.slack.state).slash_command(ALICE, CHANNEL, "frobnicate")
    assert ack.payload is not None
    [usage] = world.slack.state.ephemerals(ALICE, CHANNEL)
    assert "/vpn delete" in all_text(usage)
    assert world.slack.state.messages(CHANNEL) == []


# --- `vpn-bot serve --socket` as a process --------------------------------------------------------


class SocketBotProcess(BotProcess):
    """``python -m bot serve --socket``: Slack over the WebSocket, the probes on VPNBOT_METRICS_PORT."""

    @staticmethod
    def command(*, port: int) -> list[str]:
        return [sys.executable, "-m", "bot", "serve", "--socket", "--host", "127.0.0.1", "--port", str(port)]


@pytest.mark.process
async def test_serve_socket_process_handles_a_command_and_stops_on_sigterm(
    world: World, tmp_path: Path
) -> None:
    """``vpn-bot serve --socket`` with SLACK_APP_TOKEN and no signing secret: connects, serves, exits 0."""
    state = world.slack.state
    process = SocketBotProcess(
        env=_socket_env(world, tmp_path, APP_TOKEN), cwd=tmp_path, log_path=tmp_path / "socket.log"
    )
    try:
        await process.wait_healthy()
        [conn] = await state.socket_mode.wait_connected(timeout=20)

        ack = await SocketModeUser(state=state, ack_timeout=10).slash_command(
            ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}"
        )
        assert ack.payload is not None
        await wait_confirmation(state, SEED_VCO_HANGZHOU)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            # No signing secret, so no HTTP events endpoint: only the socket carries Slack traffic.
            assert (await http.post(f"{process.metrics_url}/slack/events", content=b"{}")).status_code == 404
            with pytest.raises(httpx.ConnectError):  # and no Slack port at all
                await http.get(f"{process.url}/livez")

        process.terminate()
        assert await process.wait_exit(within=10) == 0, process.log()
        log = process.log()
        assert "Traceback" not in log
        assert "Socket Mode" in log
        assert APP_TOKEN not in log
        await state.wait_for(lambda: conn.closed, what="the bot closed its WebSocket")
    finally:
        process.close()


def _socket_env(world: World, tmp_path: Path, app_token: str) -> dict[str, str]:
    env = bot_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'bot.db'}",
        vpc=world.vpc,
        slack=world.slack,
        SLACK_APP_TOKEN=app_token,
    )
    del env["SLACK_SIGNING_SECRET"]
    return env


@pytest.mark.process
async def test_serve_socket_with_a_refused_app_token_exits_2(world: World, tmp_path: Path) -> None:
    """A wrong xapp token is a settings problem: exit 2 at once, not retry forever."""
    process = SocketBotProcess(
        env=_socket_env(world, tmp_path, "xapp-1-not-this-one"), cwd=tmp_path, log_path=tmp_path / "bad.log"
    )
    try:
        assert await process.wait_exit(within=20) == 2, process.log()
        log = process.log()
        assert "SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in log
        assert "Traceback" not in log
        assert "xapp-1-not-this-one" not in log
    finally:
        process.close()
    assert [c.error for c in world.slack.state.calls("apps.connections.open")] == ["invalid_auth"]


@pytest.mark.process
async def test_serve_socket_stops_on_sigterm_while_slack_is_unreachable(world: World, tmp_path: Path) -> None:
    """While apps.connections.open keeps failing the SDK retries forever; SIGTERM still ends it, exit 0."""
    state = world.slack.state
    state.server_error("apps.connections.open", times=10_000)
    process = SocketBotProcess(
        env=_socket_env(world, tmp_path, APP_TOKEN), cwd=tmp_path, log_path=tmp_path / "down.log"
    )
    try:
        await process.wait_healthy()
        await state.wait_for(
            lambda: state.calls("apps.connections.open"), timeout=20, what="a connection attempt"
        )
        process.terminate()
        assert await process.wait_exit(within=5) == 0, process.log()
        assert "shutting down" in process.log()
    finally:
        process.close()
    assert state.socket_mode.all_connections == []


@pytest.mark.process
async def test_serve_socket_without_app_token_exits_2_naming_it(tmp_path: Path) -> None:
    env = child_env(
        tmp_path,
        SLACK_BOT_TOKEN=LOCAL_BOT_TOKEN,
        SLACK_SIGNING_SECRET=LOCAL_SIGNING_SECRET,
        VPNBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'unused.db'}",
    )
    status, out, err = await run_to_exit(
        SocketBotProcess.command(port=3000), env=env, cwd=tmp_path, within=20
    )
    assert status == 2, err
    assert "Traceback" not in err
    assert "SLACK_APP_TOKEN" in err
    assert "SLACK_SIGNING_SECRET" not in err  # Socket Mode does not need it
    assert out == ""
    assert not (tmp_path / "unused.db").exists()
