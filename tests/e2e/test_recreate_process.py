"""Recreate with real processes: ``vpn-bot serve`` is killed (SIGKILL) while CreateVpnConnection is
in flight, and a new process finishes the recreation without sending it again (it never had the key).

The new process finds what the first one's create made by the tag it carried
(``vpnbot-operation=<id>``), not by its creation time: a clock ten minutes off changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain import OPERATION_TAG, OpState
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET
from bot.sandbox.slack import SlackStandin, SlackUserAgent, demo_workspace, start_slack_standin
from bot.sandbox.vpc import RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SandboxState
from bot.slack.block_ids import ActionId
from bot.store import Store

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    bot_env,
    sandbox_and_slack,
    wait_confirmation,
    wait_parent,
    wait_thread,
)
from .test_recreate import KEY, psk_values, recreate_confirmation

pytestmark = pytest.mark.process


@dataclass
class World:
    vpc: RunningSandbox
    slack: SlackStandin
    home: Path

    @contextlib.contextmanager
    def bot(self, database_url: str, name: str) -> Iterator[BotProcess]:
        env = bot_env(self.home, database_url=database_url, vpc=self.vpc, slack=self.slack)
        process = BotProcess(env=env, cwd=self.home, log_path=self.home / f"{name}.log")
        try:
            yield process
        finally:
            process.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with sandbox_and_slack(update_seconds=1.0) as (vpc, slack):
        yield World(vpc=vpc, slack=slack, home=tmp_path)


async def _delete_and_ask_to_recreate(world: World, bot: BotProcess) -> tuple[str, str]:
    """Delete through ``bot``, submit the Recreate modal and approve; return (card ts, confirmation ts)."""
    state = world.slack.state
    async with SlackUserAgent(
        events_url=bot.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=state
    ) as agent:
        assert (await agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")).status == 200
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        assert (await agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)).status == 200
        await wait_parent(state, card.ts, "Recreate…", within=20)
        assert (await agent.click(ALICE, CHANNEL, card.ts, ActionId.RECREATE_OPEN)).status == 200

        def opened() -> dict[str, Any] | None:
            return next(iter(state.views.values()), None)

        view = await state.wait_for(opened, timeout=10, what="the Recreate modal")
        assert (await agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
        confirmation = await recreate_confirmation(state, card.ts)
        assert (await agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)).status == 200
    return card.ts, confirmation.ts


async def test_killed_while_the_create_is_in_flight_a_new_process_finishes_without_resending(
    world: World, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    state, vpc = world.slack.state, world.vpc.state
    # Alibaba carries out the create, but its answer is held back: the bot dies waiting for it.
    vpc.faults.add(action="CreateVpnConnection", after_processing=True, latency=60, times=1)
    with world.bot(url, "first") as first:
        await first.wait_healthy()
        ts, _ = await _delete_and_ask_to_recreate(world, first)
        await state.wait_for(lambda: _recreated(vpc) or None, timeout=15, what="the create to be carried out")
        first.kill()
        assert await first.wait_exit(within=5) != 0
        first_log = first.log()

    with world.bot(url, "second") as second:
        await second.wait_healthy()
        # The key died with the first process; the create it sent is found on the gateway instead.
        thread = await wait_thread(state, ts, "found the connection the create had already made", within=20)
        thread = await wait_thread(state, ts, "Recreated in", within=20)
        second_log = second.log()

    # One connection made, by the first process's create; the second sent none (no key, no blind resend).
    assert len(_recreated(vpc)) == 1
    assert not [r for r in vpc.requests if r.action == "CreateVpnConnection"]
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(url)
        stack.push_async_callback(store.close)
        recreation = next(op for op in await store.list_operations() if op.is_recreate)
    assert recreation.state is OpState.RECREATED
    new_id = recreation.new_vco_id
    assert new_id is not None
    assert vpc.connections[new_id].psk == KEY
    assert routes_to_state(vpc, new_id) == 3
    assert f"`{new_id}`" in thread
    assert KEY not in first_log
    assert KEY not in second_log


async def test_killed_right_after_the_create_with_the_clock_ten_minutes_off_makes_one_connection(
    tmp_path: Path,
) -> None:
    # Alibaba's clock (the sandbox's) is ten minutes behind the bot's: the connection's CreateTime is
    # "before" the bot sent the create. Within the 15-minute signature window, so every call passes.
    skewed = SandboxState(update_seconds=1.0, clock=lambda: datetime.now(UTC) - timedelta(minutes=10))
    vpc_sandbox = await start_vpc_sandbox(state=skewed)
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    world = World(vpc=vpc_sandbox, slack=slack, home=tmp_path)
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    state, vpc = slack.state, skewed
    try:
        # The create is carried out, and the process is killed before its answer arrives.
        vpc.faults.add(action="CreateVpnConnection", after_processing=True, latency=60, times=1)
        with world.bot(url, "first") as first:
            await first.wait_healthy()
            ts, _ = await _delete_and_ask_to_recreate(world, first)
            await state.wait_for(
                lambda: _recreated(vpc) or None, timeout=15, what="the create to be carried out"
            )
            first.kill()
            assert await first.wait_exit(within=5) != 0
        [made] = _recreated(vpc)
        created_at = datetime.fromtimestamp(vpc.connections[made].create_time_ms / 1000, tz=UTC)
        assert created_at < datetime.now(UTC) - timedelta(minutes=9)

        with world.bot(url, "second") as second:
            await second.wait_healthy()
            thread = await wait_thread(
                state, ts, "found the connection the create had already made", within=20
            )
            thread = await wait_thread(state, ts, "Recreated in", within=30)

        assert _recreated(vpc) == [made]  # exactly one connection
        # The first create's answer was never sent (so never recorded); the second process sent none.
        assert not vpc.calls("CreateVpnConnection")
        assert "give the key again" not in thread
        async with contextlib.AsyncExitStack() as stack:
            store = await Store.open(url)
            stack.push_async_callback(store.close)
            recreation = next(op for op in await store.list_operations() if op.is_recreate)
        assert recreation.state is OpState.RECREATED
        assert recreation.new_vco_id == made
        assert vpc.connections[made].tags[OPERATION_TAG] == recreation.id
        # Found by its tag: the lookup asked DescribeVpnConnections for it.
        lookups = [r for r in vpc.requests if r.action == "DescribeVpnConnections"]
        assert any(r.params.get("Tag.1.Key") == OPERATION_TAG for r in lookups)
        assert routes_to_state(vpc, made) == 3
    finally:
        await slack.close()
        await vpc_sandbox.close()


def _recreated(vpc: SandboxState) -> list[str]:
    """Connections like the deleted one that the sandbox holds now."""
    return [
        c.id for c in vpc.connections.values() if c.name == "office-beijing" and c.id != SEED_VCO_HANGZHOU
    ]


def routes_to_state(vpc: SandboxState, vco_id: str) -> int:
    return sum(r.next_hop == vco_id for r in vpc.routes) + sum(r.next_hop == vco_id for r in vpc.pbr_routes)


async def test_killed_before_the_create_was_sent_the_thread_asks_for_the_key_again(
    world: World, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    state, vpc = world.slack.state, world.vpc.state
    # The create is held on the way (it never reaches Alibaba) when the process dies.
    with world.bot(url, "first") as first:
        await first.wait_healthy()
        ts, confirmation_ts = await _delete_and_ask_to_recreate_held(world, first)
        first.kill()
        assert await first.wait_exit(within=5) != 0
    vpc.faults.clear()

    with world.bot(url, "second") as second:
        await second.wait_healthy()
        thread = await wait_thread(state, ts, "give the key again", within=20)
        card = await wait_parent(state, confirmation_ts, "Could not recreate", within=10)
    assert "nothing was created" in thread
    assert "Recreate…" in str(card.blocks) or "give the key again" in card.text
    assert not _recreated(vpc)
    # The deleted card still offers Recreate… to give the key again.
    parent = state.message(CHANNEL, ts)
    assert parent is not None
    assert "Recreate…" in str(parent.blocks)


async def _delete_and_ask_to_recreate_held(world: World, bot: BotProcess) -> tuple[str, str]:
    """As _delete_and_ask_to_recreate, but the create is held on the way and never carried out."""
    vpc = world.vpc.state
    fault = vpc.faults.add(action="CreateVpnConnection", code="VpnGateway.Configuring", latency=60, times=1)
    ts, confirmation_ts = await _delete_and_ask_to_recreate(world, bot)
    await world.slack.state.wait_for(
        lambda: fault.fired > 0 or None, timeout=15, what="the create to be sent"
    )
    return ts, confirmation_ts
