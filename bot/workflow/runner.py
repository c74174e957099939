"""The runner: leases, the resume and expiry passes, and driving each operation within its room.

The deletion workflow is request, approval, one DeleteVpnConnection per gateway, then watching
it finish (:mod:`bot.workflow.delete`; recreations in :mod:`bot.workflow.recreate`). The states and their arrows are drawn in :class:`bot.domain.OpState`. The rules that keep a
deletion safe across clicks, retries, crashes and replicas:

- every state change is a compare-and-set in the store, written together with its audit entry
  and its Slack effects (the outbox), so of twenty clicks exactly one approves and what people
  see always catches up with what happened;
- a worker drives an operation only while it holds the operation's lease, and renews it; a
  worker that loses a CAS or its lease stops, and another replica resumes the operation once
  the lease expires (``stop()`` releases leases so that happens at once);
- one DeleteVpnConnection per gateway at a time (Alibaba rejects concurrent ones), through a
  durable gateway lock, released in the same transaction that ends the operation;
- a deletion approved for later (``at …``, or outside its account's change window) waits in
  ``scheduled`` holding nothing (no lease, gateway or driver); each replica's schedule pass starts
  the due ones, a compare-and-set deciding which replica does (:meth:`Runner.start_scheduled`);
- ClientTokens follow Alibaba's idempotence rules (:func:`bot.domain.client_token_for`): the
  token is kept across ambiguous outcomes and replaced after a definite rejection, and the send
  is recorded before it is made, so a resend after a crash reuses the token that may have been sent.

Slack never blocks a deletion: the workflow writes effects and kicks :class:`OutboxDispatcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.delivery import OutboxConfig, OutboxDispatcher
from bot.domain import (
    BatchMove,
    Crashed,
    Effect,
    EffectKind,
    Escalated,
    Expired,
    Failed,
    Operation,
    OpState,
    PostFailed,
    Reminded,
    Resumed,
    Starting,
)
from bot.errors import (
    CloudError,
    ConfirmationClosed,
    SlackError,
    StoreUnavailable,
)
from bot.ports import Clock, Notifier, OperationStore, Policy, Quorum
from bot.workflow.config import WorkflowConfig
from bot.workflow.steps import (
    CARD,
    SYSTEM_ACTOR,
    LostOperation,
    RecreateKeys,
    Stopping,
    direct,
    thread,
)

if TYPE_CHECKING:
    from bot.workflow.api import Steps

__all__ = ["Runner"]

log = logging.getLogger("bot.workflow")
_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
# A batch member in one of these has, or is still to take, its turn on its gateway.
_TURN_TAKING = frozenset(
    {OpState.SCHEDULED, OpState.APPROVED, OpState.DELETING, OpState.WAITING_GATEWAY, OpState.VERIFYING}
)
# Resumable operations a pass reads beyond its room: ones it skips (another replica's recreation
# keys) and, when full, enough to know that some wait.
_RESUME_SLACK = 32


# Set, in the task that drives an operation, to the event the lease keeper sets when the lease is lost.
def _outage(err: StoreUnavailable) -> str:
    """How the log names a database outage: a full disk needs a person, not patience."""
    return "the database has no disk space left" if err.disk_full else "the database is unreachable"


# After a pass that met a database outage, the next one comes this soon, doubling...
_OUTAGE_FIRST_RETRY_S = 1.0
# ... and never more than this apart, so a long outage's end is noticed within seconds too.
_OUTAGE_MAX_RETRY_S = 5.0
_LEASE_LOST: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("lease_lost", default=None)


class Runner:
    """Owns what drives operations here: the instance id, leases, the resume and expiry passes, the room.

    :class:`bot.workflow.api.Workflow` puts it together with the requests and the steps.
    """

    _steps: Steps

    def __init__(
        self,
        *,
        store: OperationStore,
        notifier: Notifier,
        policy: Policy,
        clock: Clock,
        config: WorkflowConfig,
        instance_id: str,
        quorum: Quorum | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        # VPNBOT_APPROVAL_RULES (None: every operation takes one approver, as the policy says).
        self._quorum = quorum
        self._clock = clock
        self._config = config
        self.instance_id = instance_id
        self.outbox = OutboxDispatcher(
            store=store,
            notifier=notifier,
            clock=clock,
            instance_id=instance_id,
            on_post_failed=self._confirmation_not_posted,
            config=OutboxConfig(
                claim_s=config.lease_s,
                give_up_s=config.slack_give_up_s,
                backoff_initial_s=config.slack_retry_base_s,
                backoff_max_s=config.slack_retry_max_s,
            ),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._driving: dict[str, asyncio.Task[None]] = {}
        # Approvals between their room check and their driver's start, counted against max_driven.
        self._starting = 0
        # Set when an operation waits for room here; a driver ending then wakes the resume pass.
        self._wants_room = False
        self._room = asyncio.Event()
        # The operations driven here, each with the event set when its lease is found lost; one
        # keeper task renews all their leases together (see _keep_leases).
        self._lost: dict[str, asyncio.Event] = {}
        # Operations whose driver here stopped on a database outage: their lease is still ours, so
        # the first resume pass that reaches the database takes them up again at once, as no restart.
        self._interrupted: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._looking_up: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # Recreations' keys, in this process's memory only (see bot.workflow.recreate).
        self._keys: dict[str, RecreateKeys] = {}

    async def start(self) -> None:
        """Resume what crashed or stopped replicas left, then keep resuming, expiring and delivering."""
        await self.run_once()
        self._loops = [
            asyncio.create_task(
                self._every(self._resume_pass, "resume", wake=self._room), name="vpnbot-resume"
            ),
            asyncio.create_task(self._every(self._expiry_pass, "expiry"), name="vpnbot-expiry"),
            asyncio.create_task(self._every(self._schedule_pass, "schedule"), name="vpnbot-schedule"),
            asyncio.create_task(self._every(self.outbox.pass_once, "outbox"), name="vpnbot-outbox"),
        ]

    async def stop(self, *, release_leases: bool = True, grace_s: float = 10.0) -> None:
        """Stop every background task; give leases back so another replica resumes at once.

        Work stops at its next safe point (a pause between API calls) so no database or API call
        is cut off halfway; whatever is still busy after ``grace_s`` is cancelled.
        ``release_leases=False`` behaves like a crash: the leases stay until they expire.
        """
        held = list(self._driving)
        self._stopping.set()
        tasks = [*self._loops, *self._tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        await self.outbox.stop(grace_s)
        if release_leases:
            for op_id in held:
                try:
                    await self._store.release_lease(op_id=op_id, owner=self.instance_id)
                except Exception:
                    log.exception("could not release the lease on %s", op_id, extra={"op_id": op_id})

    async def run_once(self) -> None:
        """One pass of resume, expiry and outbox delivery (the background loops call the same)."""
        await self._resume_pass()
        await self._expiry_pass()
        await self._schedule_pass()
        await self.outbox.pass_once()

    async def wait_idle(self) -> None:
        """Wait until every operation this instance drives has stopped and Slack is told (tests, demo)."""
        while self._driving:
            await asyncio.gather(*self._driving.values(), return_exceptions=True)
        await self.outbox.wait_idle()

    def now(self) -> datetime:
        """The time on the workflow's clock (the Slack layer checks requested run times against it)."""
        return self._clock.now()

    @property
    def driving(self) -> frozenset[str]:
        """Ids of the operations this instance drives right now."""
        return frozenset(self._driving)

    # --- background passes -----------------------------------------------------------------------

    async def _every(
        self, job: Callable[[], Awaitable[None]], name: str, *, wake: asyncio.Event | None = None
    ) -> None:
        """Run ``job`` every ``loop_s``, and as soon as ``wake`` is set (it is cleared before the run)."""
        outage_pause = _OUTAGE_FIRST_RETRY_S
        with contextlib.suppress(Stopping):
            while True:
                if wake is not None:
                    wake.clear()
                try:
                    await job()
                except StoreUnavailable as err:
                    # An outage, not a bug: one line per pass, no traceback; the next pass tries
                    # again soon (1 s, doubling up to 5 s or the loop's period), so the bot notices the
                    # database's return within seconds, not a whole lease later.
                    log.warning(
                        "the %s loop: %s; trying again",
                        name,
                        _outage(err),
                        extra={"error": err.detail},
                    )
                    await self._pause(min(outage_pause, self._config.loop_s), wake=wake)
                    outage_pause = min(outage_pause * 2, _OUTAGE_MAX_RETRY_S)
                    continue
                except Exception:
                    log.exception("the %s loop failed; trying again", name)
                outage_pause = _OUTAGE_FIRST_RETRY_S
                await self._pause(self._config.loop_s, wake=wake)

    async def _pause(self, seconds: float, *, wake: asyncio.Event | None = None) -> None:
        """Sleep on the clock; at this safe point raise Stopping on shutdown, LostOperation on a lost lease.

        ``wake``: end the sleep early once this event is set.
        """
        lost = _LEASE_LOST.get()
        if not self._stopping.is_set() and not (lost and lost.is_set()) and seconds > 0:
            waits = {
                asyncio.ensure_future(self._clock.sleep(seconds)),
                asyncio.ensure_future(self._stopping.wait()),
            }
            if lost is not None:
                waits.add(asyncio.ensure_future(lost.wait()))
            if wake is not None:
                waits.add(asyncio.ensure_future(wake.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        if self._stopping.is_set():
            raise Stopping
        if lost is not None and lost.is_set():
            raise LostOperation

    async def _resume_pass(self) -> None:
        now = self._clock.now()
        # Proves this instance alive to the others (a recreation's key holder must be).
        await self._store.heartbeat(instance=self.instance_id, now=now)
        await self._take_up_interrupted(now)
        self._wants_room = False
        # Only as many as there is room for (and a few to skip): with a backlog, every driver that
        # ends runs a pass, which must not read the whole backlog each time. Recreations whose key
        # is held here may go past the limit, so then the whole list is read.
        limit = None if self._keys else self._room_left() + len(self._looking_up) + _RESUME_SLACK
        for op in await self._store.list_resumable(now=now, limit=limit):
            if op.id in self._driving or op.id in self._looking_up:
                continue
            keyed = op.is_recreate and op.id in self._keys  # only this instance can drive it
            if not keyed and not self._has_room():
                # Full: leave it for a replica with room, or for this one once a driver ends.
                self._wants_room = True
                continue
            if await self._key_elsewhere(op, now):
                continue
            claimed = await self._store.claim_lease(
                op_id=op.id,
                owner=self.instance_id,
                until=now + timedelta(seconds=self._config.lease_s),
                now=now,
            )
            if claimed is None:
                continue  # another replica was faster
            log.info("resuming operation in state %s", claimed.state.value, extra={"op_id": claimed.id})
            # A recreation approved on another replica and handed to its key holder is no restart.
            handed_over = claimed.is_recreate and claimed.id in self._keys and claimed.attempts == 0
            if claimed.state is not OpState.LOOKING_UP and not handed_over:
                # Approved and nothing sent yet (it waited for room, or its driver stopped first).
                fresh = (
                    claimed.state is OpState.APPROVED and claimed.attempts == 0 and claimed.snapshot is None
                )
                await self._store.enqueue(
                    op_id=claimed.id,
                    effects=[thread(Resumed(instance=self.instance_id, fresh=fresh))],
                    now=now,
                )
                self.outbox.kick(claimed.id)
            await self._store.add_audit(
                self._steps.entry(claimed, "resumed", actor_id=SYSTEM_ACTOR, detail=f"by {self.instance_id}")
            )
            self._start_driving(claimed)

    async def _take_up_interrupted(self, now: datetime) -> None:
        """Drive again, at once and without a "picked up again" reply, what an outage stopped here."""
        for op_id in sorted(self._interrupted):
            if op_id in self._driving:
                continue
            claimed = await self._store.claim_lease(
                op_id=op_id,
                owner=self.instance_id,
                until=now + timedelta(seconds=self._config.lease_s),
                now=now,
            )
            self._interrupted.discard(op_id)
            if claimed is None:
                continue  # finished, or its lease ran out and another replica took it
            log.info("the database is back; continuing the operation", extra={"op_id": op_id})
            self._start_driving(claimed)

    async def _key_elsewhere(self, op: Operation, now: datetime) -> bool:
        """Whether a live replica other than this one holds ``op``'s key: leave the recreation to it."""
        if not op.is_recreate or op.id in self._keys or op.new_vco_id:
            return False
        holder = op.key_holder
        if holder is None or holder == self.instance_id:
            return False
        seen = await self._store.instance_seen(instance=holder)
        # Alive: its heartbeat (written every loop pass) is younger than a lease.
        return seen is not None and now - seen < timedelta(seconds=self._config.lease_s)

    async def _expiry_pass(self) -> None:
        now = self._clock.now()
        for op in await self._store.list_expired_confirmations(now=now):
            await self._expire(op)
        await self._nudge_pass()
        # Deleted cards whose Recreate… window closed lose the button.
        for op in await self._store.list_undo_closing(now=now):
            closed = await self._store.set_fields(
                op.id, now=now, states={OpState.DELETED}, undo_until=None, effects=[CARD]
            )
            if closed is not None:
                self.outbox.kick(op.id)

    async def _nudge_pass(self) -> None:
        """Remind the approvers, and call VPNBOT_ESCALATE_TO, once each about unanswered confirmations.

        Each is a compare-and-set on its stamp (``reminded_at``, ``escalated_at``) in the transaction
        that writes the thread reply, so however many replicas and restarts run this pass, the
        reply is written once; a batch's card gets one for all its connections. Nothing is said
        about a request a freeze covers (its approval would be refused) until the freeze ends.
        """
        config = self._config
        now = self._clock.now()
        if config.remind_after_s <= 0 and not config.escalate_to:
            return
        # Nobody is asked to approve what a freeze refuses: reminded (and escalated) once it is lifted.
        freezes = await self._store.active_freezes(now=now)

        def open_to_approval(ops: list[Operation]) -> list[Operation]:
            return [op for op in ops if not any(f.applies_to(op.account) for f in freezes)]

        if config.remind_after_s > 0:
            # Asked at its expiry less the TTL: when requested, or when asked again after its connection
            # changed since it was approved (bot.workflow.binding), which gives it a fresh expiry.
            ttl = timedelta(seconds=config.confirmation_ttl_s)
            due = now - timedelta(seconds=config.remind_after_s) + ttl
            listed = open_to_approval(
                await self._store.list_unanswered(mark="reminded_at", now=now, expiring_before=due)
            )
            for op, tells in _one_per_card(listed):
                waited = (now - max(op.created_at, op.expires_at - ttl)).total_seconds()
                reminder = [thread(self._reminded(op, waited))] if tells else []
                if (
                    await self._store.mark_once(op.id, mark="reminded_at", now=now, effects=reminder)
                    and tells
                ):
                    self.outbox.kick(op.id)
        if config.escalate_to:
            soon = now + timedelta(seconds=config.escalate_before_s)
            listed = open_to_approval(
                await self._store.list_unanswered(mark="escalated_at", now=now, expiring_before=soon)
            )
            for op, tells in _one_per_card(listed):
                left = (op.expires_at - now).total_seconds()
                call = [thread(Escalated(group=config.escalate_to, left_s=left))] if tells else []
                if await self._store.mark_once(op.id, mark="escalated_at", now=now, effects=call) and tells:
                    self.outbox.kick(op.id)

    def _reminded(self, op: Operation, waited: float) -> Reminded:
        """The reminder about ``op``: under a quorum rule it names only who is still needed."""
        rule = self._quorum.rule_for(op) if self._quorum is not None else None
        if rule is None:
            return Reminded(waited_s=waited, approvers=self._config.approvers)
        if rule.groups:
            covered = {a.group for a in op.approvals}
            who = tuple(g for g in rule.groups if g not in covered)
        else:
            gone = {a.user_id for a in op.approvals} | {op.requester_id}
            who = tuple(a for a in self._config.approvers if a not in gone)
        return Reminded(waited_s=waited, approvers=who, approvals=len(op.approvals), needed=rule.count)

    async def _schedule_pass(self) -> None:
        """Start each scheduled deletion whose time has come (each once, whichever replica gets there first)."""
        for op in await self._store.list_due_scheduled(now=self._clock.now()):
            try:
                await self.start_scheduled(op)
            except StoreUnavailable:
                raise  # the loop waits for the database
            except Exception:
                # One deletion's unexpected failure must not hold back the others due now.
                log.exception(
                    "could not start a scheduled deletion; trying again next pass", extra={"op_id": op.id}
                )

    async def start_scheduled(self, op: Operation, *, override_by: str | None = None) -> Operation | None:
        """SCHEDULED -> APPROVED now, driven here if there is room: the one place a scheduled run starts.

        ``override_by``: a second approver overrode the change window (audited ``window_override``).
        The connection is read again first: gone, or on another gateway, the deletion fails with
        that reason instead. A compare-and-set decides, so of several replicas (or a due pass and an
        override) exactly one starts it; the others get None. A read that fails is tried again at the
        next pass (an override raises it) until the deadline has passed, then the deletion fails.
        Any rule that may hold a due run back (a freeze) goes at the top of this method.
        """
        now = self._clock.now()
        run_at = now if override_by is not None or op.run_at is None else op.run_at
        # A batch's members start together: each may wait for its gateway's other turns first.
        turns = await self._batch_turns(op) if op.batch_id is not None else 1
        deadline = run_at + timedelta(seconds=self._config.delete_timeout_s * turns)
        try:
            problem = await self._steps.recheck_scheduled(op)
        except CloudError as err:
            if override_by is not None:
                raise
            if now < deadline:
                log.warning(
                    "could not read the scheduled connection again (%s); trying again at the next pass",
                    err.code,
                    extra={"op_id": op.id},
                )
                return None
            problem = Failed(code=err.code, reason=err.friendly, request_id=err.request_id)
        if problem is not None:
            return await self._scheduled_failed(op, problem)
        ours = self._has_room()
        lease = (self.instance_id, now + timedelta(seconds=self._config.lease_s) if ours else now)
        if ours:
            self._starting += 1
        try:
            action, detail = (
                ("window_override", f"change window overridden; second approver to {op.approver_id}")
                if override_by is not None
                else ("started", f"scheduled for {run_at.isoformat()}")
            )
            started = await self._store.transition(
                op.id,
                from_states={OpState.SCHEDULED},
                to=OpState.APPROVED,
                now=now,
                lease=lease,
                run_at=run_at,
                deadline_at=deadline,
                audit_entry=(
                    entry := self._steps.entry(
                        op, action, actor_id=override_by or SYSTEM_ACTOR, detail=detail
                    )
                ),
                effects=[
                    CARD,
                    thread(Starting(run_at=run_at, override_by=override_by or "")),
                    *self._steps.announce(entry, note=detail),
                ],
            )
            if started is None:
                return None  # cancelled, or started by another replica
            self.outbox.kick(op.id)
            log.info("scheduled deletion starting", extra={"op_id": op.id, "vco_id": op.vco_id})
            if ours:
                self._start_driving(started)
            else:
                self._wants_room = True
        finally:
            if ours:
                self._starting -= 1
        return started

    async def _batch_turns(self, op: Operation) -> int:
        """How many of ``op``'s batch go through its gateway, ``op`` included, from now on (at least 1).

        As an approval at once counts them (:meth:`BatchRequests.approve_batch`): the members still
        scheduled, and those started and not finished, on the same gateway.
        """
        members = await self._store.batch_operations(batch_id=op.batch_id or "")
        pending = [m for m in members if m.gateway_id == op.gateway_id and m.state in _TURN_TAKING]
        return max(1, len(pending) + (op.id not in {m.id for m in pending}))

    async def _scheduled_failed(self, op: Operation, problem: Failed) -> Operation | None:
        """SCHEDULED -> FAILED: at its time the connection was gone or had moved; nothing was sent."""
        now = self._clock.now()
        failed = await self._store.transition(
            op.id,
            from_states={OpState.SCHEDULED},
            to=OpState.FAILED,
            now=now,
            finished_at=now,
            error_code=problem.code,
            error_text=problem.reason or None,
            audit_entry=(
                entry := self._steps.entry(
                    op, "failed", actor_id=SYSTEM_ACTOR, detail=f"at the scheduled time: {problem.code}"
                )
            ),
            effects=[thread(problem), CARD, direct(problem), *self._steps.announce(entry, note=problem.code)],
        )
        if failed is not None:
            self.outbox.kick(op.id)
            self._steps.finished(failed)
        return failed

    async def _expire(self, op: Operation) -> None:
        now = self._clock.now()
        entry = self._steps.entry(op, "expired", actor_id=SYSTEM_ACTOR, detail="no approval in time")
        expired = await self._store.transition(
            op.id,
            from_states=_AWAITING,
            to=OpState.EXPIRED,
            now=now,
            finished_at=now,
            audit_entry=entry,
            # A batch's card says it expired for every member; its requester gets no message per member.
            effects=[CARD, *([] if op.batch_id else [direct(Expired())]), *self._steps.announce(entry)],
        )
        if expired is not None:
            self._keys.pop(op.id, None)
            self.outbox.kick(op.id)
            self._steps.finished(expired)

    async def _confirmation_not_posted(self, op: Operation, err: SlackError) -> None:
        """The outbox could not post the confirmation: fail the request and tell the requester."""
        now = self._clock.now()
        entry = self._steps.entry(
            op, "failed", actor_id=SYSTEM_ACTOR, detail=f"confirmation not posted: {err.error}"
        )
        failed = await self._store.transition(
            op.id,
            from_states=_AWAITING,
            to=OpState.FAILED,
            now=now,
            finished_at=now,
            error_code=f"slack:{err.error}",
            error_text=err.friendly,
            audit_entry=entry,
            effects=[
                Effect(EffectKind.RESPOND, PostFailed(error=err.error, reason=err.friendly)),
                # Its "requested" line went out without a card to link; this one says why.
                *self._steps.announce(entry, note=err.friendly),
            ],
        )
        if failed is not None:
            self._keys.pop(op.id, None)
            self.outbox.kick(op.id)
            self._steps.finished(failed)
        if op.batch_id is not None:
            await self._batch_not_posted(op.batch_id, err, told=failed is not None)

    async def _batch_not_posted(self, batch_id: str, err: SlackError, *, told: bool) -> None:
        """A batch's card could not be posted: its other connections fail with it (nobody could approve).

        The requester is told once: by the card's member (``told``), else by the first one failed here
        (the card's member had failed its lookup already).
        """
        now = self._clock.now()
        members = [
            m
            for m in await self._store.batch_operations(batch_id=batch_id)
            if m.state is OpState.AWAITING_APPROVAL
        ]
        tell = (Effect(EffectKind.RESPOND, PostFailed(error=err.error, reason=err.friendly)),)
        moves = [
            BatchMove(
                op_id=m.id,
                fields={"finished_at": now, "error_code": f"slack:{err.error}", "error_text": err.friendly},
                audit_entry=self._steps.entry(
                    m, "failed", actor_id=SYSTEM_ACTOR, detail=f"confirmation not posted: {err.error}"
                ),
                effects=tell if index == 0 and not told else (),
            )
            for index, m in enumerate(members)
        ]
        moved = await self._store.transition_batch(moves, from_states=_AWAITING, to=OpState.FAILED, now=now)
        for failed in moved:
            self._steps.finished(failed)
        if moved and not told:
            self.outbox.kick(moved[0].id)

    # --- driving one operation ---------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _room_left(self) -> int:
        """How many more operations this instance may start driving (``max_driven``)."""
        return max(0, self._config.max_driven - len(self._driving) - self._starting)

    def _has_room(self) -> bool:
        return self._room_left() > 0

    def _start_driving(self, op: Operation) -> None:
        if op.id in self._driving:
            return
        task = self._spawn(self._run(op), name=f"vpnbot-op-{op.id}")
        self._driving[op.id] = task
        task.add_done_callback(lambda _t: self._driver_ended(op.id))

    def _driver_ended(self, op_id: str) -> None:
        self._driving.pop(op_id, None)
        if self._wants_room and not self._stopping.is_set():
            self._room.set()  # the resume loop runs now instead of at its next pass

    async def _run(self, op: Operation) -> None:
        """Drive ``op`` while renewing its lease; count unexpected failures against its crash budget."""
        lost = self._lost[op.id] = asyncio.Event()
        self._keep_leases_running()
        # A lost lease is not a cancellation: the driver stops at its next pause or its next
        # compare-and-set (which fails without the lease), never halfway through a database call
        # (a cut-off SQLite transaction would keep the database locked) or after its final commit.
        token = _LEASE_LOST.set(lost)
        try:
            driver = asyncio.create_task(self._steps.drive(op), name=f"vpnbot-drive-{op.id}")
        finally:
            _LEASE_LOST.reset(token)
        try:
            await asyncio.wait({driver})
            driver.result()
        except LostOperation:
            log.warning("lease lost; another worker owns the operation now", extra={"op_id": op.id})
        except Stopping:
            log.info(
                "shutting down; the operation resumes on the next start or another replica",
                extra={"op_id": op.id},
            )
        except StoreUnavailable as err:
            # An outage, not a bug: no crash is counted. This instance keeps the lease and takes
            # the operation up again at its first resume pass that reaches the database; if it
            # dies meanwhile, the lease runs out and another replica picks it up.
            self._interrupted.add(op.id)
            log.warning(
                "%s; the operation resumes once it is back",
                _outage(err),
                extra={"op_id": op.id, "error": err.detail},
            )
        except Exception as exc:  # noqa: BLE001 - a driver's unexpected failure is counted against its crash budget
            await self._crashed(op.id, exc)
        finally:
            if self._lost.get(op.id) is lost:
                del self._lost[op.id]
            driver.cancel()
            # Wait for it even when we are being cancelled, so nothing outlives stop().
            await asyncio.gather(driver, return_exceptions=True)

    async def _crashed(self, op_id: str, exc: Exception) -> None:
        """Count a crash; past the budget fail the operation, else let a resume pass retry it."""
        error_id = secrets.token_hex(3)
        log.error(
            "driving the operation failed unexpectedly",
            extra={"op_id": op_id, "error_id": error_id},
            exc_info=exc,
        )
        try:
            op = await self._store.get_operation(op_id=op_id)
            if op is None or op.is_terminal:
                return
            crashes = op.crashes + 1
            if crashes >= self._config.crash_budget:
                await self._steps.finish(
                    op,
                    OpState.FAILED,
                    Crashed(error_id=error_id),
                    error_code=f"crash:{error_id}",
                    crashes=crashes,
                )
                return
            await self._store.set_fields(
                op_id, now=self._clock.now(), require_owner=self.instance_id, crashes=crashes
            )
            # The lease is kept until it expires: a resume pass tries again then, a natural back-off.
        except Exception:
            log.exception("could not record the crash", extra={"op_id": op_id, "error_id": error_id})

    def _keep_leases_running(self) -> None:
        """Start the lease keeper unless it runs (it stops by itself once nothing is driven here)."""
        if self._keeper is None or self._keeper.done():
            # A context of its own: it must not inherit a driver's lost-lease event.
            self._keeper = asyncio.create_task(
                self._keep_leases(), name="vpnbot-leases", context=contextvars.Context()
            )
            self._tasks.add(self._keeper)
            self._keeper.add_done_callback(self._tasks.discard)

    async def _keep_leases(self) -> None:
        """Every lease_s/3, renew the lease of every operation driven here, in one statement.

        One transaction per replica and period, not one per operation; an operation whose lease
        was not renewed (another replica took it after it expired) has its lost event set, and its
        driver stops at its next pause or compare-and-set. A failed renewal (a database hiccup) is
        tried again next period, until the leases really expire.
        """
        while True:
            try:
                await self._pause(self._config.lease_s / 3)
            except Stopping:
                return
            if not self._lost:
                self._keeper = None  # no await since the check: a driver starting now starts another
                return
            held = list(self._lost)
            until = self._clock.now() + timedelta(seconds=self._config.lease_s)
            try:
                renewed = await self._store.renew_leases(op_ids=held, owner=self.instance_id, until=until)
            except Exception as exc:  # noqa: BLE001 - a failed renewal is tried again next period, until the leases expire
                log.warning("could not renew the leases (%s)", type(exc).__name__, extra={"count": len(held)})
                continue
            for op_id in held:
                lost = self._lost.get(op_id)
                if op_id not in renewed and lost is not None:
                    lost.set()

    # --- small helpers -----------------------------------------------------------------------

    async def _load(self, op_id: str) -> Operation:
        op = await self._store.get_operation(op_id=op_id)
        if op is None:
            raise ConfirmationClosed(None)
        return op


def _one_per_card(ops: list[Operation]) -> list[tuple[Operation, bool]]:
    """Each of ``ops`` with whether its thread reply is sent: the members of a batch share one card,
    so one reply for the batch (with its member of the smallest id; every replica picks the same one),
    the others only stamped."""
    first: dict[str, str] = {}
    for op in ops:
        if op.batch_id is not None and (op.batch_id not in first or op.id < first[op.batch_id]):
            first[op.batch_id] = op.id
    return [(op, op.batch_id is None or first[op.batch_id] == op.id) for op in ops]
