"""The deletion workflow: request, approval, one DeleteVpnConnection per gateway, then watching it finish.

The states and their arrows are drawn in :class:`bot.domain.OpState`. The rules that keep a
deletion safe across clicks, retries, crashes and replicas:

- every state change is a compare-and-set in the store, so of twenty clicks exactly one approves;
- a worker drives an operation only while it holds the operation's lease, and renews it; a
  worker that loses a CAS or its lease stops, and another replica resumes the operation once
  the lease expires (``stop()`` releases leases so that happens at once);
- one DeleteVpnConnection per gateway at a time (Alibaba rejects concurrent ones), through a
  durable gateway lock, released whenever the operation ends;
- every send of DeleteVpnConnection carries the operation's one ClientToken, so a resend after
  a crash or a busy gateway is answered like the first call instead of acting twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.config import Settings
from bot.domain import (
    ACTIVE_STATES,
    Accepted,
    AuditEntry,
    Deleted,
    Failed,
    GatewayUpdating,
    Operation,
    OpState,
    Progress,
    Queued,
    Resumed,
    Retrying,
    TimedOut,
)
from bot.errors import CloudError, ConfirmationClosed, NotAllowed, RetryClass, SlackError
from bot.ports import Clock, Notifier, Policy, VpcApi
from bot.store import Store

__all__ = ["CONNECTION_NOT_FOUND", "Workflow", "WorkflowConfig", "client_token_for", "closed_text"]

log = logging.getLogger("bot.workflow")

CONNECTION_NOT_FOUND = "InvalidVpnConnectionInstanceId.NotFound"
_AWAITING = frozenset({OpState.AWAITING_APPROVAL})
SYSTEM_ACTOR = "vpn-bot"


def client_token_for(op_id: str) -> str:
    """The one ClientToken of an operation: deterministic, ASCII, at most 64 characters."""
    return f"vpnbot-{op_id}"[:64]


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """The timing knobs of the workflow, in seconds."""

    poll_interval_s: float = 5.0
    delete_timeout_s: float = 900.0
    confirmation_ttl_s: float = 900.0
    lease_s: float = 30.0
    busy_retry_attempts: int = 5
    busy_retry_base_s: float = 10.0
    busy_retry_max_s: float = 120.0
    # How often the background loops run (resume + expiry); default lease_s / 3.
    loop_interval_s: float | None = None
    # How many times VERIFYING looks again before calling a still-present connection a failure:
    # right after the call the gateway may still say ``active`` before it switches to ``updating``.
    verify_checks: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkflowConfig:
        """Take the workflow's timings from the bot's settings."""
        return cls(
            poll_interval_s=settings.poll_interval_seconds,
            delete_timeout_s=settings.delete_timeout_seconds,
            confirmation_ttl_s=settings.confirmation_ttl_seconds,
            lease_s=settings.lease_seconds,
            busy_retry_attempts=settings.busy_retry_attempts,
            busy_retry_base_s=settings.busy_retry_base_seconds,
        )

    @property
    def loop_s(self) -> float:
        return self.loop_interval_s if self.loop_interval_s is not None else self.lease_s / 3


class _Stopping(Exception):
    """The workflow is stopping; raised at a safe point between steps."""


class _LostOperation(Exception):
    """This worker lost a CAS or its lease: someone else owns the operation now."""


def _fmt_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "an unknown time"


def closed_text(op: Operation) -> str:
    """Why a click on ``op``'s confirmation does nothing now."""
    if op.state is OpState.CANCELLED:
        return (
            f"This request was already cancelled by <@{op.cancelled_by}> at {_fmt_time(op.finished_at)}. "
            "Nothing was deleted."
        )
    if op.state is OpState.EXPIRED:
        return (
            f"This confirmation expired at {_fmt_time(op.expires_at)} without approval. Nothing was deleted; "
            "request the deletion again if it is still needed."
        )
    if op.approver_id and op.state in ACTIVE_STATES:
        return (
            f"This request was already approved by <@{op.approver_id}> at {_fmt_time(op.approved_at)}; "
            "the deletion is in progress — follow the thread."
        )
    if op.approver_id:
        return (
            f"This request is finished ({op.state.value.replace('_', ' ')}); it was approved by "
            f"<@{op.approver_id}> at {_fmt_time(op.approved_at)}. See the thread for the outcome."
        )
    return f"This request is finished ({op.state.value.replace('_', ' ')}). See the thread for details."


