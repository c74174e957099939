"""Issue 4 with real processes: ``vpn-bot serve`` is killed, stopped or misconfigured, and the
deletion still ends exactly once. The VPC sandbox and the Slack stand-in run in the test process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from storetools import lease_of

from bot.domain import OpState
from bot.sandbox.local import LOCAL_SIGNING_SECRET, LocalStack, local_settings
from bot.sandbox.slack import SlackStandin, SlackUserAgent
from bot.sandbox.vpc import RunningSandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VPN_HANGZHOU
from bot.slack.block_ids import ActionId
from bot.store import Store

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    bot_env,
    child_env,
    op_id_of,
    run_to_exit,
    sandbox_and_slack,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

pytestmark = pytest.mark.process

# Long enough to kill or stop the bot while the gateway is still updating.
UPDATE_SECONDS = 4.0
UPDATING = f"`{SEED_VPN_HANGZHOU}` is updating"
RESUMED = "Picked up again by bot instance"


@dataclass
class World:
    """The cloud and Slack the bot processes talk to, and where they keep their files."""

    vpc: RunningSandbox
    slack: SlackStandin
    home: Path

    def env(self, database_url: str, **overrides: str) -> dict[str, str]:
        return bot_env(self.home, database_url=database_url, vpc=self.vpc, slack=self.slack, **overrides)

    @contextlib.contextmanager
    def bot(self, database_url: str, name: str, **overrides: str) -> Iterator[BotProcess]:
        """A ``vpn-bot serve`` process, killed at the end whatever happened."""
        process = BotProcess(
            env=self.env(database_url, **overrides), cwd=self.home, log_path=self.home / f"{name}.log"
        )
        try:
            yield process
        finally:
            process.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with sandbox_and_slack(update_seconds=UPDATE_SECONDS) as (vpc, slack):
        yield World(vpc=vpc, slack=slack, home=tmp_path)


@contextlib.asynccontextmanager
async def store_at(url: str) -> AsyncIterator[Store]:
    store = await Store.open(url)
    try:
        yield store
    finally:
        await store.close()


async def _approve_until_updating(world: World, bot: BotProcess) -> tuple[str, str]:
    """Request and approve through ``bot``; return (message ts, op id) once the gateway is updating."""
    state = world.slack.state
    async with SlackUserAgent(
        events_url=bot.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=state
    ) as agent:
        reply = await agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        assert reply.status == 200, reply.body
        confirmation = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(confirmation)  # now: the stored message loses its buttons once approved
        reply = await agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        assert reply.status == 200, reply.body
    await wait_thread(state, confirmation.ts, UPDATING, within=10)
    return confirmation.ts, op_id


async def _finished_once(world: World, ts: str) -> str:
    """Wait for the happy end; check it happened with one accepted DeleteVpnConnection; return the thread."""
    state = world.slack.state
    thread = await wait_thread(state, ts, "Deleted in", within=15)
    await wait_parent(state, ts, "Deleted", within=5)
    assert len(world.vpc.state.accepted("DeleteVpnConnection")) == 1
    assert SEED_VCO_HANGZHOU not in world.vpc.state.connections
    return thread


async def test_killed_process_is_resumed_by_a_new_process(world: World, tmp_path: Path) -> None:
    """SIGKILL mid-deletion (SQLite): a new process resumes after the lease expires and finishes once."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    state = world.slack.state
    with world.bot(url, "first") as first:
        first_id = (await first.wait_healthy())["instance"]
        ts, op_id = await _approve_until_updating(world, first)
        first.kill()
        assert await first.wait_exit(within=5) != 0

    async with store_at(url) as store:
        owner, _ = await lease_of(store, op_id=op_id)
        assert owner == first_id  # a crash releases nothing: only expiry frees the operation

    with world.bot(url, "second") as second:
        second_id = (await second.wait_healthy())["instance"]
        # Within the lease (2 s) and a few resume passes.
        await wait_thread(state, ts, f"{RESUMED} `{second_id}`", within=2 + 5)
        thread = await _finished_once(world, ts)
    assert thread.index(RESUMED) < thread.index("Deleted in")
    async with store_at(url) as store:
        op = await store.get_operation(op_id=op_id)
        assert op is not None
        assert op.state is OpState.DELETED


