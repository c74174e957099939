"""The :class:`Workflow` the Slack layer calls, put together from the runner, deletion and recreation.

Its requests are :class:`bot.workflow.delete.DeleteRequests`,
:class:`bot.workflow.recreate.RecreateRequests` and :class:`bot.workflow.freeze.FreezeRequests`; the leases, resume and expiry passes that drive
them are :class:`bot.workflow.runner.Runner`; :class:`Steps` drives one operation by its state.
"""

from __future__ import annotations

from collections.abc import Collection

from bot.domain import (
    AuditEntry,
    Operation,
    OpState,
)
from bot.ports import (
    Clock,
    NoMeter,
    Notifier,
    OperationMeter,
    OperationStore,
    Policy,
    Quorum,
    VpcApi,
    VpcApis,
)
from bot.workflow.batch import BatchRequests
from bot.workflow.config import WorkflowConfig
from bot.workflow.delete import DeleteSteps
from bot.workflow.freeze import FREEZE_ACTIONS, FreezeRequests
from bot.workflow.recreate import RecreateRequests, RecreateSteps

__all__ = ["Steps", "Workflow"]


class _OneVpc:
    """One VPC API for every account (the single-account bot and tests)."""

    def __init__(self, vpc: VpcApi) -> None:
        self._vpc = vpc

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi:
        return self._vpc


class Steps(DeleteSteps, RecreateSteps):
    """The per-operation steps; ``pause`` sleeps on the clock and raises Stopping on shutdown."""

    async def drive(self, op: Operation) -> None:
        queued_posted = False
        while op.state not in (OpState.AWAITING_APPROVAL, OpState.SCHEDULED) and not op.is_terminal:
            if op.state is OpState.LOOKING_UP:
                await self.look_up(op, reply_on_failure=True)
                return
            if op.state is OpState.APPROVED:
                # Before the deadline check: time held by a freeze does not count against it.
                op, held = await self.hold_if_frozen(op)
                if held:
                    continue
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


class Workflow(BatchRequests, RecreateRequests, FreezeRequests):
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
        quorum: Quorum | None = None,
    ) -> None:
        """``vpcs`` gives each account's VPC API; a plain ``vpc`` serves the single-account bot.

        ``quorum`` (VPNBOT_APPROVAL_RULES) says how many must approve each operation; None: one.
        """
        if vpcs is None:
            if vpc is None:
                raise TypeError("Workflow needs vpc or vpcs")
            vpcs = _OneVpc(vpc)
        super().__init__(
            store=store,
            notifier=notifier,
            policy=policy,
            clock=clock,
            config=config,
            instance_id=instance_id,
            quorum=quorum,
        )
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
        # Freezes belong to no operation and concern every channel: they are listed too.
        return await self._store.recent_audit(
            limit=limit, channel_id=channel_id, accounts=accounts, unbound=FREEZE_ACTIONS
        )
