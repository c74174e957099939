"""Several accounts with real processes: ``vpn-bot serve`` configured only by its environment
(VPNBOT_ACCOUNTS, VPNBOT_STS_ENDPOINT, SSL_CERT_FILE for the sandbox CA) is killed with SIGKILL in
the middle of a deletion in ``staging``; a new process resumes it with staging's role."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain import OpState
from bot.sandbox.local import LOCAL_SIGNING_SECRET
from bot.sandbox.slack import SlackUserAgent
from bot.sandbox.sts import SandboxAccount, SandboxRole
from bot.sandbox.vpc_state import SandboxState
from bot.slack.block_ids import ActionId
from bot.store import Store

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    bot_env,
    local_stack,
    op_id_of,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

pytestmark = pytest.mark.process

PROD_UID, STAGING_UID = "1111111111111111", "2222222222222222"


async def test_a_killed_process_is_resumed_in_the_operation_account(tmp_path: Path) -> None:
    prod = SandboxAccount(PROD_UID, SandboxState(update_seconds=4.0), {"vpn-bot": SandboxRole("vpn-bot")})
    staging_state = SandboxState(update_seconds=4.0, seed=False)
    (vco,) = staging_state.seed_connections("cn-hangzhou", 1)
    staging = SandboxAccount(STAGING_UID, staging_state, {"vpn-bot": SandboxRole("vpn-bot")})
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    # The sandboxes and the Slack stand-in, no bot in this process: the bots here are processes.
    async with local_stack(url, replicas=0, accounts={"prod": prod, "staging": staging}) as stack:
        vpc, slack, sts = stack.vpc, stack.slack, stack.sts
        assert sts is not None
        env = bot_env(
            tmp_path,
            database_url=url,
            vpc=vpc,
            slack=slack,
            VPNBOT_ACCOUNTS=f"prod={prod.role_arn('vpn-bot')},staging={staging.role_arn('vpn-bot')}",
            VPNBOT_STS_ENDPOINT=sts.endpoint,
            SSL_CERT_FILE=sts.ca_file,
            REQUESTS_CA_BUNDLE=sts.ca_file,
        )
        state = slack.state
        first = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "first.log")
        try:
            await first.wait_healthy()
            async with SlackUserAgent(
                events_url=first.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=state
            ) as agent:
                await agent.slash_command(ALICE, CHANNEL, f"delete {vco} account=staging")
                card = await wait_confirmation(state, vco)
                op_id = op_id_of(card)
                await agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
            await wait_thread(state, card.ts, "is updating", within=10)
            first.kill()
            assert await first.wait_exit(within=5) != 0
        finally:
            first.close()
        killed_at = len(sts.calls)

        second = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "second.log")
        try:
            second_id = (await second.wait_healthy())["instance"]
            await wait_thread(state, card.ts, f"`{second_id}`", within=2 + 8)
            await wait_parent(state, card.ts, "Deleted VPN connection", within=20)
            assert "Traceback" not in second.log()
        finally:
            second.close()

        # The new process assumed staging's role itself (its own cache was empty) and nothing else.
        resumed = sts.calls[killed_at:]
        assert resumed
        assert {(c.role_arn, c.code) for c in resumed} == {(staging.role_arn("vpn-bot"), None)}
        assert len(staging_state.accepted("DeleteVpnConnection")) == 1
        assert vco not in staging_state.connections
        assert not prod.state.accepted("DeleteVpnConnection")
        store = await Store.open(url)
        try:
            op = await store.get_operation(op_id=op_id)
        finally:
            await store.close()
        assert op is not None
        assert (op.state, op.account) == (OpState.DELETED, "staging")
