"""Quorums (issue 26, points 2 and 5), end to end over HTTP: VPNBOT_APPROVAL_RULES on real replicas.

Two approvals from different people, or one from each of two user groups (membership from the Slack
stand-in's usergroups.users.list); the last approval needed starts the deletion exactly once whatever
the clicks and replicas; the requester never counts; nobody approves twice; an approval can be
withdrawn until the rule is met. The card names the rule and shows the progress; every refusal is an
ephemeral reply that names the rule.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import (
    all_text,
    has_buttons,
    local_stack,
    op_id_of,
    parent_updates,
    valid_block_kit,
    wait_confirmation,
    wait_parent,
)

DAVE = "U0DAVE"
ERIN = "U0ERIN"
FRANK = "U0FRANK"
REFUSED = ":no_entry:"


def running(
    database_url: str, *, replicas: int = 1, **settings: Any
) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(database_url, update_seconds=0.5, replicas=replicas, settings=settings)


def _buttons(message: Message) -> list[str]:
    return [
        str(element.get("action_id"))
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def _block_text(message: Message, block_id: str) -> str:
    found = [b for b in message.blocks if b.get("block_id") == block_id]
    assert len(found) == 1, f"no {block_id} block in {message.blocks}"
    text = found[0].get("text") or found[0]["elements"][0]
    return str(text["text"])


def _deletes(stack: LocalStack) -> list[object]:
    """Every DeleteVpnConnection the sandbox saw (accepted or not)."""
    return [r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection"]


async def _request(stack: LocalStack) -> Message:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    assert reply.status == 200, reply.body
    confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
    valid_block_kit(confirmation)
    return confirmation


async def _click(
    stack: LocalStack, user: str, ts: str, action: ActionId, *, replica: int = 0, value: str | None = None
) -> None:
    """A click on the card; with ``value``, on a stale copy that still showed the button."""
    reply = await stack.agents[replica].click(user, CHANNEL, ts, action, value, require_button=value is None)
    assert reply.status == 200, reply.body


async def _told(stack: LocalStack, user: str, needle: str) -> str:
    """Wait for the ephemeral reply to ``user`` containing ``needle`` (valid Block Kit); return its text."""

    def found() -> Message | None:
        return next((m for m in stack.slack.state.ephemerals(user, CHANNEL) if needle in all_text(m)), None)

    reply = await stack.slack.state.wait_for(found, timeout=10, what=f"a reply to {user} saying {needle!r}")
    valid_block_kit(reply)
    return all_text(reply)


async def _card(stack: LocalStack, ts: str, needle: str) -> Message:
    card = await wait_parent(stack.slack.state, ts, needle, within=10)
    valid_block_kit(card)
    return card


async def _five_clicks_on_two_replicas(stack: LocalStack) -> None:
    state = stack.slack.state
    state.add_user(DAVE, "dave")
    confirmation = await _request(stack)
    ts = confirmation.ts
    op_id = op_id_of(confirmation)
    rule = _block_text(confirmation, BlockId.APPROVAL_RULE)
    assert "2 approvals" in rule, rule
    assert "the requester cannot approve" in rule, rule
    assert "*0 of 2 approvals*" in _block_text(confirmation, BlockId.APPROVALS)
    assert ActionId.WITHDRAW.value not in _buttons(confirmation)  # nothing to withdraw yet

    # Bob's approval counts and shows on the card; nothing is deleted yet.
    await _click(stack, BOB, ts, ActionId.APPROVE, replica=1)
    card = await _card(stack, ts, f"1 of 2 approvals*: <@{BOB}> ✓")
    progress = _block_text(card, BlockId.APPROVALS)
    assert "waiting for one more from" in progress, progress
    assert has_buttons(card)
    assert ActionId.WITHDRAW.value in _buttons(card)
    assert _deletes(stack) == []

    # Five clicks at once on both replicas: Bob again, Carol twice, Dave, and Alice (the requester).
    clicks = [(BOB, 0), (CAROL, 1), (DAVE, 0), (CAROL, 0), (ALICE, 1)]
    await asyncio.gather(
        *(_click(stack, user, ts, ActionId.APPROVE, replica=r, value=op_id) for user, r in clicks)
    )

    final = await wait_parent(state, ts, "Deleted", within=20)
    valid_block_kit(final)
    assert not has_buttons(final)
    [op] = await stack.bot.app.store.list_operations()
    assert op.state is OpState.DELETED
    second = op.approver_id
    assert second in (CAROL, DAVE)
    assert [a.user_id for a in op.approvals] == [BOB, second]
    assert f"Approved by <@{BOB}> and <@{second}>" in all_text(final)
    # The last approval needed started the deletion exactly once.
    assert len(_deletes(stack)) == 1
    assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections

    # The card showed the progress before it said what happened.
    updates = parent_updates(state, ts)
    assert any("1 of 2 approvals" in u for u in updates), updates

    # Each approval recorded and audited, in order; the refusals audited as refusals.
    audit = await stack.bot.app.store.recent_audit(op_id=op_id, limit=50)
    approved = sorted((e for e in audit if e.action == "approved"), key=lambda e: e.at)
    assert [(e.actor_id, e.detail) for e in approved] == [(BOB, "1 of 2"), (second, "2 of 2")]
    assert any(e.action == "refused" and e.actor_id == ALICE for e in audit)
    assert len(await stack.bot.app.store.approvals_of(op_id=op_id)) == 2

    # Everybody else is told why, privately, and the rule is named.
    # Bob's second click: refused as a repeat, or (if it came after the last approval) as closed.
    await _told(stack, BOB, "already approved")
    requester = await _told(stack, ALICE, "never counts")
    assert "2 approvals" in requester, requester
    loser = DAVE if second == CAROL else CAROL
    await _told(stack, loser, "already approved by")


async def test_two_of_n_five_clicks_on_two_replicas_delete_once_sqlite(sqlite_url: str) -> None:
    """*=2 on two replicas sharing SQLite: Bob, then five clicks at once; one DeleteVpnConnection."""
    async with running(sqlite_url, replicas=2, approvers=[BOB, CAROL, DAVE], approval_rules="*=2") as stack:
        await _five_clicks_on_two_replicas(stack)


@pytest.mark.postgres
async def test_two_of_n_five_clicks_on_two_replicas_delete_once_postgres(postgres_url: str) -> None:
    """The same on two replicas sharing PostgreSQL (the approval counts under a row lock)."""
    async with running(postgres_url, replicas=2, approvers=[BOB, CAROL, DAVE], approval_rules="*=2") as stack:
        await _five_clicks_on_two_replicas(stack)


async def test_group_quorum_takes_one_approver_from_each_group(sqlite_url: str) -> None:
    """S0NETOPS+S0SECURITY: Bob covers netops; Frank (netops only) would not count; Dave (both) completes it."""
    async with running(sqlite_url, approvers=[BOB], approval_rules="*=S0NETOPS+S0SECURITY") as stack:
        state = stack.slack.state
        for user in (DAVE, ERIN, FRANK):
            state.add_user(user, user.lower())
        state.set_usergroup("S0NETOPS", [BOB, DAVE, FRANK], handle="netops")
        state.set_usergroup("S0SECURITY", [CAROL, DAVE], handle="security")
        confirmation = await _request(stack)
        ts = confirmation.ts
        rule = _block_text(confirmation, BlockId.APPROVAL_RULE)
        assert "one approval from each of <!subteam^S0NETOPS> and <!subteam^S0SECURITY>" in rule, rule

        # Erin is in neither group: refused, with the rule.
        await _click(stack, ERIN, ts, ActionId.APPROVE)
        refusal = await _told(stack, ERIN, REFUSED)
        assert "none of the user groups" in refusal, refusal
        assert "<!subteam^S0SECURITY>" in refusal, refusal

        await _click(stack, BOB, ts, ActionId.APPROVE)
        card = await _card(stack, ts, f"<@{BOB}> ✓ (<!subteam^S0NETOPS>)")
        progress = _block_text(card, BlockId.APPROVALS)
        assert "covered: <!subteam^S0NETOPS>; waiting for one from <!subteam^S0SECURITY>" in progress, (
            progress
        )
        assert progress.endswith("<!subteam^S0SECURITY>"), progress

        # Frank is only in netops, which Bob covers: no assignment gives both of them a group.
        await _click(stack, FRANK, ts, ActionId.APPROVE)
        assert "would not count" in await _told(stack, FRANK, REFUSED)
        assert _deletes(stack) == []

        # Dave is in both: he counts for security, the group left.
        await _click(stack, DAVE, ts, ActionId.APPROVE)
        final = await wait_parent(state, ts, "Deleted", within=20)
        valid_block_kit(final)
        [op] = await stack.bot.app.store.list_operations()
        assert [(a.user_id, a.group) for a in op.approvals] == [(BOB, "S0NETOPS"), (DAVE, "S0SECURITY")]
        assert len(_deletes(stack)) == 1
        lookups = state.calls("usergroups.users.list")
        assert {c.params.get("usergroup") for c in lookups} >= {"S0NETOPS", "S0SECURITY"}


async def test_group_quorum_matches_dave_then_bob(sqlite_url: str) -> None:
    """Dave (netops and security) approves first; Bob (netops only) is not refused: together they cover both."""
    async with running(sqlite_url, approvers=[BOB], approval_rules="*=S0NETOPS+S0SECURITY") as stack:
        state = stack.slack.state
        state.add_user(DAVE, "dave")
        state.set_usergroup("S0NETOPS", [BOB, DAVE], handle="netops")
        state.set_usergroup("S0SECURITY", [CAROL, DAVE], handle="security")
        confirmation = await _request(stack)
        ts, op_id = confirmation.ts, op_id_of(confirmation)

        await _click(stack, DAVE, ts, ActionId.APPROVE)
        card = await _card(stack, ts, f"<@{DAVE}> ✓ (<!subteam^S0NETOPS>)")
        progress = _block_text(card, BlockId.APPROVALS)
        assert "covered: <!subteam^S0NETOPS>; waiting for one from <!subteam^S0SECURITY>" in progress, (
            progress
        )
        # The card says a netops approver still counts: Dave would then count for security.
        assert f"or from <!subteam^S0NETOPS> (<@{DAVE}> then counts for another group)" in progress, progress
        assert _deletes(stack) == []

        await _click(stack, BOB, ts, ActionId.APPROVE)
        final = await wait_parent(state, ts, "Deleted", within=20)
        valid_block_kit(final)
        assert not has_buttons(final)
        [op] = await stack.bot.app.store.list_operations()
        assert op.state is OpState.DELETED
        assert op.approver_id == BOB
        assert [(a.user_id, a.group) for a in op.approvals] == [(DAVE, "S0SECURITY"), (BOB, "S0NETOPS")]
        stored = await stack.bot.app.store.approvals_of(op_id=op_id)
        assert {(a.user_id, a.group) for a in stored} == {(DAVE, "S0SECURITY"), (BOB, "S0NETOPS")}
        assert len(_deletes(stack)) == 1
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
        assert not [m for m in state.ephemerals(BOB, CHANNEL) if REFUSED in all_text(m)]


async def test_withdraw_until_the_rule_is_met(sqlite_url: str) -> None:
    """Bob withdraws his approval (the card counts down); after the rule is met withdrawing is refused."""
    async with running(sqlite_url, approvers=[BOB, CAROL], approval_rules="*=2") as stack:
        state = stack.slack.state
        confirmation = await _request(stack)
        ts, op_id = confirmation.ts, op_id_of(confirmation)

        await _click(stack, BOB, ts, ActionId.APPROVE)
        await _card(stack, ts, "1 of 2 approvals")
        await _click(stack, BOB, ts, ActionId.WITHDRAW)
        card = await _card(stack, ts, "0 of 2 approvals")
        assert ActionId.WITHDRAW.value not in _buttons(card)
        assert has_buttons(card)
        assert await stack.bot.app.store.approvals_of(op_id=op_id) == []

        # Carol has nothing to withdraw (a stale copy of the card still had the button).
        await _click(stack, CAROL, ts, ActionId.WITHDRAW, value=op_id)
        assert "no approval of yours to withdraw" in await _told(stack, CAROL, REFUSED)

        # Bob approves again and Carol completes it: deleted once.
        await _click(stack, BOB, ts, ActionId.APPROVE)
        await _card(stack, ts, "1 of 2 approvals")
        await _click(stack, CAROL, ts, ActionId.APPROVE)
        await wait_parent(state, ts, "Deleted", within=20)
        assert len(_deletes(stack)) == 1

        # After the rule was met, withdrawing is refused and changes nothing.
        await _click(stack, BOB, ts, ActionId.WITHDRAW, value=op_id)
        refusal = await _told(stack, BOB, "can no longer be withdrawn")
        assert "2 approvals" in refusal, refusal
        [op] = await stack.bot.app.store.list_operations()
        assert op.state is OpState.DELETED
        audit = await stack.bot.app.store.recent_audit(op_id=op_id, limit=50)
        assert [e.detail for e in audit if e.action == "approval_withdrawn"] == ["0 of 2 left"]
        assert sorted(e.detail for e in audit if e.action == "approved") == ["1 of 2", "1 of 2", "2 of 2"]


async def test_requester_never_counts_even_for_one_approval(sqlite_url: str) -> None:
    """A rule of one (prod scope absent, * given): Alice's own click is refused with the rule; Bob's deletes."""
    async with running(sqlite_url, approvers=[ALICE, BOB], approval_rules="*=1") as stack:
        confirmation = await _request(stack)
        ts = confirmation.ts
        await _click(stack, ALICE, ts, ActionId.APPROVE)
        refusal = await _told(stack, ALICE, REFUSED)
        assert "never counts" in refusal, refusal
        assert "VPNBOT_APPROVAL_RULES" in refusal, refusal
        assert _deletes(stack) == []
        await _click(stack, BOB, ts, ActionId.APPROVE)
        final = await wait_parent(stack.slack.state, ts, "Deleted", within=20)
        assert f"Approved by <@{BOB}>" in all_text(final)
        assert len(_deletes(stack)) == 1


async def test_approvals_survive_a_restart(sqlite_url: str) -> None:
    """Bob approves on a replica that then stops; Carol's approval on a new replica completes the rule."""
    async with running(sqlite_url, approvers=[BOB, CAROL], approval_rules="*=2") as stack:
        confirmation = await _request(stack)
        ts = confirmation.ts
        await _click(stack, BOB, ts, ActionId.APPROVE)
        await _card(stack, ts, "1 of 2 approvals")
        gone = stack.replicas.pop(0)
        await stack.agents.pop(0).aclose()
        await gone.aclose()
        await stack.add_replica()
        # Bob's approval is in the database, not in the stopped process: a repeat is still refused.
        await _click(stack, BOB, ts, ActionId.APPROVE)
        assert "already approved this request" in await _told(stack, BOB, REFUSED)
        await _click(stack, CAROL, ts, ActionId.APPROVE)
        final = await wait_parent(stack.slack.state, ts, "Deleted", within=20)
        assert f"Approved by <@{BOB}> and <@{CAROL}>" in all_text(final)
        assert len(_deletes(stack)) == 1


