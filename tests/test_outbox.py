"""The outbox dispatcher on a real store: order, back-off with Retry-After, giving up, collapsing."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from fakes import FakeClock, FakeNotifier
from test_store import make_op

from bot.domain import Effect, EffectKind, Operation, Queued
from bot.errors import SlackError
from bot.outbox import OutboxConfig, OutboxDispatcher
from bot.store import Store


class Posted:
    """Records the operations whose confirmation could never be posted."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    async def __call__(self, op: Operation, err: SlackError) -> None:
        self.failed.append((op.id, err.error))


def dispatcher(store: Store, clock: FakeClock, notifier: FakeNotifier, hook: Posted) -> OutboxDispatcher:
    return OutboxDispatcher(
        store=store,
        notifier=notifier,
        clock=clock,
        instance_id="i-1",
        on_post_failed=hook,
        config=OutboxConfig(give_up_s=3600, backoff_initial_s=2, backoff_max_s=300),
    )


async def _with_effects(store: Store, clock: FakeClock, *effects: Effect) -> Operation:
    op = await store.create_operation(op=make_op(message_ts="1700000000.000001"))
    await store.enqueue(op_id=op.id, effects=list(effects), now=clock.now())
    return op


async def test_slacks_retry_after_wins_over_the_back_off(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier(
        fail_with=SlackError("slow down", error="ratelimited", transient=True, retry_after=120)
    )
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    (pending,) = await store.pending_effects(op_id=op.id)
    assert pending.next_at == clock.now() + timedelta(seconds=120)
    assert pending.attempts == 1


async def test_effects_go_out_in_order_and_card_updates_collapse(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier()
    op = await _with_effects(
        store,
        clock,
        Effect(EffectKind.UPDATE_CARD),
        Effect(EffectKind.THREAD, Queued("vco-2")),
        Effect(EffectKind.UPDATE_CARD),
        Effect(EffectKind.UPDATE_CARD),
    )
    await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    # The card renders the current state, so every pending update but the newest is skipped.
    assert len(notifier.parent_updates) == 1
    assert notifier.events_for(op.id) == [Queued("vco-2")]
    assert await store.pending_effects(op_id=op.id) == []


async def test_a_transient_failure_stops_delivery_to_keep_the_order(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier(fail_with=SlackError("down", error="http_503", transient=True))
    op = await _with_effects(
        store, clock, Effect(EffectKind.UPDATE_CARD), Effect(EffectKind.THREAD, Queued("v"))
    )
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.deliver(op.id)
    assert len(await store.pending_effects(op_id=op.id)) == 2
    notifier.fail_with = None
    clock.advance(3)  # past the first back-off (2 s)
    await outbox.pass_once()
    await outbox.wait_idle()
    assert await store.pending_effects(op_id=op.id) == []
    assert notifier.events_for(op.id) == [Queued("v")]


async def test_it_gives_up_after_the_horizon_with_an_error_line(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = FakeNotifier(fail_with=SlackError("down", error="http_503", transient=True))
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    clock.advance(3601)
    with caplog.at_level(logging.ERROR, logger="bot.outbox"):
        await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    assert await store.pending_effects(op_id=op.id) == []
    assert any("gave up" in r.getMessage() for r in caplog.records)


async def test_a_confirmation_that_can_never_be_posted_is_handed_back(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier(post_error=SlackError("not in channel", error="not_in_channel"))
    op = await _with_effects(store, clock, Effect(EffectKind.POST_CONFIRMATION))
    hook = Posted()
    await dispatcher(store, clock, notifier, hook).deliver(op.id)
    assert hook.failed == [(op.id, "not_in_channel")]
    assert await store.pending_effects(op_id=op.id) == []


async def test_another_replicas_live_claim_is_respected(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier()
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    await store.claim_outbox(
        op_id=op.id, owner="i-2", until=clock.now() + timedelta(seconds=30), now=clock.now()
    )
    await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    assert notifier.parent_updates == []
    assert len(await store.pending_effects(op_id=op.id)) == 1
