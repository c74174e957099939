"""The store's approvals under a quorum rule: counted once per person, met in one transaction, voided."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from test_store import T0, execute_sql, make_op

from bot.domain import ApprovalOutcome, AuditEntry, Effect, EffectKind, OpState
from bot.store import SCHEMA_VERSION, Store

CARD = Effect(EffectKind.UPDATE_CARD)
CLAIM = ("replica-a", T0 + timedelta(minutes=1))


def _entry(user: str) -> AuditEntry:
    return AuditEntry(at=T0, action="approved", actor_id=user, op_id="op-1", detail="reason: tidy up")


async def _approve(
    store: Store, user: str, *, groups: tuple[str, ...] | None = None, needed: int = 2
) -> ApprovalOutcome:
    result = await store.record_approval(
        "op-1",
        user_id=user,
        groups=groups,
        needed=needed,
        now=T0,
        claim=CLAIM,
        audit_entry=_entry(user),
        progress_effects=[CARD],
        effects=[CARD],
        approver_id=user,
        approved_at=T0,
    )
    return result.outcome


async def test_count_rule_counts_each_person_once_and_the_last_approves(store: Store) -> None:
    await store.create_operation(op=make_op())
    assert await _approve(store, "U0BOB") is ApprovalOutcome.COUNTED
    assert await _approve(store, "U0BOB") is ApprovalOutcome.REPEATED
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.state is OpState.AWAITING_APPROVAL
    assert [a.user_id for a in op.approvals] == ["U0BOB"]

    # Two people at once for the last seat: exactly one of them approves it.
    outcomes = await asyncio.gather(_approve(store, "U0CAROL"), _approve(store, "U0DAVE"))
    assert sorted(outcomes) == sorted([ApprovalOutcome.COMPLETE, ApprovalOutcome.CLOSED])
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.state is OpState.APPROVED
    assert len(op.approvals) == 2
    audit = await store.recent_audit(op_id="op-1")
    assert sorted(e.detail for e in audit) == ["1 of 2; reason: tidy up", "2 of 2; reason: tidy up"]


async def test_group_rule_gives_each_group_one_approver(store: Store) -> None:
    await store.create_operation(op=make_op())
    assert await _approve(store, "U0DAVE", groups=("S0NET", "S0SEC")) is ApprovalOutcome.COUNTED
    assert await _approve(store, "U0ERIN", groups=("S0NET", "S0SEC")) is ApprovalOutcome.COMPLETE
    assert await _approve(store, "U0BOB", groups=("S0NET",)) is ApprovalOutcome.CLOSED
    approvals = await store.approvals_of(op_id="op-1")
    assert {(a.user_id, a.group) for a in approvals} == {("U0DAVE", "S0NET"), ("U0ERIN", "S0SEC")}


async def test_group_rule_matches_dave_then_bob(store: Store) -> None:
    """Dave (both groups) first counts for netops; Bob (netops only) moves him to security and completes it."""
    await store.create_operation(op=make_op())
    assert await _approve(store, "U0DAVE", groups=("S0NET", "S0SEC")) is ApprovalOutcome.COUNTED
    [dave] = await store.approvals_of(op_id="op-1")
    assert (dave.group, dave.groups) == ("S0NET", ("S0NET", "S0SEC"))
    assert await _approve(store, "U0BOB", groups=("S0NET",)) is ApprovalOutcome.COMPLETE
    approvals = await store.approvals_of(op_id="op-1")
    assert {(a.user_id, a.group) for a in approvals} == {("U0DAVE", "S0SEC"), ("U0BOB", "S0NET")}
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.state is OpState.APPROVED
    assert {(a.user_id, a.group, a.groups) for a in op.approvals} == {
        ("U0DAVE", "S0SEC", ("S0NET", "S0SEC")),
        ("U0BOB", "S0NET", ("S0NET",)),
    }


async def test_group_rule_refuses_an_approver_no_matching_can_place(store: Store) -> None:
    await store.create_operation(op=make_op())
    assert await _approve(store, "U0BOB", groups=("S0NET",), needed=3) is ApprovalOutcome.COUNTED
    assert await _approve(store, "U0DAVE", groups=("S0NET", "S0SEC"), needed=3) is ApprovalOutcome.COUNTED
    # Carol is in netops and security too: Bob and Dave hold both, whatever the assignment.
    assert await _approve(store, "U0CAROL", groups=("S0NET", "S0SEC"), needed=3) is ApprovalOutcome.COVERED
    assert await _approve(store, "U0ERIN", groups=("S0DB",), needed=3) is ApprovalOutcome.COMPLETE


async def test_withdrawing_rematches_those_left(store: Store) -> None:
    await store.create_operation(op=make_op())
    await _approve(store, "U0DAVE", groups=("S0NET", "S0SEC"), needed=3)
    await _approve(store, "U0BOB", groups=("S0NET",), needed=3)
    result = await store.withdraw_approval(
        "op-1", user_id="U0BOB", needed=3, now=T0, claim=CLAIM, audit_entry=_entry("U0BOB"), effects=[CARD]
    )
    assert result.outcome is ApprovalOutcome.WITHDRAWN
    assert result.op is not None
    assert [(a.user_id, a.group) for a in result.op.approvals] == [("U0DAVE", "S0NET")]
    assert [(a.user_id, a.group) for a in await store.approvals_of(op_id="op-1")] == [("U0DAVE", "S0NET")]


async def test_withdraw_only_before_the_rule_is_met(store: Store) -> None:
    await store.create_operation(op=make_op())
    await _approve(store, "U0BOB")

    async def withdraw(user: str) -> ApprovalOutcome:
        result = await store.withdraw_approval(
            "op-1", user_id=user, needed=2, now=T0, claim=CLAIM, audit_entry=_entry(user), effects=[CARD]
        )
        return result.outcome

    assert await withdraw("U0CAROL") is ApprovalOutcome.NOT_APPROVED
    assert await withdraw("U0BOB") is ApprovalOutcome.WITHDRAWN
    assert await store.approvals_of(op_id="op-1") == []
    await _approve(store, "U0BOB")
    await _approve(store, "U0CAROL")
    assert await withdraw("U0BOB") is ApprovalOutcome.CLOSED


async def test_approvals_are_voided_in_one_call_and_when_reopened(store: Store) -> None:
    await store.create_operation(op=make_op())
    await _approve(store, "U0BOB")
    assert await store.clear_approvals("op-1") == 1
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.approvals == ()
    assert await store.approvals_of(op_id="op-1") == []

    # Approved, then back to awaiting approval (what was approved changed): every approval is void.
    await _approve(store, "U0BOB")
    assert await _approve(store, "U0CAROL") is ApprovalOutcome.COMPLETE
    reopened = await store.transition(
        "op-1", from_states={OpState.APPROVED}, to=OpState.AWAITING_APPROVAL, now=T0, approver_id=None
    )
    assert reopened is not None
    assert reopened.approvals == ()
    assert await store.approvals_of(op_id="op-1") == []
    assert await _approve(store, "U0BOB") is ApprovalOutcome.COUNTED


async def test_a_version_15_approval_keeps_the_group_it_was_given(db_url: str) -> None:
    """Migration 16 adds approvals.user_groups; an older row is read as being in its one group."""
    store = await Store.open(db_url)
    await store.create_operation(op=make_op())
    await execute_sql(
        store,
        "ALTER TABLE approvals DROP COLUMN user_groups",
        "DELETE FROM schema_version WHERE version > 15",
        "INSERT INTO approvals (op_id, user_id, user_group, at) "
        "VALUES ('op-1', 'U0DAVE', 'S0NET', '2025-01-01 00:00:00+00:00')",
    )
    await store.close()

    upgraded = await Store.open(db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        [dave] = await upgraded.approvals_of(op_id="op-1")
        assert (dave.user_id, dave.group, dave.groups) == ("U0DAVE", "S0NET", ("S0NET",))
        # Dave is known only in netops, so Bob (netops) cannot move him; Carol (security) completes it.
        assert await _approve(upgraded, "U0BOB", groups=("S0NET",)) is ApprovalOutcome.COVERED
        assert await _approve(upgraded, "U0CAROL", groups=("S0SEC",)) is ApprovalOutcome.COMPLETE
    finally:
        await upgraded.close()
