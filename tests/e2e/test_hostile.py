"""Hostile input end to end: forged and edited clicks, broken payloads, bad signatures, huge bodies, mrkdwn injection.

Whatever arrives, nothing is deleted, the confirmation is not touched, nothing answers 5xx and no
traceback reaches Slack. Names that came from the cloud or the user are shown escaped.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.local import LOCAL_SIGNING_SECRET, LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_logs, local_stack
from .support import all_text as _all_text
from .support import has_buttons as _has_buttons

HOSTILE_NAME = "<!channel> & <@U0BOB> <https://evil|click>"


@pytest.fixture
async def stack(sqlite_url: str) -> AsyncIterator[LocalStack]:
    async with local_stack(sqlite_url, update_seconds=0.3) as running:
        yield running


# --- helpers -------------------------------------------------------------------------------------


def _mrkdwn_texts(message: Message) -> list[str]:
    """Every text Slack parses for mentions and links: the fallback text and all mrkdwn objects."""
    texts = [message.text]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return texts


async def _confirmation(stack: LocalStack, vco_id: str) -> Message:
    def found() -> Message | None:
        return next(
            (m for m in stack.slack.state.messages(CHANNEL) if vco_id in _all_text(m) and _has_buttons(m)),
            None,
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id}")


def _op_id(message: Message) -> str:
    for block in message.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == ActionId.APPROVE:
                return str(element["value"])
    raise AssertionError("no Delete button")


async def _post_signed(
    stack: LocalStack, body: bytes | str, *, content_type: str | None = None
) -> httpx.Response:
    """POST ``body`` to the bot, correctly signed with the app's signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(LOCAL_SIGNING_SECRET).generate_signature(
        timestamp=timestamp, body=raw.decode()
    )
    headers = {
        "Content-Type": content_type or "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature or "",
    }
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        return await client.post(stack.bot.events_url, content=raw, headers=headers)


def _click_payload(
    stack: LocalStack,
    message: Message,
    *,
    user: str = BOB,
    action_id: str = ActionId.APPROVE,
    value: Any,
    with_message: bool = True,
) -> dict[str, Any]:
    """A block_actions payload as Slack sends it, with whatever ``value`` an attacker chose."""
    ws = stack.slack.state.workspace
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "bob", "name": "bob", "team_id": ws.team_id},
        "api_app_id": ws.app_id,
        "token": ws.verification_token,
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": CHANNEL,
            "is_ephemeral": False,
        },
        "trigger_id": stack.slack.state.new_trigger_id(),
        "team": {"id": ws.team_id, "domain": ws.team_domain},
        "channel": {"id": CHANNEL, "name": "vpn-ops"},
        "response_url": stack.slack.state.new_response_url(channel=CHANNEL, user=user, message_ts=message.ts),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "vpn-delete-actions",
                "text": {"type": "plain_text", "text": "Delete"},
                "value": value,
                "type": "button",
                "action_ts": stack.slack.state.next_ts(),
            }
        ],
    }
    if with_message:
        payload["message"] = message.to_api()
    return payload


def _form(payload: Any) -> str:
    return urlencode({"payload": json.dumps(payload)})


def _assert_nothing_changed(stack: LocalStack, *confirmations: Message) -> None:
    for confirmation in confirmations:
        current = stack.slack.state.message(CHANNEL, confirmation.ts)
        assert current is not None
        assert not current.edited
        assert _has_buttons(current)
        assert stack.slack.state.thread(CHANNEL, confirmation.ts) == []
    assert stack.slack.state.calls("chat.update") == []
    assert [r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection"] == []


def _assert_no_traceback_to_slack(stack: LocalStack) -> None:
    shown = [_all_text(m) for c in stack.slack.state.channels for m in stack.slack.state.all_messages(c)]
    shown += [json.dumps(p.payload) for p in stack.slack.state.response_posts]
    for text in shown:
        assert "Traceback" not in text
        assert 'File "' not in text


async def _refused_click(stack: LocalStack, user: str = BOB) -> Message:
    def found() -> Message | None:
        return next((m for m in stack.slack.state.ephemerals(user, CHANNEL) if ":no_entry:" in m.text), None)

    return await stack.slack.state.wait_for(found, timeout=5, what="refusal of the click")


# --- forged and edited clicks -------------------------------------------------------------------


@pytest.mark.parametrize("with_message", [True, False], ids=["with-message-copy", "no-message-copy"])
async def test_forged_op_id_changes_nothing(stack: LocalStack, with_message: bool) -> None:
    """A Delete click whose value names no operation is refused, whether or not Slack sent the message."""
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    forged = _click_payload(stack, confirmation, value="0" * 32, with_message=with_message)
    reply = await _post_signed(stack, _form(forged))
    assert reply.status_code == 200
    refusal = await _refused_click(stack)
    assert "does not belong to this request" in refusal.text
    _assert_nothing_changed(stack, confirmation)
    _assert_no_traceback_to_slack(stack)


@pytest.mark.parametrize("with_message", [True, False], ids=["with-message-copy", "no-message-copy"])
async def test_value_naming_another_operation_changes_nothing(stack: LocalStack, with_message: bool) -> None:
    """Clicking Delete on the first confirmation with the second one's op id approves neither."""
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    first = await _confirmation(stack, SEED_VCO_HANGZHOU)
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_BGP}")
    second = await _confirmation(stack, SEED_VCO_HANGZHOU_BGP)
    assert _op_id(first) != _op_id(second)

    edited = _click_payload(stack, first, value=_op_id(second), with_message=with_message)
    reply = await _post_signed(stack, _form(edited))
    assert reply.status_code == 200
    await _refused_click(stack)
    _assert_nothing_changed(stack, first, second)
    ops = await stack.bot.app.store.list_operations()
    assert {op.state.value for op in ops} == {"awaiting_approval"}


