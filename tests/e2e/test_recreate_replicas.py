"""Recreate across replicas (PostgreSQL): the key lives only in the memory of the replica that took
the modal, so that replica sends the create even when the approval lands on another one; with that
replica gone, the recreation fails without creating anything and the thread asks for the key again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from netproxy import TcpProxy, running_proxy
from pgtools import PG_URL

from bot.domain import OpState
from bot.errors import StoreUnavailable
from bot.sandbox.local import LocalStack
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB
from .support import CHANNEL, local_stack, wait_parent, wait_thread
from .test_recreate import KEY, delete, open_modal, psk_values, recreate_confirmation, routes_to

pytestmark = pytest.mark.postgres
UNREACHABLE = StoreUnavailable("").friendly


def two_replicas(url: str) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(url, update_seconds=0.3, replicas=2, settings={"lease_seconds": 1.5})


async def _asked_on_the_first(stack: LocalStack) -> tuple[str, str]:
    """Delete, then Recreate… with the key, all through replica 0; return (card ts, confirmation ts)."""
    ts = await delete(stack)
    view = await open_modal(stack, ts)
    assert (await stack.agents[0].submit(ALICE, view["id"], psk_values(KEY))).status == 200
    return ts, (await recreate_confirmation(stack.slack.state, ts)).ts


async def test_approved_on_another_replica_the_key_holder_creates_it(postgres_url: str) -> None:
    async with two_replicas(postgres_url) as stack:
        holder = stack.replicas[0].app.workflow.instance_id
        ts, confirmation_ts = await _asked_on_the_first(stack)
        assert (await stack.agents[1].click(BOB, CHANNEL, confirmation_ts, ActionId.APPROVE)).status == 200
        thread = await wait_thread(stack.slack.state, ts, "Recreated in", within=20)
        assert "Picked up again" not in thread
        assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1
        [recreation] = [op for op in await stack.bot.app.store.list_operations() if op.is_recreate]
        assert recreation.state is OpState.RECREATED
        assert recreation.key_holder == holder
        audit = await stack.bot.app.store.recent_audit(op_id=recreation.id, limit=50)
        assert [e.detail for e in audit if e.action == "recreate_resumed"] == [f"by {holder}"]
        assert stack.vpc.state.connections[recreation.new_vco_id or ""].psk == KEY
        assert len(routes_to(stack, recreation.new_vco_id or "")) == 3


async def test_with_the_key_holder_gone_nothing_is_created_and_the_key_is_asked_again(
    postgres_url: str,
) -> None:
    async with two_replicas(postgres_url) as stack:
        ts, confirmation_ts = await _asked_on_the_first(stack)
        # The replica holding the key stops (its memory, and the key, go with it).
        gone = stack.replicas.pop(0)
        await stack.agents.pop(0).aclose()
        await gone.aclose()
        assert (await stack.agents[0].click(BOB, CHANNEL, confirmation_ts, ActionId.APPROVE)).status == 200
        thread = await wait_thread(stack.slack.state, ts, "give the key again", within=20)
        assert "before it sent the create" in thread
        await wait_parent(stack.slack.state, confirmation_ts, "Could not recreate")
        assert not stack.vpc.state.accepted("CreateVpnConnection")
        # The deleted card still offers Recreate…, to give the key again.
        parent = stack.slack.state.message(CHANNEL, ts)
        assert parent is not None
        assert "Recreate…" in str(parent.blocks)


async def test_two_modals_submitted_at_once_on_two_replicas_start_one_recreation(postgres_url: str) -> None:
    async with two_replicas(postgres_url) as stack:
        state = stack.slack.state
        ts = await delete(stack)
        first = await open_modal(stack, ts)
        second = await open_modal(stack, ts, user=BOB)
        replies = await asyncio.gather(
            stack.agents[0].submit(ALICE, first["id"], psk_values(KEY)),
            stack.agents[1].submit(BOB, second["id"], psk_values(KEY + "2")),
        )
        assert [r.status for r in replies] == [200, 200]
        await recreate_confirmation(state, ts)

        # Whichever lost is told: the other's request waits for approval, or (still being looked up
        # when the loser's submission came in, as under load) is already under way.
        refusals = ("already asked to recreate", "already under way")
        answered = " ".join(r.body for r in replies)

        def told() -> bool:
            return any(
                phrase in m.text for u in (ALICE, BOB) for m in state.ephemerals(u) for phrase in refusals
            ) or any(phrase in answered for phrase in refusals)

        await state.wait_for(told, timeout=10, what="the second submitter told why")
        recreations = [op for op in await stack.bot.app.store.list_operations() if op.is_recreate]
        assert len(recreations) == 1


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable TCP proxy in front of the test PostgreSQL."""
    target = urlsplit(PG_URL)
    async with running_proxy(target.hostname or "127.0.0.1", target.port or 5432) as running:
        yield running


async def test_a_modal_submitted_while_the_database_is_cut_says_so_in_the_modal(
    postgres_url: str, proxy: TcpProxy
) -> None:
    async with local_stack(
        database_url=proxy.url_for(postgres_url), update_seconds=0.3, settings={"lease_seconds": 3.0}
    ) as stack:
        state = stack.slack.state
        ts = await delete(stack)
        await stack.bot.app.workflow.wait_idle()
        view = await open_modal(stack, ts)
        proxy.cut()
        reply = await stack.agent.submit(ALICE, view["id"], psk_values(KEY))
        assert reply.status == 200
        answer = reply.json()
        assert answer["response_action"] == "errors"
        assert UNREACHABLE.split(".")[0] in json.dumps(answer)
        assert KEY not in json.dumps(answer)
        proxy.restore()
        assert [op for op in await stack.bot.app.store.list_operations() if op.is_recreate] == []
        # The database is back: the same modal goes through.
        assert (await stack.agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
        await recreate_confirmation(state, ts)
