"""Socket Mode on the Slack stand-in, against slack_sdk's own aiohttp SocketModeClient."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.slack import SlackStandin, render_transcript, start_slack_standin
from bot.sandbox.slack_api import DEFAULT_APP_TOKEN
from bot.sandbox.slack_user import SocketModeUser

BOT_TOKEN = "xoxb-sandbox"
OPS = "C0VPNOPS"
ALICE, BOB = "U0ALICE", "U0BOB"

Listener = Callable[[AsyncBaseSocketModeClient, SocketModeRequest], Awaitable[None]]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk's SocketModeClient reads HTTP(S)_PROXY itself; loopback must not go through one."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    s = await start_slack_standin(bot_token=BOT_TOKEN)
    yield s
    await s.close()


@pytest.fixture
async def connect(standin: SlackStandin) -> AsyncIterator[Callable[[Listener], Awaitable[SocketModeClient]]]:
    """Connect slack_sdk SocketModeClients (acking with ``listener``) to the stand-in; close them after."""
    clients: list[SocketModeClient] = []

    async def connect(listener: Listener) -> SocketModeClient:
        client = SocketModeClient(
            app_token=DEFAULT_APP_TOKEN, web_client=AsyncWebClient(base_url=standin.url)
        )
        clients.append(client)
        client.socket_mode_request_listeners.append(listener)
        await client.connect()  # type: ignore[no-untyped-call]  # slack_sdk's aiohttp SocketModeClient is untyped
        return client

    yield connect
    for client in clients:
        await client.close()  # type: ignore[no-untyped-call]  # slack_sdk's aiohttp SocketModeClient is untyped


class Recorder:
    """A request listener that records each envelope and acks it, with ``reply`` as payload if set."""

    def __init__(self, reply: dict[str, Any] | None = None) -> None:
        self.requests: list[SocketModeRequest] = []
        self.reply = reply

    async def __call__(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        await client.send_socket_mode_response(SocketModeResponse(req.envelope_id, payload=self.reply))


async def test_sdk_client_connects_receives_an_envelope_and_acks(standin: SlackStandin) -> None:
    state, server = standin.state, standin.state.socket_mode
    hello: list[dict[str, Any]] = []
    recorder = Recorder(reply={"text": "Working on it"})
    client = SocketModeClient(app_token=DEFAULT_APP_TOKEN, web_client=AsyncWebClient(base_url=standin.url))
    try:

        async def on_message(_: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None) -> None:
            if message.get("type") == "hello":
                hello.append(message)

        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(recorder)
        await client.connect()  # type: ignore[no-untyped-call]  # slack_sdk's aiohttp SocketModeClient is untyped
        [conn] = await server.wait_connected()
        await state.wait_for(lambda: hello, what="hello")
        assert hello[0]["connection_info"] == {"app_id": state.workspace.app_id}
        assert hello[0]["num_connections"] == 1

        ack = await server.deliver(
            "slash_commands", {"command": "/vpn", "text": "help"}, accepts_response_payload=True
        )
    finally:
        await client.close()  # type: ignore[no-untyped-call]  # slack_sdk's aiohttp SocketModeClient is untyped

    assert ack.payload == {"text": "Working on it"}
    assert ack.connection == conn.id
    [req] = recorder.requests
    assert (req.type, req.envelope_id, req.payload, req.accepts_response_payload) == (
        "slash_commands",
        ack.envelope_id,
        {"command": "/vpn", "text": "help"},
        True,
    )
    assert [e.envelope_id for e in server.envelopes] == [ack.envelope_id]
    assert server.acks == [ack]
    assert server.unexpected == []
    [opened] = state.calls("apps.connections.open")
    assert opened.ok
    assert "token" not in opened.params  # never kept in the call log
    await state.wait_for(lambda: conn.closed, what="connection closed by the client")


async def test_envelopes_take_turns_over_open_connections(
    standin: SlackStandin, connect: Callable[[Listener], Awaitable[SocketModeClient]]
) -> None:
    server = standin.state.socket_mode
    first, second = Recorder(), Recorder()
    await connect(first)
    await connect(second)
    await server.wait_connected(2)
    acks = [
        await server.deliver("interactive", {"type": "block_actions"}, accepts_response_payload=False)
        for _ in range(4)
    ]
    assert [a.payload for a in acks] == [None] * 4
    assert (len(first.requests), len(second.requests)) == (2, 2)  # each envelope went to one connection
    assert len({a.connection for a in acks}) == 2


async def test_ping_pong_both_ways(
    standin: SlackStandin, connect: Callable[[Listener], Awaitable[SocketModeClient]]
) -> None:
    """slack_sdk pings "sdk-ping-pong:<time>" and reads the time back from our pong; it pongs ours."""
    server = standin.state.socket_mode
    client = await connect(Recorder())
    [conn] = await server.wait_connected()
    await standin.state.wait_for(
        lambda: client.last_ping_pong_time is not None, what="pong read by the client"
    )
    assert conn.pings[0] == f"sdk-ping-pong:{client.last_ping_pong_time}".encode()
    await server.ping(b"are-you-there")
    assert b"are-you-there" in conn.pongs


async def test_disconnect_message_makes_the_client_reconnect(
    standin: SlackStandin, connect: Callable[[Listener], Awaitable[SocketModeClient]]
) -> None:
    state, server = standin.state, standin.state.socket_mode
    recorder = Recorder()
    await connect(recorder)
    [old] = await server.wait_connected()
    await server.disconnect("refresh_requested")
    # slack_sdk opens a new URL, connects, then drops the old connection.
    await state.wait_for(
        lambda: old.closed and len(server.connections) == 1, timeout=5, what="a fresh connection"
    )
    assert [c.ok for c in state.calls("apps.connections.open")] == [True, True]
    ack = await server.deliver("slash_commands", {"text": "again"}, accepts_response_payload=True)
    assert ack.connection == server.connections[0].id != old.id


async def test_wrong_app_token_is_invalid_auth(standin: SlackStandin) -> None:
    web = AsyncWebClient(base_url=standin.url)
    with pytest.raises(SlackApiError) as wrong:
        await web.apps_connections_open(app_token="xapp-1-wrong")
    assert wrong.value.response["error"] == "invalid_auth"
    # Each token type opens only its own doors.
    with pytest.raises(SlackApiError) as bot_token:
        await web.apps_connections_open(app_token=BOT_TOKEN)
    assert bot_token.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as app_token:
        await AsyncWebClient(token=DEFAULT_APP_TOKEN, base_url=standin.url).chat_postMessage(
            channel=OPS, text="hi"
        )
    assert app_token.value.response["error"] == "not_allowed_token_type"
    # The SDK client surfaces the refusal rather than getting a URL.
    client = SocketModeClient(app_token="xapp-1-wrong", web_client=web)
    try:
        with pytest.raises(SlackApiError, match="invalid_auth"):
            await client.issue_new_wss_url()
    finally:
        await client.close()  # type: ignore[no-untyped-call]  # slack_sdk's aiohttp SocketModeClient is untyped
    assert standin.state.socket_mode.all_connections == []


async def test_a_url_opens_one_connection_only(standin: SlackStandin) -> None:
    opened = await AsyncWebClient(base_url=standin.url).apps_connections_open(app_token=DEFAULT_APP_TOKEN)
    url = str(opened["url"])
    assert url.startswith(f"ws://{standin.origin.removeprefix('http://')}/socket-mode/link?ticket=")
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = await ws.receive_json(timeout=2)
        assert hello["type"] == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
            await session.ws_connect(url)
        assert reused.value.status == 401
    assert standin.state.socket_mode.refused == 1


async def test_missing_ack_times_out_and_a_late_ack_is_kept_apart(standin: SlackStandin) -> None:
    server = standin.state.socket_mode
    url = str(
        (await AsyncWebClient(base_url=standin.url).apps_connections_open(app_token=DEFAULT_APP_TOKEN))["url"]
    )
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=2)  # hello
        with pytest.raises(TimeoutError, match="no ack for slash_commands envelope"):
            await server.deliver(
                "slash_commands", {"text": "slow"}, accepts_response_payload=True, ack_timeout=0.2
            )
        envelope = await ws.receive_json(timeout=2)
        assert envelope["accepts_response_payload"] is True
        await ws.send_json({"envelope_id": envelope["envelope_id"]})
        await standin.state.wait_for(lambda: server.unexpected, what="late ack recorded")
    assert server.acks == []
    assert json.loads(server.unexpected[0]) == {"envelope_id": envelope["envelope_id"]}


async def test_socket_mode_user_sends_slack_shaped_payloads_and_shows_the_ack(
    standin: SlackStandin, connect: Callable[[Listener], Awaitable[SocketModeClient]]
) -> None:
    state = standin.state
    recorder = Recorder(reply={"text": "Checking vco-1…"})
    await connect(recorder)
    user = SocketModeUser(state=state)

    ack = await user.slash_command(ALICE, OPS, "delete vco-1 cn-hangzhou")
    assert ack.payload == {"text": "Checking vco-1…"}
    command = recorder.requests[0]
    assert command.type == "slash_commands"
    assert command.accepts_response_payload is True
    assert {
        k: command.payload[k]
        for k in ("command", "text", "user_id", "user_name", "channel_id", "channel_name")
    } == {
        "command": "/vpn",
        "text": "delete vco-1 cn-hangzhou",
        "user_id": ALICE,
        "user_name": "alice",
        "channel_id": OPS,
        "channel_name": "vpn-ops",
    }
    assert command.payload["response_url"].startswith(f"{standin.origin}/response/")
    # The ack payload is shown to alice only, as Slack does.
    [ephemeral] = state.ephemerals(ALICE)
    assert (ephemeral.text, ephemeral.via) == ("Checking vco-1…", "ack")

    buttons = [
        {
            "type": "actions",
            "block_id": "decide",
            "elements": [
                {
                    "type": "button",
                    "action_id": "vpn-delete",
                    "text": {"type": "plain_text", "text": "Delete"},
                    "value": "op-1",
                }
            ],
        }
    ]
    root = state.add_message(OPS, text="Delete vco-1?", blocks=buttons)
    recorder.reply = None
    click = await user.click(BOB, OPS, root.ts, "vpn-delete")
    assert click.payload is None
    request = recorder.requests[1]
    assert (request.type, request.accepts_response_payload) == ("interactive", False)
    assert request.payload["type"] == "block_actions"
    assert request.payload["container"]["message_ts"] == root.ts
    assert request.payload["message"]["blocks"] == buttons
    [action] = request.payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == ("vpn-delete", "decide", "op-1")
    with pytest.raises(LookupError):
        await user.click(BOB, OPS, root.ts, "vpn-cancel")  # no such button: nothing is sent
    assert len(state.socket_mode.envelopes) == 2

    transcript = render_transcript(state, OPS)
    assert "alice ran /vpn delete vco-1 cn-hangzhou" in transcript
    assert "bob clicked [Delete]" in transcript
    assert "Checking vco-1…" in transcript