async def test_status_and_home_show_the_progress(sqlite_url: str) -> None:
    """After Bob's approval under *=2, `/vpn status` and Carol's Home tab say 1 of 2 approvals."""
    async with running(sqlite_url, approvers=[BOB, CAROL], approval_rules="*=2") as stack:
        state = stack.slack.state
        confirmation = await _request(stack)
        ts, op_id = confirmation.ts, op_id_of(confirmation)
        await _click(stack, BOB, ts, ActionId.APPROVE)
        await _card(stack, ts, "1 of 2 approvals")

        assert (await stack.agent.slash_command(CAROL, CHANNEL, f"status {op_id}")).status == 200
        status = await _told(stack, CAROL, f"Request `{op_id}`")
        assert f"• *1 of 2 approvals*: <@{BOB}> ✓ — waiting for one more from <@{CAROL}>\n" in status, status

        assert (await stack.agent.open_home(CAROL)).status == 200

        def published() -> dict[str, Any] | None:
            return state.home_views.get(CAROL)

        home = await state.wait_for(published, timeout=10, what="Carol's Home tab")
        View(**{k: v for k, v in home.items() if k not in ("id", "team_id")}).validate_json()
        pending = [
            str(b["text"]["text"]) for b in home["blocks"] if SEED_VCO_HANGZHOU in str(b.get("text", {}))
        ]
        assert any("waiting for approval (1 of 2 approvals)" in t for t in pending), home["blocks"]
