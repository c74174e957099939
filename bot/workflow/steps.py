"""What every step of an operation shares: moving it on, retry tokens, deadlines and its final state.

The steps themselves are :class:`bot.workflow.delete.DeleteSteps` and
:class:`bot.workflow.recreate.RecreateSteps`, put together in :class:`bot.workflow.api.Steps`.
They hold no state of their own between calls: every step reads the operation it is given and
writes its next state with a compare-and-set, so any worker holding the lease can take over at
any step. See :mod:`bot.workflow.runner` for the rules.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from bot.delivery import OutboxDispatcher
from bot.domain import (
    ANNOUNCED_ACTIONS,
    KIND_RECREATE,
    Announced,
    AuditEntry,
    Effect,
    EffectKind,
    GatewayActive,
    GatewayUpdating,
    Operation,
    OpState,
    Outcome,
    Progress,
    Retrying,
    SnapshotRoute,
    SnapshotTaken,
    TimedOut,
    client_token_for,
)
from bot.errors import CloudError
from bot.ports import Clock, OperationMeter, OperationStore, VpcApi, VpcApis
from bot.workflow.config import WorkflowConfig

__all__ = [
    "CARD",
    "CONNECTION_NOT_FOUND",
    "SYSTEM_ACTOR",
    "LostOperation",
    "RecreateKeys",
    "StepBase",
    "Stopping",
    "direct",
    "snapshot_routes",
    "started_from",
    "thread",
]

log = logging.getLogger("bot.workflow")

CONNECTION_NOT_FOUND = "InvalidVpnConnectionInstanceId.NotFound"

SYSTEM_ACTOR = "vpn-bot"
CARD = Effect(EffectKind.UPDATE_CARD)


@dataclass(frozen=True, slots=True)
class RecreateKeys:
    """The key typed in the Recreate modal, held in this process's memory only, never stored.

    ``repr`` shows nothing secret (SecretStr); it is revealed only in the CreateVpnConnection
    request (bot.cloud.specs.VpnConnectionSpec.to_params) and dropped once it got a definite answer.
    There is no BGP key: CreateVpnConnection takes none (it lives on the customer gateway).
    """

    psk: SecretStr


# A batch's thread carries every one of its connections: the gateway's own comings and goings stay
# out of it (the card says which connection is deleting).
_CONDENSED = (GatewayUpdating, GatewayActive)


def _threaded(op: Operation, event: Progress) -> bool:
    """Whether ``event`` goes in ``op``'s thread."""
    return op.batch_id is None or not isinstance(event, _CONDENSED)


def thread(event: Progress) -> Effect:
    """A reply in the card's thread."""
    return Effect(EffectKind.THREAD, event)


def direct(event: Progress) -> Effect:
    """A direct message to the requester with the outcome (and the card's link)."""
    return Effect(EffectKind.DIRECT, event)


class Stopping(Exception):
    """The workflow is stopping; raised at a safe point between steps."""


class LostOperation(Exception):
    """This worker lost a CAS or its lease: someone else owns the operation now."""


