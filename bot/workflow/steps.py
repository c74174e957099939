"""The steps that drive one operation from approval (or a resumed lookup) to a final state.

:class:`Steps` holds no state of its own between calls: every step reads the operation it is
given and writes its next state with a compare-and-set, so any worker holding the lease can
take over at any step. See :mod:`bot.workflow` for the rules.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from bot.delivery import OutboxDispatcher
from bot.domain import (
    KIND_RECREATE,
    OPERATION_TAG,
    Accepted,
    AuditEntry,
    ConnectionReady,
    Created,
    Deleted,
    Effect,
    EffectKind,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Impact,
    KeyLost,
    LookupFailed,
    NotCarried,
    Operation,
    OpState,
    Outcome,
    Progress,
    Queued,
    Recreated,
    Retrying,
    RouteResult,
    Snapshot,
    SnapshotRoute,
    SnapshotTaken,
    StillExists,
    TimedOut,
    Unanswered,
    VpnConnection,
    client_token_for,
)
from bot.errors import CloudError
from bot.ports import Clock, OperationMeter, OperationStore, VpcApi, VpcApis
from bot.workflow.config import WorkflowConfig
from bot.workflow.polling import expected_duration, poll_delay

__all__ = [
    "CONNECTION_NOT_FOUND",
    "SYSTEM_ACTOR",
    "LostOperation",
    "RecreateKeys",
    "Steps",
    "Stopping",
    "direct",
    "thread",
]

log = logging.getLogger("bot.workflow")

CONNECTION_NOT_FOUND = "InvalidVpnConnectionInstanceId.NotFound"
SYSTEM_ACTOR = "vpn-bot"
# A slash command's response_url works for 30 minutes; a lookup resumed later cannot answer.
_RESPONSE_URL_LIFETIME = timedelta(minutes=30)
CARD = Effect(EffectKind.UPDATE_CARD)


@dataclass(frozen=True, slots=True)
class RecreateKeys:
    """The key typed in the Recreate modal, held in this process's memory only, never stored.

    ``repr`` shows nothing secret (SecretStr); it is revealed only in the CreateVpnConnection
    request (bot.cloud.specs.VpnConnectionSpec.to_params) and dropped once it got a definite answer.
    There is no BGP key: CreateVpnConnection takes none (it lives on the customer gateway).
    """

    psk: SecretStr


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


class Steps:
    """The per-operation steps; ``pause`` sleeps on the clock and raises Stopping on shutdown."""

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

    async def drive(self, op: Operation) -> None:
        queued_posted = False
        while op.state is not OpState.AWAITING_APPROVAL and not op.is_terminal:
            if op.state is OpState.LOOKING_UP:
                await self.look_up(op, reply_on_failure=True)
                return
            if self._clock.now() >= self._deadline(op):
                await self._time_out(op)
                return
            if op.state is OpState.APPROVED:
                op, queued_posted = await self._step_approved(op, queued_posted)
            elif op.state is OpState.CREATING:
                op = await self._step_creating(op)
            elif op.state is OpState.ROUTING:
                op = await self._step_routing(op)
            elif op.state is OpState.DELETING:
                op = await self._step_deleting(op)
            elif op.state is OpState.WAITING_GATEWAY:
                op = await self._step_waiting(op)
            elif op.state is OpState.VERIFYING:
                op = await self._step_verifying(op)

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
        **fields: Any,
    ) -> Operation:
        request_id = fields.get("delete_request_id")
        moved = await self._store.transition(
            op.id,
            from_states={op.state},
            to=to,
            now=self._clock.now(),
            require_owner=self._owner,
            audit_entry=self.entry(op, audit_action, actor_id=SYSTEM_ACTOR, request_id=request_id)
            if audit_action
            else None,
            effects=[thread(event)] if event is not None else (),
            **fields,
        )
        if moved is None:
            raise LostOperation(op.id)
        if event is not None:
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
        await self._store.enqueue(op_id=op.id, effects=[thread(event)], now=self._clock.now())
        self._outbox.kick(op.id)

    async def read_connection(self, *, account: str, region: str, vco_id: str) -> VpnConnection:
        """The lookup's first read, which may start before the request is recorded (see look_up)."""
        # Reads for the confirmation only inform the approver: they may join the same reads
        # already on the way for other requests (a burst on one gateway reads it once).
        return await self._vpcs.for_account(account).describe_vpn_connection(
            region=region, vco_id=vco_id, shared=True
        )

    async def look_up(
        self, op: Operation, *, reply_on_failure: bool, connection: Awaitable[VpnConnection] | None = None
    ) -> Operation:
        """LOOKING_UP -> AWAITING_APPROVAL (and post the card), or FAILED with the reason.

        ``connection`` is :meth:`read_connection` for ``op`` already on its way (the request path
        starts it while the request is recorded); without it, the lookup reads the connection.
        On the request path the error is raised for the Slack layer to answer; a resumed lookup
        answers through the response_url (the outbox), as long as that still works.
        """
        if self._clock.now() - op.created_at > _RESPONSE_URL_LIFETIME:
            return await self._lookup_failed(op, LookupFailed(code="interrupted", reason=""), reply=False)
        try:
            found = await (
                connection
                if connection is not None
                else self.read_connection(account=op.account, region=op.region, vco_id=op.vco_id)
            )
            # The preview is looked up alongside the gateway; it never fails and has its own deadline.
            preview = asyncio.create_task(self._preview(op, found), name=f"vpnbot-impact-{op.id}")
            try:
                gateway = await self._read(op).describe_vpn_gateway(
                    region=op.region, gateway_id=found.gateway_id, shared=True
                )
            except BaseException:
                preview.cancel()
                raise
            impact = await preview
        except CloudError as err:
            failed = await self._lookup_failed(
                op, LookupFailed(code=err.code, reason=err.friendly), reply=reply_on_failure
            )
            if not reply_on_failure:
                raise
            return failed
        # The outbox's delivery claim is taken with the move, so the card goes out without the
        # dispatcher's own claim-and-read transaction first. Killed before it is posted, the claim
        # runs out (OutboxConfig.claim_s) and any replica's outbox pass posts it.
        moved = await self._store.transition_and_claim(
            op.id,
            claim=self._outbox.claim_terms(),
            from_states={OpState.LOOKING_UP},
            to=OpState.AWAITING_APPROVAL,
            now=self._clock.now(),
            connection=found,
            gateway=gateway,
            impact=impact,
            effects=[Effect(EffectKind.POST_CONFIRMATION)],
        )
        if moved is None:
            return await self._store.get_operation(op_id=op.id) or op  # another worker finished the lookup
        awaiting, pending = moved
        self._outbox.deliver_claimed(awaiting, pending)
        return awaiting

    async def _preview(self, op: Operation, connection: VpnConnection) -> Impact:
        """The impact preview, or one saying it could not be read: it must never stop the confirmation."""
        deadline = self._config.impact_deadline_s
        try:
            # A margin over the per-part deadline, in case an adapter does not keep its own.
            async with asyncio.timeout(deadline + 1.0):
                return await self._read(op).describe_impact(
                    region=op.region, connection=connection, deadline_s=deadline
                )
        except TimeoutError:
            return Impact.unavailable(f"no answer within {deadline:g} s")
        except Exception:
            log.warning("impact preview failed", exc_info=True, extra={"vco_id": connection.id})
            return Impact.unavailable("an unexpected error (see the bot's log)")

    async def _lookup_failed(self, op: Operation, event: LookupFailed, *, reply: bool) -> Operation:
        now = self._clock.now()
        failed = await self._store.transition(
            op.id,
            from_states={OpState.LOOKING_UP},
            to=OpState.FAILED,
            now=now,
            finished_at=now,
            error_code=event.code,
            error_text=event.reason or None,
            audit_entry=self.entry(op, "failed", actor_id=SYSTEM_ACTOR, detail=f"lookup: {event.code}"),
            effects=[Effect(EffectKind.RESPOND, event)] if reply else (),
        )
        if failed is not None:
            self.finished(failed)
            if reply:
                self._outbox.kick(op.id)
        return failed or op

    async def _step_approved(self, op: Operation, queued_posted: bool) -> tuple[Operation, bool]:
        holder = await self._store.acquire_gateway(
            region=op.region, gateway_id=op.gateway_id, op_id=op.id, now=self._clock.now()
        )
        if holder == op.id:
            # A recreation takes the same per-gateway turn: one change per gateway at a time.
            to = OpState.CREATING if op.is_recreate else OpState.DELETING
            return await self._move(op, to, started_at=self._clock.now()), queued_posted
        if not queued_posted:
            blocking = await self._store.get_operation(op_id=holder)
            await self._note(op, Queued(blocking_vco_id=blocking.vco_id if blocking else holder))
            queued_posted = True
        await self._sleep_until_deadline(op, self._config.poll_interval_s)
        return op, queued_posted

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

    async def _step_deleting(self, op: Operation) -> Operation:
        # attempts > 0 on entry: a previous worker may have sent its current token before crashing.
        maybe_sent = op.attempts > 0
        if op.snapshot is None and not maybe_sent:
            op = await self._take_snapshot(op)
        while True:
            # Record the send before making it: a crash in between resends the stored token.
            op = await self._record_send(op, OpState.DELETING)
            try:
                # Signed in a role session named after the approver: ActionTrail records who approved.
                deleter = self._vpcs.for_account(op.account, acting_user=op.approver_id)
                request_id = await deleter.delete_vpn_connection(
                    region=op.region, vco_id=op.vco_id, client_token=op.client_token
                )
            except CloudError as err:
                if err.code == CONNECTION_NOT_FOUND and (maybe_sent or err.after_ambiguous):
                    log.info("connection already gone after a resend; verifying", extra={"op_id": op.id})
                    return await self._move(op, OpState.VERIFYING)
                if not err.definite:
                    # No usable answer even after the client's retries: it may have been carried out.
                    return await self._move(
                        op,
                        OpState.WAITING_GATEWAY,
                        event=Unanswered(code=err.code),
                        audit_action="delete_unanswered",
                    )
                retry_in = self._busy_retry(op, err)
                if retry_in is None:
                    return await self.finish(
                        op,
                        OpState.FAILED,
                        Failed(code=err.code, reason=err.friendly, request_id=err.request_id),
                    )
                # A definite rejection: the next send gets a new token, or it would replay this answer.
                op = await self._next_token(op, err, retry_in)
                await self._pause(retry_in)
                continue
            return await self._move(
                op,
                OpState.WAITING_GATEWAY,
                event=Accepted(request_id=request_id, account=op.account),
                audit_action="delete_sent",
                delete_request_id=request_id,
            )

    async def _take_snapshot(self, op: Operation) -> Operation:
        """Store the connection's configuration before the first send; a failure is stored too, never raised.

        Taken here rather than at approval, which must never wait on the cloud; and only once, so
        a resumed operation never reads a connection that may already be half deleted.
        """
        deadline = self._config.snapshot_deadline_s
        try:
            # A margin over the per-part deadline, in case an adapter does not keep its own.
            async with asyncio.timeout(deadline + 1.0):
                snapshot = await self._read(op).describe_snapshot(
                    region=op.region, connection=op.connection, deadline_s=deadline
                )
        except TimeoutError:
            snapshot = Snapshot.unavailable(op.connection, f"no answer within {deadline:g} s")
        except Exception:
            log.warning("configuration snapshot failed", exc_info=True, extra={"op_id": op.id})
            snapshot = Snapshot.unavailable(op.connection, "an unexpected error (see the bot's log)")
        stored = await self._store.set_fields(
            op.id,
            now=self._clock.now(),
            states={OpState.DELETING},
            require_owner=self._owner,
            snapshot=snapshot,
        )
        if stored is None:
            raise LostOperation(op.id)
        log.info(
            "configuration snapshot %s",
            "taken" if snapshot.taken else "not taken",
            extra={"op_id": op.id, "vco_id": op.vco_id, "routes": len(snapshot.routes)},
        )
        return stored

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

    async def _step_waiting(self, op: Operation) -> Operation:
        expected = expected_duration(
            await self._store.recent_durations(region=op.region, gateway_id=op.gateway_id)
        )
        accepted_at = op.started_at or self._clock.now()
        updating_posted = False
        # With history, the first look waits until the update is nearly done (see polling.py).
        await self._sleep_until_deadline(op, poll_delay(0.0, expected, 0.0))
        while self._clock.now() < self._deadline(op):
            try:
                gateway = await self._read(op).describe_vpn_gateway(
                    region=op.region, gateway_id=op.gateway_id
                )
            except CloudError as err:
                log.warning("polling the gateway failed (%s); polling on", err.code, extra={"op_id": op.id})
            else:
                if gateway.status == "updating" and not updating_posted:
                    updating_posted = True
                    await self._note(op, GatewayUpdating(gateway_id=op.gateway_id))
                if gateway.status == "active":
                    if op.is_recreate and op.new_vco_id:
                        ready = ConnectionReady(
                            gateway_id=op.gateway_id,
                            new_vco_id=op.new_vco_id,
                            routes=sum(r.kind != "bgp" for r in _to_recreate(op)),
                        )
                        return await self._move(op, OpState.ROUTING, event=ready)
                    return await self._move(
                        op, OpState.VERIFYING, event=GatewayActive(gateway_id=op.gateway_id)
                    )
            elapsed = (self._clock.now() - accepted_at).total_seconds()
            await self._sleep_until_deadline(op, poll_delay(elapsed, expected, self._config.poll_interval_s))
        return op

    async def _step_verifying(self, op: Operation) -> Operation:
        seen = 0
        while self._clock.now() < self._deadline(op):
            try:
                connection = await self._read(op).describe_vpn_connection(region=op.region, vco_id=op.vco_id)
            except CloudError as err:
                if err.code == CONNECTION_NOT_FOUND:
                    elapsed = (self._clock.now() - (op.approved_at or op.created_at)).total_seconds()
                    return await self.finish(op, OpState.DELETED, Deleted(elapsed_s=elapsed))
                log.warning(
                    "checking the connection failed (%s); checking on", err.code, extra={"op_id": op.id}
                )
            else:
                seen += 1
                if seen >= self._config.verify_checks:
                    outcome = StillExists(
                        status=connection.status,
                        request_id=op.delete_request_id,
                        unanswered=op.delete_request_id is None,
                    )
                    return await self.finish(op, OpState.FAILED, outcome, error_code="still_exists")
            await self._sleep_until_deadline(op, self._config.poll_interval_s)
        return op

    async def _time_out(self, op: Operation) -> Operation:
        waited = (self._clock.now() - (op.approved_at or op.created_at)).total_seconds()
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
        done = await self._store.transition(
            op.id,
            from_states={op.state},
            to=to,
            now=now,
            require_owner=self._owner,
            finished_at=now,
            error_code=code,
            error_text=reason,
            audit_entry=self.entry(
                op,
                action,
                actor_id=SYSTEM_ACTOR,
                detail=f"{code}: {reason or type(outcome).__name__}" if code else "",
                request_id=request_id,
            ),
            # The thread's last reply first: once the card shows the end, the thread says why.
            # After a deletion the configuration it took away follows, as the very last reply.
            # The requester's direct message last: its link then shows the card as it ended.
            effects=[thread(outcome), CARD, *self._snapshot_reply(op, to), direct(outcome)],
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
        took = (
            (done.finished_at - done.approved_at).total_seconds()
            if done.finished_at and done.approved_at
            else None
        )
        self._meter.operation_finished(done.state.value, took, done.account)

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

    # --- recreations ---------------------------------------------------------------------------
    #
    # The pre-shared key exists only in ``self._keys`` of the replica that took
    # the modal submission (Operation.key_holder names it; the key is never stored). Hazards:
    #
    # - The approval click may land on another replica: it approves without taking the lease, and
    #   the holder's resume pass drives the recreation. Other replicas leave it alone while the
    #   holder's heartbeat is fresh; once the holder is gone the first one to claim it fails the
    #   recreation with KeyLost, and the thread asks for the key again (Recreate… on the card).
    # - kill -9 after the create was sent: the send is recorded (``attempts``) before it is made,
    #   with a stored ClientToken. After a restart the key is gone, and resending the token without
    #   it is unsafe: if the first send never reached Alibaba, a keyless create would make a
    #   connection with a random key. So a resumed recreation never resends; it looks for the
    #   connection on the gateway by the tag the create carried (``vpnbot-operation=<op id>``)
    #   and carries on with it if found, else fails with KeyLost(sent=True). Never by CreateTime,
    #   name or subnets: a clock off by minutes, or a look-alike, would decide wrongly.
    # - Routes: the create says AutoConfigRoute=false, so the new connection starts with none and
    #   gets exactly the snapshot's. Before the first route (and after any refusal) the gateway's
    #   route tables are read: a route already on the new connection is not sent again (no error
    #   code is trusted to say "exists"). Each has its own deterministic token chain
    #   (``vpnbot-<op>-r<i>-<n>``), so a resend after a crash replays Alibaba's first answer; each
    #   result is stored as soon as it is known, and a route already stored is never sent again.
    #   One at a time, each after the gateway is ``active`` again (Alibaba refuses concurrent
    #   changes on a gateway).

    async def _step_creating(self, op: Operation) -> Operation:
        """CREATING -> WAITING_GATEWAY with the new connection, or a final failure."""
        if op.new_vco_id:
            return await self._move(op, OpState.WAITING_GATEWAY)
        keys = self._keys.get(op.id)
        if keys is None:
            return await self._without_key(op)
        config = op.snapshot.config if op.snapshot is not None else None
        if config is None:  # pragma: no cover - request_recreate refuses a snapshot without it
            return await self.finish(op, OpState.FAILED, Failed(code="no_snapshot", reason=""))
        while True:
            op = await self._record_send(op, OpState.CREATING)
            try:
                new_vco_id, request_id = await self._write(op).recreate_connection(
                    region=op.region,
                    config=config,
                    psk=keys.psk,
                    operation_id=op.id,
                    client_token=op.client_token,
                )
            except CloudError as err:
                if not err.definite:
                    # No usable answer: it may have been carried out. We still hold the key, so a
                    # resend with the same token is safe (Alibaba replays the first answer).
                    log.info("create got no answer; resending the same token", extra={"op_id": op.id})
                    await self._sleep_until_deadline(op, self._config.poll_interval_s)
                    if self._clock.now() >= self._deadline(op):
                        return op
                    continue
                retry_in = self._busy_retry(op, err)
                if retry_in is None:
                    return await self.finish(
                        op,
                        OpState.FAILED,
                        Failed(code=err.code, reason=err.friendly, request_id=err.request_id),
                    )
                op = await self._next_token(op, err, retry_in, state=OpState.CREATING)
                await self._pause(retry_in)
                continue
            # The key has done its job: it leaves memory now.
            self._keys.pop(op.id, None)
            return await self._move(
                op,
                OpState.WAITING_GATEWAY,
                event=Created(new_vco_id=new_vco_id, request_id=request_id),
                audit_action="recreate_sent",
                delete_request_id=request_id,
                new_vco_id=new_vco_id,
            )

    async def _without_key(self, op: Operation) -> Operation:
        """Resumed without the key: carry on with what a sent create made, else ask for the key again."""
        if op.attempts > 0:
            try:
                found = await self._created_before(op)
            except CloudError as err:
                log.warning(
                    "could not look for the created connection (%s)", err.code, extra={"op_id": op.id}
                )
                await self._sleep_until_deadline(op, self._config.poll_interval_s)
                return op
            if found is not None:
                log.info("found the connection the create made before a restart", extra={"op_id": op.id})
                return await self._move(
                    op,
                    OpState.WAITING_GATEWAY,
                    event=Created(new_vco_id=found, found=True),
                    audit_action="recreate_sent",
                    new_vco_id=found,
                )
        return await self.finish(op, OpState.FAILED, KeyLost(sent=op.attempts > 0), error_code="key_lost")

    async def _created_before(self, op: Operation) -> str | None:
        """The id of the connection this recreation's create made, found by its operation tag."""
        found = await self._read(op).tagged_connections(
            region=op.region, gateway_id=op.gateway_id, key=OPERATION_TAG, value=op.id
        )
        ids = sorted(c.id for c in found if c.id != op.vco_id)
        if len(ids) > 1:  # pragma: no cover - one create token, one connection; said if ever not
            log.warning("several connections carry this recreation's tag: %s", ids, extra={"op_id": op.id})
        return ids[0] if ids else None

    async def _step_routing(self, op: Operation) -> Operation:
        """ROUTING -> RECREATED: put each route back on the new connection, one at a time."""
        new_vco_id = op.new_vco_id
        assert new_vco_id is not None  # noqa: S101 - ROUTING is entered only with it
        tried = len(op.route_results)
        # What is on the new connection now (after a crash, some may be there already).
        present = await self._present_routes(op)
        for index, route in enumerate(_to_recreate(op)):
            if index < tried:
                continue
            if route.kind == "bgp":
                result = RouteResult(kind=route.kind, destination=route.destination, ok=True, code="bgp")
            elif present is not None and route.key in present:
                result = RouteResult(kind=route.kind, destination=route.destination, source=route.source)
            else:
                result = await self._create_route(op, index, route)
                if result.ok and present is not None:
                    present.add(route.key)
                elif not result.ok:
                    # A refusal may mean it is there (no code says so reliably): the tables decide.
                    present = await self._present_routes(op)
                    if present is not None and route.key in present:
                        result = RouteResult(
                            kind=route.kind, destination=route.destination, source=route.source
                        )
            stored = await self._store.set_fields(
                op.id,
                now=self._clock.now(),
                states={OpState.ROUTING},
                require_owner=self._owner,
                route_results=(*op.route_results, result),
            )
            if stored is None:
                raise LostOperation(op.id)
            op = stored
        elapsed = (self._clock.now() - (op.approved_at or op.created_at)).total_seconds()
        outcome = Recreated(
            new_vco_id=new_vco_id,
            elapsed_s=elapsed,
            routes=op.route_results,
            not_carried=await self._not_carried(op),
        )
        return await self.finish(op, OpState.RECREATED, outcome)

    async def _not_carried(self, op: Operation) -> tuple[NotCarried, ...]:
        """What the snapshot says cannot come back, less a resource group the new connection is in anyway."""
        snapshot = op.snapshot
        lost = snapshot.not_carried if snapshot is not None else ()
        if snapshot is None or op.new_vco_id is None or not snapshot.resource_group_id:
            return lost
        try:
            new = await self._read(op).describe_vpn_connection(region=op.region, vco_id=op.new_vco_id)
        except CloudError as err:
            log.warning("could not read the new connection (%s)", err.code, extra={"op_id": op.id})
            return lost  # said as possibly lost: the thread tells people to check
        if new.resource_group_id == snapshot.resource_group_id:
            # The account's default group was the old one's: nothing lost there.
            return tuple(n for n in lost if n.part != "resource_group")
        return lost

    async def _present_routes(self, op: Operation) -> set[tuple[str, str, str]] | None:
        """The routes on the new connection now, by :attr:`SnapshotRoute.key`; None if unreadable."""
        assert op.new_vco_id is not None  # noqa: S101 - see _step_routing
        try:
            routes = await self._read(op).routes_to(
                region=op.region, gateway_id=op.gateway_id, vco_id=op.new_vco_id
            )
        except CloudError as err:
            # Unread: each route is sent with its token chain, which replays rather than repeats.
            log.warning("could not read the route tables (%s)", err.code, extra={"op_id": op.id})
            return None
        return {r.key for r in routes}

    async def _create_route(self, op: Operation, index: int, route: SnapshotRoute) -> RouteResult:
        """One route, exactly once: wait for the gateway, send with this route's token chain."""
        assert op.new_vco_id is not None  # noqa: S101 - see _step_routing
        seq = 0
        last: CloudError | None = None
        while seq < self._config.busy_retry_attempts and self._clock.now() < self._deadline(op):
            await self._gateway_active(op)
            token = f"vpnbot-{op.id}-r{index}-{seq}"[:64]
            try:
                await self._write(op).create_route(
                    region=op.region,
                    gateway_id=op.gateway_id,
                    route=route,
                    next_hop=op.new_vco_id,
                    client_token=token,
                )
            except CloudError as err:
                last = err
                if not err.definite:
                    await self._sleep_until_deadline(op, self._config.poll_interval_s)
                    continue  # same token: a replay if it got there
                if not err.retryable:
                    return _route_failed(route, err)
                seq += 1  # a definite refusal (busy): the next send needs a new token
                await self._sleep_until_deadline(op, self._config.busy_retry_base_s)
                continue
            break
        else:
            return _route_failed(route, last) if last else _route_failed(route, None)
        return RouteResult(kind=route.kind, destination=route.destination, source=route.source)

    async def _gateway_active(self, op: Operation) -> None:
        """Wait (until the deadline) for the gateway to be ``active``: changes on it go one at a time."""
        while self._clock.now() < self._deadline(op):
            try:
                gateway = await self._read(op).describe_vpn_gateway(
                    region=op.region, gateway_id=op.gateway_id
                )
            except CloudError as err:
                log.warning("polling the gateway failed (%s); polling on", err.code, extra={"op_id": op.id})
            else:
                if gateway.status == "active":
                    return
            await self._sleep_until_deadline(op, self._config.poll_interval_s)

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


def _to_recreate(op: Operation) -> tuple[SnapshotRoute, ...]:
    return op.snapshot.routes if op.snapshot is not None else ()


def _route_failed(route: SnapshotRoute, err: CloudError | None) -> RouteResult:
    return RouteResult(
        kind=route.kind,
        destination=route.destination,
        source=route.source,
        ok=False,
        code=err.code if err else "timeout",
        reason=err.friendly if err else "",
    )
