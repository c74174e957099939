"""The Slack stand-in against the real slack_sdk client, a real Bolt app, and the transcript view."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.sandbox.slack import (
    DEFAULT_SCOPES,
    SlackStandin,
    SlackUserAgent,
    StandinState,
    demo_workspace,
    render_mrkdwn,
    render_transcript,
    start_slack_standin,
)
from bot.sandbox.slack_api import file_content

TOKEN = "xoxb-sandbox"
SECRET = "signing-secret-for-tests"
OPS, RANDOM, SECRET_CHAN = "C0VPNOPS", "C0RANDOM", "G0SECRET"
ALICE, BOB = "U0ALICE", "U0BOB"

CONFIRM_BLOCKS: list[dict[str, Any]] = [
    {
        "type": "section",
        "block_id": "summary",
        "text": {"type": "mrkdwn", "text": "Delete *vco-1*? Asked by <@U0ALICE>"},
    },
    {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {
                "type": "button",
                "action_id": "vpn-delete",
                "text": {"type": "plain_text", "text": "Delete"},
                "style": "danger",
                "value": "op-42",
            },
            {
                "type": "button",
                "action_id": "vpn-cancel",
                "text": {"type": "plain_text", "text": "Cancel"},
                "value": "op-42",
            },
        ],
    },
]


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    # users:read (not asked for by the bot) so the stand-in's users.info can be tested too.
    s = await start_slack_standin(bot_token=TOKEN, scopes=(*DEFAULT_SCOPES, "users:read"))
    yield s
    await s.close()


@pytest.fixture
async def client(standin: SlackStandin) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as session:
        yield AsyncWebClient(token=TOKEN, base_url=standin.url, session=session)


# ------------------------------------------------------------------ Web API over slack_sdk


async def test_auth_test_reports_identity_and_granted_scopes(client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert (resp["user_id"], resp["bot_id"], resp["team_id"]) == ("U0VPNBOT", "B0VPNBOT", "T0VPNDEMO")
    assert set(resp.headers["x-oauth-scopes"].split(",")) == {
        "commands",
        "chat:write",
        "chat:write.public",
        "usergroups:read",
        "users:read",
        "channels:read",
        "groups:read",
        "channels:history",
        "groups:history",
        "files:write",
        "im:write",
        "im:history",
    }


async def test_wrong_token_is_invalid_auth(standin: SlackStandin) -> None:
    async with aiohttp.ClientSession() as session:
        bad = AsyncWebClient(token="xoxb-wrong", base_url=standin.url, session=session)
        with pytest.raises(SlackApiError) as err:
            await bad.chat_postMessage(channel=OPS, text="hi")
    assert err.value.response["error"] == "invalid_auth"
    assert standin.state.messages(OPS) == []


async def test_post_thread_reply_update_and_permalink(client: AsyncWebClient, standin: SlackStandin) -> None:
    state = standin.state
    root = await client.chat_postMessage(channel=OPS, text="Delete vco-1?", blocks=CONFIRM_BLOCKS)
    assert root["channel"] == OPS
    reply = await client.chat_postMessage(channel=OPS, thread_ts=root["ts"], text="Deleting…")
    await client.chat_postMessage(channel=OPS, thread_ts=reply["ts"], text="Done")  # a reply to a reply
    await client.chat_update(channel=OPS, ts=root["ts"], text="Deleted vco-1", blocks=[])

    [msg] = state.messages(OPS)
    assert (msg.ts, msg.text, msg.blocks, msg.bot_id) == (root["ts"], "Deleted vco-1", [], "B0VPNBOT")
    assert [r.text for r in msg.edits] == ["Delete vco-1?"]
    assert msg.edits[0].blocks[1]["block_id"] == "decide"
    assert [m.text for m in state.thread(OPS, root["ts"])] == ["Deleting…", "Done"]
    link = await client.chat_getPermalink(channel=OPS, message_ts=root["ts"])
    assert link["permalink"].endswith(f"/archives/{OPS}/p{root['ts'].replace('.', '')}")
    posted = state.calls("chat.postMessage")[0]
    assert posted.params["blocks"][1]["elements"][0]["action_id"] == "vpn-delete"
    assert "token" not in posted.params


async def test_ts_values_are_unique_and_increasing(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel=OPS, text=str(i)))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5


async def test_update_errors(client: AsyncWebClient, standin: SlackStandin) -> None:
    eph = await client.chat_postEphemeral(channel=OPS, user=ALICE, text="only you")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=OPS, ts=eph["message_ts"], text="edit")
    assert err.value.response["error"] == "message_not_found"
    user_msg = standin.state.add_message(OPS, text="from alice", user=ALICE)
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=OPS, ts=user_msg.ts, text="edit")
    assert err.value.response["error"] == "cant_update_message"


async def test_ephemeral_only_visible_to_its_user(client: AsyncWebClient, standin: SlackStandin) -> None:
    resp = await client.chat_postEphemeral(channel=OPS, user=ALICE, text="Only you can see this")
    assert [m.ts for m in standin.state.ephemerals(ALICE)] == [resp["message_ts"]]
    assert standin.state.ephemerals(BOB) == []
    assert standin.state.messages(OPS) == []


async def test_bot_not_in_channel(client: AsyncWebClient, standin: SlackStandin) -> None:
    # Public channel: chat:write.public lets the bot post without joining.
    await client.chat_postMessage(channel=RANDOM, text="hello")
    # Private channel the bot is not in: Slack hides it.
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=SECRET_CHAN, text="hello")
    assert err.value.response["error"] == "channel_not_found"


async def test_not_in_channel_without_public_scope() -> None:
    scopes = ["commands", "chat:write", "users:read", "usergroups:read"]
    s = await start_slack_standin(bot_token=TOKEN, scopes=scopes)
    try:
        async with aiohttp.ClientSession() as session:
            c = AsyncWebClient(token=TOKEN, base_url=s.url, session=session)
            with pytest.raises(SlackApiError) as err:
                await c.chat_postMessage(channel=RANDOM, text="hello")
            assert err.value.response["error"] == "not_in_channel"
            s.state.set_bot_membership(RANDOM, True)
            await c.chat_postMessage(channel=RANDOM, text="hello")
    finally:
        await s.close()
    assert [m.text for m in s.state.messages(RANDOM)] == ["hello"]


async def test_rate_limit_is_retried_by_slack_sdk_handler(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    standin.state.rate_limit("chat.postMessage", times=1, retry_after=0)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    resp = await client.chat_postMessage(channel=OPS, text="after 429")
    calls = standin.state.calls("chat.postMessage")
    assert [(c.status, c.error) for c in calls] == [(429, "ratelimited"), (200, None)]
    assert resp["ts"] == standin.state.messages(OPS)[0].ts


async def test_rate_limit_without_handler_raises_with_retry_after(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    standin.state.rate_limit("*", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=OPS, text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    await client.chat_postMessage(channel=OPS, text="x")  # only the next call was limited


async def test_server_errors_then_recovery(client: AsyncWebClient, standin: SlackStandin) -> None:
    standin.state.server_error("users.info", times=2, status=503)
    client.retry_handlers.append(
        AsyncServerErrorRetryHandler(
            max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(0.01)
        )
    )
    resp = await client.users_info(user=BOB)
    assert resp["user"]["name"] == "bob"
    assert [c.status for c in standin.state.calls("users.info")] == [503, 503, 200]


async def test_injected_slack_error(client: AsyncWebClient, standin: SlackStandin) -> None:
    root = await client.chat_postMessage(channel=OPS, text="x")
    standin.state.fail("chat.update", "edit_window_closed")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=OPS, ts=root["ts"], text="y")
    assert err.value.response["error"] == "edit_window_closed"
    await client.chat_update(channel=OPS, ts=root["ts"], text="y")


async def test_latency_is_applied(client: AsyncWebClient, standin: SlackStandin) -> None:
    standin.state.set_latency(0.2, "auth.test")
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.2


async def test_directory_methods(client: AsyncWebClient) -> None:
    groups = await client.usergroups_list(include_users=True)
    assert groups["usergroups"][0]["handle"] == "network-admins"
    assert groups["usergroups"][0]["users"] == [BOB]
    members = await client.usergroups_users_list(usergroup="S0NETADM")
    assert members["users"] == [BOB]
    with pytest.raises(SlackApiError) as err:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"
    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="U0NOPE")
    assert err.value.response["error"] == "user_not_found"


async def test_usergroup_membership_is_configurable(client: AsyncWebClient, standin: SlackStandin) -> None:
    standin.state.set_usergroup("S0NETADM", [BOB, ALICE])
    standin.state.set_usergroup("S0AUDIT", ["U0CAROL"], handle="auditors")
    assert (await client.usergroups_users_list(usergroup="S0NETADM"))["users"] == [BOB, ALICE]
    handles = [g["handle"] for g in (await client.usergroups_list())["usergroups"]]
    assert handles == ["network-admins", "auditors"]


async def test_conversations_info_needs_channels_read() -> None:
    # An install from an older manifest, without channels:read: real Slack refuses this call too.
    s = await start_slack_standin(bot_token=TOKEN, scopes=["commands", "chat:write"])
    try:
        async with aiohttp.ClientSession() as session:
            client = AsyncWebClient(token=TOKEN, base_url=s.url, session=session)
            with pytest.raises(SlackApiError) as err:
                await client.conversations_info(channel=OPS)
    finally:
        await s.close()
    assert (err.value.response["error"], err.value.response["needed"]) == ("missing_scope", "channels:read")


async def test_conversations_info_with_scope() -> None:
    s = await start_slack_standin(bot_token=TOKEN, scopes=["channels:read", "groups:read"])
    try:
        async with aiohttp.ClientSession() as session:
            c = AsyncWebClient(token=TOKEN, base_url=s.url, session=session)
            info = await c.conversations_info(channel=OPS)
            assert (info["channel"]["name"], info["channel"]["is_member"]) == ("vpn-ops", True)
            with pytest.raises(SlackApiError) as err:
                await c.conversations_info(channel=SECRET_CHAN)
            assert err.value.response["error"] == "channel_not_found"
    finally:
        await s.close()


async def test_unknown_method(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.api_call("vpn.explode")
    assert err.value.response["error"] == "unknown_method"


async def test_form_encoded_blocks_and_token_param(standin: SlackStandin) -> None:
    async with aiohttp.ClientSession() as session:
        c = AsyncWebClient(base_url=standin.url, session=session)  # token per call, sent as a param
        await c.api_call(
            "chat.postMessage",
            data={"channel": "#vpn-ops", "text": "t", "blocks": json.dumps(CONFIRM_BLOCKS), "token": TOKEN},
        )
    [msg] = standin.state.messages(OPS)
    assert msg.blocks[1]["block_id"] == "decide"
    assert standin.state.calls("chat.postMessage")[0].params["blocks"] == CONFIRM_BLOCKS


async def test_thread_reply_to_unknown_parent_is_refused(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=OPS, thread_ts="1.000001", text="orphan")
    assert err.value.response["error"] == "thread_not_found"


async def test_wait_for_returns_the_value_or_times_out(standin: SlackStandin) -> None:
    state = standin.state
    with pytest.raises(TimeoutError, match="nothing posted"):
        await state.wait_for(lambda: state.messages(OPS), timeout=0.05, what="nothing posted")
    state.add_message(OPS, text="hi")
    found = await state.wait_for(lambda: state.messages(OPS), timeout=1)
    assert found[0].text == "hi"


# ------------------------------------------------------------------ response_url


async def test_response_url_replace_original_edits_the_clicked_message(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    state = standin.state
    root = await client.chat_postMessage(channel=OPS, text="Delete?", blocks=CONFIRM_BLOCKS)
    url = state.new_response_url(channel=OPS, user=BOB, message_ts=root["ts"])
    async with aiohttp.ClientSession() as session:
        hook = AsyncWebhookClient(url, session=session)
        resp = await hook.send(text="Approved by <@U0BOB>", replace_original=True)
        assert resp.status_code == 200
        await hook.send(text="Only bob sees this")  # ephemeral by default
        await hook.send_dict(
            {"text": "Everyone sees this", "response_type": "in_channel", "thread_ts": root["ts"]}
        )
    [msg] = state.messages(OPS)
    assert (msg.text, msg.blocks, msg.edited) == ("Approved by <@U0BOB>", [], True)
    assert [m.text for m in state.ephemerals(BOB)] == ["Only bob sees this"]
    assert state.ephemerals(ALICE) == []
    assert [m.text for m in state.thread(OPS, root["ts"])] == ["Everyone sees this"]
    assert [p.payload.get("replace_original") for p in state.responses()] == [True, None, None]


async def test_response_url_delete_original_and_use_limit(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    state = standin.state
    root = await client.chat_postMessage(channel=OPS, text="Delete?")
    url = state.new_response_url(channel=OPS, user=BOB, message_ts=root["ts"])
    async with aiohttp.ClientSession() as session:
        hook = AsyncWebhookClient(url, session=session)
        assert (await hook.send_dict({"delete_original": True})).status_code == 200
        for _ in range(4):
            await hook.send(text="again")
        over = await hook.send(text="sixth use")
    assert state.messages(OPS) == []
    assert over.status_code == 404
    assert json.loads(over.body)["error"] == "used_url"


async def test_response_url_expires_after_30_minutes() -> None:
    now = [1_700_000_000.0]
    s = await start_slack_standin(bot_token=TOKEN, clock=lambda: now[0])
    try:
        url = s.state.new_response_url(channel=OPS, user=ALICE)
        now[0] += 31 * 60
        async with aiohttp.ClientSession() as session:
            resp = await AsyncWebhookClient(url, session=session).send(text="late")
    finally:
        await s.close()
    assert (resp.status_code, json.loads(resp.body)["error"]) == (404, "expired_url")


# ------------------------------------------------------------------ the user agent


class Captured:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], str]] = []


@pytest.fixture
async def capture_server() -> AsyncIterator[tuple[str, Captured]]:
    """A bare endpoint that records what the agent sends and answers like a Bolt ack."""
    captured = Captured()

    async def handle(request: web.Request) -> web.Response:
        captured.requests.append((dict(request.headers), await request.text()))
        return web.json_response({"text": "Working on it"})

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/slack/events", captured
    await runner.cleanup()


async def test_agent_slash_command_is_signed_and_shaped_like_slack(
    standin: SlackStandin, capture_server: tuple[str, Captured]
) -> None:
    url, captured = capture_server
    async with SlackUserAgent(events_url=url, signing_secret=SECRET, state=standin.state) as agent:
        reply = await agent.slash_command(ALICE, OPS, "delete vco-1 cn-hangzhou")
    assert reply.status == 200
    assert reply.json() == {"text": "Working on it"}
    headers, body = captured.requests[0]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = {k: v[0] for k, v in parse_qs(body).items()}
    assert {
        k: fields[k] for k in ("command", "text", "user_id", "user_name", "channel_id", "channel_name")
    } == {
        "command": "/vpn",
        "text": "delete vco-1 cn-hangzhou",
        "user_id": ALICE,
        "user_name": "alice",
        "channel_id": OPS,
        "channel_name": "vpn-ops",
    }
    for key in ("token", "team_id", "team_domain", "api_app_id", "trigger_id"):
        assert fields[key]
    assert fields["response_url"].startswith(f"{standin.origin}/response/")
    # The ack body is shown to alice only, as Slack does.
    assert [m.text for m in standin.state.ephemerals(ALICE)] == ["Working on it"]


async def test_agent_can_forge_signature_and_stale_timestamp(
    standin: SlackStandin, capture_server: tuple[str, Captured]
) -> None:
    url, captured = capture_server
    async with SlackUserAgent(events_url=url, signing_secret=SECRET, state=standin.state) as agent:
        await agent.slash_command(ALICE, OPS, "help", signature="v0=" + "0" * 64)
        await agent.slash_command(ALICE, OPS, "help", timestamp=int(time.time()) - 600)
    verifier = SignatureVerifier(SECRET)
    assert [verifier.is_valid_request(body, headers) for headers, body in captured.requests] == [False, False]


async def test_agent_click_payload(
    client: AsyncWebClient, standin: SlackStandin, capture_server: tuple[str, Captured]
) -> None:
    url, captured = capture_server
    root = await client.chat_postMessage(channel=OPS, text="Delete?", blocks=CONFIRM_BLOCKS)
    async with SlackUserAgent(events_url=url, signing_secret=SECRET, state=standin.state) as agent:
        await agent.click(BOB, OPS, root["ts"], "vpn-delete")
        with pytest.raises(LookupError):
            await agent.click(BOB, OPS, root["ts"], "vpn-approve")  # no such button on the message
    headers, body = captured.requests[0]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    payload = json.loads(parse_qs(body)["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == BOB
    assert payload["container"] == {
        "type": "message",
        "message_ts": root["ts"],
        "channel_id": OPS,
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == root["ts"]
    assert payload["message"]["blocks"] == CONFIRM_BLOCKS
    [action] = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "vpn-delete",
        "decide",
        "op-42",
        "button",
    )
    assert payload["response_url"].startswith(f"{standin.origin}/response/")


async def test_agent_click_on_ephemeral_and_replace_it(
    client: AsyncWebClient, standin: SlackStandin, capture_server: tuple[str, Captured]
) -> None:
    url, captured = capture_server
    eph = await client.chat_postEphemeral(channel=OPS, user=ALICE, text="Sure?", blocks=CONFIRM_BLOCKS)
    async with SlackUserAgent(events_url=url, signing_secret=SECRET, state=standin.state) as agent:
        with pytest.raises(LookupError):
            await agent.click(BOB, OPS, eph["message_ts"], "vpn-cancel")  # bob cannot see it
        await agent.click(ALICE, OPS, eph["message_ts"], "vpn-cancel")
    payload = json.loads(parse_qs(captured.requests[0][1])["payload"][0])
    assert payload["container"]["is_ephemeral"] is True
    assert "message" not in payload  # Slack sends no message body for ephemerals
    async with aiohttp.ClientSession() as session:
        await AsyncWebhookClient(payload["response_url"], session=session).send(
            text="Cancelled", replace_original=True
        )
    [msg] = standin.state.ephemerals(ALICE)
    assert (msg.text, msg.blocks) == ("Cancelled", [])


# ------------------------------------------------------------------ end to end with a real Bolt app


@pytest.fixture
async def bolt_url(standin: SlackStandin) -> AsyncIterator[str]:
    """A small Bolt app (confirm → Delete/Cancel) served over loopback HTTP against the stand-in."""
    session = aiohttp.ClientSession()
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=standin.url, session=session), signing_secret=SECRET
    )

    @app.command("/vpn")
    async def vpn(ack: Any, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack(f"Checking {command['text']}…")
        await client.chat_postMessage(
            channel=command["channel_id"], text="Delete vco-1?", blocks=CONFIRM_BLOCKS
        )

    @app.action("vpn-delete")
    async def delete(ack: Any, body: dict[str, Any], respond: Any, say: Any) -> None:
        await ack()
        await respond(text=f"Approved by <@{body['user']['id']}>", replace_original=True)
        await say(text="Deleting vco-1…", thread_ts=body["container"]["message_ts"])

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/slack/events"
    await runner.cleanup()
    await session.close()


async def test_bolt_app_end_to_end(standin: SlackStandin, bolt_url: str) -> None:
    state = standin.state
    async with SlackUserAgent(events_url=bolt_url, signing_secret=SECRET, state=state) as agent:
        assert (await agent.slash_command(ALICE, OPS, "delete vco-1")).status == 200
        [root] = await state.wait_for(lambda: state.messages(OPS), what="confirmation posted")
        assert (await agent.click(BOB, OPS, root.ts, "vpn-delete")).status == 200
        await state.wait_for(lambda: state.thread(OPS, root.ts), what="thread reply")
        assert (await agent.slash_command(ALICE, OPS, "help", signature="v0=" + "0" * 64)).status == 401
        stale = await agent.slash_command(ALICE, OPS, "help", timestamp=int(time.time()) - 600)
        assert stale.status == 401
    assert state.messages(OPS)[0].text == "Approved by <@U0BOB>"
    assert [m.text for m in state.ephemerals(ALICE)] == ["Checking delete vco-1…"]
    assert [c.method for c in state.calls()].count("auth.test") == 1  # Bolt's lazy, cached auth.test

    transcript = render_transcript(state, OPS)
    assert "alice ran /vpn delete vco-1" in transcript
    assert "(only visible to @alice)" in transcript
    assert "bob clicked [Delete]" in transcript
    assert "Approved by @bob" in transcript
    assert "Deleting vco-1…" in transcript
    assert "(the app answered HTTP 401)" in transcript


# ------------------------------------------------------------------ transcript rendering


def _fixed_state() -> StandinState:
    t = [1_700_000_000.0]  # 22:13:20 UTC

    def clock() -> float:
        t[0] += 1
        return t[0]

    return StandinState(demo_workspace(), bot_token=TOKEN, clock=clock)


def test_render_mrkdwn_mentions_links_and_entities() -> None:
    state = _fixed_state()
    text = "<@U0ALICE> asked <!subteam^S0NETADM|@network-admins> in <#C0VPNOPS|vpn-ops>: <https://x.example|docs> &lt;ok&gt; <!here> <@U0ZED>"
    assert render_mrkdwn(text, state) == (
        "@alice asked @network-admins in #vpn-ops: docs (https://x.example) <ok> @here @U0ZED"
    )


def test_render_transcript_layout() -> None:
    state = _fixed_state()
    root = state.add_message(
        OPS,
        text="fallback",
        blocks=[
            *CONFIRM_BLOCKS,
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Region*\ncn-hangzhou"}]},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "Region cn-hangzhou"},
                    {"type": "plain_text", "text": "id op-42"},
                ],
            },
        ],
    )
    state.add_message(OPS, text="Deleting… requested by <@U0ALICE>", thread_ts=root.ts)
    state.add_message(OPS, text="Only for alice", visible_to=ALICE)
    state.add_message(OPS, text="Only for bob", visible_to=BOB)
    edited = state.add_message(OPS, text="Queued")
    state.edit_message(edited, text="Done", blocks=None)

    assert render_transcript(state, OPS, viewer=ALICE) == (
        "#vpn-ops\n"
        "────────────────────────\n"
        "22:13:21  vpn-bot (APP)\n"
        "          Delete *vco-1*? Asked by @alice\n"
        "          [Delete] [Cancel]\n"
        "          *Region* cn-hangzhou\n"
        "          Region cn-hangzhou  id op-42\n"
        "          └ 1 reply\n"
        "  │ 22:13:22  vpn-bot (APP)\n"
        "  │           Deleting… requested by @alice\n"
        "22:13:23  vpn-bot (APP)  (only visible to you)\n"
        "          Only for alice\n"
        "22:13:25  vpn-bot (APP)  (edited)\n"
        "          Done\n"
    )
    everyone = render_transcript(state, OPS)
    assert "(only visible to @bob)" in everyone
    assert "(only visible to @alice)" in everyone


# ------------------------------------------------------------------ views (modals, Home tab)

MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "pick",
    "title": {"type": "plain_text", "text": "Pick"},
    "submit": {"type": "plain_text", "text": "Go"},
    "blocks": [
        {
            "type": "input",
            "block_id": "conn",
            "label": {"type": "plain_text", "text": "Connection"},
            "element": {"type": "external_select", "action_id": "search"},
        }
    ],
}


async def test_views_open_needs_a_fresh_trigger_and_a_valid_view(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    trigger = standin.state.new_trigger_id()
    opened = await client.views_open(trigger_id=trigger, view=MODAL)
    view_id = opened["view"]["id"]
    assert standin.state.views[view_id]["callback_id"] == "pick"
    with pytest.raises(SlackApiError) as used:
        await client.views_open(trigger_id=trigger, view=MODAL)
    assert used.value.response["error"] == "invalid_trigger_id"
    long_title = {**MODAL, "title": {"type": "plain_text", "text": "x" * 25}}
    with pytest.raises(SlackApiError) as invalid:
        await client.views_open(trigger_id=standin.state.new_trigger_id(), view=long_title)
    assert invalid.value.response["error"] == "invalid_arguments"
    updated = await client.views_update(view_id=view_id, view={**MODAL, "callback_id": "again"})
    assert updated["view"]["id"] == view_id
    assert standin.state.views[view_id]["callback_id"] == "again"


async def test_views_publish_keeps_each_users_home_tab(client: AsyncWebClient, standin: SlackStandin) -> None:
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    await client.views_publish(user_id=ALICE, view=home)
    assert standin.state.home_views[ALICE]["blocks"] == home["blocks"]
    assert BOB not in standin.state.home_views
    with pytest.raises(SlackApiError) as modal:
        await client.views_publish(user_id=ALICE, view=MODAL)
    assert modal.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as nobody:
        await client.views_publish(user_id="U0NOBODY", view=home)
    assert nobody.value.response["error"] == "user_not_found"


async def test_agent_sends_view_payloads_and_home_events_as_slack_does(
    client: AsyncWebClient, standin: SlackStandin, capture_server: tuple[str, Captured]
) -> None:
    url, captured = capture_server
    opened = await client.views_open(trigger_id=standin.state.new_trigger_id(), view=MODAL)
    view_id = opened["view"]["id"]
    async with SlackUserAgent(events_url=url, signing_secret=SECRET, state=standin.state) as agent:
        await agent.suggest(ALICE, view_id, "search", "office")
        await agent.submit(ALICE, view_id, {"conn": {"search": {"type": "external_select"}}})
        await agent.open_home(BOB)
    verifier = SignatureVerifier(SECRET)
    assert all(verifier.is_valid_request(body, headers) for headers, body in captured.requests)
    suggestion = json.loads(parse_qs(captured.requests[0][1])["payload"][0])
    assert suggestion["type"] == "block_suggestion"
    assert (suggestion["action_id"], suggestion["block_id"], suggestion["value"]) == (
        "search",
        "conn",
        "office",
    )
    assert suggestion["view"]["id"] == view_id
    submission = json.loads(parse_qs(captured.requests[1][1])["payload"][0])
    assert submission["type"] == "view_submission"
    assert submission["view"]["state"]["values"] == {"conn": {"search": {"type": "external_select"}}}
    headers, body = captured.requests[2]
    assert headers["Content-Type"] == "application/json"
    event = json.loads(body)
    assert event["type"] == "event_callback"
    assert event["event"] == {**event["event"], "type": "app_home_opened", "user": BOB, "tab": "home"}


# ------------------------------------------------------------------ message size, metadata, history, files


def _sections(count: int, size: int) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * size}} for _ in range(count)]


async def test_an_oversized_message_is_refused_as_slack_refuses_it(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    """12,000 characters of block text in all, 50 blocks, 3,000 per section, 40,000 of text."""
    refused: dict[str, dict[str, Any]] = {
        "msg_blocks_too_long": {"text": "t", "blocks": _sections(5, 2_401)},  # 12,005 in all
        "invalid_blocks": {"text": "t", "blocks": _sections(51, 10)},
        "msg_too_long": {"text": "t" * 40_001},
    }
    for error, arguments in refused.items():
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=OPS, **arguments)
        assert err.value.response["error"] == error
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=OPS, text="t", blocks=_sections(1, 3_001))
    assert err.value.response["error"] == "invalid_blocks"
    assert standin.state.messages(OPS) == []
    # At the limits it passes; an update and an ephemeral are held to the same limits.
    root = await client.chat_postMessage(channel=OPS, text="t" * 40_000, blocks=_sections(4, 3_000))
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=OPS, ts=root["ts"], text="t", blocks=_sections(5, 2_401))
    assert err.value.response["error"] == "msg_blocks_too_long"
    with pytest.raises(SlackApiError) as err:
        await client.chat_postEphemeral(channel=OPS, user=ALICE, text="t", blocks=_sections(5, 2_401))
    assert err.value.response["error"] == "msg_blocks_too_long"
    assert [m.ts for m in standin.state.messages(OPS)] == [root["ts"]]


async def test_metadata_is_kept_and_read_back_with_history_and_replies(client: AsyncWebClient) -> None:
    meta = {"event_type": "vpnbot_effect", "event_payload": {"effect_id": "op-1/7"}}
    root = await client.chat_postMessage(channel=OPS, text="card", metadata=meta)
    reply = await client.chat_postMessage(channel=OPS, thread_ts=root["ts"], text="reply", metadata=meta)
    history = await client.conversations_history(channel=OPS, include_all_metadata=True)
    assert [(m["text"], m["metadata"]) for m in history["messages"]] == [("card", meta)]
    replies = await client.conversations_replies(channel=OPS, ts=root["ts"], include_all_metadata=True)
    assert [(m["ts"], m["metadata"]) for m in replies["messages"]] == [
        (root["ts"], meta),
        (reply["ts"], meta),
    ]
    # Without include_all_metadata, as Slack: no metadata.
    plain = await client.conversations_replies(channel=OPS, ts=root["ts"])
    assert all("metadata" not in m for m in plain["messages"])
    # Pages, newest first in a channel.
    for i in range(3):
        await client.chat_postMessage(channel=OPS, text=f"later {i}")
    first = await client.conversations_history(channel=OPS, limit=2)
    assert [m["text"] for m in first["messages"]] == ["later 2", "later 1"]
    assert first["has_more"]
    rest = await client.conversations_history(
        channel=OPS, limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["later 0", "card"]
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=OPS, text="x", metadata={"event_type": "", "event_payload": {}})
    assert err.value.response["error"] == "invalid_metadata_schema"


async def test_history_needs_the_history_scope_of_the_channel_type() -> None:
    async with (
        await start_slack_standin(bot_token=TOKEN, scopes=["chat:write"]) as standin,
        aiohttp.ClientSession() as session,
    ):
        client = AsyncWebClient(token=TOKEN, base_url=standin.url, session=session)
        with pytest.raises(SlackApiError) as err:
            await client.conversations_history(channel=OPS)
        assert (err.value.response["error"], err.value.response["needed"]) == (
            "missing_scope",
            "channels:history",
        )


async def test_files_upload_v2_shares_the_file_in_the_thread(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    root = await client.chat_postMessage(channel=OPS, text="card")
    done = await client.files_upload_v2(
        channel=OPS, thread_ts=root["ts"], filename="c.yaml", title="Config", content="a: 1\n"
    )
    [shared] = standin.state.thread(OPS, root["ts"])
    assert shared.files == [done["file"]]
    assert (done["file"]["name"], done["file"]["title"]) == ("c.yaml", "Config")
    assert file_content(standin.state, done["file"]["id"]) == "a: 1\n"
    assert [c.method for c in standin.state.api_calls] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    # A file id is shared once.
    with pytest.raises(SlackApiError) as err:
        await client.files_completeUploadExternal(files=[{"id": done["file"]["id"]}], channel_id=OPS)
    assert err.value.response["error"] == "file_not_found"


async def test_a_dropped_answer_posts_the_message_and_resets_the_connection(standin: SlackStandin) -> None:
    standin.state.drop_answer("chat.postMessage")
    async with aiohttp.ClientSession() as session:
        # No retry handlers: slack_sdk's default one would post again after the reset.
        client = AsyncWebClient(token=TOKEN, base_url=standin.url, session=session, retry_handlers=[])
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.chat_postMessage(channel=OPS, text="posted, never confirmed")
        await client.chat_postMessage(channel=OPS, text="answered")  # only the next call loses its answer
    assert [m.text for m in standin.state.messages(OPS)] == ["posted, never confirmed", "answered"]
    calls = standin.state.calls("chat.postMessage")
    assert [(c.ok, c.error) for c in calls] == [(True, "answer_dropped"), (True, None)]
