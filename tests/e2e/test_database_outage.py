"""Issue 28: a real ``vpn-bot serve`` on PostgreSQL whose database is cut mid-deletion.

The process stays up, ``/livez`` stays 200, ``/readyz`` turns 503 and back, a command during the cut
gets the friendly "database is unreachable" reply and changes nothing, and the deletion in flight
finishes once after the database returns, continued by the same process (no "picked up again").
The cut lasts 60 s, thirty times the test bot's 2 s lease (deploy/alerts.test.yml has the alerts'
timeline for the same cut: none pages).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from netproxy import running_proxy
from pgtools import PG_URL

from bot.errors import StoreUnavailable
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET
from bot.sandbox.slack import SlackUserAgent, demo_workspace, start_slack_standin
from bot.sandbox.vpc import start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_GW2, SEED_VPN_HANGZHOU, SandboxState
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    bot_env,
    fresh_postgres_database,
    op_id_of,
    thread_text,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

pytestmark = [pytest.mark.postgres, pytest.mark.process]

CUT_SECONDS = 60.0
UNREACHABLE = StoreUnavailable("").friendly


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres_database() as url:
        yield url


async def _probe(client: httpx.AsyncClient, bot: BotProcess, path: str) -> tuple[int, dict[str, object]]:
    reply = await client.get(f"{bot.metrics_url}{path}")
    return reply.status_code, reply.json()


async def _until(check: object, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {within}s")
        await asyncio.sleep(0.1)


async def test_serve_rides_out_a_database_cut(postgres_url: str, tmp_path: Path) -> None:  # noqa: PLR0915 - one outage timeline, asserted step by step
    target = urlsplit(PG_URL)
    vpc = await start_vpc_sandbox(state=SandboxState(update_seconds=3.0))
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    try:
        async with running_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            env = bot_env(tmp_path, database_url=proxy.url_for(postgres_url), vpc=vpc, slack=slack)
            bot = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "bot.log")
            try:
                await bot.wait_healthy()
                async with (
                    SlackUserAgent(
                        events_url=bot.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=slack.state
                    ) as agent,
                    httpx.AsyncClient(trust_env=False, timeout=10.0) as probes,
                ):
                    # A deletion is under way when the database goes.
                    reply = await agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
                    assert reply.status == 200, reply.body
                    card = await wait_confirmation(slack.state, SEED_VCO_HANGZHOU)
                    assert op_id_of(card)
                    reply = await agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
                    assert reply.status == 200, reply.body
                    await wait_thread(slack.state, card.ts, f"`{SEED_VPN_HANGZHOU}` is updating", within=10)

                    proxy.cut()
                    cut_at = time.monotonic()

                    async def unready() -> bool:
                        status, body = await _probe(probes, bot, "/readyz")
                        return status == 503 and body.get("reason") == "database_unreachable"

                    await _until(unready, within=10, what="/readyz 503 database_unreachable")
                    # A command in the cut: the friendly reply, and nothing recorded or posted.
                    cards_before = len(slack.state.messages(CHANNEL))
                    reply = await agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_GW2}")
                    assert reply.status == 200, reply.body
                    told = await slack.state.wait_for(
                        lambda: next(
                            (m for m in slack.state.ephemerals(ALICE) if UNREACHABLE in m.text), None
                        ),
                        timeout=10,
                        what="the database-unreachable reply",
                    )
                    assert "Traceback" not in told.text
                    while time.monotonic() - cut_at < CUT_SECONDS:
                        status, body = await _probe(probes, bot, "/livez")
                        assert (status, body) == (200, {"status": "ok"})
                        assert bot.proc.poll() is None, bot.log()
                        await asyncio.sleep(0.2)  # a probe every 0.2 s through the cut
                    assert len(slack.state.messages(CHANNEL)) == cards_before

                    proxy.restore()

                    async def ready() -> bool:
                        status, _ = await _probe(probes, bot, "/readyz")
                        return status == 200

                    await _until(ready, within=15, what="/readyz 200 again")
                    await wait_parent(slack.state, card.ts, "Deleted", within=30)
                    thread = thread_text(slack.state, card.ts)
                    assert "after a restart" not in thread
                    assert len(vpc.state.accepted("DeleteVpnConnection")) == 1
                    assert SEED_VCO_HANGZHOU_GW2 in vpc.state.connections  # the refused command did nothing
                    assert bot.proc.poll() is None
                    assert "Traceback" not in bot.log()
                bot.terminate()
                assert await bot.wait_exit(within=20) == 0
            finally:
                bot.close()
    finally:
        await slack.close()
        await vpc.close()
