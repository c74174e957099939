"""Recreate with several accounts: the connection comes back in the account it was deleted from.

The real bot over HTTP against the STS sandbox (TLS, a local CA trusted through SSL_CERT_FILE) and
the VPC sandbox's per-account worlds: the create runs with that account's role, in a role session
named after the approver of the recreation, so Alibaba's ActionTrail records who approved it.
"""

from __future__ import annotations

import json

from bot.sandbox.local import LocalStack
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, wait_confirmation, wait_parent, wait_thread
from .test_accounts import ROLE, _signed_by, _state, trust_sandbox_ca, two_accounts  # noqa: F401 - fixtures
from .test_recreate import KEY, open_modal, psk_values, recreate_confirmation


async def test_a_connection_is_recreated_in_its_own_account_in_the_approvers_session(
    two_accounts: tuple[LocalStack, str],  # noqa: F811 - the fixture imported above
) -> None:
    stack, staging_vco = two_accounts
    state = stack.slack.state
    staging = _state(stack, "staging")
    arn = stack.accounts["staging"].role_arn(ROLE)

    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
    assert reply.status == 200, reply.body
    card = await wait_confirmation(state, staging_vco)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    await wait_parent(state, card.ts, "Recreate")

    view = await open_modal(stack, card.ts)
    assert "account `staging`, region" in json.dumps(view["blocks"])
    reply = await stack.agent.submit(ALICE, view["id"], psk_values(KEY))
    assert reply.status == 200, reply.body
    confirmation = await recreate_confirmation(state, card.ts)
    assert "*Account*\n`staging`" in all_text(confirmation)
    state.add_user(CAROL, "carol")
    await stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await wait_thread(state, card.ts, "Recreated in", within=20)

    (create,) = staging.accepted("CreateVpnConnection")
    assert _signed_by(stack, create) == (arn, f"vpnbot-{CAROL}")
    assert not _state(stack, "prod").accepted("CreateVpnConnection")
    assert not stack.vpc.state.accepted("CreateVpnConnection")
    ops = await stack.bot.app.store.list_operations()
    assert {op.account for op in ops} == {"staging"}
