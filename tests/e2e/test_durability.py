"""Issue 4, "operations that survive everything", end to end over HTTP: racing clicks on several
replicas, one delete per gateway at a time, and confirmations that expire.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from storetools import gateway_holder

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VPN_HANGZHOU
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    all_text,
    has_buttons,
    local_stack,
    op_id_of,
    parent_updates,
    thread_text,
    wait_confirmation,
    wait_parent,
    wait_thread,
)


def running_stack(
    database_url: str, *, replicas: int = 1, update_seconds: float = 0.5, **settings: Any
) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(database_url, update_seconds=update_seconds, replicas=replicas, settings=settings)


async def _request(stack: LocalStack, vco_id: str, *, replica: int = 0) -> str:
    """Ask for the deletion of ``vco_id`` through one replica; return the confirmation's ts."""
    reply = await stack.agents[replica].slash_command(ALICE, CHANNEL, f"delete {vco_id}")
    assert reply.status == 200, reply.body
    return (await wait_confirmation(stack.slack.state, vco_id)).ts


def _accepted_deletes(stack: LocalStack) -> list[Any]:
    return stack.vpc.state.accepted("DeleteVpnConnection")


async def _click_storm(stack: LocalStack, clicks: int) -> None:
    """``clicks`` approvers click Delete at the same moment, spread over every replica."""
    approvers = [f"U0APPR{i:02d}" for i in range(clicks)]
    for user in approvers:
        stack.slack.state.add_user(user, user.lower())
    ts = await _request(stack, SEED_VCO_HANGZHOU)

    replies = await asyncio.gather(
        *(
            stack.agents[i % len(stack.agents)].click(user, CHANNEL, ts, ActionId.APPROVE)
            for i, user in enumerate(approvers)
        )
    )
    assert [r.status for r in replies] == [200] * clicks

    state = stack.slack.state
    parent = await wait_parent(state, ts, "Deleted")
    assert not has_buttons(parent)
    [op] = await stack.bot.app.store.list_operations()
    assert op.state is OpState.DELETED
    winner = op.approver_id
    assert winner in approvers

    # One approval, one DeleteVpnConnection: the rest of the clicks lost the compare-and-set.
    assert len(_accepted_deletes(stack)) == 1
    assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
    updates = parent_updates(state, ts)
    # One in-progress card (it shows the state at delivery time: deleting, or already waiting for
    # the gateway), then the final one.
    assert [("Deleted" in u) for u in updates] == [False, True], updates
    assert "Deleting VPN connection" in updates[0], updates
    assert all(f"Approved by <@{winner}>" in u for u in updates)
    audit = await stack.bot.app.store.recent_audit(op_id=op.id, limit=50)
    assert [e.actor_id for e in audit if e.action == "approved"] == [winner]

    # Every other clicker is told, privately, who was first.
    def told_all() -> bool:
        return all(
            any(f"already approved by <@{winner}>" in m.text for m in state.ephemerals(user))
            for user in approvers
            if user != winner
        )

    await state.wait_for(told_all, timeout=10, what="an 'already approved' note for every other clicker")
    assert state.ephemerals(str(winner)) == []
    assert "Picked up again" not in thread_text(state, ts)


@pytest.mark.postgres
async def test_fifteen_clicks_on_two_replicas_delete_once_postgres(postgres_url: str) -> None:
    """15 approvers click Delete at once on two replicas sharing PostgreSQL: exactly one delete."""
    approvers = [f"U0APPR{i:02d}" for i in range(15)]
    async with running_stack(postgres_url, replicas=2, update_seconds=1.0, approvers=approvers) as stack:
        await _click_storm(stack, 15)


async def test_five_clicks_on_two_replicas_delete_once_sqlite(sqlite_url: str) -> None:
    """The same race on two replicas sharing one SQLite file."""
    approvers = [f"U0APPR{i:02d}" for i in range(5)]
    async with running_stack(sqlite_url, replicas=2, update_seconds=1.0, approvers=approvers) as stack:
        await _click_storm(stack, 5)


