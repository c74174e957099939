"""Issue 27 point 4 with real processes: a site decommission's worker is killed (SIGKILL) mid-batch,
and a new process finishes it: each connection deleted exactly once, one per gateway at a time, the
failing one failed with its reason, the card showing every outcome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain import OpState
from bot.sandbox.local import LOCAL_SIGNING_SECRET, LocalStack, local_settings
from bot.sandbox.slack import SlackUserAgent
from bot.store import Store

from .support import ALICE, BOB, CHANNEL, BotProcess, all_text, bot_env, sandbox_and_slack, thread_text
from .test_batch import (
    FAILING_CODE,
    FAILING_REASON,
    deletes_per_connection,
    gateway_turns_never_overlap,
    has_buttons,
    seed_site,
    valid_block_kit,
    wait_batch_card,
    wait_card,
)

pytestmark = pytest.mark.process

# Long enough to kill the bot while a gateway is still updating.
UPDATE_SECONDS = 2.0


async def test_a_batch_survives_kill_9_of_its_worker(tmp_path: Path) -> None:
    """SIGKILL while the batch's first deletions run: the next process finishes every one, once."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with sandbox_and_slack(update_seconds=UPDATE_SECONDS) as (vpc, slack):
        state = slack.state
        ids = seed_site(vpc.state)
        failing = ids[3]
        vpc.state.faults.add(
            action="DeleteVpnConnection", code=FAILING_CODE, params={"VpnConnectionId": failing}
        )
        env = bot_env(tmp_path, database_url=url, vpc=vpc, slack=slack)
        first = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "first.log")
        try:
            await first.wait_healthy()
            async with SlackUserAgent(
                events_url=first.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=state
            ) as agent:
                reply = await agent.slash_command(ALICE, CHANNEL, "delete " + " ".join(ids))
                assert reply.status == 200, reply.body
                card = await wait_batch_card(state, "asks to delete")
                valid_block_kit(card)
                reply = await agent.click(BOB, CHANNEL, card.ts, "vpn-batch-approve")
                assert reply.status == 200, reply.body
            # Killed once a deletion is under way on a gateway (Alibaba accepted it).
            await state.wait_for(
                lambda: "Request accepted by Alibaba Cloud" in thread_text(state, card.ts) or None,
                timeout=15,
                what="a deletion accepted",
            )
            first.kill()
            assert await first.wait_exit(within=5) != 0
        finally:
            first.close()

        second = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "second.log")
        try:
            await second.wait_healthy()
            final = await wait_card(state, card.ts, "4 deleted, 1 failed", within=60)
        finally:
            second.close()
        valid_block_kit(final)
        assert not has_buttons(final)
        assert FAILING_REASON in all_text(final)

    store = await Store.open(url)
    try:
        ops = await store.list_operations()
    finally:
        await store.close()
    states = {op.vco_id: op.state for op in ops}
    assert states.pop(failing) is OpState.FAILED
    assert set(states.values()) == {OpState.DELETED}
    # Exactly once each, across the kill: a resend after it carries the same ClientToken (replayed).
    assert deletes_per_connection(vpc.state) == dict.fromkeys(states, 1)
    gateway_turns_never_overlap(ops)
    assert "Picked up again by bot instance" in thread_text(state, card.ts)


@pytest.mark.postgres
async def test_a_batch_is_taken_over_by_another_replica_after_kill_9(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGKILL mid-batch (PostgreSQL): an in-process replica on the same database finishes it, each once."""
    async with sandbox_and_slack(update_seconds=UPDATE_SECONDS) as (vpc, slack):
        state = slack.state
        ids = seed_site(vpc.state)
        env = bot_env(tmp_path, database_url=postgres_url, vpc=vpc, slack=slack)
        crashing = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "crashing.log")
        try:
            await crashing.wait_healthy()
            async with SlackUserAgent(
                events_url=crashing.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=state
            ) as agent:
                reply = await agent.slash_command(ALICE, CHANNEL, "delete " + " ".join(ids))
                assert reply.status == 200, reply.body
                card = await wait_batch_card(state, "asks to delete")
                reply = await agent.click(BOB, CHANNEL, card.ts, "vpn-batch-approve")
                assert reply.status == 200, reply.body
            await state.wait_for(
                lambda: "Request accepted by Alibaba Cloud" in thread_text(state, card.ts) or None,
                timeout=15,
                what="a deletion accepted",
            )
            crashing.kill()
            assert await crashing.wait_exit(within=5) != 0
        finally:
            crashing.close()

        settings = local_settings(
            database_url=postgres_url, vpc_url=vpc.url, slack_url=slack.url, lease_seconds=2.0
        )
        stack = LocalStack(vpc=vpc, slack=slack, settings=settings)
        try:
            replica = await stack.add_replica(instance_id="standby-replica")
            final = await wait_card(state, card.ts, "5 deleted", within=60)
            valid_block_kit(final)
            ops = await replica.app.store.list_operations()
        finally:
            for agent in stack.agents:
                await agent.aclose()
            for running in stack.replicas:
                await running.aclose()
    assert {op.state for op in ops} == {OpState.DELETED}
    assert deletes_per_connection(vpc.state) == dict.fromkeys(ids, 1)
    gateway_turns_never_overlap(ops)
    assert "Picked up again by bot instance `standby-replica`" in thread_text(state, card.ts)