@pytest.mark.postgres
async def test_killed_process_is_taken_over_by_another_replica(world: World, postgres_url: str) -> None:
    """SIGKILL mid-deletion (PostgreSQL): an in-process replica on the same database takes over."""
    state = world.slack.state
    with world.bot(postgres_url, "crashing") as crashing:
        await crashing.wait_healthy()
        ts, op_id = await _approve_until_updating(world, crashing)
        crashing.kill()
        assert await crashing.wait_exit(within=5) != 0

    settings = local_settings(
        database_url=postgres_url, vpc_url=world.vpc.url, slack_url=world.slack.url, lease_seconds=2.0
    )
    # The world fixture owns the sandbox and stand-in, so only the replica is closed here.
    stack = LocalStack(vpc=world.vpc, slack=world.slack, settings=settings)
    try:
        replica = await stack.add_replica(instance_id="standby-replica")
        await wait_thread(state, ts, f"{RESUMED} `standby-replica`", within=2 + 5)
        await _finished_once(world, ts)
        op = await replica.app.store.get_operation(op_id=op_id)
        assert op is not None
        assert op.state is OpState.DELETED
    finally:
        for agent in stack.agents:
            await agent.aclose()
        for running in stack.replicas:
            await running.aclose()


@pytest.mark.postgres
async def test_sigterm_exits_cleanly_and_releases_the_lease(world: World, postgres_url: str) -> None:
    """SIGTERM while the gateway updates: exit 0 at once, lease released, a new process resumes at once."""
    long_lease = {"VPNBOT_LEASE_SECONDS": "60"}
    state = world.slack.state
    with world.bot(postgres_url, "stopping", **long_lease) as stopping:
        await stopping.wait_healthy()
        ts, op_id = await _approve_until_updating(world, stopping)
        async with store_at(postgres_url) as store:
            op = await store.get_operation(op_id=op_id)
            assert op is not None
            assert op.state is OpState.WAITING_GATEWAY
        stopping.terminate()
        assert await stopping.wait_exit(within=5) == 0, stopping.log()
        assert "releasing operation leases" in stopping.log()
        assert "Traceback" not in stopping.log()

    async with store_at(postgres_url) as store:
        assert await lease_of(store, op_id=op_id) == (None, None)

    with world.bot(postgres_url, "next", **long_lease) as following:
        started = time.monotonic()
        following_id = (await following.wait_healthy())["instance"]
        await wait_thread(state, ts, f"{RESUMED} `{following_id}`", within=10)
        # Far below the 60 s lease: only the released lease explains so quick a resume.
        assert time.monotonic() - started < 15
        await _finished_once(world, ts)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(
            {"VPNBOT_PORT": "abc", "SLACK_SIGNING_SECRET": "s3cret-signing"},
            ["VPNBOT_PORT", "SLACK_BOT_TOKEN", "VPNBOT_APPROVERS"],
            id="invalid-port-and-no-token",
        ),
        pytest.param(
            {}, ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "VPNBOT_APPROVERS"], id="no-settings-at-all"
        ),
        pytest.param(
            {"VPNBOT_PORT": "abc", "VPNBOT_LOG_FORMAT": "xml"},
            [
                "VPNBOT_PORT",
                "VPNBOT_LOG_FORMAT",
                "SLACK_BOT_TOKEN",
                "SLACK_SIGNING_SECRET",
                "VPNBOT_APPROVERS",
            ],
            id="everything-wrong",
        ),
    ],
)
async def test_config_errors_are_listed_together_without_a_traceback(
    tmp_path: Path, settings: dict[str, str], expected: list[str]
) -> None:
    """``vpn-bot serve`` with bad settings exits 2 and names each problem, settings and Slack alike."""
    env = child_env(tmp_path, VPNBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'unused.db'}", **settings)
    status, out, err = await run_to_exit(BotProcess.command(port=3000), env=env, cwd=tmp_path, within=20)
    assert status == 2, err
    assert "Traceback" not in err
    assert err.startswith("vpn-bot: invalid settings:")
    listed = [
        line.strip().removeprefix("- ").partition(":")[0] for line in err.splitlines()[1:] if line.strip()
    ]
    assert listed == expected, err
    assert "s3cret-signing" not in err
    assert out == ""
    assert not (tmp_path / "unused.db").exists()  # it stopped before touching anything
