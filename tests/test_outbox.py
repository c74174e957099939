"""The outbox dispatcher on a real store: order, back-off with Retry-After, giving up, collapsing."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from fakes import CountingStore, FakeClock, FakeNotifier
from storetools import claim_outbox, pending_effects
from test_store import make_op
from workflow_harness import Harness

from bot.config import load_settings
from bot.delivery import OutboxConfig, OutboxDispatcher
from bot.domain import Effect, EffectKind, Operation, OpState, Queued
from bot.errors import SlackError
from bot.store import Store
from bot.workflow import WorkflowConfig


class Posted:
    """Records the operations whose confirmation could never be posted."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    async def __call__(self, op: Operation, err: SlackError) -> None:
        self.failed.append((op.id, err.error))


class EnteredNotifier(FakeNotifier):
    """Tells when a card update has reached Slack (and may be hanging there)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def update_card(self, op: Operation) -> None:
        self.entered.set()
        await super().update_card(op)


def dispatcher(
    store: Store | CountingStore, clock: FakeClock, notifier: FakeNotifier, hook: Posted
) -> OutboxDispatcher:
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
    (pending,) = await pending_effects(store, op_id=op.id)
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
    assert await pending_effects(store, op_id=op.id) == []


async def test_a_transient_failure_stops_delivery_to_keep_the_order(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier(fail_with=SlackError("down", error="http_503", transient=True))
    op = await _with_effects(
        store, clock, Effect(EffectKind.UPDATE_CARD), Effect(EffectKind.THREAD, Queued("v"))
    )
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.deliver(op.id)
    assert len(await pending_effects(store, op_id=op.id)) == 2
    notifier.fail_with = None
    clock.advance(3)  # past the first back-off (2 s)
    await outbox.pass_once()
    await outbox.wait_idle()
    assert await pending_effects(store, op_id=op.id) == []
    assert notifier.events_for(op.id) == [Queued("v")]


async def test_it_gives_up_after_the_horizon_with_an_error_line(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = FakeNotifier(fail_with=SlackError("down", error="http_503", transient=True))
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    clock.advance(3601)
    with caplog.at_level(logging.ERROR, logger="bot.delivery"):
        await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    assert await pending_effects(store, op_id=op.id) == []
    assert any("gave up" in r.getMessage() for r in caplog.records)


async def test_a_confirmation_that_can_never_be_posted_is_handed_back(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier(post_error=SlackError("not in channel", error="not_in_channel"))
    op = await _with_effects(store, clock, Effect(EffectKind.POST_CONFIRMATION))
    hook = Posted()
    await dispatcher(store, clock, notifier, hook).deliver(op.id)
    assert hook.failed == [(op.id, "not_in_channel")]
    assert await pending_effects(store, op_id=op.id) == []


async def test_another_replicas_live_claim_is_respected(store: Store, clock: FakeClock) -> None:
    notifier = FakeNotifier()
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    await claim_outbox(
        store, op_id=op.id, owner="i-2", until=clock.now() + timedelta(seconds=30), now=clock.now()
    )
    await dispatcher(store, clock, notifier, Posted()).deliver(op.id)
    assert notifier.parent_updates == []
    assert len(await pending_effects(store, op_id=op.id)) == 1


async def _looked_up(store: Store, outbox: OutboxDispatcher, clock: FakeClock, *effects: Effect) -> Any:
    """A lookup's move that takes the delivery claim with it (as Steps.look_up does)."""
    op = await store.create_operation(op=make_op(state=OpState.LOOKING_UP))
    return await store.transition_and_claim(
        op.id,
        claim=outbox.claim_terms(),
        from_states={OpState.LOOKING_UP},
        to=OpState.AWAITING_APPROVAL,
        now=clock.now(),
        effects=list(effects),
    )