class Workflow:
    """Drives deletion operations from the slash command to a final state."""

    def __init__(
        self,
        *,
        store: Store,
        vpc: VpcApi,
        notifier: Notifier,
        policy: Policy,
        clock: Clock,
        config: WorkflowConfig,
        instance_id: str,
    ) -> None:
        self._store = store
        self._vpc = vpc
        self._notifier = notifier
        self._policy = policy
        self._clock = clock
        self._config = config
        self.instance_id = instance_id
        self._tasks: set[asyncio.Task[None]] = set()
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # Jitter spreads busy retries of several replicas; it is not security-relevant.
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography

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
    ) -> Operation:
        """Check policy, look the connection up, post the confirmation and record the request."""
        try:
            await self._policy.check_request(user_id=user_id, channel_id=channel_id, region=region)
        except NotAllowed as err:
            await self._store.add_audit(
                at=self._clock.now(),
                action="refused",
                actor_id=user_id,
                vco_id=vco_id,
                region=region,
                detail=f"request: {err.friendly}",
            )
            raise
        connection = await self._vpc.describe_vpn_connection(region=region, vco_id=vco_id)
        gateway = await self._vpc.describe_vpn_gateway(region=region, gateway_id=connection.gateway_id)
        now = self._clock.now()
        op_id = uuid.uuid4().hex
        op = await self._store.create_operation(
            op=Operation(
                id=op_id,
                state=OpState.AWAITING_APPROVAL,
                region=region,
                connection=connection,
                gateway=gateway,
                requester_id=user_id,
                channel_id=channel_id,
                team_id=team_id,
                created_at=now,
                updated_at=now,
                expires_at=now + timedelta(seconds=self._config.confirmation_ttl_s),
                client_token=client_token_for(op_id),
                response_url=response_url,
            )
        )
        try:
            ts = await self._notifier.post_confirmation(op)
        except SlackError as err:
            failed = await self._store.transition(
                op.id,
                from_states=_AWAITING,
                to=OpState.FAILED,
                now=self._clock.now(),
                finished_at=self._clock.now(),
                error_code=f"slack:{err.error}",
                error_text=err.friendly,
            )
            await self._audit(
                failed or op, "failed", actor_id=user_id, detail=f"confirmation not posted: {err.error}"
            )
            raise
        op = await self._store.set_fields(op.id, now=self._clock.now(), message_ts=ts) or op
        await self._audit(op, "requested", actor_id=user_id, detail=f"channel {channel_id}")
        return op

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Approve once (the first click wins), then delete in the background; return at once.

        ``message_ts`` is the clicked message: a click can arrive before the confirmation's ts
        is recorded (it is stored once chat.postMessage answers), and the thread needs it.
        """
        op = await self._load(op_id)
        try:
            await self._policy.check_approval(user_id=user_id, op=op)
        except NotAllowed as err:
            await self._audit(op, "refused", actor_id=user_id, detail=f"approve: {err.friendly}")
            raise
        if op.state is not OpState.AWAITING_APPROVAL:
            raise ConfirmationClosed(closed_text(op))
        now = self._clock.now()
        if now >= op.expires_at:
            await self._expire(op)
            raise ConfirmationClosed(closed_text(await self._load(op_id)))
        approved = await self._store.transition(
            op_id,
            from_states=_AWAITING,
            to=OpState.APPROVED,
            now=now,
            approver_id=user_id,
            approved_at=now,
            deadline_at=now + timedelta(seconds=self._config.delete_timeout_s),
            message_ts=op.message_ts or message_ts,
            # Lease in the same CAS: no other replica may see it approved and unowned.
            lease=(self.instance_id, now + timedelta(seconds=self._config.lease_s)),
        )
        if approved is None:
            raise ConfirmationClosed(closed_text(await self._load(op_id)))
        await self._audit(approved, "approved", actor_id=user_id)
        await self._update_parent(approved)
        self._start_driving(approved)
        return approved

    async def cancel(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Cancel a confirmation that nobody approved yet (``message_ts`` as for :meth:`approve`)."""
        op = await self._load(op_id)
        try:
            await self._policy.check_cancel(user_id=user_id, op=op)
        except NotAllowed as err:
            await self._audit(op, "refused", actor_id=user_id, detail=f"cancel: {err.friendly}")
            raise
        now = self._clock.now()
        cancelled = await self._store.transition(
            op_id,
            from_states=_AWAITING,
            to=OpState.CANCELLED,
            now=now,
            cancelled_by=user_id,
            finished_at=now,
            message_ts=op.message_ts or message_ts,
        )
        if cancelled is None:
            raise ConfirmationClosed(closed_text(await self._load(op_id)))
        await self._update_parent(cancelled)
        await self._audit(cancelled, "cancelled", actor_id=user_id)
        return cancelled

    async def history(
        self, *, limit: int = 10, user_id: str | None = None, channel_id: str = ""
    ) -> list[AuditEntry]:
        """The newest audit entries first; with ``user_id``, only if the policy lets them read it."""
        if user_id is not None:
            await self._policy.check_history(user_id=user_id, channel_id=channel_id)
        return await self._store.recent_audit(limit=limit)

    async def start(self) -> None:
        """Resume what crashed or stopped replicas left, then keep resuming and expiring in the background."""
        await self.run_once()
        self._loops = [
            asyncio.create_task(self._every(self._resume_pass, "resume"), name="vpnbot-resume"),
            asyncio.create_task(self._every(self._expiry_pass, "expiry"), name="vpnbot-expiry"),
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
        if release_leases:
            for op_id in held:
                try:
                    await self._store.release_lease(op_id=op_id, owner=self.instance_id)
                except Exception:
                    log.exception("could not release the lease on %s", op_id, extra={"op_id": op_id})

    async def run_once(self) -> None:
        """One pass of resume and expiry (the background loops call the same)."""
        await self._resume_pass()
        await self._expiry_pass()

    async def wait_idle(self) -> None:
        """Wait until every operation this instance drives has stopped (tests and the demo)."""
        while self._driving:
            await asyncio.gather(*self._driving.values(), return_exceptions=True)

    @property
    def driving(self) -> frozenset[str]:
        """Ids of the operations this instance drives right now."""
        return frozenset(self._driving)

    # --- background passes -----------------------------------------------------------------------

    async def _every(self, job: Callable[[], Awaitable[None]], name: str) -> None:
        with contextlib.suppress(_Stopping):
            while True:
                try:
                    await job()
                except Exception:
                    log.exception("the %s loop failed; trying again", name)
                await self._pause(self._config.loop_s)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless the workflow is stopping: then raise _Stopping at this safe point."""
        if not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        if self._stopping.is_set():
            raise _Stopping

    async def _resume_pass(self) -> None:
        now = self._clock.now()
        for op in await self._store.list_resumable(now=now):
            if op.id in self._driving:
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
            await self._progress(claimed, Resumed(instance=self.instance_id))
            await self._audit(claimed, "resumed", actor_id=SYSTEM_ACTOR, detail=f"by {self.instance_id}")
            self._start_driving(claimed)

    async def _expiry_pass(self) -> None:
        for op in await self._store.list_expired_confirmations(now=self._clock.now()):
            await self._expire(op)

    async def _expire(self, op: Operation) -> None:
        now = self._clock.now()
        expired = await self._store.transition(
            op.id, from_states=_AWAITING, to=OpState.EXPIRED, now=now, finished_at=now
        )
        if expired is not None:
            await self._update_parent(expired)
            await self._audit(expired, "expired", actor_id=SYSTEM_ACTOR, detail="no approval in time")

    # --- driving one operation ---------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_driving(self, op: Operation) -> None:
        if op.id in self._driving:
            return
        task = self._spawn(self._run(op), name=f"vpnbot-op-{op.id}")
        self._driving[op.id] = task
        task.add_done_callback(lambda _t: self._driving.pop(op.id, None))

    async def _run(self, op: Operation) -> None:
        """Drive ``op`` while renewing its lease; log anything unexpected with the op id."""
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(op.id, lost), name=f"vpnbot-lease-{op.id}")
        driver = asyncio.create_task(self._drive(op), name=f"vpnbot-drive-{op.id}")
        lost_wait = asyncio.create_task(lost.wait(), name=f"vpnbot-lost-{op.id}")
        try:
            await asyncio.wait({driver, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not driver.done():
                log.warning("lease lost; another worker owns the operation now", extra={"op_id": op.id})
                return
            driver.result()
        except _LostOperation:
            log.info("another worker owns the operation now; stopping here", extra={"op_id": op.id})
        except _Stopping:
            log.info(
                "shutting down; the operation resumes on the next start or another replica",
                extra={"op_id": op.id},
            )
        except Exception:
            # The lease is kept: it expires and a resume pass retries later, a natural backoff.
            log.exception("driving the operation failed unexpectedly", extra={"op_id": op.id})
        finally:
            for task in (driver, heartbeat, lost_wait):
                task.cancel()
            # Wait for them even when we are being cancelled, so nothing outlives stop().
            await asyncio.gather(driver, heartbeat, lost_wait, return_exceptions=True)

    async def _heartbeat(self, op_id: str, lost: asyncio.Event) -> None:
        while True:
            try:
                await self._pause(self._config.lease_s / 3)
            except _Stopping:
                return
            try:
                until = self._clock.now() + timedelta(seconds=self._config.lease_s)
                if not await self._store.renew_lease(op_id=op_id, owner=self.instance_id, until=until):
                    lost.set()
                    return
            except Exception:
                # A database hiccup: keep trying until the lease really expires.
                log.exception("could not renew the lease", extra={"op_id": op_id})

    async def _drive(self, op: Operation) -> None:
        queued_posted = False
        while not op.is_terminal:
            deadline = self._deadline(op)
            if self._clock.now() >= deadline:
                await self._time_out(op)
                return
            if op.state is OpState.APPROVED:
                op, queued_posted = await self._step_approved(op, queued_posted)
            elif op.state is OpState.DELETING:
                op = await self._step_deleting(op)
            elif op.state is OpState.WAITING_GATEWAY:
                op = await self._step_waiting(op)
            elif op.state is OpState.VERIFYING:
                op = await self._step_verifying(op)
            else:  # awaiting approval: nothing for a worker to do
                return

    def _deadline(self, op: Operation) -> datetime:
        if op.deadline_at is not None:
            return op.deadline_at
        start = op.approved_at or op.created_at
        return start + timedelta(seconds=self._config.delete_timeout_s)

    async def _move(self, op: Operation, to: OpState, **fields: Any) -> Operation:
        moved = await self._store.transition(
            op.id,
            from_states={op.state},
            to=to,
            now=self._clock.now(),
            require_owner=self.instance_id,
            **fields,
        )
        if moved is None:
            raise _LostOperation(op.id)
        log.debug(
            "operation moved from %s to %s",
            op.state.value,
            to.value,
            extra={"op_id": op.id, "vco_id": op.vco_id, "state": to.value},
        )
        return moved

    async def _step_approved(self, op: Operation, queued_posted: bool) -> tuple[Operation, bool]:
        holder = await self._store.acquire_gateway(
            region=op.region, gateway_id=op.gateway_id, op_id=op.id, now=self._clock.now()
        )
        if holder == op.id:
            return await self._move(op, OpState.DELETING, started_at=self._clock.now()), queued_posted
        if not queued_posted:
            blocking = await self._store.get_operation(op_id=holder)
            await self._progress(op, Queued(blocking_vco_id=blocking.vco_id if blocking else holder))
            queued_posted = True
        await self._sleep_until_deadline(op, self._config.poll_interval_s)
        return op, queued_posted

    async def _step_deleting(self, op: Operation) -> Operation:
        # attempts > 0 on entry: a previous worker may have sent it before crashing.
        maybe_sent = op.attempts > 0
        busy_attempt = 1

        async def on_retry(err: CloudError, delay: float, attempt: int, max_attempts: int) -> None:
            nonlocal maybe_sent
            maybe_sent = True  # a transport failure or 5xx may hide an accepted request
            await self._progress(
                op,
                Retrying(
                    reason=err.info.friendly,
                    delay_s=delay,
                    attempt=attempt,
                    max_attempts=max_attempts,
                    code=err.code,
                ),
            )

        while True:
            # Record the send before making it, so a crash in between is seen as "maybe sent".
            marked = await self._store.set_fields(
                op.id,
                now=self._clock.now(),
                states={OpState.DELETING},
                require_owner=self.instance_id,
                attempts=op.attempts + 1,
            )
            if marked is None:
                raise _LostOperation(op.id)
            op = marked
            try:
                request_id = await self._vpc.delete_vpn_connection(
                    region=op.region, vco_id=op.vco_id, client_token=op.client_token, on_retry=on_retry
                )
            except CloudError as err:
                if err.code == CONNECTION_NOT_FOUND and maybe_sent:
                    log.info("connection already gone after a resend; verifying", extra={"op_id": op.id})
                    return await self._move(op, OpState.VERIFYING)
                retryable = err.retry is RetryClass.BUSY or err.retry is RetryClass.TRANSIENT
                if err.retry is RetryClass.TRANSIENT:
                    maybe_sent = True
                if not retryable or busy_attempt >= self._config.busy_retry_attempts:
                    return await self._fail(op, err.code, err.friendly, request_id=err.request_id)
                delay = self._busy_delay(busy_attempt)
                remaining = (self._deadline(op) - self._clock.now()).total_seconds()
                if remaining <= 0:
                    return op  # the loop times it out
                delay = min(delay, remaining)
                busy_attempt += 1
                await self._progress(
                    op,
                    Retrying(
                        reason=err.info.friendly,
                        delay_s=delay,
                        attempt=busy_attempt,
                        max_attempts=self._config.busy_retry_attempts,
                        code=err.code,
                    ),
                )
                log.info("gateway busy (%s); retrying in %.1fs", err.code, delay, extra={"op_id": op.id})
                await self._pause(delay)
                continue
            moved = await self._move(op, OpState.WAITING_GATEWAY, delete_request_id=request_id)
            await self._progress(moved, Accepted(request_id=request_id))
            await self._audit(moved, "delete_sent", actor_id=SYSTEM_ACTOR, request_id=request_id)
            return moved

    def _busy_delay(self, attempt: int) -> float:
        base = min(self._config.busy_retry_base_s * 2.0 ** (attempt - 1), self._config.busy_retry_max_s)
        return base * self._random.uniform(0.8, 1.2)

    async def _step_waiting(self, op: Operation) -> Operation:
        interval = self._config.poll_interval_s
        updating_posted = False
        while self._clock.now() < self._deadline(op):
            try:
                gateway = await self._vpc.describe_vpn_gateway(region=op.region, gateway_id=op.gateway_id)
            except CloudError as err:
                log.warning("polling the gateway failed (%s); polling on", err.code, extra={"op_id": op.id})
            else:
                if gateway.status == "updating" and not updating_posted:
                    updating_posted = True
                    await self._progress(op, GatewayUpdating(gateway_id=op.gateway_id))
                if gateway.status == "active":
                    return await self._move(op, OpState.VERIFYING)
            await self._sleep_until_deadline(op, interval)
            interval = min(interval * 1.5, self._config.poll_interval_s * 4)
        return op

    async def _step_verifying(self, op: Operation) -> Operation:
        seen = 0
        while self._clock.now() < self._deadline(op):
            try:
                connection = await self._vpc.describe_vpn_connection(region=op.region, vco_id=op.vco_id)
            except CloudError as err:
                if err.code == CONNECTION_NOT_FOUND:
                    return await self._finish_deleted(op)
                log.warning(
                    "checking the connection failed (%s); checking on", err.code, extra={"op_id": op.id}
                )
            else:
                seen += 1
                if seen >= self._config.verify_checks:
                    text = (
                        f"The gateway `{op.gateway_id}` is active again, but connection `{op.vco_id}` still "
                        f"exists (status `{connection.status}`). Alibaba Cloud accepted the delete but did not "
                        "remove the connection. Check it in the VPN console and request the deletion again; if "
                        "it stays, open an Alibaba Cloud ticket quoting the RequestId."
                    )
                    return await self._fail(op, "still_exists", text, request_id=op.delete_request_id)
            await self._sleep_until_deadline(op, self._config.poll_interval_s)
        return op

    async def _finish_deleted(self, op: Operation) -> Operation:
        now = self._clock.now()
        done = await self._move(op, OpState.DELETED, finished_at=now)
        try:
            elapsed = (now - (done.approved_at or done.created_at)).total_seconds()
            await self._progress(done, Deleted(elapsed_s=elapsed))
            await self._update_parent(done)
            await self._audit(done, "deleted", actor_id=SYSTEM_ACTOR, request_id=done.delete_request_id)
        finally:
            await self._release_gateway(done)
        return done

    async def _fail(self, op: Operation, code: str, text: str, *, request_id: str | None = None) -> Operation:
        done = await self._move(
            op, OpState.FAILED, finished_at=self._clock.now(), error_code=code, error_text=text
        )
        try:
            await self._progress(done, Failed(code=code, text=text, request_id=request_id))
            await self._update_parent(done)
            await self._audit(
                done, "failed", actor_id=SYSTEM_ACTOR, detail=f"{code}: {text}", request_id=request_id
            )
        finally:
            await self._release_gateway(done)
        return done

    async def _time_out(self, op: Operation) -> Operation:
        now = self._clock.now()
        waited = (now - (op.approved_at or op.created_at)).total_seconds()
        minutes = max(1, round(waited / 60))
        check_gateway = (
            f"`aliyun vpc DescribeVpnGateway --RegionId {op.region} --VpnGatewayId {op.gateway_id}`"
        )
        if op.state is OpState.APPROVED:
            text = (
                f"Gave up after {minutes} min: gateway `{op.gateway_id}` stayed busy with another deletion, so "
                f"`{op.vco_id}` was never sent for deletion and still exists. Check the gateway state in the "
                f"VPN console or with {check_gateway}, then request the deletion again."
            )
        else:
            text = (
                f"No confirmation that `{op.vco_id}` is gone after {minutes} min. The deletion may still finish. "
                f"Check the gateway state in the VPN console or with {check_gateway}: `updating` means still "
                f"working, `active` means done — then check the connection with "
                f"`aliyun vpc DescribeVpnConnection --RegionId {op.region} --VpnConnectionId {op.vco_id}`. "
                "If it is still there, request the deletion again."
            )
        done = await self._move(op, OpState.TIMED_OUT, finished_at=now, error_code="timeout", error_text=text)
        try:
            details = {"gateway_id": op.gateway_id, "region": op.region, "state": op.state.value}
            if op.delete_request_id:
                details["request_id"] = op.delete_request_id
            await self._progress(done, TimedOut(text=text, waited_s=waited, details=details))
            await self._update_parent(done)
            await self._audit(
                done, "timed_out", actor_id=SYSTEM_ACTOR, detail=text, request_id=op.delete_request_id
            )
        finally:
            await self._release_gateway(done)
        return done

    async def _sleep_until_deadline(self, op: Operation, delay: float) -> None:
        remaining = (self._deadline(op) - self._clock.now()).total_seconds()
        await self._pause(max(0.0, min(delay, remaining)))

    # --- small helpers -----------------------------------------------------------------------

    async def _load(self, op_id: str) -> Operation:
        op = await self._store.get_operation(op_id=op_id)
        if op is None:
            raise ConfirmationClosed(
                "This confirmation was not found; it may belong to another bot installation. "
                "Request the deletion again."
            )
        return op

    async def _release_gateway(self, op: Operation) -> None:
        await self._store.release_gateway(region=op.region, gateway_id=op.gateway_id, op_id=op.id)

    async def _progress(self, op: Operation, event: Progress) -> None:
        try:
            await self._notifier.progress(op, event)
        except Exception:
            # The notifier promises not to raise; a bug there must not stop a deletion.
            log.exception("posting progress failed", extra={"op_id": op.id})

    async def _update_parent(self, op: Operation) -> None:
        try:
            await self._notifier.update_parent(op)
        except Exception:
            log.exception("updating the confirmation failed", extra={"op_id": op.id})

    async def _audit(
        self,
        op: Operation,
        action: str,
        *,
        actor_id: str,
        detail: str = "",
        request_id: str | None = None,
    ) -> None:
        # One structured line per audited step, so logs can be followed by op_id like the audit trail.
        log.info(
            "operation %s",
            action,
            extra={
                "op_id": op.id,
                "vco_id": op.vco_id,
                "state": op.state.value,
                "action": action,
                "actor_id": actor_id,
                "request_id": request_id,
            },
        )
        await self._store.add_audit(
            at=self._clock.now(),
            action=action,
            actor_id=actor_id,
            op_id=op.id,
            vco_id=op.vco_id,
            region=op.region,
            detail=detail,
            request_id=request_id,
        )
