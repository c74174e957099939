"""A batch in the store and the outbox: recorded together, its card written once, its card's updates
converging on the batch's latest state however the members' deliveries race (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from fakes import FakeClock, FakeNotifier
from test_outbox import Posted, dispatcher
from test_store import make_op

from bot.domain import ApprovalOutcome, AuditEntry, BatchMove, Effect, EffectKind, Freeze, Operation, OpState
from bot.store import Store


def members(count: int = 3) -> list[Operation]:
    return [
        make_op(f"op-{i}", state=OpState.LOOKING_UP, vco_id=f"vco-{i}", batch_id="batch-1")
        for i in range(count)
    ]


async def test_the_card_is_written_once_when_the_last_lookup_ends(store: Store, clock: FakeClock) -> None:
    ops = members()
    await store.create_batch(batch_id="batch-1", ops=ops, lease=("i-1", clock.now()), audit_entries=[])
    assert [op.id for op in await store.batch_operations(batch_id="batch-1")] == ["op-0", "op-1", "op-2"]
    for op in ops[:2]:
        await store.transition(
            op.id, from_states={OpState.LOOKING_UP}, to=OpState.AWAITING_APPROVAL, now=clock.now()
        )
        assert await store.open_batch(batch_id="batch-1", now=clock.now()) is None  # one still looking up
    await store.transition("op-2", from_states={OpState.LOOKING_UP}, to=OpState.FAILED, now=clock.now())
    # Several workers may ask at once: one writes the post, on the first member.
    opened = await asyncio.gather(*(store.open_batch(batch_id="batch-1", now=clock.now()) for _ in range(4)))
    assert opened.count("op-0") == 1
    assert opened.count(None) == 3
    taken = await store.take_next(op_id="op-0", owner="i-1", until=clock.now(), now=clock.now())
    assert taken is not None
    assert [e.kind for e in taken[0]] == [EffectKind.POST_CONFIRMATION]
    # The card's ts, once posted, is every member's (their thread replies and updates go to it).
    await store.confirmation_posted(
        effect_id=taken[0][0].id, op_id="op-0", ts="1700000000.000009", now=clock.now()
    )
    assert {op.message_ts for op in await store.batch_operations(batch_id="batch-1")} == {"1700000000.000009"}


class StaleFirst(FakeNotifier):
    """The first card update is rendered, then held until the batch moves on, and lands last (stale)."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[list[str]] = []
        self.held = asyncio.Event()
        self.entered = asyncio.Event()

    async def update_batch(self, ops: Sequence[Operation]) -> None:
        shown = [op.state.value for op in ops]
        if not self.rendered:
            self.rendered.append(shown)
            self.entered.set()
            await self.held.wait()
            return
        self.rendered.append(shown)


async def test_a_stale_card_update_renders_again(store: Store, clock: FakeClock) -> None:
    ops = [
        make_op(f"op-{i}", state=OpState.APPROVED, vco_id=f"vco-{i}", batch_id="batch-1", message_ts="1.2")
        for i in range(2)
    ]
    await store.create_batch(batch_id="batch-1", ops=ops, lease=("i-1", clock.now()), audit_entries=[])
    notifier = StaleFirst()
    outbox = dispatcher(store, clock, notifier, Posted())
    await store.enqueue(op_id="op-0", effects=[Effect(EffectKind.UPDATE_CARD)], now=clock.now())
    first = outbox.kick("op-0")
    await notifier.entered.wait()
    # Meanwhile the other member finishes: its own update lands first, then the held one (stale).
    move = BatchMove(op_id="op-1", fields={"finished_at": clock.now()})
    await store.transition_batch([move], from_states={OpState.APPROVED}, to=OpState.DELETED, now=clock.now())
    notifier.held.set()
    await first
    assert notifier.rendered[0] == ["approved", "approved"]
    assert notifier.rendered[-1] == ["approved", "deleted"]  # rendered again: the card shows the latest


def _approval_moves(ops: Sequence[Operation], user: str, at: datetime) -> list[BatchMove]:
    return [
        BatchMove(
            op_id=op.id,
            fields={"approver_id": user, "approved_at": at},
            audit_entry=AuditEntry(at=at, action="approved", actor_id=user, op_id=op.id),
            effects=(Effect(EffectKind.UPDATE_CARD),) if index == 0 else (),
        )
        for index, op in enumerate(ops)
    ]


async def _awaiting_batch(store: Store, clock: FakeClock, count: int = 3) -> list[Operation]:
    ops = [replace(op, state=OpState.AWAITING_APPROVAL) for op in members(count)]
    await store.create_batch(batch_id="batch-1", ops=ops, lease=("i-1", clock.now()), audit_entries=[])
    return ops