async def test_effects_claimed_with_a_state_change_go_out_without_being_read_again(
    store: Store, clock: FakeClock
) -> None:
    notifier = FakeNotifier()
    counting = CountingStore(store)
    outbox = dispatcher(counting, clock, notifier, Posted())
    assert outbox.claim_terms() == ("i-1", clock.now() + timedelta(seconds=60))
    taken = await _looked_up(
        store, outbox, clock, Effect(EffectKind.POST_CONFIRMATION), Effect(EffectKind.THREAD, Queued("v"))
    )
    op, effects = taken
    await outbox.deliver_claimed(op, effects)
    # The card first, with no claim-and-read before it; the rest as usual.
    assert counting.calls[0] == "confirmation_posted"
    assert [p.id for p in notifier.posted] == [op.id]
    assert notifier.events_for(op.id) == [Queued("v")]
    assert await pending_effects(store, op_id=op.id) == []
    stored = await store.get_operation(op_id=op.id)
    assert stored is not None
    assert stored.message_ts == "1700000000.000001"
    # The claim went back with the last completion.
    assert await claim_outbox(store, op_id=op.id, owner="i-2", until=clock.now(), now=clock.now())


async def test_a_claimed_card_that_slack_refuses_for_now_gives_the_claim_back(
    store: Store, clock: FakeClock
) -> None:
    notifier = FakeNotifier(fail_with=SlackError("down", error="http_503", transient=True))
    outbox = dispatcher(store, clock, notifier, Posted())
    op, effects = await _looked_up(store, outbox, clock, Effect(EffectKind.POST_CONFIRMATION))
    await outbox.deliver_claimed(op, effects)
    (pending,) = await pending_effects(store, op_id=op.id)
    assert pending.attempts == 1
    # Not held for the claim's minute: due again after the back-off, for any replica.
    assert await store.ops_with_due_effects(now=clock.now() + timedelta(seconds=3)) == [op.id]
    notifier.fail_with = None
    clock.advance(3)
    await outbox.pass_once()
    await outbox.wait_idle()
    assert [p.id for p in notifier.posted] == [op.id]
    assert await pending_effects(store, op_id=op.id) == []


async def test_a_claimed_batch_of_an_operation_already_being_delivered_is_left_to_that_delivery(
    store: Store, clock: FakeClock
) -> None:
    notifier = EnteredNotifier()
    notifier.hang = asyncio.Event()
    outbox = dispatcher(store, clock, notifier, Posted())
    op = await _with_effects(store, clock, Effect(EffectKind.UPDATE_CARD))
    running = outbox.kick(op.id)
    async with asyncio.timeout(10):
        await notifier.entered.wait()  # the card update is in flight
    # Meanwhile a state change of the same operation takes the claim (ours already) with a new effect.
    taken = await store.transition_and_claim(
        op.id,
        claim=outbox.claim_terms(),
        from_states={OpState.AWAITING_APPROVAL},
        to=OpState.AWAITING_APPROVAL,
        now=clock.now(),
        effects=[Effect(EffectKind.THREAD, Queued("v"))],
    )
    assert taken is not None
    moved, effects = taken
    assert effects is not None
    assert [e.kind for e in effects] == [EffectKind.UPDATE_CARD, EffectKind.THREAD]
    assert outbox.deliver_claimed(moved, effects) is running
    notifier.hang.set()
    await outbox.wait_idle()
    # Each effect once: a second delivery would have updated the card a second time.
    assert len(notifier.parent_updates) == 1
    assert notifier.events_for(op.id) == [Queued("v")]
    assert await pending_effects(store, op_id=op.id) == []


# --- posts happen once ------------------------------------------------------------------------------

LOST = SlackError("Server disconnected", error="transport", transient=True, maybe_done=True)
SLOW_DOWN = SlackError("slow down", error="ratelimited", transient=True, retry_after=1)


async def _attempt(outbox: OutboxDispatcher, clock: FakeClock) -> None:
    clock.advance(400)  # past any back-off
    await outbox.pass_once()
    await outbox.wait_idle()