async def test_the_agent_click_with_an_edited_value_is_refused(stack: LocalStack) -> None:
    """The same attack through the fake Slack client: Cancel on one message, value of the other."""
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    first = await _confirmation(stack, SEED_VCO_HANGZHOU)
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_BGP}")
    second = await _confirmation(stack, SEED_VCO_HANGZHOU_BGP)
    reply = await stack.agent.click(ALICE, CHANNEL, first.ts, ActionId.CANCEL, _op_id(second))
    assert reply.status == 200
    await _refused_click(stack, ALICE)
    _assert_nothing_changed(stack, first, second)


@pytest.mark.parametrize(
    "value",
    ["x" * 3000, None, 12345, {"op": "x"}, ["a"], "", "../../etc/passwd", "a b", "é" * 10],
    ids=["3000-chars", "null", "number", "object", "list", "empty", "path", "space", "non-ascii"],
)
async def test_malformed_values_change_nothing(stack: LocalStack, value: Any) -> None:
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    reply = await _post_signed(stack, _form(_click_payload(stack, confirmation, value=value)))
    assert reply.status_code == 200
    refusal = await _refused_click(stack)
    assert len(refusal.text) < 300  # the value is not echoed back
    _assert_nothing_changed(stack, confirmation)
    _assert_no_traceback_to_slack(stack)


@pytest.mark.parametrize(
    "body",
    [
        "payload=not%20json",
        "payload=%7B%22type%22%3A",  # truncated JSON
        "payload=%5B1%2C2%5D",  # JSON, but a list
        "payload=%22block_actions%22",  # JSON, but a string
        "payload=null",
        "payload=",
        "[1, 2]",
        '{"type": "block_actions", "actions": "nope"}',
        '{"type": "block_actions", "actions": []}',
        '{"type": "block_actions", "actions": [1]}',
        '{"type": "block_actions", "actions": [{"value": "x"}]}',
        '{"type": "block_actions", "user": 5, "actions": [{"action_id": "vpn-delete-approve"}]}',
        '{"type": "block_actions", "channel": [1], "actions": [{"action_id": "vpn-delete-approve"}]}',
        '{"type": "block_actions", "authorizations": "x", "actions": [{"action_id": "vpn-delete-approve"}]}',
        "payload=" + "%7B%22type%22%3A%22block_actions%22%2C%22user%22%3Atrue%7D",
    ],
    ids=[
        "not-json",
        "truncated",
        "list",
        "string",
        "null",
        "empty",
        "raw-list",
        "actions-not-a-list",
        "actions-empty",
        "action-not-an-object",
        "action-without-id",
        "user-a-number",
        "channel-a-list",
        "authorizations-a-string",
        "user-a-bool",
    ],
)
async def test_broken_payloads_get_a_client_error_and_change_nothing(stack: LocalStack, body: str) -> None:
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    with all_logs() as logs:
        reply = await _post_signed(stack, body)
    assert reply.status_code < 500
    assert "Traceback" not in reply.text
    assert not any("Traceback" in text for text in logs.lines)
    _assert_nothing_changed(stack, confirmation)
    _assert_no_traceback_to_slack(stack)


async def test_unknown_action_id_changes_nothing(stack: LocalStack) -> None:
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    payload = _click_payload(
        stack, confirmation, action_id="vpn-delete-everything", value=_op_id(confirmation)
    )
    reply = await _post_signed(stack, _form(payload))
    assert reply.status_code < 500
    assert "Traceback" not in reply.text
    _assert_nothing_changed(stack, confirmation)
    _assert_no_traceback_to_slack(stack)
    # The real button still works afterwards.
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: "eleted" in _all_text(stack.slack.state.message(CHANNEL, confirmation.ts) or confirmation),
        timeout=15,
        what="deletion after the real click",
    )


# --- signatures and sizes -----------------------------------------------------------------------


