"""The deletion workflow: request, approval, one DeleteVpnConnection per gateway, then watching it finish.

The states and their arrows are drawn in :class:`bot.domain.OpState`. The rules that keep a
deletion safe across clicks, retries, crashes and replicas:

- every state change is a compare-and-set in the store, written together with its audit entry
  and its Slack effects (the outbox), so of twenty clicks exactly one approves and what people
  see always catches up with what happened;
- a worker drives an operation only while it holds the operation's lease, and renews it; a
  worker that loses a CAS or its lease stops, and another replica resumes the operation once
  the lease expires (``stop()`` releases leases so that happens at once);
- one DeleteVpnConnection per gateway at a time (Alibaba rejects concurrent ones), through a
  durable gateway lock, released in the same transaction that ends the operation;
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
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from bot.delivery import OutboxConfig, OutboxDispatcher
from bot.domain import (
    KIND_RECREATE,
    AuditEntry,
    Crashed,
    Deferred,
    Denied,
    Effect,
    EffectKind,
    Expired,
    Operation,
    OpState,
    PostFailed,
    Resumed,
    VpnConnection,
    VpnGateway,
    client_token_for,
)
from bot.errors import (
    AlreadyRequested,
    ConfirmationClosed,
    NotAllowed,
    RecreateRefused,
    SlackError,
    StoreUnavailable,
)
from bot.ports import Clock, NoMeter, Notifier, OperationMeter, OperationStore, Policy, VpcApi, VpcApis
from bot.workflow.config import WorkflowConfig
from bot.workflow.steps import (
    CARD,
    SYSTEM_ACTOR,
    LostOperation,
    RecreateKeys,
    Steps,
    Stopping,
    direct,
    thread,
)

__all__ = ["Workflow"]

log = logging.getLogger("bot.workflow")
_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
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


class _OneVpc:
    """One VPC API for every account (the single-account bot and tests)."""

    def __init__(self, vpc: VpcApi) -> None:
        self._vpc = vpc

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi:
        return self._vpc


class Workflow:
    """Drives deletion operations from the slash command to a final state."""

    def __init__(
        self,
        *,
        store: OperationStore,
        vpc: VpcApi | None = None,
        vpcs: VpcApis | None = None,
        notifier: Notifier,
        policy: Policy,
        clock: Clock,
        config: WorkflowConfig,
        instance_id: str,
        meter: OperationMeter | None = None,
    ) -> None:
        """``vpcs`` gives each account's VPC API; a plain ``vpc`` serves the single-account bot."""
        if vpcs is None:
            if vpc is None:
                raise TypeError("Workflow needs vpc or vpcs")
            vpcs = _OneVpc(vpc)
        self._store = store
        self._policy = policy
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
        # Recreations' keys, in this process's memory only (see Steps, "recreations").
        self._keys: dict[str, RecreateKeys] = {}
        self._steps = Steps(
            store=store,
            vpcs=vpcs,
            clock=clock,
            config=config,
            owner=instance_id,
            outbox=self.outbox,
            pause=self._pause,
            meter=meter or NoMeter(),
            keys=self._keys,
        )

    # --- public API (the Slack layer calls exactly these) ----------------------------------------

    async def request_delete(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_id: str,
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
    ) -> Operation:
        """Check policy, record the request, look the connection up and post the confirmation.

        ``account`` is the VPNBOT_ACCOUNTS name it runs in (the Slack layer chose and checked it);
        ``""`` for the single-account bot. One open request per person and connection: if this
        person's earlier request for it is still looking up or awaiting approval, nothing is
        recorded and AlreadyRequested (with that operation) is raised.

        The request is recorded (leased to this worker) before the lookup goes on past its first
        read, so if this process dies during it another worker finishes the lookup and answers the
        requester. That first read, of the connection, is on its way while the request is
        recorded: waiting for the store first put a transaction (a queue of them, in a burst) in
        front of the first Alibaba round trip.
        """
        try:
            await self._policy.check_request(user_id=user_id, channel_id=channel_id, region=region)
        except NotAllowed as err:
            entry = AuditEntry(
                at=self._clock.now(),
                action="refused",
                actor_id=user_id,
                vco_id=vco_id,
                region=region,
                detail=f"request: {err.friendly}",
                account=account or None,
            )
            await self._store.add_audit(entry)
            raise
        read = asyncio.ensure_future(
            self._steps.read_connection(account=account, region=region, vco_id=vco_id)
        )
        try:
            op = await self._record_request(
                team_id=team_id,
                user_id=user_id,
                channel_id=channel_id,
                vco_id=vco_id,
                region=region,
                response_url=response_url,
                account=account,
                reason=reason,
                ticket=ticket,
            )
            self._looking_up.add(op.id)
            try:
                op = await self._steps.look_up(op, reply_on_failure=False, connection=read)
            finally:
                self._looking_up.discard(op.id)
        finally:
            # Not recorded (the store failed), or the lookup ended before it needed the read.
            read.cancel()
            if read.done() and not read.cancelled():
                read.exception()  # looked at: it was the lookup's to report, or nobody's
        # Posted (or its delivery is retried) before this returns. The operation is returned as the
        # lookup left it, without the message's ts: reading it back would cost every request one
        # more store transaction, and no caller needs it.
        await self.outbox.deliver(op.id)
        return op

    async def _record_request(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_id: str,
        region: str,
        response_url: str | None,
        account: str,
        reason: str | None = None,
        ticket: str | None = None,
    ) -> Operation:
        """Store the request (leased to this worker) before anything is looked up."""
        now = self._clock.now()
        op_id = uuid.uuid4().hex
        op = Operation(
            id=op_id,
            state=OpState.LOOKING_UP,
            region=region,
            # Placeholders until the lookup fills them in.
            connection=VpnConnection(vco_id, region, "", "", "", "", "", ""),
            gateway=VpnGateway("", region, "", ""),
            requester_id=user_id,
            channel_id=channel_id,
            team_id=team_id,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=self._config.confirmation_ttl_s),
            client_token=client_token_for(op_id),
            response_url=response_url,
            account=account,
            reason=reason,
            ticket=ticket,
        )
        created = await self._store.create_operation(
            op=op,
            lease=(self.instance_id, now + timedelta(seconds=self._config.lease_s)),
            audit_entry=self._steps.entry(op, "requested", actor_id=user_id, detail=f"channel {channel_id}"),
            one_open=True,
        )
        if created.id != op.id:
            raise AlreadyRequested(created)
        return created

    async def recreate_target(self, *, op_id: str, user_id: str, channel_id: str) -> Operation:
        """The deleted operation ``op_id`` if Recreate… may be used on it now by ``user_id``.

        Raises RecreateRefused (window closed, already recreated or under way, …) or NotAllowed.
        """
        parent = await self._store.get_operation(op_id=op_id)
        if self._config.undo_window_s <= 0:
            raise RecreateRefused("off", parent)
        if parent is None or parent.is_recreate or parent.state is not OpState.DELETED:
            raise RecreateRefused("not_deleted", parent)
        if parent.snapshot is None or parent.snapshot.config is None:
            raise RecreateRefused("no_snapshot", parent)
        for other in await self._store.recreations_of(parent_op_id=parent.id):
            if other.state is OpState.RECREATED:
                raise RecreateRefused("recreated", parent, other)
            if not other.is_terminal:
                raise RecreateRefused("in_progress", parent, other)
        if parent.new_vco_id:
            raise RecreateRefused("recreated", parent)
        if parent.undo_until is None or self._clock.now() >= parent.undo_until:
            raise RecreateRefused("window_closed", parent)
        await self._policy.check_request(user_id=user_id, channel_id=channel_id, region=parent.region)
        return parent

    async def request_recreate(
        self,
        *,
        op_id: str,
        user_id: str,
        channel_id: str,
        psk: SecretStr,
    ) -> Operation:
        """Record a recreation of deleted ``op_id`` and post its confirmation in the card's thread.

        ``user_id`` submitted the modal: they are the requester (four-eyes counts them). The key
        stays in this process's memory (``key_holder`` names it); it is never stored.
        """
        try:
            parent = await self.recreate_target(op_id=op_id, user_id=user_id, channel_id=channel_id)
        except NotAllowed as err:
            refused = await self._store.get_operation(op_id=op_id)
            await self._store.add_audit(
                AuditEntry(
                    at=self._clock.now(),
                    action="recreate_refused",
                    actor_id=user_id,
                    op_id=op_id,
                    vco_id=refused.vco_id if refused else None,
                    region=refused.region if refused else None,
                    detail=f"request: {err.friendly}",
                )
            )
            raise
        now = self._clock.now()
        new_id = uuid.uuid4().hex
        op = Operation(
            id=new_id,
            state=OpState.AWAITING_APPROVAL,
            region=parent.region,
            connection=parent.connection,
            gateway=parent.gateway,
            requester_id=user_id,
            channel_id=parent.channel_id,
            team_id=parent.team_id,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=self._config.confirmation_ttl_s),
            client_token=client_token_for(new_id),
            snapshot=parent.snapshot,
            kind=KIND_RECREATE,
            parent_op_id=parent.id,
            thread_ts=parent.message_ts,
            key_holder=self.instance_id,
            # The deleted connection's account: it is recreated where it was.
            account=parent.account,
        )
        self._keys[new_id] = RecreateKeys(psk=psk)
        try:
            # One transaction with the parent locked: a modal submitted twice at once starts one.
            created = await self._store.create_recreation(
                op=op,
                audit_entry=self._steps.entry(
                    op, "recreate_requested", actor_id=user_id, detail=f"of {parent.id}"
                ),
                effects=[Effect(EffectKind.POST_CONFIRMATION)],
            )
        except BaseException:
            self._keys.pop(new_id, None)
            raise
        if created is None:
            self._keys.pop(new_id, None)
            # Another submission won the race: say why, as a click would.
            await self.recreate_target(op_id=op_id, user_id=user_id, channel_id=channel_id)
            raise RecreateRefused("in_progress", parent)
        await self.outbox.deliver(new_id)
        return created

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Approve once (the first click wins), then delete in the background; return at once.

        ``message_ts`` is the clicked message: a click can arrive before the confirmation's ts
        is recorded (it is stored once chat.postMessage answers), and the thread needs it.
        """
        op = await self._load(op_id)
        try:
            await self._policy.check_approval(user_id=user_id, op=op)
        except NotAllowed as err:
            # Counted on one row per person and card: a click storm cannot flood /vpn history.
            await self._store.add_audit(
                self._steps.entry(op, "refused", actor_id=user_id, detail=f"approve: {err.friendly}", times=1)
            )
            raise
        if op.state is not OpState.AWAITING_APPROVAL:
            raise ConfirmationClosed(op)
        now = self._clock.now()
        if now >= op.expires_at:
            await self._expire(op)
            raise ConfirmationClosed(await self._load(op_id))
        # A recreation is driven by the replica holding its key: another replica approves it
        # unleased and leaves it to the holder's resume pass (or, holder gone, to KeyLost).
        # A deletion approved while this instance drives all it may (max_driven) is left unleased
        # too: the first resume pass with room, here or on another replica, takes it.
        ours = op.id in self._keys if op.is_recreate else self._has_room()
        deferred = not ours and not op.is_recreate
        effects = [CARD, thread(Deferred(driving=len(self._driving)))] if deferred else [CARD]
        # Lease in the same CAS: no other replica may see it approved and unowned. A deferred one
        # gets a lease that ends now, so the lookup's lease does not hold it back.
        lease: tuple[str, datetime] | None = None
        if ours:
            lease = (self.instance_id, now + timedelta(seconds=self._config.lease_s))
        elif deferred:
            lease = (self.instance_id, now)
        if ours:
            self._starting += 1
        try:
            # The card's update is claimed in the same transaction (as the lookup's post is): the
            # outbox does not claim and read it again first.
            moved = await self._store.transition_and_claim(
                op_id,
                claim=self.outbox.claim_terms(),
                from_states=_AWAITING,
                to=OpState.APPROVED,
                now=now,
                approver_id=user_id,
                approved_at=now,
                deadline_at=now + timedelta(seconds=self._config.delete_timeout_s),
                message_ts=op.message_ts or message_ts,
                lease=lease,
                audit_entry=self._steps.entry(op, "approved", actor_id=user_id),
                effects=effects,
            )
            if moved is None:
                raise ConfirmationClosed(await self._load(op_id))
            approved, pending = moved
            self.outbox.deliver_claimed(approved, pending)
            if ours:
                self._start_driving(approved)
        finally:
            if ours:
                self._starting -= 1
        if deferred:
            self._wants_room = True
            log.info(
                "approved; waiting for room (%d operations driven here)",
                len(self._driving),
                extra={"op_id": op_id},
            )
        return approved

    async def cancel(
        self, *, op_id: str, user_id: str, message_ts: str | None = None, reason: str | None = None
    ) -> Operation:
        """Cancel a confirmation that nobody approved yet (``message_ts`` as for :meth:`approve`).

        ``reason`` (the Cancel modal's, person-typed) is shown on the closed card, told to the
        requester and recorded in the audit entry.
        """
        op = await self._load(op_id)
        try:
            await self._policy.check_cancel(user_id=user_id, op=op)
        except NotAllowed as err:
            await self._store.add_audit(
                self._steps.entry(op, "refused", actor_id=user_id, detail=f"cancel: {err.friendly}", times=1)
            )
            raise
        now = self._clock.now()
        moved = await self._store.transition_and_claim(
            op_id,
            claim=self.outbox.claim_terms(),
            from_states=_AWAITING,
            to=OpState.CANCELLED,
            now=now,
            cancelled_by=user_id,
            cancel_reason=reason,
            finished_at=now,
            message_ts=op.message_ts or message_ts,
            audit_entry=self._steps.entry(
                op, "cancelled", actor_id=user_id, detail=f"denied: {reason}" if reason else ""
            ),
            effects=self._denial_effects(op, user_id, reason),
        )
        if moved is None:
            raise ConfirmationClosed(await self._load(op_id))
        cancelled, pending = moved
        self._keys.pop(op_id, None)
        self.outbox.deliver_claimed(cancelled, pending)
        self._steps.finished(cancelled)
        return cancelled

    @staticmethod
    def _denial_effects(op: Operation, user_id: str, reason: str | None) -> list[Effect]:
        """The card; a reason also in the thread; the requester told unless they cancelled it themselves."""
        denied = Denied(by=user_id, reason=reason or "")
        effects = [thread(denied), CARD] if reason else [CARD]
        return effects if user_id == op.requester_id else [*effects, direct(denied)]

    async def history(
        self,
        *,
        limit: int = 10,
        user_id: str | None = None,
        channel_id: str = "",
        accounts: Collection[str] | None = None,
    ) -> list[AuditEntry]:
        """The newest audit entries first, all of them (the CLI) or, for ``user_id``, ``channel_id``'s.

        For a person (``user_id``), only if the policy lets them read history, and only the entries of
        operations requested in ``channel_id`` and, given ``accounts``, run in one of them: history in a
        channel shows that channel's operations (see :mod:`bot.slack.visibility`).
        """
        if user_id is None:
            return await self._store.recent_audit(limit=limit)
        await self._policy.check_history(user_id=user_id, channel_id=channel_id)
        return await self._store.recent_audit(limit=limit, channel_id=channel_id, accounts=accounts)

    async def start(self) -> None:
        """Resume what crashed or stopped replicas left, then keep resuming, expiring and delivering."""
        await self.run_once()
        self._loops = [
            asyncio.create_task(
                self._every(self._resume_pass, "resume", wake=self._room), name="vpnbot-resume"
            ),
            asyncio.create_task(self._every(self._expiry_pass, "expiry"), name="vpnbot-expiry"),
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
        await self.outbox.pass_once()

    async def wait_idle(self) -> None:
        """Wait until every operation this instance drives has stopped and Slack is told (tests, demo)."""
        while self._driving:
            await asyncio.gather(*self._driving.values(), return_exceptions=True)
        await self.outbox.wait_idle()

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
        # Deleted cards whose Recreate… window closed lose the button.
        for op in await self._store.list_undo_closing(now=now):
            closed = await self._store.set_fields(
                op.id, now=now, states={OpState.DELETED}, undo_until=None, effects=[CARD]
            )
            if closed is not None:
                self.outbox.kick(op.id)

    async def _expire(self, op: Operation) -> None:
        now = self._clock.now()
        expired = await self._store.transition(
            op.id,
            from_states=_AWAITING,
            to=OpState.EXPIRED,
            now=now,
            finished_at=now,
            audit_entry=self._steps.entry(op, "expired", actor_id=SYSTEM_ACTOR, detail="no approval in time"),
            effects=[CARD, direct(Expired())],
        )
        if expired is not None:
            self._keys.pop(op.id, None)
            self.outbox.kick(op.id)
            self._steps.finished(expired)

    async def _confirmation_not_posted(self, op: Operation, err: SlackError) -> None:
        """The outbox could not post the confirmation: fail the request and tell the requester."""
        now = self._clock.now()
        failed = await self._store.transition(
            op.id,
            from_states=_AWAITING,
            to=OpState.FAILED,
            now=now,
            finished_at=now,
            error_code=f"slack:{err.error}",
            error_text=err.friendly,
            audit_entry=self._steps.entry(
                op, "failed", actor_id=SYSTEM_ACTOR, detail=f"confirmation not posted: {err.error}"
            ),
            effects=[Effect(EffectKind.RESPOND, PostFailed(error=err.error, reason=err.friendly))],
        )
        if failed is not None:
            self._keys.pop(op.id, None)
            self.outbox.kick(op.id)
            self._steps.finished(failed)

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