async def test_a_post_whose_answer_may_be_lost_is_looked_for_on_the_next_attempt(
    store: Store, clock: FakeClock
) -> None:
    notifier = FakeNotifier(fail_with=LOST)
    op = await _with_effects(store, clock, Effect(EffectKind.THREAD, Queued("v")))
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.deliver(op.id)
    (pending,) = await pending_effects(store, op_id=op.id)
    notifier.fail_with = None
    await _attempt(outbox, clock)
    first, second = notifier.deliveries
    assert first is not None
    assert second is not None
    # One key for the effect on every attempt; only the attempt after a lost answer looks first.
    assert first.key == second.key == f"{op.id}/{pending.id}"
    assert first.since == second.since == pending.created_at
    assert (first.maybe_done, second.maybe_done) == (False, True)
    assert await pending_effects(store, op_id=op.id) == []


async def test_after_a_rate_limit_the_post_is_not_looked_for(store: Store, clock: FakeClock) -> None:
    """A 429 says Slack did nothing: the next attempt posts without reading the thread first."""
    notifier = FakeNotifier(fail_with=SLOW_DOWN)
    op = await _with_effects(store, clock, Effect(EffectKind.POST_CONFIRMATION))
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.deliver(op.id)
    notifier.fail_with = None
    await _attempt(outbox, clock)
    assert [d.maybe_done for d in notifier.deliveries if d is not None] == [False, False]
    assert len(notifier.posted) == 1


async def test_a_post_stays_to_be_looked_for_until_a_look_settles_it(store: Store, clock: FakeClock) -> None:
    """Lost answer, then an attempt rate-limited before it could look: the third attempt still looks."""
    notifier = FakeNotifier(fail_with=LOST)
    op = await _with_effects(store, clock, Effect(EffectKind.POST_CONFIRMATION))
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.deliver(op.id)
    notifier.fail_with = SLOW_DOWN
    await _attempt(outbox, clock)
    (pending,) = await pending_effects(store, op_id=op.id)
    assert pending.last_error == "ratelimited+maybe_done"
    notifier.fail_with = None
    await _attempt(outbox, clock)
    assert [d.maybe_done for d in notifier.deliveries if d is not None] == [False, True, True]
    assert len(notifier.posted) == 1


async def test_a_call_that_timed_out_may_have_posted(store: Store, clock: FakeClock) -> None:
    hang = asyncio.Event()
    notifier = FakeNotifier(hang=hang)
    op = await _with_effects(store, clock, Effect(EffectKind.THREAD, Queued("v")))
    outbox = OutboxDispatcher(
        store=store,
        notifier=notifier,
        clock=clock,
        instance_id="i-1",
        on_post_failed=Posted(),
        config=OutboxConfig(call_timeout_s=0.05),
    )
    await outbox.deliver(op.id)
    (pending,) = await pending_effects(store, op_id=op.id)
    assert pending.last_error == "timeout+maybe_done"
    hang.set()
    await _attempt(outbox, clock)
    assert [d.maybe_done for d in notifier.deliveries if d is not None] == [False, True]


async def test_the_slack_retry_settings_set_the_workflows_back_off(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VPNBOT_SLACK_RETRY_BASE_SECONDS is the first wait, doubling up to VPNBOT_SLACK_RETRY_MAX_SECONDS."""
    monkeypatch.setenv("VPNBOT_SLACK_RETRY_BASE_SECONDS", "0.25")
    monkeypatch.setenv("VPNBOT_SLACK_RETRY_MAX_SECONDS", "0.75")
    config = WorkflowConfig.from_settings(load_settings())
    wf = h.workflow(slack_retry_base_s=config.slack_retry_base_s, slack_retry_max_s=config.slack_retry_max_s)
    h.notifier.fail_with = SlackError("Slack is down", error="internal_error", transient=True)
    op = await h.request(wf)

    waits = []
    for _ in range(3):
        await wf.outbox.wait_idle()
        (pending,) = await pending_effects(h.store, op_id=op.id)
        waits.append((pending.next_at - h.clock.now()).total_seconds())
        h.clock.advance(waits[-1])
        await wf.outbox.pass_once()
    assert waits == [0.25, 0.5, 0.75]