@pytest.mark.postgres
async def test_click_on_another_replica_completes_the_deletion(postgres_url: str) -> None:
    """The command reaches replica 0, the click replica 1: replica 1 deletes and tells the whole story."""
    async with running_stack(postgres_url, replicas=2, update_seconds=0.5) as stack:
        ts = await _request(stack, SEED_VCO_HANGZHOU, replica=0)
        reply = await stack.agents[1].click(BOB, CHANNEL, ts, ActionId.APPROVE)
        assert reply.status == 200

        parent = await wait_parent(stack.slack.state, ts, "Deleted")
        assert f"Approved by <@{BOB}>" in all_text(parent)
        thread = await wait_thread(stack.slack.state, ts, "Deleted in")
        for step in ("RequestId", f"{SEED_VPN_HANGZHOU}` is updating"):
            assert step in thread, thread
        assert "Picked up again" not in thread  # nobody crashed: no resume was needed
        assert len(_accepted_deletes(stack)) == 1
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections


@pytest.mark.postgres
async def test_two_connections_on_one_gateway_are_deleted_one_after_the_other(postgres_url: str) -> None:
    """Approved together on two replicas, two deletions on one gateway queue instead of colliding."""
    async with running_stack(postgres_url, replicas=2, update_seconds=0.6) as stack:
        ts_a = await _request(stack, SEED_VCO_HANGZHOU)
        ts_b = await _request(stack, SEED_VCO_HANGZHOU_BGP)
        replies = await asyncio.gather(
            stack.agents[0].click(BOB, CHANNEL, ts_a, ActionId.APPROVE),
            stack.agents[1].click(BOB, CHANNEL, ts_b, ActionId.APPROVE),
        )
        assert [r.status for r in replies] == [200, 200]

        state = stack.slack.state
        await wait_parent(state, ts_a, "Deleted")
        await wait_parent(state, ts_b, "Deleted")

        threads = {
            SEED_VCO_HANGZHOU: thread_text(state, ts_a),
            SEED_VCO_HANGZHOU_BGP: thread_text(state, ts_b),
        }
        waiting = {vco for vco, text in threads.items() if "on the same gateway" in text}
        assert len(waiting) == 1, threads  # exactly one waited, for the other one
        [second] = waiting
        [first] = set(threads) - waiting
        assert f"Waiting for `{first}` on the same gateway" in threads[second]

        deletes = stack.vpc.state.calls("DeleteVpnConnection")
        assert [r.code for r in deletes if r.code == "VpnTask.CONFLICT"] == []
        accepted = _accepted_deletes(stack)
        assert [r.params["VpnConnectionId"] for r in accepted] == [first, second]
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
        assert SEED_VCO_HANGZHOU_BGP not in stack.vpc.state.connections
        ops = await stack.bot.app.store.list_operations()
        assert {op.state for op in ops} == {OpState.DELETED}
        assert (
            await gateway_holder(stack.bot.app.store, region="cn-hangzhou", gateway_id=SEED_VPN_HANGZHOU)
            is None
        )


async def test_unapproved_confirmation_expires_and_late_clicks_change_nothing(tmp_path: Path) -> None:
    """No approval within the TTL: the buttons go, the message says so, a late click is refused privately."""
    url = f"sqlite:///{tmp_path / 'expiry.db'}"
    async with running_stack(url, confirmation_ttl_seconds=0.5, lease_seconds=0.6) as stack:
        state = stack.slack.state
        ts = await _request(stack, SEED_VCO_HANGZHOU)
        op_id = op_id_of(await wait_confirmation(state, SEED_VCO_HANGZHOU))

        parent = await wait_parent(state, ts, "Expired", within=5)
        assert not has_buttons(parent)
        assert "Nothing was deleted" in all_text(parent)
        edits_before = len(parent.edits)

        # A client that still shows the old buttons sends a click anyway.
        reply = await stack.agent.click(BOB, CHANNEL, ts, ActionId.APPROVE, op_id, require_button=False)
        assert reply.status == 200
        note = await state.wait_for(
            lambda: next((m for m in state.ephemerals(BOB) if "expired" in m.text), None),
            timeout=5,
            what="ephemeral saying the confirmation expired",
        )
        assert "Nothing was deleted" in note.text
        assert len(parent.edits) == edits_before
        assert "Expired" in all_text(parent)
        assert stack.vpc.state.calls("DeleteVpnConnection") == []
        assert SEED_VCO_HANGZHOU in stack.vpc.state.connections
        [op] = await stack.bot.app.store.list_operations()
        assert op.state is OpState.EXPIRED
        assert op.approver_id is None
