"""Site decommission: several deletions asked in one request, shown on one card, approved once.

A batch is N ordinary deletions (one :class:`bot.domain.Operation` each, with its own ClientToken,
snapshot, Recreate and per-gateway turn) linked by ``batch_id``. What differs is only the start and
the card: the members are recorded together (leased to this worker) before anything is looked up,
each lookup fills its member in without a card of its own, and once no member is looking up the
one card's post is written, exactly once (:meth:`bot.ports.OperationStore.open_batch`). One click
approves every member still awaiting approval in one transaction (:meth:`BatchRequests.approve_batch`,
the one door every approval rule goes through); each is then driven as a single deletion is, and a
failure of one never stops the others. The card is every member's: each member's card update
re-renders it from the store's state of the whole batch (see :mod:`bot.delivery`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.domain import (
    SCHEDULE_WINDOW,
    ApprovalOutcome,
    ApprovalRule,
    BatchMove,
    Denied,
    Operation,
    OpFields,
    OpState,
)
from bot.errors import ApprovalRefused, CloudError, ConfirmationClosed
from bot.workflow.delete import DeleteRequests, Later
from bot.workflow.steps import CARD, direct

__all__ = ["BatchRequests"]

_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
# What the batch card's Cancel closes: members nobody approved yet, or scheduled and not started.
_CANCELLABLE = frozenset({OpState.AWAITING_APPROVAL, OpState.SCHEDULED})
log = logging.getLogger("bot.workflow")


class BatchRequests(DeleteRequests):
    """The Slack layer's calls for a batch: request it, approve or cancel all of it."""

    async def request_batch(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_ids: Sequence[str],
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
        run_at: datetime | None = None,
    ) -> list[Operation]:
        """Check policy, record every member, look each up and post the one card; return the members.

        ``run_at``: when every member runs once approved (``at …``; the Slack layer checked it), as for
        one deletion; None: at once (or at the change window's next opening).
        ``vco_ids`` are distinct and within VPNBOT_MAX_BATCH (the Slack layer checked). A member
        that cannot be looked up (not found, being deleted by another request) fails on its own
        and is shown on the card with its reason; the others go on.
        """
        await self._audit_refused_request(
            user_id=user_id, channel_id=channel_id, vco_id=vco_ids[0], region=region, account=account
        )
        now = self._clock.now()
        batch_id = uuid.uuid4().hex
        ops = [
            self._new_request(
                now=now,
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
                batch_id=batch_id,
            )
            for vco_id in vco_ids
        ]
        detail = f"channel {channel_id}; batch {batch_id} of {len(ops)}"
        await self._store.create_batch(
            batch_id=batch_id,
            ops=ops,
            lease=self._lease_from(now),
            audit_entries=[self._steps.entry(op, "requested", actor_id=user_id, detail=detail) for op in ops],
        )
        self._looking_up.update(op.id for op in ops)
        try:
            # Each lookup ends in its own state and never raises for the cloud's sake; the last
            # one to end writes the card's post.
            await asyncio.gather(*(self._steps.look_up(op, reply_on_failure=False) for op in ops))
        finally:
            self._looking_up.difference_update(op.id for op in ops)
        await self.outbox.deliver(ops[0].id)
        return await self._store.batch_operations(batch_id=batch_id)

    async def approve_batch(
        self, *, batch_id: str, user_id: str, message_ts: str | None = None
    ) -> list[Operation]:
        """Approve every member still awaiting approval with one click, then drive each; return them.

        Every member passes the same checks as one deletion's approval (:meth:`_open_for_approval`:
        the policy, audited when it refuses, the confirmation still open and not expired; a freeze),
        so a rule added there applies to batches too. The moves are one transaction: all or (lost
        races) none of a member. Members past this instance's room wait for a resume pass, here or
        elsewhere. Approved outside the account's change window (or with a run time, ``at …``), every
        member is scheduled instead, in the same one transaction. Under a quorum rule the click is one
        approval of the whole batch (:meth:`_count_batch_approval`); the last one needed approves it.
        """
        members = await self._store.batch_operations(batch_id=batch_id)
        if not members:
            raise ConfirmationClosed(None)
        waiting = [m for m in members if m.state is OpState.AWAITING_APPROVAL]
        if not waiting:
            raise ConfirmationClosed(members[0])
        later: Later | None = None
        rule: ApprovalRule | None = None
        groups: tuple[str, ...] = ()
        for member in waiting:
            _, checked_at, rule, groups = await self._open_for_approval(member.id, user_id)
            await self._refuse_if_frozen(member, user_id=user_id, now=checked_at)
            # The members share their account, and their run time: the same answer for each.
            later = later or self._later(member, checked_at)
        now = self._clock.now()
        ours: set[str] = set()
        if later is not None:
            moves, to = (
                self._schedule_moves(batch_id, waiting, user_id, message_ts, now, later),
                OpState.SCHEDULED,
            )
        else:
            (moves, ours), to = (
                self._approval_moves(batch_id, waiting, user_id, message_ts, now),
                OpState.APPROVED,
            )
        self._starting += len(ours)
        try:
            if rule is not None and (rule.count > 1 or rule.groups):
                moved = await self._count_batch_approval(
                    moves, rule, groups, user_id=user_id, now=now, to=to, lead=waiting[0]
                )
                if moved and moved[0].state is OpState.AWAITING_APPROVAL:
                    return moved  # counted; more approvals are needed
            else:
                moved = await self._store.transition_batch(
                    moves, from_states=_AWAITING, to=to, now=now, unfrozen=True
                )
            for op in moved:
                if op.id in ours:
                    self._start_driving(op)
        finally:
            self._starting -= len(ours)
        if not moved:
            await self._refuse_if_frozen(waiting[0], user_id=user_id, now=now)
            raise ConfirmationClosed(await self._load(waiting[0].id))
        if to is OpState.APPROVED and len(moved) > len(ours):
            self._wants_room = True
        self.outbox.kick(waiting[0].id)
        if later is not None:
            log.info(
                "batch approved; %d connections scheduled for %s",
                len(moved),
                later.runs.isoformat(),
                extra={"batch_id": batch_id},
            )
        return moved

    async def _count_batch_approval(
        self,
        moves: list[BatchMove],
        rule: ApprovalRule,
        groups: tuple[str, ...],
        *,
        user_id: str,
        now: datetime,
        to: OpState,
        lead: Operation,
    ) -> list[Operation]:
        """One approval of the whole batch under ``rule``: counted on every member (the card shows it),
        or the last needed, which moves every member to ``to`` (one transaction, exactly once whatever
        the clicks and replicas, as one deletion's :meth:`_record_approval`). Returns the members
        (still awaiting approval when counted; [] when closed or frozen: the caller says why)."""
        outcome, ops = await self._store.record_batch_approval(
            moves,
            user_id=user_id,
            groups=groups if rule.groups else None,
            needed=rule.count,
            now=now,
            progress_effects=[CARD],
            to=to,
            unfrozen=True,
        )
        match outcome:
            case ApprovalOutcome.REPEATED | ApprovalOutcome.COVERED:
                raise ApprovalRefused(outcome.value, ops[0] if ops else lead, rule)
            case ApprovalOutcome.COUNTED:
                self.outbox.kick(lead.id)
                return ops
            case _:
                return ops

    def _approval_moves(
        self, batch_id: str, waiting: list[Operation], user_id: str, message_ts: str | None, now: datetime
    ) -> tuple[list[BatchMove], set[str]]:
        """Each member's move to APPROVED now, and those this instance drives (its room)."""
        # One gateway deletes one connection at a time: a member's deadline counts the turns before it.
        turns = Counter(m.gateway_id for m in waiting)
        room = self._room_left()
        ours: set[str] = set()
        moves = []
        for index, member in enumerate(waiting):
            mine = index < room
            if mine:
                ours.add(member.id)
            fields: OpFields = {
                "approver_id": user_id,
                "approved_at": now,
                "deadline_at": now
                + timedelta(seconds=self._config.delete_timeout_s * turns[member.gateway_id]),
                "message_ts": member.message_ts or message_ts,
            }
            moves.append(
                BatchMove(
                    op_id=member.id,
                    fields=fields,
                    audit_entry=self._steps.entry(
                        member, "approved", actor_id=user_id, detail=f"batch {batch_id}"
                    ),
                    # The card is every member's: one update re-renders all of them.
                    effects=(CARD,) if index == 0 else (),
                    # A member left to a resume pass gets a lease that ends now (as a deferred one).
                    lease=(self.instance_id, now + timedelta(seconds=self._config.lease_s) if mine else now),
                )
            )
        return moves, ours

    def _schedule_moves(
        self,
        batch_id: str,
        waiting: list[Operation],
        user_id: str,
        message_ts: str | None,
        now: datetime,
        later: Later,
    ) -> list[BatchMove]:
        """Each member's move to SCHEDULED for ``later.runs``, as one deletion's :meth:`_schedule`.

        No lease, no gateway; each replica's due pass starts each member (:meth:`start_scheduled`,
        which counts its gateway's turns in its deadline). The card says when; the thread and the
        audit channel hear of it once, for the whole batch.
        """
        detail = f"batch {batch_id}; {later.detail}"
        lead_entry = self._steps.entry(waiting[0], "approved", actor_id=user_id, detail=detail)
        note = f"{len(waiting)} connections (a site decommission); {later.detail}"
        return [
            BatchMove(
                op_id=member.id,
                fields={
                    "approver_id": user_id,
                    "approved_at": now,
                    "run_at": later.runs,
                    "schedule_kind": later.kind,
                    "message_ts": member.message_ts or message_ts,
                },
                audit_entry=lead_entry
                if index == 0
                else self._steps.entry(member, "approved", actor_id=user_id, detail=detail),
                # One card update, one thread reply and one audit line for the whole batch.
                effects=tuple(later.effects(self._steps.announce(lead_entry, note=note)))
                if index == 0
                else (),
            )
            for index, member in enumerate(waiting)
        ]

    async def override_batch_window(self, *, batch_id: str, user_id: str) -> list[Operation]:
        """Start now every member the change window holds back: a second approver's decision.

        As one deletion's :meth:`override_window`: ``user_id`` must be allowed to approve and be someone
        else than the batch's approver; each member started is audited (``window_override``). A
        member whose connection cannot be read now stays scheduled for the window's opening.
        Raises NotAllowed or ConfirmationClosed (nothing held back any more).
        """
        members = await self._store.batch_operations(batch_id=batch_id)
        held = [m for m in members if m.state is OpState.SCHEDULED and m.schedule_kind == SCHEDULE_WINDOW]
        if not held:
            raise ConfirmationClosed(members[0] if members else None)
        for member in held:
            await self._audited_check(
                self._policy.check_approval, member, user_id=user_id, verb="override the window"
            )
        lead = held[0]
        await self._refuse_own_or_frozen_override(lead, user_id=user_id, what="site decommission")
        started: list[Operation] = []
        unread: CloudError | None = None
        for member in held:
            try:
                op = await self.start_scheduled(member, override_by=user_id)
            except CloudError as err:
                log.warning(
                    "override: could not read a scheduled connection again (%s); it waits for the window",
                    err.code,
                    extra={"op_id": member.id, "batch_id": batch_id},
                )
                unread = unread or err
                continue
            if op is not None:
                started.append(op)
        if not started:
            if unread is not None:
                raise unread
            raise ConfirmationClosed(await self._load(lead.id))
        return started

    async def withdraw_batch(self, *, batch_id: str, user_id: str) -> list[Operation]:
        """Take back ``user_id``'s approval of the whole batch while its quorum is not met (the card shows it).

        Raises ApprovalRefused (``met``: it is approved already; ``not_approved``; ``no_rule``) or
        ConfirmationClosed (cancelled, expired), as one deletion's :meth:`withdraw`.
        """
        members = await self._store.batch_operations(batch_id=batch_id)
        if not members:
            raise ConfirmationClosed(None)
        lead = next((m for m in members if m.state is OpState.AWAITING_APPROVAL), members[0])
        rule = self._quorum.rule_for(lead) if self._quorum is not None else None
        if rule is None:
            raise ApprovalRefused("no_rule", lead)
        now = self._clock.now()
        moves = [
            BatchMove(
                op_id=member.id,
                fields={},
                audit_entry=self._steps.entry(member, "approval_withdrawn", actor_id=user_id),
                effects=(CARD,) if index == 0 else (),
            )
            for index, member in enumerate(m for m in members if m.state is OpState.AWAITING_APPROVAL)
        ]
        outcome, ops = await self._store.withdraw_batch_approval(
            moves, user_id=user_id, needed=rule.count, now=now
        )
        match outcome:
            case ApprovalOutcome.WITHDRAWN:
                self.outbox.kick(ops[0].id)
                return ops
            case ApprovalOutcome.NOT_APPROVED:
                raise ApprovalRefused("not_approved", ops[0] if ops else lead, rule)
        current = await self._load(lead.id)
        if current.approver_id is not None:
            raise ApprovalRefused("met", current, rule)
        raise ConfirmationClosed(current)

    async def batch_members(self, *, batch_id: str) -> list[Operation]:
        """A batch's operations in the order asked (empty: no such batch)."""
        return await self._store.batch_operations(batch_id=batch_id)

    async def cancel_batch(
        self, *, batch_id: str, user_id: str, reason: str | None = None
    ) -> list[Operation]:
        """Close every member still awaiting approval, or scheduled and not started yet (the policy's
        cancel check, as for one deletion)."""
        members = await self._store.batch_operations(batch_id=batch_id)
        waiting = [m for m in members if m.state in _CANCELLABLE]
        if not waiting:
            raise ConfirmationClosed(members[0] if members else None)
        for member in waiting:
            await self._audited_check(self._policy.check_cancel, member, user_id=user_id, verb="cancel")
        now = self._clock.now()
        lead = waiting[0]
        told = user_id != lead.requester_id
        moves = [
            BatchMove(
                op_id=member.id,
                fields={"cancelled_by": user_id, "cancel_reason": reason, "finished_at": now},
                audit_entry=self._steps.entry(
                    member, "cancelled", actor_id=user_id, detail=f"denied: {reason}" if reason else ""
                ),
                # One card update and (someone else closed it) one message to the requester.
                effects=(CARD, *([direct(Denied(by=user_id, reason=reason or ""))] if told else []))
                if index == 0
                else (),
            )
            for index, member in enumerate(waiting)
        ]
        cancelled = await self._store.transition_batch(
            moves, from_states=_CANCELLABLE, to=OpState.CANCELLED, now=now
        )
        if not cancelled:
            raise ConfirmationClosed(await self._load(lead.id))
        for op in cancelled:
            self._steps.finished(op)
        self.outbox.kick(lead.id)
        return cancelled
