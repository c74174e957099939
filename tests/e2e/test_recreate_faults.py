"""Recreate through a database outage: the real bot on PostgreSQL behind a cuttable TCP proxy.

The database goes away right after Alibaba Cloud accepted the create, while the bot is about to
record it and put the routes back. Once the database is back the recreation converges: one
CreateVpnConnection in all, the routes on the new connection, the card and thread saying so.
"""

from __future__ import annotations

import logging

import pytest
from netproxy import TcpProxy

from bot.domain import OpState
from bot.slack.block_ids import ActionId

from .conftest import ALICE, CAROL, CHANNEL
from .support import all_text, wait_parent, wait_thread
from .test_faults import proxy, running_stack  # noqa: F401 - fixtures
from .test_recreate import KEY, delete, open_modal, psk_values, recreate_confirmation, routes_to


@pytest.mark.postgres
async def test_a_database_outage_after_the_create_converges_to_recreated_once(
    postgres_url: str,
    proxy: TcpProxy,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_stack(proxy.url_for(postgres_url)) as stack:
        state = stack.slack.state
        ts = await delete(stack)
        view = await open_modal(stack, ts)
        reply = await stack.agent.submit(ALICE, view["id"], psk_values(KEY))
        assert reply.status == 200, reply.body
        confirmation = await recreate_confirmation(state, ts)
        state.add_user(CAROL, "carol")
        reply = await stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE)
        assert reply.status == 200

        # The create is accepted; the database goes away before the bot can record it.
        await state.wait_for(
            lambda: len(stack.vpc.state.accepted("CreateVpnConnection")) == 1,
            timeout=20,
            what="the create to reach Alibaba Cloud",
        )
        proxy.cut()
        await state.wait_for(
            lambda: any("database is unreachable" in r.getMessage() for r in caplog.records),
            timeout=20,
            what="the bot to meet the outage",
        )
        proxy.restore()

        thread = await wait_thread(state, ts, "Recreated in", within=60)
        assert "3 of 3 routes back on it" in thread
        assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1
        # A database outage is an outage, not a bug: said as a warning, never an error with a trace.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("bot")]
        ops = await stack.bot.app.store.list_operations()
        (recreation,) = [op for op in ops if op.is_recreate]
        assert recreation.state is OpState.RECREATED
        assert recreation.new_vco_id
        assert len(routes_to(stack, recreation.new_vco_id)) == 3
        parent = await wait_parent(state, confirmation.ts, "Recreated VPN connection", within=30)
        assert recreation.new_vco_id in all_text(parent)
