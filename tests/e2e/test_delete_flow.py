"""/vpn delete end to end: the real bot over HTTP, Slack-signed requests, the VPC sandbox."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bot.cloud.codes import ERROR_TABLE
from bot.domain import OpState
from bot.errors import RetryClass
from bot.sandbox.local import LocalStack
from bot.sandbox.slack import find_button
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import (
    SEED_REGION_OTHER,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_LOCKED,
    SEED_VCO_SHANGHAI,
    SEED_VPN_HANGZHOU,
)
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text as _all_text
from .support import deny
from .support import has_buttons as _has_buttons


def _button_value(message: Message, action_id: str) -> str:
    found = find_button(message.blocks, action_id)
    assert found is not None
    return str(found[1]["value"])


async def _confirmation(stack: LocalStack, vco_id: str) -> Message:
    """Wait for the confirmation of ``vco_id`` in the channel."""

    def found() -> Message | None:
        for message in stack.slack.state.messages(CHANNEL):
            if vco_id in _all_text(message) and _has_buttons(message):
                return message
        return None

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id}")


async def _request(stack: LocalStack, text: str, *, user: str = ALICE) -> None:
    reply = await stack.agent.slash_command(user, CHANNEL, text)
    assert reply.status == 200, reply.body


def _deletes(stack: LocalStack) -> list[object]:
    return [r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection"]


async def _final_parent(stack: LocalStack, ts: str, needle: str) -> Message:
    def done() -> Message | None:
        message = stack.slack.state.message(CHANNEL, ts)
        return message if message is not None and needle in _all_text(message) else None

    return await stack.slack.state.wait_for(done, timeout=15, what=f"parent saying {needle!r}")


async def test_happy_path_deletes_and_reports_in_thread(stack: LocalStack) -> None:
    """Request, approve, follow the gateway: the connection is gone and the thread tells each step."""
    await _request(stack, f"delete {SEED_VCO_HANGZHOU} cn-hangzhou")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    text = _all_text(confirmation)
    assert SEED_VPN_HANGZHOU in text  # the gateway is named
    assert f"<@{ALICE}>" in text  # who asked
    delete_button = next(e for b in confirmation.blocks if b.get("type") == "actions" for e in b["elements"])
    assert delete_button["style"] == "danger"
    assert "confirm" in delete_button

    reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    assert reply.status == 200

    parent = await _final_parent(stack, confirmation.ts, "eleted")
    assert not _has_buttons(parent)
    assert f"<@{BOB}>" in _all_text(parent)
    assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections

    thread = stack.slack.state.thread(CHANNEL, confirmation.ts)
    thread_text = "\n".join(_all_text(m) for m in thread)
    accepted = [
        r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection" and r.outcome == "ok"
    ]
    assert len(accepted) == 1
    assert "RequestId" in thread_text or "request id" in thread_text.lower()
    assert "updating" in thread_text.lower()
    assert "psk" not in json.dumps([m.blocks for m in stack.slack.state.messages(CHANNEL)]).lower()


async def test_the_bot_keeps_one_connection_to_slack_across_calls(stack: LocalStack) -> None:
    # slack_sdk opens a new session (a new connection, a new TLS handshake) per call unless it is
    # given one; the bot gives it a long-lived session, so its calls reuse a kept-alive connection.
    await _request(stack, f"delete {SEED_VCO_HANGZHOU} cn-hangzhou")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    assert reply.status == 200
    await _final_parent(stack, confirmation.ts, "eleted")

    bot_calls = [c for c in stack.slack.state.api_calls if c.method.startswith("chat.")]
    assert len(bot_calls) >= 4  # the card, its updates, the thread replies
    ports = {c.client_port for c in bot_calls}
    assert None not in ports
    assert len(ports) < len(bot_calls) / 2, ports


async def test_cancel_changes_nothing_in_the_cloud(stack: LocalStack) -> None:
    """Cancel updates the parent and makes no API call; a later Delete click is refused."""
    await _request(stack, f"delete {SEED_VCO_HANGZHOU_BGP}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU_BGP)
    op_id = _button_value(confirmation, ActionId.APPROVE)
    await deny(stack, ALICE, confirmation.ts)
    parent = await _final_parent(stack, confirmation.ts, "ancelled")
    assert not _has_buttons(parent)

    # A client still showing the old buttons: the click changes nothing and says why.
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, op_id, require_button=False)
    await stack.slack.state.wait_for(
        lambda: any("cancel" in m.text.lower() for m in stack.slack.state.ephemerals(BOB)),
        timeout=5,
        what="ephemeral explaining the request was cancelled",
    )
    assert _deletes(stack) == []
    assert SEED_VCO_HANGZHOU_BGP in stack.vpc.state.connections


async def test_not_found_names_id_and_region(stack: LocalStack) -> None:
    """A connection that is not in the region gets an ephemeral reply suggesting the region."""
    await _request(stack, f"delete {SEED_VCO_SHANGHAI} cn-hangzhou")
    reply = await stack.slack.state.wait_for(
        lambda: next((m for m in stack.slack.state.ephemerals(ALICE) if SEED_VCO_SHANGHAI in m.text), None),
        timeout=5,
        what="not-found reply",
    )
    assert "cn-hangzhou" in reply.text
    assert "region" in reply.text.lower()
    assert not any(_has_buttons(m) for m in stack.slack.state.messages(CHANNEL))

    # The same id in its own region works.
    await _request(stack, f"delete {SEED_VCO_SHANGHAI} --region {SEED_REGION_OTHER}")
    await _confirmation(stack, SEED_VCO_SHANGHAI)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "help",
        "delete --region",
        "delete not-an-id",
        f"delete {SEED_VCO_HANGZHOU} cn-hangzhou extra",
        "frobnicate",
    ],
)
async def test_bad_input_gets_usage_and_changes_nothing(stack: LocalStack, text: str) -> None:
    """Missing, malformed or extra arguments get an ephemeral usage reply; nothing is posted."""
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200
    await stack.slack.state.wait_for(
        lambda: any("/vpn delete" in _all_text(m) for m in stack.slack.state.ephemerals(ALICE)),
        timeout=5,
        what="usage reply",
    )
    assert not any(_has_buttons(m) for m in stack.slack.state.messages(CHANNEL))
    assert [r for r in stack.vpc.state.requests if r.action != "DescribeRegions"] == []


async def test_payload_in_command_text_still_works(stack: LocalStack) -> None:
    """Bolt's 'payload' body quirk does not swallow a slash command."""
    reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete vco-payload123 cn-hangzhou")
    assert reply.status == 200
    await stack.slack.state.wait_for(
        lambda: any("vco-payload123" in m.text for m in stack.slack.state.ephemerals(ALICE)),
        timeout=5,
        what="not-found reply for vco-payload123",
    )


