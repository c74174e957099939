"""A workflow on a real store with Protocol fakes and a virtual clock, shared by the workflow tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fakes import REGION, AllowAllPolicy, FakeClock, FakeNotifier, FakeVpc, run_until
from storetools import pending_effects

from bot.domain import Operation, OpState
from bot.ports import Policy, Quorum
from bot.store import Store
from bot.workflow import Workflow, WorkflowConfig

CONFIG = WorkflowConfig(
    poll_interval_s=5,
    delete_timeout_s=900,
    confirmation_ttl_s=600,
    lease_s=30,
    busy_retry_attempts=4,
    busy_retry_base_s=10,
    busy_retry_max_s=40,
    loop_interval_s=10,
)
GW = "vpn-gw1"


@dataclass
class Harness:
    store: Store
    clock: FakeClock
    vpc: FakeVpc = field(default_factory=FakeVpc)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    workflows: list[Workflow] = field(default_factory=list)

    def workflow(
        self,
        *,
        instance_id: str = "wf-1",
        policy: Policy | None = None,
        store: Store | None = None,
        quorum: Quorum | None = None,
        **config: float,
    ) -> Workflow:
        wf = Workflow(
            store=store or self.store,
            vpc=self.vpc,
            notifier=self.notifier,
            policy=policy or AllowAllPolicy(),
            clock=self.clock,
            config=dataclasses.replace(CONFIG, **config),  # type: ignore[arg-type]
            instance_id=instance_id,
            quorum=quorum,
        )
        self.workflows.append(wf)
        return wf

    async def request(self, wf: Workflow, vco_id: str = "vco-1", user_id: str = "U0REQ") -> Operation:
        """Request a deletion; the operation as stored once the request returns (its card's ts included)."""
        op = await wf.request_delete(
            team_id="T0",
            user_id=user_id,
            channel_id="C0OPS",
            vco_id=vco_id,
            region=REGION,
            response_url="https://hooks.slack.test/r",
        )
        return await self.store.get_operation(op_id=op.id) or op

    async def op(self, op_id: str) -> Operation:
        op = await self.store.get_operation(op_id=op_id)
        assert op is not None
        return op

    async def eventually(self, check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
        """Let virtual time pass until ``check`` holds."""
        await run_until(self.clock, check, within=within)

    async def wait_state(self, op_id: str, *states: OpState, within: float = 10.0) -> Operation:
        async def reached() -> bool:
            return (await self.op(op_id)).state in states

        await self.eventually(reached, within=within)
        op = await self.op(op_id)
        if op.is_terminal:
            # Slack is told after the state changes (the outbox); let it finish.
            async def told() -> bool:
                return not await pending_effects(self.store, op_id=op_id)

            await self.eventually(told, within=within)
        return op

    async def eventually_state(self, op_id: str, *states: OpState, within: float = 10.0) -> Operation:
        """Let virtual time pass until the operation is in one of ``states`` (Slack may lag)."""

        async def reached() -> bool:
            return (await self.op(op_id)).state in states

        await self.eventually(reached, within=within)
        return await self.op(op_id)

    async def wait_event(self, op_id: str, kind: type, within: float = 10.0) -> None:
        async def seen() -> bool:
            return any(isinstance(e, kind) for e in self.notifier.events_for(op_id))

        await self.eventually(seen, within=within)

    async def settle(self) -> None:
        """Wait until every workflow is idle and has told Slack everything."""
        async with asyncio.timeout(10):
            for wf in self.workflows:
                await wf.wait_idle()

    def parent_states(self, op_id: str) -> list[OpState]:
        return [op.state for op in self.notifier.parent_updates if op.id == op_id]

    async def audit_actions(self, op_id: str) -> list[str]:
        return [e.action for e in reversed(await self.store.recent_audit(limit=100, op_id=op_id))]


@contextlib.asynccontextmanager
async def make_harness(store: Store, clock: FakeClock) -> AsyncIterator[Harness]:
    """A harness with two connections on one gateway; every workflow is stopped at the end."""
    harness = Harness(store=store, clock=clock)
    harness.vpc.add_connection("vco-1", GW)
    harness.vpc.add_connection("vco-2", GW)
    try:
        yield harness
    finally:
        for wf in harness.workflows:
            await wf.stop()