async def test_a_batch_approval_counts_once_for_every_member(store: Store, clock: FakeClock) -> None:
    """One person's approval is recorded on every member at once; repeated, it changes nothing; the one
    that meets the rule moves every member; concurrent last approvals move them once."""
    ops = await _awaiting_batch(store, clock)
    now = clock.now()

    async def approve(user: str) -> tuple[ApprovalOutcome, list[Operation]]:
        return await store.record_batch_approval(
            _approval_moves(ops, user, now),
            user_id=user,
            groups=None,
            needed=2,
            now=now,
            progress_effects=[Effect(EffectKind.UPDATE_CARD)],
            to=OpState.APPROVED,
            unfrozen=True,
        )

    outcome, counted = await approve("U0BOB")
    assert outcome is ApprovalOutcome.COUNTED
    assert [tuple(a.user_id for a in op.approvals) for op in counted] == [("U0BOB",)] * 3
    assert {op.state for op in counted} == {OpState.AWAITING_APPROVAL}
    assert (await approve("U0BOB"))[0] is ApprovalOutcome.REPEATED
    results = await asyncio.gather(*(approve(user) for user in ("U0CAROL", "U0DAVE", "U0ERIN")))
    assert sorted(outcome for outcome, _ in results) == sorted(
        [ApprovalOutcome.COMPLETE, ApprovalOutcome.CLOSED, ApprovalOutcome.CLOSED]
    )
    after = await store.batch_operations(batch_id="batch-1")
    assert {op.state for op in after} == {OpState.APPROVED}
    assert len({op.approver_id for op in after}) == 1
    for op in after:
        assert len(await store.approvals_of(op_id=op.id)) == 2
    audit = [e for e in await store.recent_audit(limit=50) if e.action == "approved"]
    assert sorted(e.detail for e in audit) == ["1 of 2"] * 3 + ["2 of 2"] * 3


async def test_a_batch_approval_under_a_freeze_is_not_recorded(store: Store, clock: FakeClock) -> None:
    ops = await _awaiting_batch(store, clock, 2)
    now = clock.now()
    freeze = Freeze(
        id="f-1",
        account=None,
        reason="INC",
        created_by="U0ADM",
        starts_at=now,
        until=now + timedelta(hours=1),
    )
    await store.add_freeze(freeze, audit_entry=AuditEntry(at=now, action="frozen", actor_id="U0ADM"))
    outcome, moved = await store.record_batch_approval(
        _approval_moves(ops, "U0BOB", now),
        user_id="U0BOB",
        groups=None,
        needed=1,
        now=now,
        progress_effects=[],
        to=OpState.APPROVED,
        unfrozen=True,
    )
    assert (outcome, moved) == (ApprovalOutcome.CLOSED, [])
    for op in await store.batch_operations(batch_id="batch-1"):
        assert op.state is OpState.AWAITING_APPROVAL
        assert await store.approvals_of(op_id=op.id) == []


async def test_a_group_rule_counts_a_batch_approval_per_group(store: Store, clock: FakeClock) -> None:
    ops = await _awaiting_batch(store, clock, 2)
    now = clock.now()

    async def approve(user: str, groups: tuple[str, ...]) -> ApprovalOutcome:
        outcome, _ = await store.record_batch_approval(
            _approval_moves(ops, user, now),
            user_id=user,
            groups=groups,
            needed=2,
            now=now,
            progress_effects=[],
            to=OpState.APPROVED,
        )
        return outcome

    assert await approve("U0BOB", ("S0NETOPS",)) is ApprovalOutcome.COUNTED
    assert await approve("U0FRANK", ("S0NETOPS",)) is ApprovalOutcome.COVERED
    assert await approve("U0CAROL", ("S0SECURITY",)) is ApprovalOutcome.COMPLETE
    for op in await store.batch_operations(batch_id="batch-1"):
        assert op.state is OpState.APPROVED
        assert {(a.user_id, a.group) for a in op.approvals} == {
            ("U0BOB", "S0NETOPS"),
            ("U0CAROL", "S0SECURITY"),
        }


async def test_a_batch_approval_is_withdrawn_from_every_member(store: Store, clock: FakeClock) -> None:
    ops = await _awaiting_batch(store, clock, 2)
    now = clock.now()
    withdrawals = [
        BatchMove(
            op_id=op.id,
            fields={},
            audit_entry=AuditEntry(at=now, action="approval_withdrawn", actor_id="U0BOB"),
        )
        for op in ops
    ]
    assert (await store.withdraw_batch_approval(withdrawals, user_id="U0BOB", needed=2, now=now))[
        0
    ] is ApprovalOutcome.NOT_APPROVED
    await store.record_batch_approval(
        _approval_moves(ops, "U0BOB", now),
        user_id="U0BOB",
        groups=None,
        needed=2,
        now=now,
        progress_effects=[],
        to=OpState.APPROVED,
    )
    outcome, left = await store.withdraw_batch_approval(withdrawals, user_id="U0BOB", needed=2, now=now)
    assert outcome is ApprovalOutcome.WITHDRAWN
    assert [op.approvals for op in left] == [(), ()]
    for op in ops:
        assert await store.approvals_of(op_id=op.id) == []