async def test_forged_signature_and_stale_timestamp_are_rejected(stack: LocalStack) -> None:
    """Requests not signed by Slack, or replayed after 5 minutes, get 401 and do nothing."""
    forged = await stack.agent.slash_command(
        ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}", signature="v0=" + "0" * 64
    )
    stale = await stack.agent.slash_command(
        ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}", timestamp=int(time.time()) - 6 * 60
    )
    assert forged.status == 401
    assert stale.status == 401
    assert stack.vpc.state.requests == []
    assert stack.slack.state.messages(CHANNEL) == []


async def test_ack_within_three_seconds_when_cloud_is_slow(stack: LocalStack) -> None:
    """The slash command is acknowledged at once even when DescribeVpnConnection takes 5 s."""
    stack.vpc.state.faults.add(action="DescribeVpnConnection", latency=5.0, times=1)
    started = time.monotonic()
    reply = await asyncio.wait_for(
        stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}"), timeout=3.0
    )
    assert reply.status == 200
    assert time.monotonic() - started < 3.0
    # ...and the confirmation still arrives once the slow call returns.
    await _confirmation(stack, SEED_VCO_HANGZHOU)


async def test_busy_gateway_is_retried_with_a_new_client_token_each_time(stack: LocalStack) -> None:
    """VpnTask.CONFLICT twice, then success: the thread says it sends again; a new token per send.

    Alibaba replays the first answer to a reused token, errors included, so a resend after a
    definite "busy" must carry a new one.
    """
    stack.vpc.state.faults.add(action="DeleteVpnConnection", code="VpnTask.CONFLICT", times=2)
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    await _final_parent(stack, confirmation.ts, "eleted")

    deletes = _deletes(stack)
    assert len(deletes) == 3
    assert len({r.client_token for r in deletes}) == 3  # type: ignore[attr-defined]
    assert len({r.nonce for r in deletes}) == 3  # type: ignore[attr-defined]
    thread_text = "\n".join(_all_text(m) for m in stack.slack.state.thread(CHANNEL, confirmation.ts))
    assert "sending again" in thread_text.lower()
    assert "(attempt 2 of " in thread_text
    assert "(attempt 3 of " in thread_text


