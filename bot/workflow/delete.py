"""Deleting a connection: the request and its lookup, approval, cancel, the gateway's queue, the
DeleteVpnConnection, watching the gateway and verifying the connection is gone.

:class:`DeleteRequests` is what the Slack layer calls; :class:`DeleteSteps` drives an approved
deletion (the runner, :mod:`bot.workflow.runner`, calls it while it holds the lease).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from bot.domain import (
    ALREADY_DELETING,
    PART_CONNECTION,
    SCHEDULE_AT,
    SCHEDULE_WINDOW,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    Accepted,
    ApprovalOutcome,
    ApprovalRule,
    AuditEntry,
    ChangedSinceApproval,
    ConnectionReady,
    Deferred,
    Deleted,
    Denied,
    Effect,
    EffectKind,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Held,
    Impact,
    LookupFailed,
    Operation,
    OpState,
    Queued,
    Reread,
    Scheduled,
    Snapshot,
    StillExists,
    Unanswered,
    VpnConnection,
    VpnGateway,
    client_token_for,
)
from bot.errors import (
    AlreadyRequested,
    ApprovalRefused,
    CloudError,
    ConfirmationClosed,
    Frozen,
    NotAllowed,
)
from bot.schedule import run_time, windows_for
from bot.workflow.binding import canonical, diff, fingerprint, unverified
from bot.workflow.freeze import active_freeze
from bot.workflow.polling import expected_duration, poll_delay
from bot.workflow.runner import Runner
from bot.workflow.steps import (
    CARD,
    CONNECTION_NOT_FOUND,
    SYSTEM_ACTOR,
    LostOperation,
    StepBase,
    direct,
    snapshot_routes,
    started_from,
    thread,
)

__all__ = ["DeleteRequests", "DeleteSteps"]

log = logging.getLogger("bot.workflow")
T = TypeVar("T")
_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
# What Cancel closes: a request nobody approved yet, and an approved one still waiting for its time.
_CANCELLABLE = frozenset({OpState.AWAITING_APPROVAL, OpState.SCHEDULED})
# A slash command's response_url works for 30 minutes; a lookup resumed later cannot answer.
_RESPONSE_URL_LIFETIME = timedelta(minutes=30)
# Reads of the connection before the delete while a part read for the approval cannot be read now.
_REREADS = 3


@dataclass(frozen=True, slots=True)
class Later:
    """An approval that schedules instead of starting: when it runs, and why then (SCHEDULE_*)."""

    runs: datetime
    kind: str
    # The account's change windows, written out, when ``kind`` is SCHEDULE_WINDOW.
    window: str = ""

    @property
    def detail(self) -> str:
        why = " (the next change window opening)" if self.kind == SCHEDULE_WINDOW else ""
        return f"scheduled for {self.runs.isoformat()}{why}"

    def effects(self, announce: list[Effect]) -> list[Effect]:
        return [CARD, thread(Scheduled(run_at=self.runs, window=self.window)), *announce]


class DeleteRequests(Runner):
    """The Slack layer's calls for a deletion: request it, approve or cancel its confirmation."""

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
        run_at: datetime | None = None,
    ) -> Operation:
        """Check policy, record the request, look the connection up and post the confirmation.

        ``run_at``: when to delete it once approved (``at …``; the Slack layer checked it is to
        come, and not too far ahead); None: as soon as it is approved (and its change window is open).

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
        await self._audit_refused_request(
            user_id=user_id, channel_id=channel_id, vco_id=vco_id, region=region, account=account
        )
        read = asyncio.ensure_future(
            self._steps.read_connection(account=account, region=region, vco_id=vco_id)
        )
        try:
            op = await self._record_request(
                self._new_request(
                    now=self._clock.now(),
                    team_id=team_id,
                    user_id=user_id,
                    channel_id=channel_id,
                    vco_id=vco_id,
                    region=region,
                    response_url=response_url,
                    account=account,
                    reason=reason,
                    ticket=ticket,
                    run_at=run_at,
                )
            )
            op = await self._look_up_requested(op, read)
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

    async def _audit_refused_request(
        self, *, user_id: str, channel_id: str, vco_id: str, region: str, account: str
    ) -> None:
        """The policy's check of a request; a refusal is audited, then raised (NotAllowed)."""
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

    async def _look_up_requested(self, op: Operation, read: Awaitable[VpnConnection]) -> Operation:
        """The request's lookup, with its first read (``read``) already on its way."""
        self._looking_up.add(op.id)
        try:
            return await self._steps.look_up(op, reply_on_failure=False, connection=read)
        finally:
            self._looking_up.discard(op.id)

    async def _record_request(self, op: Operation) -> Operation:
        """Store the request ``op`` (:meth:`_new_request`, leased to this worker) before anything is looked up."""
        created = await self._store.create_operation(
            op=op,
            lease=self._lease_from(op.created_at),
            audit_entry=self._steps.entry(
                op, "requested", actor_id=op.requester_id, detail=f"channel {op.channel_id}"
            ),
            one_open=True,
        )
        if created.id != op.id:
            raise AlreadyRequested(created)
        return created

    def _new_request(
        self,
        *,
        now: datetime,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_id: str,
        region: str,
        response_url: str | None,
        account: str,
        reason: str | None,
        ticket: str | None,
        run_at: datetime | None,
        batch_id: str | None = None,
    ) -> Operation:
        """A request for ``vco_id`` as recorded, LOOKING_UP, before the lookup fills it in."""
        op_id = uuid.uuid4().hex
        return Operation(
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
            batch_id=batch_id,
            run_at=run_at,
        )

    def _lease_from(self, now: datetime) -> tuple[str, datetime]:
        """The lease a request is recorded with: this worker's, from ``now``."""
        return (self.instance_id, now + timedelta(seconds=self._config.lease_s))

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Approve once (the first click wins), then delete in the background; return at once.

        Under a quorum rule (VPNBOT_APPROVAL_RULES) the click records one approval; the one that meets
        the rule approves, exactly once whatever the clicks and replicas (see :meth:`_record_approval`).
        ``message_ts`` is the clicked message: a click can arrive before the confirmation's ts
        is recorded (it is stored once chat.postMessage answers), and the thread needs it.
        """
        op, now, rule, groups = await self._open_for_approval(op_id, user_id)
        later = self._later(op, now)
        if later is not None:
            # A later run time, or outside the account's change window: it waits, holding nothing.
            if rule is None:
                return await self._schedule(op, user_id=user_id, message_ts=message_ts, now=now, later=later)
            return await self._record_approval(
                op,
                rule,
                groups,
                user_id=user_id,
                message_ts=message_ts,
                now=now,
                ours=False,
                deferred=False,
                later=later,
            )
        # A recreation is driven by the replica holding its key: another replica approves it
        # unleased and leaves it to the holder's resume pass (or, holder gone, to KeyLost).
        # A deletion approved while this instance drives all it may (max_driven) is left unleased
        # too: the first resume pass with room, here or on another replica, takes it.
        ours = op.id in self._keys if op.is_recreate else self._has_room()
        deferred = not ours and not op.is_recreate
        if ours:
            self._starting += 1
        try:
            if rule is None:
                approved = await self._move_to_approved(
                    op, user_id=user_id, message_ts=message_ts, now=now, ours=ours, deferred=deferred
                )
            else:
                approved = await self._record_approval(
                    op,
                    rule,
                    groups,
                    user_id=user_id,
                    message_ts=message_ts,
                    now=now,
                    ours=ours,
                    deferred=deferred,
                )
                if approved.state is OpState.AWAITING_APPROVAL:
                    return approved  # counted; more approvals are needed
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

    def _later(self, op: Operation, now: datetime) -> Later | None:
        """When ``op`` runs if approved now, if not now: its requested time, or its window's next opening."""
        if op.is_recreate:
            return None
        windows = windows_for(self._config.change_windows, op.account)
        runs = run_time(windows, wanted=op.run_at, now=now)
        if runs <= now:
            return None
        kind = SCHEDULE_AT if runs == op.run_at else SCHEDULE_WINDOW
        window = "; ".join(str(w) for w in windows) if kind == SCHEDULE_WINDOW else ""
        return Later(runs=runs, kind=kind, window=window)

    async def _open_for_approval(
        self, op_id: str, user_id: str
    ) -> tuple[Operation, datetime, ApprovalRule | None, tuple[str, ...]]:
        """``op_id`` if ``user_id`` may approve it and it still awaits approval, with the time now.

        With it, the quorum rule that applies (None: one approver, as the policy says) and the
        rule's groups ``user_id`` is in. A refusal is audited and raised (NotAllowed); a closed or
        expired confirmation raises ConfirmationClosed (an expired one is expired first).
        """
        op = await self._load(op_id)
        quorum = self._quorum
        rule = quorum.rule_for(op) if quorum is not None else None
        groups: tuple[str, ...] = ()
        if quorum is None or rule is None:
            await self._audited_check(self._policy.check_approval, op, user_id=user_id, verb="approve")
        else:
            # Under a rule its own check (the requester never counts); the rule's groups the person is in.
            check = functools.partial(quorum.check_quorum_approval, rule=rule)
            groups = await self._audited_check(check, op, user_id=user_id, verb="approve")
        if op.state is not OpState.AWAITING_APPROVAL:
            raise ConfirmationClosed(op)
        now = self._clock.now()
        if now >= op.expires_at:
            await self._expire(op)
            raise ConfirmationClosed(await self._load(op_id))
        return op, now, rule, groups

    def _approval_terms(
        self, *, now: datetime, ours: bool, deferred: bool
    ) -> tuple[list[Effect], tuple[str, datetime] | None]:
        """The effects and lease of the move to APPROVED (see :meth:`_move_to_approved`)."""
        effects = [CARD, thread(Deferred(driving=len(self._driving)))] if deferred else [CARD]
        # Lease in the same CAS: no other replica may see it approved and unowned. A deferred one
        # gets a lease that ends now, so the lookup's lease does not hold it back.
        lease: tuple[str, datetime] | None = None
        if ours:
            lease = (self.instance_id, now + timedelta(seconds=self._config.lease_s))
        elif deferred:
            lease = (self.instance_id, now)
        return effects, lease

    async def _move_to_approved(
        self,
        op: Operation,
        *,
        user_id: str,
        message_ts: str | None,
        now: datetime,
        ours: bool,
        deferred: bool,
    ) -> Operation:
        """AWAITING_APPROVAL -> APPROVED, leased to this instance if ``ours``; the card goes out at once."""
        effects, lease = self._approval_terms(now=now, ours=ours, deferred=deferred)
        entry = self._steps.entry(op, "approved", actor_id=user_id)
        # The card's update is claimed in the same transaction (as the lookup's post is): the
        # outbox does not claim and read it again first.
        moved = await self._store.transition_and_claim(
            op.id,
            claim=self.outbox.claim_terms(),
            from_states=_AWAITING,
            to=OpState.APPROVED,
            now=now,
            approver_id=user_id,
            approved_at=now,
            deadline_at=now + timedelta(seconds=self._config.delete_timeout_s),
            message_ts=op.message_ts or message_ts,
            lease=lease,
            audit_entry=entry,
            effects=[*effects, *self._steps.announce(entry)],
            # No freeze in force: checked in the move itself, so no approval slips past one.
            unfrozen=True,
        )
        if moved is None:
            await self._refuse_if_frozen(op, user_id=user_id, now=now)
            raise ConfirmationClosed(await self._load(op.id))
        approved, pending = moved
        self.outbox.deliver_claimed(approved, pending)
        return approved

    async def _schedule(
        self,
        op: Operation,
        *,
        user_id: str,
        message_ts: str | None,
        now: datetime,
        later: Later,
    ) -> Operation:
        """AWAITING_APPROVAL -> SCHEDULED for ``later.runs``: no lease, no gateway; the runner's due pass starts it."""
        runs = later.runs
        moved = await self._store.transition_and_claim(
            op.id,
            claim=self.outbox.claim_terms(),
            from_states=_AWAITING,
            to=OpState.SCHEDULED,
            now=now,
            approver_id=user_id,
            approved_at=now,
            run_at=runs,
            schedule_kind=later.kind,
            message_ts=op.message_ts or message_ts,
            audit_entry=(entry := self._steps.entry(op, "approved", actor_id=user_id, detail=later.detail)),
            effects=later.effects(self._steps.announce(entry, note=later.detail)),
            unfrozen=True,
        )
        if moved is None:
            await self._refuse_if_frozen(op, user_id=user_id, now=now)
            raise ConfirmationClosed(await self._load(op.id))
        scheduled, pending = moved
        self.outbox.deliver_claimed(scheduled, pending)
        log.info("approved; scheduled for %s", runs.isoformat(), extra={"op_id": op.id})
        return scheduled

    async def override_window(self, *, op_id: str, user_id: str) -> Operation:
        """Run a deletion the change window holds back now: a second allowed approver's decision.

        ``user_id`` must be allowed to approve and be someone else than the approver; the override
        is recorded in the audit (``window_override``). Raises NotAllowed or ConfirmationClosed.
        """
        op = await self._load(op_id)
        await self._audited_check(
            self._policy.check_approval, op, user_id=user_id, verb="override the window"
        )
        if op.state is not OpState.SCHEDULED or op.schedule_kind != SCHEDULE_WINDOW:
            raise ConfirmationClosed(op)
        await self._refuse_own_or_frozen_override(op, user_id=user_id, what="deletion")
        started = await self.start_scheduled(op, override_by=user_id)
        if started is None:
            raise ConfirmationClosed(await self._load(op_id))
        return started

    async def _refuse_own_or_frozen_override(self, op: Operation, *, user_id: str, what: str) -> None:
        """*Override window* by ``user_id`` on ``op``: refused (audited, raised) if they approved it or
        a freeze is in force; a site decommission's override is checked on its first member."""
        # Under a quorum rule everyone who approved it approved it to run in the window: none of them alone.
        refusal: NotAllowed | None = None
        if user_id == op.approver_id or any(a.user_id == user_id for a in op.approvals):
            refusal = NotAllowed(
                f"You approved this {what}; overriding the change window needs a second approver.",
                who_can="Ask another approver to click *Override window*.",
            )
        else:
            # Running it now is a decision to change now: a freeze refuses it as it refuses an approval.
            freeze = await active_freeze(self._store, op.account, self._clock.now())
            refusal = Frozen(freeze) if freeze is not None else None
        if refusal is None:
            return
        await self._store.add_audit(
            self._steps.entry(
                op, "refused", actor_id=user_id, detail=f"override the window: {refusal.friendly}", times=1
            )
        )
        raise refusal

    async def _record_approval(
        self,
        op: Operation,
        rule: ApprovalRule,
        groups: tuple[str, ...],
        *,
        user_id: str,
        message_ts: str | None,
        now: datetime,
        ours: bool,
        deferred: bool,
        later: Later | None = None,
    ) -> Operation:
        """One approval under ``rule``: counted (the card shows it), or the last needed, which approves.

        One store transaction records it and, when it meets the rule, moves the operation to APPROVED
        as :meth:`_move_to_approved` does (to SCHEDULED as :meth:`_schedule` does, when it runs
        ``later``); the operation is returned as it left it.
        """
        # A quorum's transaction does not look at freezes: checked just before it instead.
        await self._refuse_if_frozen(op, user_id=user_id, now=now)
        deadline: datetime | None
        if later is None:
            entry = self._steps.entry(op, "approved", actor_id=user_id)
            effects, lease = self._approval_terms(now=now, ours=ours, deferred=deferred)
            effects = [*effects, *self._steps.announce(entry)]
            to, deadline, run_at, kind = (
                OpState.APPROVED,
                now + timedelta(seconds=self._config.delete_timeout_s),
                op.run_at,
                op.schedule_kind,
            )
        else:
            entry = self._steps.entry(op, "approved", actor_id=user_id, detail=later.detail)
            effects, lease = later.effects(self._steps.announce(entry, note=later.detail)), None
            to, deadline, run_at, kind = OpState.SCHEDULED, op.deadline_at, later.runs, later.kind
        result = await self._store.record_approval(
            op.id,
            user_id=user_id,
            groups=groups if rule.groups else None,
            needed=rule.count,
            now=now,
            claim=self.outbox.claim_terms(),
            audit_entry=entry,
            progress_effects=[CARD],
            lease=lease,
            effects=effects,
            to=to,
            approver_id=user_id,
            approved_at=now,
            message_ts=op.message_ts or message_ts,
            deadline_at=deadline,
            run_at=run_at,
            schedule_kind=kind,
        )
        match result.outcome:
            case ApprovalOutcome.COUNTED | ApprovalOutcome.COMPLETE if result.op is not None:
                self.outbox.deliver_claimed(result.op, result.effects)
                return result.op
            case ApprovalOutcome.REPEATED | ApprovalOutcome.COVERED:
                raise ApprovalRefused(result.outcome.value, result.op, rule)
            case _:
                raise ConfirmationClosed(result.op)

    async def withdraw(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Take back ``user_id``'s approval while the quorum is not met (the card shows it).

        Raises ApprovalRefused (``met``: it is approved already; ``not_approved``; ``no_rule``) or
        ConfirmationClosed (cancelled, expired).
        """
        op = await self._load(op_id)
        rule = self._quorum.rule_for(op) if self._quorum is not None else None
        if rule is None:
            raise ApprovalRefused("no_rule", op)
        result = await self._store.withdraw_approval(
            op.id,
            user_id=user_id,
            needed=rule.count,
            now=self._clock.now(),
            claim=self.outbox.claim_terms(),
            audit_entry=self._steps.entry(op, "approval_withdrawn", actor_id=user_id),
            effects=[CARD],
        )
        match result.outcome:
            case ApprovalOutcome.WITHDRAWN if result.op is not None:
                self.outbox.deliver_claimed(result.op, result.effects)
                return result.op
            case ApprovalOutcome.NOT_APPROVED:
                raise ApprovalRefused("not_approved", result.op, rule)
            case _ if result.op is not None and result.op.approver_id is not None:
                raise ApprovalRefused("met", result.op, rule)
            case _:
                raise ConfirmationClosed(result.op)

    async def _refuse_if_frozen(self, op: Operation, *, user_id: str, now: datetime) -> None:
        """After a lost approval: if a freeze covers ``op``, audit the refusal like any refused click and raise Frozen."""
        freeze = await active_freeze(self._store, op.account, now)
        if freeze is None:
            return
        current = await self._load(op.id)
        if current.state is not OpState.AWAITING_APPROVAL:
            return
        err = Frozen(freeze)
        # Counted like any refused click: one row per person and card.
        await self._store.add_audit(
            self._steps.entry(op, "refused", actor_id=user_id, detail=f"approve: {err.friendly}", times=1)
        )
        raise err

    async def cancel(
        self, *, op_id: str, user_id: str, message_ts: str | None = None, reason: str | None = None
    ) -> Operation:
        """Cancel a confirmation nobody approved yet, or a scheduled deletion before it starts
        (``message_ts`` as for :meth:`approve`).

        ``reason`` (the Cancel modal's, person-typed) is shown on the closed card, told to the
        requester and recorded in the audit entry.
        """
        op = await self._load(op_id)
        await self._audited_check(self._policy.check_cancel, op, user_id=user_id, verb="cancel")
        now = self._clock.now()
        entry = self._steps.entry(
            op, "cancelled", actor_id=user_id, detail=f"denied: {reason}" if reason else ""
        )
        moved = await self._store.transition_and_claim(
            op_id,
            claim=self.outbox.claim_terms(),
            from_states=_CANCELLABLE,
            to=OpState.CANCELLED,
            now=now,
            cancelled_by=user_id,
            cancel_reason=reason,
            finished_at=now,
            message_ts=op.message_ts or message_ts,
            audit_entry=entry,
            effects=[
                *self._denial_effects(op, user_id, reason),
                *self._steps.announce(entry, note=reason or ""),
            ],
        )
        if moved is None:
            raise ConfirmationClosed(await self._load(op_id))
        cancelled, pending = moved
        self._keys.pop(op_id, None)
        self.outbox.deliver_claimed(cancelled, pending)
        self._steps.finished(cancelled)
        return cancelled

    async def _audited_check(
        self, check: Callable[..., Awaitable[T]], op: Operation, *, user_id: str, verb: str
    ) -> T:
        """The policy's ``check`` of ``user_id`` on ``op`` (what it returns); a refusal is audited, then raised."""
        try:
            return await check(user_id=user_id, op=op)
        except NotAllowed as err:
            # Counted on one row per person and card: a click storm cannot flood /vpn history.
            await self._store.add_audit(
                self._steps.entry(op, "refused", actor_id=user_id, detail=f"{verb}: {err.friendly}", times=1)
            )
            raise

    @staticmethod
    def _denial_effects(op: Operation, user_id: str, reason: str | None) -> list[Effect]:
        """The card; a reason also in the thread; the requester told unless they cancelled it themselves."""
        denied = Denied(by=user_id, reason=reason or "")
        effects = [thread(denied), CARD] if reason else [CARD]
        return effects if user_id == op.requester_id else [*effects, direct(denied)]


class DeleteSteps(StepBase):
    """The steps of a deletion, from its lookup to the connection verified gone."""

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
        answers through the response_url (the outbox), as long as that still works. A batch's
        member never raises nor answers: it ends looked up or failed, and the batch's card (written
        once no member is looking up) shows either.
        """
        if op.batch_id is not None:
            looked_up = await self._look_up_member(op, connection)
            lead = await self._store.open_batch(batch_id=op.batch_id, now=self._clock.now())
            if lead is not None:
                self._outbox.kick(lead)
            return looked_up
        if self._clock.now() - op.created_at > _RESPONSE_URL_LIFETIME:
            return await self._lookup_failed(op, LookupFailed(code="interrupted", reason=""), reply=False)
        try:
            found, gateway, impact = await self._read_for_confirmation(op, connection)
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
            # What an approval of this card approves (see bot.workflow.binding).
            preview_fingerprint=fingerprint(impact, gateway, found),
            # The audit channel hears of the request once its card is up (its line links the card);
            # the "requested" entry itself was written with the request, before the lookup.
            effects=[
                Effect(EffectKind.POST_CONFIRMATION),
                *self.announce(
                    replace(self.entry(op, "requested", actor_id=op.requester_id), at=op.created_at)
                ),
            ],
        )
        if moved is None:
            return await self._store.get_operation(op_id=op.id) or op  # another worker finished the lookup
        awaiting, pending = moved
        self._outbox.deliver_claimed(awaiting, pending)
        return awaiting

    async def recheck_scheduled(self, op: Operation) -> Failed | None:
        """At a scheduled deletion's time: why it must not run (gone, or on another gateway), or None.

        Raises CloudError when the connection could not be read.
        """
        try:
            found = await self._read(op).describe_vpn_connection(region=op.region, vco_id=op.vco_id)
        except CloudError as err:
            if err.code == CONNECTION_NOT_FOUND:
                return Failed(code=SCHEDULED_GONE, reason="", request_id=err.request_id)
            raise
        if found.gateway_id != op.gateway_id:
            return Failed(code=SCHEDULED_MOVED, reason="")
        return None

    async def _look_up_member(self, op: Operation, connection: Awaitable[VpnConnection] | None) -> Operation:
        """A batch member's lookup: AWAITING_APPROVAL without a card of its own, or FAILED with why."""
        if self._clock.now() - op.created_at > _RESPONSE_URL_LIFETIME:
            return await self._lookup_failed(op, LookupFailed(code="interrupted", reason=""), reply=False)
        try:
            found, gateway, impact = await self._read_for_confirmation(op, connection)
        except CloudError as err:
            return await self._lookup_failed(
                op, LookupFailed(code=err.code, reason=err.friendly), reply=False
            )
        elsewhere = await self._store.deleting_elsewhere(op=op)
        if elsewhere is not None:
            reason = "Another request is already deleting it; this one leaves it alone."
            return await self._lookup_failed(
                op, LookupFailed(code=ALREADY_DELETING, reason=reason), reply=False
            )
        moved = await self._store.transition(
            op.id,
            from_states={OpState.LOOKING_UP},
            to=OpState.AWAITING_APPROVAL,
            now=self._clock.now(),
            connection=found,
            gateway=gateway,
            impact=impact,
            # What an approval of this batch approves of this member (see bot.workflow.binding).
            preview_fingerprint=fingerprint(impact, gateway, found),
        )
        return moved or await self._store.get_operation(op_id=op.id) or op

    async def _read_for_confirmation(
        self, op: Operation, connection: Awaitable[VpnConnection] | None
    ) -> tuple[VpnConnection, VpnGateway, Impact]:
        """The connection (``connection`` if already on its way), its gateway and the impact preview.

        Raises CloudError when the connection or the gateway could not be read.
        """
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
        return found, gateway, await preview

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

    async def hold_if_frozen(self, op: Operation) -> tuple[Operation, bool]:
        """Hold approved ``op`` while a freeze covers its account; True if it is held (after one poll's wait).

        Called before anything is sent (and before the deadline is checked: a hold is no reason to
        give up). The hold starts with one thread reply, written with ``held_at`` in one
        transaction, so it is told once across polls, restarts and replicas. When the freeze ends
        or is lifted, the time held is added to the deadline and ``held_at`` cleared.
        """
        now = self._clock.now()
        freeze = await active_freeze(self._store, op.account, now)
        if freeze is None:
            if op.held_at is None:
                return op, False
            released = await self._store.set_fields(
                op.id,
                now=now,
                states={OpState.APPROVED},
                require_owner=self._owner,
                held_at=None,
                deadline_at=self._deadline(op) + max(now - op.held_at, timedelta(0)),
                effects=[CARD],
            )
            if released is None:
                raise LostOperation(op.id)
            self._outbox.kick(op.id)
            log.info("the freeze is over; going on", extra={"op_id": op.id, "vco_id": op.vco_id})
            return released, False
        if op.held_at is None:
            event = Held(
                until=freeze.until, reason=freeze.reason, by=freeze.created_by, account=freeze.account
            )
            held = await self._store.set_fields(
                op.id,
                now=now,
                states={OpState.APPROVED},
                require_owner=self._owner,
                held_at=now,
                effects=[thread(event), CARD],
            )
            if held is None:
                raise LostOperation(op.id)
            self._outbox.kick(op.id)
            log.info("held by a freeze", extra={"op_id": op.id, "vco_id": op.vco_id})
            op = held
        # Looked at again each poll: an unfreeze on any replica is seen within one.
        until_end = (freeze.until - now).total_seconds()
        await self._pause(max(0.0, min(self._config.poll_interval_s, until_end)))
        return op, True

    async def _step_approved(self, op: Operation, queued_posted: bool) -> tuple[Operation, bool]:
        holder = await self._store.acquire_gateway(
            region=op.region, gateway_id=op.gateway_id, op_id=op.id, now=self._clock.now()
        )
        if holder == op.id:
            # A recreation takes the same per-gateway turn: one change per gateway at a time.
            to = OpState.CREATING if op.is_recreate else OpState.DELETING
            # A batch's card says which of its connections has its gateway's turn now.
            moved = await self._move(op, to, started_at=self._clock.now(), card=op.batch_id is not None)
            return moved, queued_posted
        if not queued_posted:
            blocking = await self._store.get_operation(op_id=holder)
            await self._note(op, Queued(blocking_vco_id=blocking.vco_id if blocking else holder))
            queued_posted = True
        await self._sleep_until_deadline(op, self._config.poll_interval_s)
        return op, queued_posted

    async def _step_deleting(self, op: Operation) -> Operation:
        # attempts > 0 on entry: a previous worker may have sent its current token before crashing.
        maybe_sent = op.attempts > 0
        if not maybe_sent:
            # Nothing sent yet: the approval must still cover what is about to be deleted.
            op = await self._check_binding(op)
            if op.state is not OpState.DELETING:
                return op  # it changed since it was approved: asked again
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

    async def _check_binding(self, op: Operation) -> Operation:
        """Read the connection afresh and hold it against the approved preview, before the first send.

        The same answers give the configuration snapshot (stored here, with the move on). A part
        that could be read for the approval but not now is read again (``_REREADS`` times in all,
        ``poll_interval_s`` apart) and, still unread, counts as changed: the request is asked again
        rather than deleted blind. A connection already gone is left to the delete, which says so.
        Taken here rather than at approval, which must never wait on the cloud, and never once a
        send may have gone out: a resumed operation never reads a connection half deleted.
        """
        approved = canonical(op.impact, op.gateway, op.connection)
        approved_print = op.preview_fingerprint or fingerprint(op.impact, op.gateway, op.connection)
        for attempt in range(_REREADS):
            reread = await self._reread(op)
            impact = reread.impact if op.impact is not None else None
            now = canonical(impact, reread.gateway, reread.connection)
            gone = reread.impact.unread_part(PART_CONNECTION)
            if gone is not None and gone.code == CONNECTION_NOT_FOUND:
                return await self._store_snapshot(op, reread)
            missing = unverified(approved, now)
            if not missing:
                break
            log.info(
                "could not read %s again before the delete (read %d of %d)",
                ", ".join(missing),
                attempt + 1,
                _REREADS,
                extra={"op_id": op.id},
            )
            if attempt + 1 < _REREADS:
                await self._sleep_until_deadline(op, self._config.poll_interval_s)
        if fingerprint(impact, reread.gateway, reread.connection) == approved_print:
            return await self._store_snapshot(op, reread)
        return await self._ask_again(op, reread, diff(approved, now))

    async def _reread(self, op: Operation) -> Reread:
        """:meth:`VpcApi.describe_before_delete`, or all of it unread: a failure is never raised."""
        deadline = self._config.snapshot_deadline_s
        reason = f"no answer within {deadline:g} s"
        try:
            # A margin over the per-part deadline, in case an adapter does not keep its own.
            async with asyncio.timeout(deadline + 1.0):
                return await self._read(op).describe_before_delete(
                    region=op.region, connection=op.connection, deadline_s=deadline
                )
        except TimeoutError:
            pass
        except Exception:
            log.warning(
                "reading the connection before the delete failed", exc_info=True, extra={"op_id": op.id}
            )
            reason = "an unexpected error (see the bot's log)"
        return Reread(
            snapshot=Snapshot.unavailable(op.connection, reason),
            impact=Impact.unavailable(reason),
            connection=None,
            gateway=None,
        )

    async def _store_snapshot(self, op: Operation, reread: Reread) -> Operation:
        """Store the configuration read just before the first send (a failure to read it is stored too)."""
        snapshot = reread.snapshot
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

    async def _ask_again(self, op: Operation, reread: Reread, changes: list[str]) -> Operation:
        """DELETING -> AWAITING_APPROVAL: what was approved is not what is there now; nothing was sent.

        The new preview is stored and shown with what changed; the approval is void, the gateway's
        turn given back, and the request expires afresh. What could not be read now keeps what was
        shown before (the card says it could not be read).
        """
        now = self._clock.now()
        connection = reread.connection or op.connection
        gateway = reread.gateway or op.gateway
        new_print = fingerprint(reread.impact, gateway, connection)
        event = ChangedSinceApproval(
            changes=tuple(changes), approver_id=op.approver_id, fingerprint=new_print
        )
        entry = self.entry(op, "changed_since_approval", actor_id=SYSTEM_ACTOR, detail="; ".join(changes))
        reopened = await self._store.reopen_approval(
            op.id,
            from_states={OpState.DELETING},
            now=now,
            require_owner=self._owner,
            expires_at=now + timedelta(seconds=self._config.confirmation_ttl_s),
            audit_entry=entry,
            effects=[CARD, thread(event), *self.announce(entry, note="; ".join(changes))],
            connection=connection,
            gateway=gateway,
            impact=reread.impact,
            preview_fingerprint=new_print,
            preview_changes=tuple(changes),
            # Taken again with the next approval, from what is there then.
            snapshot=None,
            started_at=None,
            # A scheduled run's time has come (it was started): approved again, it runs at once, or
            # at its change window's next opening; the card does not offer a time gone by.
            run_at=None,
            schedule_kind=None,
            # Asked again: reminded and escalated afresh (VPNBOT_REMIND_AFTER_SECONDS, VPNBOT_ESCALATE_TO).
            reminded_at=None,
            escalated_at=None,
        )
        if reopened is None:
            raise LostOperation(op.id)
        self._outbox.kick(op.id)
        log.info(
            "changed since it was approved; asking again",
            extra={"op_id": op.id, "vco_id": op.vco_id, "changes": len(changes)},
        )
        return reopened

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
                            routes=sum(r.kind != "bgp" for r in snapshot_routes(op)),
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
                    elapsed = (self._clock.now() - started_from(op)).total_seconds()
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