class StepBase:
    """What the per-operation steps share; ``pause`` sleeps on the clock and raises Stopping on shutdown."""

    def __init__(
        self,
        *,
        store: OperationStore,
        vpcs: VpcApis,
        clock: Clock,
        config: WorkflowConfig,
        owner: str,
        outbox: OutboxDispatcher,
        pause: Callable[[float], Awaitable[None]],
        meter: OperationMeter,
        keys: dict[str, RecreateKeys] | None = None,
    ) -> None:
        self._store = store
        self._vpcs = vpcs
        self._clock = clock
        self._config = config
        self._owner = owner
        self._outbox = outbox
        self._pause = pause
        self._meter = meter
        # Recreations' keys by operation id, shared with the Workflow that took them from the modal.
        self._keys: dict[str, RecreateKeys] = keys if keys is not None else {}
        # Jitter spreads busy retries of several replicas; it is not security-relevant.
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography

    def _read(self, op: Operation) -> VpcApi:
        """The VPC API of ``op``'s account for lookups (the shared read-only session)."""
        return self._vpcs.for_account(op.account)

    def _write(self, op: Operation) -> VpcApi:
        """The VPC API of ``op``'s account for changes, in its approver's name (ActionTrail shows them)."""
        return self._vpcs.for_account(op.account, acting_user=op.approver_id)

    def _deadline(self, op: Operation) -> datetime:
        if op.deadline_at is not None:
            return op.deadline_at
        start = op.approved_at or op.created_at
        return start + timedelta(seconds=self._config.delete_timeout_s)

    async def _move(
        self,
        op: Operation,
        to: OpState,
        *,
        event: Progress | None = None,
        audit_action: str | None = None,
        card: bool = False,
        **fields: Any,
    ) -> Operation:
        """Move ``op`` on, with ``event`` in the thread and (``card``) its card re-rendered."""
        request_id = fields.get("delete_request_id")
        entry = (
            self.entry(op, audit_action, actor_id=SYSTEM_ACTOR, request_id=request_id)
            if audit_action
            else None
        )
        # An audit action listed in ANNOUNCED_ACTIONS gets its audit-channel line here too.
        effects = [thread(event)] if event is not None and _threaded(op, event) else []
        if card:
            effects.append(CARD)
        effects.extend(self.announce(entry) if entry else [])
        moved = await self._store.transition(
            op.id,
            from_states={op.state},
            to=to,
            now=self._clock.now(),
            require_owner=self._owner,
            audit_entry=entry,
            effects=effects,
            **fields,
        )
        if moved is None:
            raise LostOperation(op.id)
        if effects:
            self._outbox.kick(op.id)
        log.debug(
            "operation moved from %s to %s",
            op.state.value,
            to.value,
            extra={"op_id": op.id, "vco_id": op.vco_id, "state": to.value},
        )
        return moved

    async def _note(self, op: Operation, event: Progress) -> None:
        """Tell the thread something that goes with no state change."""
        if not _threaded(op, event):
            return
        await self._store.enqueue(op_id=op.id, effects=[thread(event)], now=self._clock.now())
        self._outbox.kick(op.id)

    async def _record_send(self, op: Operation, state: OpState) -> Operation:
        """Count the send about to be made (``attempts``), while this worker still owns ``op``.

        Recorded before the call: after a crash, ``attempts > 0`` says the stored token may have been sent.
        """
        marked = await self._store.set_fields(
            op.id, now=self._clock.now(), states={state}, require_owner=self._owner, attempts=op.attempts + 1
        )
        if marked is None:
            raise LostOperation(op.id)
        return marked

    def _busy_retry(self, op: Operation, err: CloudError) -> float | None:
        """The wait before resending after ``err``, or None if the deletion must fail now."""
        if not err.retryable or op.token_seq + 1 >= self._config.busy_retry_attempts:
            return None
        remaining = (self._deadline(op) - self._clock.now()).total_seconds()
        if remaining <= 0:
            return None
        base = min(self._config.busy_retry_base_s * 2.0**op.token_seq, self._config.busy_retry_max_s)
        hint = getattr(err, "retry_after", None) or 0.0
        return min(max(hint, base * self._random.uniform(0.8, 1.2)), remaining)

    async def _next_token(
        self, op: Operation, err: CloudError, delay: float, *, state: OpState = OpState.DELETING
    ) -> Operation:
        seq = op.token_seq + 1
        moved = await self._store.set_fields(
            op.id,
            now=self._clock.now(),
            states={state},
            require_owner=self._owner,
            token_seq=seq,
            client_token=client_token_for(op.id, seq),
            effects=[
                thread(
                    Retrying(
                        reason=err.info.friendly,
                        delay_s=delay,
                        attempt=seq + 1,
                        max_attempts=self._config.busy_retry_attempts,
                        code=err.code,
                    )
                )
            ],
        )
        if moved is None:
            raise LostOperation(op.id)
        self._outbox.kick(op.id)
        log.info(
            "gateway busy (%s); retrying in %.1fs with a new token", err.code, delay, extra={"op_id": op.id}
        )
        return moved

    async def _time_out(self, op: Operation) -> Operation:
        waited = (self._clock.now() - started_from(op)).total_seconds()
        outcome = TimedOut(
            phase=op.state.value,
            waited_s=waited,
            sent=op.attempts > 0,
            request_id=op.delete_request_id,
            change=op.kind,
        )
        return await self.finish(op, OpState.TIMED_OUT, outcome, error_code="timeout")

    async def finish(
        self,
        op: Operation,
        to: OpState,
        outcome: Outcome,
        *,
        error_code: str | None = None,
        crashes: int | None = None,
    ) -> Operation:
        """Reach a final state: the state, its audit entry, the card and the thread's last reply, at once."""
        now = self._clock.now()
        action = {
            OpState.DELETED: "deleted",
            OpState.RECREATED: "recreated",
            OpState.FAILED: "failed",
            OpState.TIMED_OUT: "timed_out",
        }[to]
        if op.is_recreate:
            # Keys are dropped with the operation's end, whatever it was.
            self._keys.pop(op.id, None)
            if to is OpState.RECREATED and op.parent_op_id and op.new_vco_id:
                await self._tell_parent(op.parent_op_id, op.new_vco_id)
        code = error_code if error_code is not None else getattr(outcome, "code", None)
        reason = getattr(outcome, "reason", None)
        request_id = getattr(outcome, "request_id", None) or op.delete_request_id
        extra: dict[str, Any] = {} if crashes is None else {"crashes": crashes}
        if to is OpState.DELETED and self._config.undo_window_s > 0 and op.snapshot and op.snapshot.taken:
            # The deleted card offers Recreate… until then; the expiry pass takes the button away.
            extra["undo_until"] = now + timedelta(seconds=self._config.undo_window_s)
        entry = self.entry(
            op,
            action,
            actor_id=SYSTEM_ACTOR,
            detail=f"{code}: {reason or type(outcome).__name__}" if code else "",
            request_id=request_id,
        )
        done = await self._store.transition(
            op.id,
            from_states={op.state},
            to=to,
            now=now,
            require_owner=self._owner,
            finished_at=now,
            error_code=code,
            error_text=reason,
            audit_entry=entry,
            # The thread's last reply first: once the card shows the end, the thread says why.
            # After a deletion the configuration it took away follows, as the very last reply.
            # The requester's direct message, then the audit channel's line: their links then
            # show the card as it ended.
            # A batch's member tells the requester nothing alone: its card shows every outcome.
            effects=[
                thread(outcome),
                CARD,
                *self._snapshot_reply(op, to),
                *([] if op.batch_id else [direct(outcome)]),
                *self.announce(entry, note=reason or (code or "" if to is OpState.FAILED else "")),
            ],
            **extra,
        )
        if done is None:
            raise LostOperation(op.id)
        self._outbox.kick(op.id)
        self.finished(done)
        log.info("operation %s", action, extra={"op_id": op.id, "vco_id": op.vco_id, "state": to.value})
        return done

    @staticmethod
    def _snapshot_reply(op: Operation, to: OpState) -> list[Effect]:
        if to is not OpState.DELETED or op.snapshot is None:
            return []
        return [thread(SnapshotTaken(snapshot=op.snapshot))]

    async def _sleep_until_deadline(self, op: Operation, delay: float) -> None:
        remaining = (self._deadline(op) - self._clock.now()).total_seconds()
        await self._pause(max(0.0, min(delay, remaining)))

    def finished(self, done: Operation) -> None:
        """Count an operation that just reached its final state (once: only the CAS winner calls this)."""
        # From the approval, or a scheduled deletion's run time: its wait is not the deletion's duration.
        took = (
            (done.finished_at - started_from(done)).total_seconds()
            if done.finished_at and done.approved_at
            else None
        )
        self._meter.operation_finished(done.state.value, took, done.account)

    def announce(self, entry: AuditEntry, *, note: str = "") -> list[Effect]:
        """The audit channel's line about ``entry``, if it is a decision (ANNOUNCED_ACTIONS) and a
        channel is set; written into the effects of the transaction that records the decision."""
        if not self._config.audit_channel or entry.action not in ANNOUNCED_ACTIONS:
            return []
        return [
            Effect(
                EffectKind.AUDIT_LINE,
                Announced(action=entry.action, actor_id=entry.actor_id, at=entry.at, note=note),
            )
        ]

    def entry(
        self,
        op: Operation,
        action: str,
        *,
        actor_id: str,
        detail: str = "",
        request_id: str | None = None,
        times: int | None = None,
    ) -> AuditEntry:
        if op.kind == KIND_RECREATE and not action.startswith("recreate"):
            # The trail tells recreations apart: recreate_requested, recreate_approved, ….
            action = f"recreate_{action}"
        if op.reason:
            # Every entry of the operation says why it was asked for (and its ticket), as the card does.
            ticket = f" (ticket {op.ticket})" if op.ticket else ""
            detail = f"{detail}; reason{ticket}: {op.reason}" if detail else f"reason{ticket}: {op.reason}"
        return AuditEntry(
            at=self._clock.now(),
            action=action,
            actor_id=actor_id,
            op_id=op.id,
            vco_id=op.vco_id,
            region=op.region,
            detail=detail,
            request_id=request_id,
            account=op.account or None,
            times=times,
        )

    async def _tell_parent(self, parent_op_id: str, new_vco_id: str) -> None:
        """The deleted card now says what it was recreated as, and offers Recreate… no more."""
        await self._store.set_fields(
            parent_op_id,
            now=self._clock.now(),
            new_vco_id=new_vco_id,
            undo_until=None,
            effects=[CARD],
        )
        self._outbox.kick(parent_op_id)


def started_from(op: Operation) -> datetime:
    """When the work began: the run time of a scheduled deletion, else its approval (or its request)."""
    if op.schedule_kind is not None and op.run_at is not None:
        return op.run_at
    return op.approved_at or op.created_at


def snapshot_routes(op: Operation) -> tuple[SnapshotRoute, ...]:
    """The routes a recreation puts back: the snapshot's."""
    return op.snapshot.routes if op.snapshot is not None else ()
