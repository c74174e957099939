"""A batch in the store and the outbox: recorded together, its card written once, its card's updates
converging on the batch's latest state however the members' deliveries race (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fakes import FakeClock, FakeNotifier
from test_outbox import Posted, dispatcher
from test_store import make_op

from bot.domain import BatchMove, Effect, EffectKind, Operation, OpState
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