# Every code in the error table, as Alibaba Cloud would answer DeleteVpnConnection. Left out:
# Credentials.Unavailable, Sts.Unreachable and Account.NotConfigured (raised by the bot itself before
# any request; tests/e2e/test_accounts.py covers the last two) and Transport.Timeout (a read timeout
# takes the client's full timeout; the client's own tests cover it).
_OURS = ("Credentials.Unavailable", "Sts.Unreachable", "Account.NotConfigured", "Transport.Timeout")
_INJECTABLE = [c for c in ERROR_TABLE if c not in _OURS]
_FINAL = [c for c in _INJECTABLE if ERROR_TABLE[c].retry is RetryClass.NEVER]
_RETRIED = [c for c in _INJECTABLE if ERROR_TABLE[c].retry is not RetryClass.NEVER]


@pytest.mark.parametrize("code", _FINAL)
async def test_final_errors_become_friendly_failures(stack: LocalStack, code: str) -> None:
    """A non-retryable code ends the operation as failed with the friendly reason, in parent and thread."""
    stack.vpc.state.faults.add(action="DeleteVpnConnection", code=code, times=1)
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    parent = await _final_parent(stack, confirmation.ts, code)
    info = ERROR_TABLE[code]
    assert info.friendly in _all_text(parent)
    assert info.action in _all_text(parent)
    assert not _has_buttons(parent)
    thread_text = "\n".join(_all_text(m) for m in stack.slack.state.thread(CHANNEL, confirmation.ts))
    assert code in thread_text
    assert SEED_VCO_HANGZHOU in stack.vpc.state.connections
    ops = await stack.bot.app.store.list_operations()
    assert [op.state for op in ops] == [OpState.FAILED]
    assert len(_deletes(stack)) == 1  # final means final: never retried


def _definite(code: str) -> bool:
    """Alibaba answered and refused (a 4xx): nothing was done under that token."""
    status = ERROR_TABLE[code].http_status
    return not code.startswith("Transport.") and status is not None and status < 500


@pytest.mark.parametrize("code", _RETRIED)
async def test_retryable_errors_are_retried_and_the_delete_succeeds(stack: LocalStack, code: str) -> None:
    """A retryable code is retried and the deletion ends deleted.

    After a definite rejection (busy, throttled) the workflow resends with a new ClientToken and
    says so in the thread; after an ambiguous failure (5xx, no usable answer) the client resends
    the same token at once, since the first call may have been carried out.
    """
    stack.vpc.state.faults.add(action="DeleteVpnConnection", code=code, times=1)
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    await _final_parent(stack, confirmation.ts, "Deleted")
    deletes = _deletes(stack)
    assert len(deletes) == 2
    tokens = {r.client_token for r in deletes}  # type: ignore[attr-defined]
    thread_text = "\n".join(_all_text(m) for m in stack.slack.state.thread(CHANNEL, confirmation.ts))
    if _definite(code):
        assert len(tokens) == 2
        assert "sending again" in thread_text.lower()
        assert "(attempt 2 of " in thread_text
    else:
        assert len(tokens) == 1
        assert "sending again" not in thread_text.lower()


async def test_financially_locked_gateway_fails_with_top_up_advice(stack: LocalStack) -> None:
    """The sandbox's FinancialLocked gateway refuses; the reply says the account owner must top up."""
    await _request(stack, f"delete {SEED_VCO_LOCKED}")
    confirmation = await _confirmation(stack, SEED_VCO_LOCKED)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    parent = await _final_parent(stack, confirmation.ts, "VpnGateway.FinancialLocked")
    assert "account owner" in _all_text(parent).lower()
