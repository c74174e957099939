"""Who may do what, end to end: approvers, user groups, requesters, channels, regions, four-eyes, cancel.

Every refusal is an ephemeral reply to the person who acted, names who may act instead, and
changes nothing: no message in the channel, no edit of the confirmation, no DeleteVpnConnection.
"""

from __future__ import annotations

import contextlib
from typing import Any

from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_SHANGHAI
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text as _all_text
from .support import deny, local_stack
from .support import has_buttons as _has_buttons

REFUSED = ":no_entry:"


def running(sqlite_url: str, **settings: Any) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    """One bot replica with these policy settings (by Settings field name)."""
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings)


def _deletes(stack: LocalStack) -> list[object]:
    return [r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection"]


async def _refusal(stack: LocalStack, user: str, channel: str = CHANNEL) -> Message:
    """Wait for the ephemeral refusal shown to ``user``."""

    def found() -> Message | None:
        return next((m for m in stack.slack.state.ephemerals(user, channel) if REFUSED in m.text), None)

    return await stack.slack.state.wait_for(found, timeout=5, what=f"refusal for {user}")


async def _confirmation(stack: LocalStack, vco_id: str) -> Message:
    def found() -> Message | None:
        return next(
            (m for m in stack.slack.state.messages(CHANNEL) if vco_id in _all_text(m) and _has_buttons(m)),
            None,
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id}")


async def _request(stack: LocalStack, text: str, *, user: str = ALICE, channel: str = CHANNEL) -> None:
    reply = await stack.agent.slash_command(user, channel, text)
    assert reply.status == 200, reply.body


async def _final_parent(stack: LocalStack, ts: str, needle: str) -> Message:
    def done() -> Message | None:
        message = stack.slack.state.message(CHANNEL, ts)
        return message if message is not None and needle in _all_text(message) else None

    return await stack.slack.state.wait_for(done, timeout=15, what=f"parent saying {needle!r}")


def _assert_untouched(stack: LocalStack, confirmation: Message) -> None:
    """The confirmation still offers its buttons, unedited, with no thread; nothing was deleted."""
    current = stack.slack.state.message(CHANNEL, confirmation.ts)
    assert current is not None
    assert not current.edited
    assert _has_buttons(current)
    assert stack.slack.state.thread(CHANNEL, confirmation.ts) == []
    assert stack.slack.state.calls("chat.update") == []
    assert _deletes(stack) == []


def _assert_no_request_went_through(stack: LocalStack) -> None:
    """A refused request posts nothing in any channel and never looks the connection up."""
    for channel in stack.slack.state.channels:
        assert stack.slack.state.messages(channel) == []
    assert stack.slack.state.calls("chat.postMessage") == []
    assert [r.action for r in stack.vpc.state.requests if r.action != "DescribeRegions"] == []


# --- approvers -----------------------------------------------------------------------------------


async def test_approvers_as_user_ids(sqlite_url: str) -> None:
    """Only listed users may click Delete; the refusal names them."""
    async with running(sqlite_url, approvers=[BOB]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)

        await stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _refusal(stack, CAROL)
        assert "not allowed to approve" in refusal.text
        assert f"<@{BOB}>" in refusal.text  # who may act instead
        assert refusal.visible_to == CAROL
        _assert_untouched(stack, confirmation)

        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await _final_parent(stack, confirmation.ts, "eleted")
        assert len(_deletes(stack)) == 1
        assert stack.slack.state.ephemerals(BOB) == []


async def test_approvers_as_a_user_group(sqlite_url: str) -> None:
    """S0NETADM holds bob: he may approve, carol may not; membership comes from usergroups.users.list."""
    async with running(sqlite_url, approvers=["S0NETADM"]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)

        await stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _refusal(stack, CAROL)
        assert "<!subteam^S0NETADM>" in refusal.text
        _assert_untouched(stack, confirmation)

        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await _final_parent(stack, confirmation.ts, "eleted")
        lookups = stack.slack.state.calls("usergroups.users.list")
        assert lookups
        assert all(c.params.get("usergroup") == "S0NETADM" and c.ok for c in lookups)


async def test_group_lookup_failure_fails_closed(sqlite_url: str) -> None:
    """When Slack cannot say who is in the group, even bob is refused, with a clear reason."""
    async with running(sqlite_url, approvers=["S0NETADM"]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)

        stack.slack.state.fail("usergroups.users.list", "internal_error")
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _refusal(stack, BOB)
        assert "fail closed" in refusal.text
        assert "try again" in refusal.text.lower()
        assert "<!subteam^S0NETADM>" in refusal.text
        _assert_untouched(stack, confirmation)
        assert [c.error for c in stack.slack.state.calls("usergroups.users.list")] == ["internal_error"]

        # Once Slack answers again, the same click goes through.
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await _final_parent(stack, confirmation.ts, "eleted")


async def test_missing_usergroups_scope_fails_closed_and_names_the_scope(sqlite_url: str) -> None:
    """An app installed without usergroups:read refuses group members and says which scope is missing."""
    async with running(sqlite_url, approvers=["S0NETADM"]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
        stack.slack.state.scopes = tuple(s for s in stack.slack.state.scopes if s != "usergroups:read")

        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _refusal(stack, BOB)
        assert "`usergroups:read`" in refusal.text
        _assert_untouched(stack, confirmation)


# --- requesters, channels, regions -----------------------------------------------------------------


async def test_requesters_are_limited(sqlite_url: str) -> None:
    """With VPNBOT_REQUESTERS set, carol's request is refused and names who may ask."""
    async with running(sqlite_url, requesters=[ALICE]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}", user=CAROL)
        refusal = await _refusal(stack, CAROL)
        assert "not on the list of people who may request" in refusal.text
        assert f"<@{ALICE}>" in refusal.text
        assert "VPNBOT_REQUESTERS" in refusal.text
        _assert_no_request_went_through(stack)

        await _request(stack, f"delete {SEED_VCO_HANGZHOU}", user=ALICE)
        await _confirmation(stack, SEED_VCO_HANGZHOU)


async def test_command_from_another_channel_is_refused(sqlite_url: str) -> None:
    """With VPNBOT_ALLOWED_CHANNELS set, /vpn in #random is refused and points to the right channel."""
    async with running(sqlite_url, allowed_channels=[CHANNEL]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}", channel="C0RANDOM")
        refusal = await _refusal(stack, ALICE, "C0RANDOM")
        assert f"<#{CHANNEL}>" in refusal.text
        assert "VPNBOT_ALLOWED_CHANNELS" in refusal.text
        _assert_no_request_went_through(stack)


async def test_region_outside_the_list_is_refused(sqlite_url: str) -> None:
    """With VPNBOT_ALLOWED_REGIONS set, a request in cn-shanghai is refused and lists the allowed ones."""
    async with running(sqlite_url, allowed_regions=["cn-hangzhou"]) as stack:
        await _request(stack, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
        refusal = await _refusal(stack, ALICE)
        assert "`cn-shanghai`" in refusal.text
        assert "Allowed: `cn-hangzhou`" in refusal.text
        assert "VPNBOT_ALLOWED_REGIONS" in refusal.text
        _assert_no_request_went_through(stack)


# --- four-eyes and cancel -------------------------------------------------------------------------


async def test_four_eyes_refuses_the_requesters_own_click(sqlite_url: str) -> None:
    """Alice is an approver but asked herself: her Delete is refused, bob's goes through."""
    async with running(sqlite_url, approvers=[ALICE, BOB], require_second_approver=True) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)

        await stack.agent.click(ALICE, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _refusal(stack, ALICE)
        assert "four-eyes" in refusal.text
        assert f"<@{BOB}>" in refusal.text
        assert f"<@{ALICE}>" not in refusal.text  # she is not told to ask herself
        _assert_untouched(stack, confirmation)

        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        parent = await _final_parent(stack, confirmation.ts, "eleted")
        assert f"Approved by <@{BOB}>" in _all_text(parent)
        assert len(_deletes(stack)) == 1


async def test_who_may_cancel(sqlite_url: str) -> None:
    """Carol (neither requester nor approver) may not cancel; bob (approver) may; so may the requester."""
    async with running(sqlite_url, approvers=[BOB]) as stack:
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        first = await _confirmation(stack, SEED_VCO_HANGZHOU)

        # Refused at the click: no reason form opens for someone who may not cancel.
        await stack.agent.click(CAROL, CHANNEL, first.ts, ActionId.CANCEL)
        refusal = await _refusal(stack, CAROL)
        assert not any(v.get("callback_id") == "vpn-cancel" for v in stack.slack.state.views.values())
        assert f"Only <@{ALICE}> (who asked) or an approver can cancel" in refusal.text
        assert f"<@{BOB}>" in refusal.text
        _assert_untouched(stack, first)

        await deny(stack, BOB, first.ts)
        parent = await _final_parent(stack, first.ts, "ancelled")
        assert f"<@{BOB}>" in _all_text(parent)

        await _request(stack, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
        second = await _confirmation(stack, SEED_VCO_SHANGHAI)
        await deny(stack, ALICE, second.ts)
        await _final_parent(stack, second.ts, "ancelled")

        assert _deletes(stack) == []
        assert SEED_VCO_HANGZHOU in stack.vpc.state.connections
        assert SEED_VCO_SHANGHAI in stack.vpc.state.connections


async def test_history_follows_the_request_and_approve_lists(sqlite_url: str) -> None:
    """With both lists set, only requesters and approvers may read /vpn history, and only in allowed channels."""
    async with running(sqlite_url, requesters=[ALICE], approvers=[BOB], allowed_channels=[CHANNEL]) as stack:
        await _request(stack, "history", user=CAROL)
        refusal = await _refusal(stack, CAROL)
        assert "history" in refusal.text
        assert f"<@{ALICE}>" in refusal.text or f"<@{BOB}>" in refusal.text

        await _request(stack, "history", user=BOB, channel="C0RANDOM")
        await _refusal(stack, BOB, "C0RANDOM")

        await _request(stack, "history", user=BOB)
        await stack.slack.state.wait_for(
            lambda: any(REFUSED not in m.text for m in stack.slack.state.ephemerals(BOB, CHANNEL)),
            timeout=5,
            what="the history reply for an approver",
        )