async def test_rejected_requests_are_not_logged_with_their_body(stack: LocalStack) -> None:
    """Bad signature or a stale timestamp: 401, nothing done, and the body never reaches a log line."""
    canary = "vco-hostilecanary4242"
    with all_logs() as logs:
        forged = await stack.agent.slash_command(
            ALICE, CHANNEL, f"delete {canary} cn-hangzhou", signature="v0=" + "1" * 64
        )
        stale = await stack.agent.slash_command(
            ALICE, CHANNEL, f"delete {canary} cn-hangzhou", timestamp=int(time.time()) - 5 * 60 - 30
        )
        click = {"type": "block_actions", "actions": [{"action_id": ActionId.APPROVE, "value": canary}]}
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            unsigned_click = await client.post(
                stack.bot.events_url,
                content=_form(click),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
    assert forged.status == 401
    assert stale.status == 401
    assert unsigned_click.status_code == 401
    assert canary not in forged.body + stale.body + unsigned_click.text
    assert logs.lines, "the rejection itself should be logged"
    for text in logs.lines:
        assert canary not in text, text
        assert "/response/" not in text, text
    assert stack.vpc.state.requests == []
    assert stack.slack.state.api_calls == []
    assert stack.slack.state.ephemerals(ALICE) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_bodies_are_rejected_without_reading_them_all(
    stack: LocalStack, chunked: bool
) -> None:
    """2 MB is refused (413 or 401), quickly, whether the size is announced or streamed."""
    size = 2 * 1024 * 1024
    body = b"payload=" + b"A" * (size - 8)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64,
    }
    started = time.monotonic()
    with all_logs() as logs:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            try:
                reply = await client.post(
                    stack.bot.events_url, content=stream() if chunked else body, headers=headers
                )
            except httpx.WriteError:
                reply = None  # the server answered and closed before the client finished sending
    assert time.monotonic() - started < 5
    if reply is not None:
        assert reply.status_code in (401, 413)
    assert not any("A" * 100 in text for text in logs.lines)
    assert stack.slack.state.api_calls == []
    # The bot is still healthy afterwards.
    reply2 = await stack.agent.slash_command(ALICE, CHANNEL, "help")
    assert reply2.status == 200


async def test_a_5000_char_command_gets_a_short_usage_reply(stack: LocalStack) -> None:
    text = "delete " + "vco-" + "z" * 4989
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200
    assert len(reply.body) < 3000
    assert "z" * 50 not in reply.body
    assert "too long" in reply.body
    assert reply.json()["response_type"] == "ephemeral"
    assert stack.vpc.state.requests == []


# --- mrkdwn injection ---------------------------------------------------------------------------


async def test_hostile_connection_name_is_shown_escaped(stack: LocalStack) -> None:
    """A Name with a channel ping, a mention and a link renders as text everywhere: no ping, no link."""
    stack.vpc.state.connections[SEED_VCO_HANGZHOU].name = HOSTILE_NAME
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    texts = _mrkdwn_texts(confirmation)  # a snapshot: the stand-in edits the message in place later
    assert all("<@U0BOB>" not in t for t in texts)  # only the hostile name tried to mention bob
    assert any("&lt;!channel&gt; &amp; &lt;@U0BOB&gt; &lt;https://evil|click&gt;" in t for t in texts)

    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: "eleted" in _all_text(stack.slack.state.message(CHANNEL, confirmation.ts) or confirmation),
        timeout=15,
        what="deletion",
    )
    every = [m for m in stack.slack.state.all_messages(CHANNEL)]
    versions = [(m.text, m.blocks) for m in every] + [
        (r.text, list(r.blocks)) for m in every for r in m.edits
    ]
    for text, blocks in versions:
        probe = Message(channel=CHANNEL, ts="1.0", text=text, blocks=blocks, user="U0VPNBOT")
        for mrkdwn in _mrkdwn_texts(probe):
            assert "<!channel>" not in mrkdwn
            assert "<!" not in mrkdwn.replace("<!subteam^", "")
            assert "<https://evil" not in mrkdwn
            # bob is mentioned only where the bot says he approved it.
            assert "<@U0BOB>" not in mrkdwn.replace("Approved by <@U0BOB>", "")


@pytest.mark.parametrize(
    "text",
    [
        "delete <!here>",
        "delete <!channel> cn-hangzhou",
        "delete <@U0BOB>",
        "delete <https://evil|click>",
        "<!everyone>",
        "history <!here>",
        "delete vco-abcd1234 <!here>",
    ],
)
async def test_pings_in_the_command_text_are_not_echoed_live(stack: LocalStack, text: str) -> None:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200
    body = reply.json()
    assert "Usage" in json.dumps(body)
    shown = [body["text"]] + [b["text"]["text"] for b in body["blocks"] if "text" in b]
    for mrkdwn in shown:
        assert "<!" not in mrkdwn
        assert "<@" not in mrkdwn
        assert "<http" not in mrkdwn
    assert stack.slack.state.messages(CHANNEL) == []
