"""Deliver the outbox: the Slack effects every state change wrote in its own transaction.

Effects of one operation go out in order, by one replica at a time (a claim in the store).
A transient Slack failure (5xx, rate limit, network, hang) leaves the effect in place to be
tried again later, honouring Slack's Retry-After, across restarts and replicas, until
``give_up_s`` has passed since it was written. A card update is collapsed into the newest one,
which renders the operation's state at delivery time, so the card always converges to the
final state. Nothing here ever blocks the deletion: the workflow only kicks delivery.

A post happens once. Each one carries its effect's key (:class:`bot.domain.Delivery`); when an
attempt failed in a way that leaves it unknown whether Slack posted it (no answer, a reset, a
timeout, a 5xx, or a later step of the effect failing), the effect's recorded error says so, and
the next attempt has the notifier look for the message before posting again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, auto

from bot.domain import Announced, Delivery, EffectKind, Operation, PendingEffect
from bot.errors import SlackError, StoreUnavailable
from bot.ports import Clock, Notifier, OperationStore

__all__ = ["OutboxConfig", "OutboxDispatcher", "PostFailedHook"]

log = logging.getLogger("bot.delivery")

# Added to an effect's recorded error when the failed attempt may have been carried out all the same.
MAYBE_DONE_MARK = "+maybe_done"
# Effects that post a message: the ones to look for before posting again.
_POSTS = (EffectKind.POST_CONFIRMATION, EffectKind.THREAD, EffectKind.DIRECT, EffectKind.AUDIT_LINE)


# How many times one batch card update renders again when the batch moved on meanwhile.
_BATCH_RENDERS = 5


def _shown(members: Sequence[Operation]) -> list[tuple[str, str, str | None, bool, str | None, int]]:
    """What a batch card shows of each member: enough to tell whether a render is stale."""
    return [
        (m.id, m.state.value, m.error_code, m.undo_until is not None, m.new_vco_id, len(m.approvals))
        for m in members
    ]


def _maybe_done(effect: PendingEffect) -> bool:
    """Whether an earlier attempt at ``effect`` may have posted it (its answer lost)."""
    return effect.attempts > 0 and (effect.last_error or "").endswith(MAYBE_DONE_MARK)


# Called when the confirmation can never be posted (the operation must then fail, and say why).
PostFailedHook = Callable[[Operation, SlackError], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """Delivery timings, in seconds."""

    claim_s: float = 60.0
    give_up_s: float = 6 * 3600.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0
    # Longest a single Slack call may take before it counts as a transient failure.
    call_timeout_s: float = 30.0


class _Step(Enum):
    """What delivering the oldest effect leaves: back off, go on, or all done (claim given back)."""

    STOP = auto()
    MORE = auto()
    DONE = auto()


class OutboxDispatcher:
    """Delivers pending effects through the :class:`Notifier`; ``kick`` after every write."""

    def __init__(
        self,
        *,
        store: OperationStore,
        notifier: Notifier,
        clock: Clock,
        instance_id: str,
        on_post_failed: PostFailedHook,
        config: OutboxConfig | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._owner = instance_id
        self._on_post_failed = on_post_failed
        self._config = config or OutboxConfig()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def kick(self, op_id: str) -> asyncio.Task[None]:
        """Deliver ``op_id``'s effects in the background (once more, if a delivery is running)."""
        running = self._tasks.get(op_id)
        if running is not None and not running.done():
            self._again.add(op_id)
            return running
        return self._start(op_id, None)

    def claim_terms(self) -> tuple[str, datetime]:
        """``(owner, until)`` of a delivery claim taken now, for a transaction that takes it itself.

        :meth:`bot.ports.OperationStore.transition_and_claim` takes it with its state change; what
        it returns goes to :meth:`deliver_claimed`.
        """
        return self._owner, self._clock.now() + timedelta(seconds=self._config.claim_s)

    def deliver_claimed(self, op: Operation, effects: list[PendingEffect] | None) -> asyncio.Task[None]:
        """Deliver ``effects`` of ``op``, read under a claim the caller took with :meth:`claim_terms`.

        They go out as :meth:`kick` would deliver them, without reading them again first; the claim
        is renewed, kept or given back as there. ``effects`` None (another replica held the claim)
        is a plain :meth:`kick`. If this process already delivers ``op``, that delivery reads them.
        """
        running = self._tasks.get(op.id)
        if effects is None or (running is not None and not running.done()):
            return self.kick(op.id)
        return self._start(op.id, (effects, op))

    def _start(self, op_id: str, claimed: tuple[list[PendingEffect], Operation] | None) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver_loop(op_id, claimed), name=f"vpnbot-outbox-{op_id}")
        self._tasks[op_id] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(op_id, None) if self._tasks.get(op_id) is t else None
        )
        return task

    async def deliver(self, op_id: str) -> None:
        """Deliver ``op_id``'s effects now and wait for it (the request path posts its card this way)."""
        await asyncio.shield(self.kick(op_id))

    async def pass_once(self) -> None:
        """Deliver every operation with effects due now that no replica is delivering."""
        for op_id in await self._store.ops_with_due_effects(now=self._clock.now()):
            self.kick(op_id)

    async def wait_idle(self) -> None:
        """Wait until no delivery runs in this process (tests, the demo, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self, grace_s: float) -> None:
        """Let deliveries finish for ``grace_s``, then cancel them (their effects stay pending)."""
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- delivery ----------------------------------------------------------------------------

    async def _deliver_loop(self, op_id: str, claimed: tuple[list[PendingEffect], Operation] | None) -> None:
        while True:
            self._again.discard(op_id)
            try:
                await self._deliver(op_id, claimed)
            except StoreUnavailable as err:
                log.warning(
                    "outbox: the database is unreachable; delivery resumes later",
                    extra={"op_id": op_id, "error": err.detail},
                )
                return
            except Exception:
                # A bug must not kill the loop that keeps Slack in step; the next pass tries again.
                log.exception("outbox: delivering failed unexpectedly", extra={"op_id": op_id})
                return
            if op_id not in self._again:
                return
            claimed = None

    async def _deliver(self, op_id: str, claimed: tuple[list[PendingEffect], Operation] | None) -> None:
        """Deliver ``op_id``'s effects in order while this replica holds (and renews) the claim.

        ``claimed``: effects already read under a claim this replica took (see :meth:`deliver_claimed`).
        """
        taken: tuple[list[PendingEffect], Operation | None] | None = claimed
        while True:
            if taken is None:
                now = self._clock.now()
                until = now + timedelta(seconds=self._config.claim_s)
                taken = await self._store.take_next(op_id=op_id, owner=self._owner, until=until, now=now)
                if taken is None:
                    return  # another replica delivers it
            effects, op = taken
            taken = None
            if not effects:
                return  # all delivered; the claim went back with the last read
            step = await self._deliver_first(effects, op)
            if step is _Step.STOP:
                await self._store.release_outbox(op_id=op_id, owner=self._owner)
                return
            if step is _Step.DONE:
                return  # nothing left; the claim went back with the last completion

    async def _deliver_first(self, effects: list[PendingEffect], op: Operation | None) -> _Step:
        """Deliver the oldest pending effect; STOP to stop here (backing off) and keep the order."""
        first = effects[0]
        now = self._clock.now()
        if first.next_at > now:
            return _Step.STOP  # waiting out a back-off; a later pass takes it
        if first.kind is EffectKind.UPDATE_CARD and any(
            e.kind is EffectKind.UPDATE_CARD for e in effects[1:]
        ):
            # A newer card update follows; it renders the same (current) state. Skip to it.
            await self._store.complete_effects(ids=[first.id], now=now, error="superseded")
            return _Step.MORE
        if op is None:
            if first.kind is EffectKind.AUDIT_LINE:
                # An audit entry of no operation (a freeze, say): its line needs none.
                return await self._send(first, None)
            await self._store.complete_effects(ids=[first.id], now=now, error="no operation")
            return _Step.MORE
        return await self._send(first, op)

    async def _send(self, effect: PendingEffect, op: Operation | None) -> _Step:
        """Deliver ``effect``; ``op`` None only for an audit line of no operation."""
        now = self._clock.now()
        missing = self._missing_target(effect, op)
        if missing is not None:
            log.info(
                "outbox: nothing to deliver to",
                extra={"op_id": effect.op_id, "kind": effect.kind.value, "reason": missing},
            )
            await self._store.complete_effects(ids=[effect.id], now=now, error=missing)
            return _Step.MORE
        try:
            async with asyncio.timeout(self._config.call_timeout_s):
                ts = await self._call(effect, op)
        except TimeoutError:
            return await self._failed(
                effect,
                op,
                SlackError("Slack did not answer in time.", error="timeout", transient=True, maybe_done=True),
            )
        except SlackError as err:
            return await self._failed(effect, op, err)
        # Completing the effect also gives the claim back when nothing is left: one transaction, not two.
        if ts is not None:
            left = await self._store.confirmation_posted(
                effect_id=effect.id, op_id=effect.op_id, ts=ts, now=self._clock.now(), owner=self._owner
            )
        else:
            left = await self._store.complete_effects(
                ids=[effect.id], now=self._clock.now(), release=(effect.op_id, self._owner)
            )
        return _Step.MORE if left else _Step.DONE

    @staticmethod
    def _missing_target(effect: PendingEffect, op: Operation | None) -> str | None:
        if op is None:
            return None if isinstance(effect.event, Announced) else "no operation"
        if effect.kind in (EffectKind.UPDATE_CARD, EffectKind.THREAD) and not op.message_ts:
            return "no confirmation message"
        if effect.kind is EffectKind.RESPOND and not op.response_url:
            return "no response_url"
        if effect.kind in (EffectKind.THREAD, EffectKind.RESPOND, EffectKind.DIRECT) and effect.event is None:
            return "no event"
        if effect.kind is EffectKind.AUDIT_LINE and not isinstance(effect.event, Announced):
            return "no decision"
        return None

    @staticmethod
    def _delivery(effect: PendingEffect) -> Delivery:
        """The effect's key for Slack, and whether an earlier attempt may have posted it."""
        return Delivery(
            key=f"{effect.op_id}/{effect.id}",
            since=effect.created_at,
            maybe_done=_maybe_done(effect),
        )

    async def _call(self, effect: PendingEffect, op: Operation | None) -> str | None:
        """Make the Slack call for ``effect``; return the ts of a posted confirmation."""
        if op is None:
            assert isinstance(effect.event, Announced)  # noqa: S101 - checked by _missing_target
            await self._notifier.audit_line(None, effect.event, self._delivery(effect))
            return None
        match effect.kind:
            case EffectKind.POST_CONFIRMATION if op.batch_id is not None:
                members = await self._store.batch_operations(batch_id=op.batch_id)
                return await self._notifier.post_batch(members or [op], self._delivery(effect))
            case EffectKind.POST_CONFIRMATION:
                return await self._notifier.post_confirmation(op, self._delivery(effect))
            case EffectKind.UPDATE_CARD if op.batch_id is not None:
                await self._update_batch(op.batch_id)
            case EffectKind.UPDATE_CARD:
                await self._notifier.update_card(op)
            case EffectKind.THREAD:
                assert effect.event is not None  # noqa: S101 - checked by _missing_target
                await self._notifier.reply_in_thread(op, effect.event, self._delivery(effect))
            case EffectKind.RESPOND:
                assert effect.event is not None  # noqa: S101 - checked by _missing_target
                await self._notifier.respond(op, effect.event)
            case EffectKind.DIRECT:
                assert effect.event is not None  # noqa: S101 - checked by _missing_target
                await self._notifier.direct_message(op, effect.event, self._delivery(effect))
            case EffectKind.AUDIT_LINE:
                assert isinstance(effect.event, Announced)  # noqa: S101 - checked by _missing_target
                await self._notifier.audit_line(op, effect.event, self._delivery(effect))
        return None

    async def _update_batch(self, batch_id: str) -> None:
        """Re-render a batch's card until what it shows is what the store holds after it landed.

        Each member's updates are delivered on their own (a claim per operation), so two renders of
        the one card may race and the older land last. Whoever lands last reads the batch again
        after its update: if it changed since its render, it renders again. The last update to land
        therefore shows the batch as it was then, and any later change writes an update of its own.
        """
        members = await self._store.batch_operations(batch_id=batch_id)
        for _ in range(_BATCH_RENDERS):
            if not members:
                return
            await self._notifier.update_batch(members)
            again = await self._store.batch_operations(batch_id=batch_id)
            if _shown(again) == _shown(members):
                return
            members = again

    @staticmethod
    def _recorded(effect: PendingEffect, err: SlackError) -> str:
        """The error to record: marked when the effect may be in Slack, so the next attempt looks.

        It stays marked while it is unsettled: an attempt that was to look first and failed before
        posting (its look rate-limited, say) must not let the next one post without looking.
        """
        if effect.kind in _POSTS and (err.maybe_done or _maybe_done(effect)):
            return err.error[:100] + MAYBE_DONE_MARK  # the column holds 128
        return err.error

    async def _failed(self, effect: PendingEffect, op: Operation | None, err: SlackError) -> _Step:
        """Handle a failed call: back off (STOP here, keep the order) or give it up (MORE)."""
        now = self._clock.now()
        extra = {
            "op_id": effect.op_id,
            "kind": effect.kind.value,
            "slack_error": err.error,
            "attempt": effect.attempts + 1,
        }
        age = (now - effect.created_at).total_seconds()
        if err.transient and age < self._config.give_up_s:
            delay = min(
                self._config.backoff_max_s,
                max(err.retry_after or 0.0, self._config.backoff_initial_s * 2**effect.attempts),
            )
            log.warning(
                "outbox: Slack failed; trying again later", extra={**extra, "retry_in_s": round(delay, 1)}
            )
            await self._store.reschedule_effect(
                effect_id=effect.id, next_at=now + timedelta(seconds=delay), error=self._recorded(effect, err)
            )
            return _Step.STOP
        if err.transient:
            log.error("outbox: gave up after Slack failed for too long", extra={**extra, "age_s": round(age)})
        else:
            log.warning("outbox: Slack refused; this effect is dropped", extra=extra)
        await self._store.complete_effects(ids=[effect.id], now=now, error=err.error)
        if effect.kind is EffectKind.POST_CONFIRMATION and op is not None:
            await self._on_post_failed(op, err)
        return _Step.MORE
