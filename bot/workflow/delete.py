"""Deleting a connection: the request and its lookup, approval, cancel, the gateway's queue, the
DeleteVpnConnection, watching the gateway and verifying the connection is gone.

:class:`DeleteRequests` is what the Slack layer calls; :class:`DeleteSteps` drives an approved
deletion (the runner, :mod:`bot.workflow.runner`, calls it while it holds the lease).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.domain import (
    ALREADY_DELETING,
    Accepted,
    AuditEntry,
    ConnectionReady,
    Deferred,
    Deleted,
    Denied,
    Effect,
    EffectKind,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Impact,
    LookupFailed,
    Operation,
    OpState,
    Queued,
    Snapshot,
    StillExists,
    Unanswered,
    VpnConnection,
    VpnGateway,
    client_token_for,
)
from bot.errors import (
    AlreadyRequested,
    CloudError,
    ConfirmationClosed,
    NotAllowed,
)
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
    thread,
)

__all__ = ["DeleteRequests", "DeleteSteps"]

log = logging.getLogger("bot.workflow")
_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
# A slash command's response_url works for 30 minutes; a lookup resumed later cannot answer.
_RESPONSE_URL_LIFETIME = timedelta(minutes=30)


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
        await self._audit_refused_request(
            user_id=user_id, channel_id=channel_id, vco_id=vco_id, region=region, account=account
        )
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

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Approve once (the first click wins), then delete in the background; return at once.

        ``message_ts`` is the clicked message: a click can arrive before the confirmation's ts
        is recorded (it is stored once chat.postMessage answers), and the thread needs it.
        """
        op, now = await self._open_for_approval(op_id, user_id)
        # A recreation is driven by the replica holding its key: another replica approves it
        # unleased and leaves it to the holder's resume pass (or, holder gone, to KeyLost).
        # A deletion approved while this instance drives all it may (max_driven) is left unleased
        # too: the first resume pass with room, here or on another replica, takes it.
        ours = op.id in self._keys if op.is_recreate else self._has_room()
        deferred = not ours and not op.is_recreate
        if ours:
            self._starting += 1
        try:
            approved = await self._move_to_approved(
                op, user_id=user_id, message_ts=message_ts, now=now, ours=ours, deferred=deferred
            )
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

    async def _open_for_approval(self, op_id: str, user_id: str) -> tuple[Operation, datetime]:
        """``op_id`` if ``user_id`` may approve it and it still awaits approval, with the time now.

        A refusal is audited and raised (NotAllowed); a closed or expired confirmation raises
        ConfirmationClosed (an expired one is expired first).
        """
        op = await self._load(op_id)
        await self._audited_check(self._policy.check_approval, op, user_id=user_id, verb="approve")
        if op.state is not OpState.AWAITING_APPROVAL:
            raise ConfirmationClosed(op)
        now = self._clock.now()
        if now >= op.expires_at:
            await self._expire(op)
            raise ConfirmationClosed(await self._load(op_id))
        return op, now

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
        effects = [CARD, thread(Deferred(driving=len(self._driving)))] if deferred else [CARD]
        # Lease in the same CAS: no other replica may see it approved and unowned. A deferred one
        # gets a lease that ends now, so the lookup's lease does not hold it back.
        lease: tuple[str, datetime] | None = None
        if ours:
            lease = (self.instance_id, now + timedelta(seconds=self._config.lease_s))
        elif deferred:
            lease = (self.instance_id, now)
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
            audit_entry=self._steps.entry(op, "approved", actor_id=user_id),
            effects=effects,
        )
        if moved is None:
            raise ConfirmationClosed(await self._load(op.id))
        approved, pending = moved
        self.outbox.deliver_claimed(approved, pending)
        return approved

    async def cancel(
        self, *, op_id: str, user_id: str, message_ts: str | None = None, reason: str | None = None
    ) -> Operation:
        """Cancel a confirmation that nobody approved yet (``message_ts`` as for :meth:`approve`).

        ``reason`` (the Cancel modal's, person-typed) is shown on the closed card, told to the
        requester and recorded in the audit entry.
        """
        op = await self._load(op_id)
        await self._audited_check(self._policy.check_cancel, op, user_id=user_id, verb="cancel")
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

    async def _audited_check(
        self, check: Callable[..., Awaitable[None]], op: Operation, *, user_id: str, verb: str
    ) -> None:
        """The policy's ``check`` of ``user_id`` on ``op``; a refusal is audited, then raised (NotAllowed)."""
        try:
            await check(user_id=user_id, op=op)
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

    async def _look_up_member(self, op: Operation, connection: Awaitable[VpnConnection] | None) -> Operation:
        """A batch member's lookup: AWAITING_APPROVAL without a card of its own, or FAILED with why."""
        if self._clock.now() - op.created_at > _RESPONSE_URL_LIFETIME:
            return await self._lookup_failed(op, LookupFailed(code="interrupted", reason=""), reply=False)
        try:
            found = await (
                connection
                if connection is not None
                else self.read_connection(account=op.account, region=op.region, vco_id=op.vco_id)
            )
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
        )
        return moved or await self._store.get_operation(op_id=op.id) or op

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
