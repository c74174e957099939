"""Graceful shutdown in-process: requests in flight finish, background work stops at a safe point."""

from __future__ import annotations

from pathlib import Path

from bot.domain import OpState
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import local_stack
from .test_delete_flow import _confirmation


async def test_shutdown_waits_for_a_request_in_flight(tmp_path: Path) -> None:
    """A slash command still looking the connection up when shutdown starts gets its confirmation."""
    async with local_stack(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}") as stack:
        stack.vpc.state.faults.add(action="DescribeVpnConnection", latency=1.0, times=1)
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        assert reply.status == 200
        await stack.slack.state.wait_for(
            lambda: len(stack.bot.app.inflight) == 1, what="the lookup in flight"
        )
        await stack.replicas.pop(0).aclose()
        # The lookup finished and the confirmation was posted before the store closed.
        assert any(SEED_VCO_HANGZHOU in m.text for m in stack.slack.state.messages(CHANNEL))


async def test_shutdown_mid_poll_leaves_the_operation_resumable(tmp_path: Path) -> None:
    """Stopping while the gateway is updating stops at a safe point; the next start finishes the job."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    async with local_stack(database_url=db, update_seconds=1.5) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)

        async def waiting() -> bool:
            ops = await stack.bot.app.store.list_operations()
            return [op.state for op in ops] == [OpState.WAITING_GATEWAY]

        await stack.slack.state.wait_for(waiting, timeout=10, what="the gateway to be polled")
        first = stack.replicas.pop(0)
        await first.aclose()
        assert not first.app.workflow.driving

        # A fresh replica on the same database picks it up at once (the lease was released).
        successor = await stack.add_replica()

        async def deleted() -> bool:
            ops = await successor.app.store.list_operations()
            return [op.state for op in ops] == [OpState.DELETED]

        await stack.slack.state.wait_for(deleted, timeout=10, what="the successor to finish")
        accepted = [
            r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection" and r.outcome == "ok"
        ]
        assert len(accepted) == 1
