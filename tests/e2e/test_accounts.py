"""Several Alibaba Cloud accounts end to end: RAM roles assumed through the STS sandbox over TLS.

The real bot over HTTP, Slack-signed requests, the VPC sandbox with resources per account and the
STS sandbox (AssumeRole, RPC signature checked, TLS from a local CA the bot trusts through
SSL_CERT_FILE). Each account's VPC state only answers keys STS issued for that account.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.sts import SandboxAccount, SandboxRole
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, RecordedRequest, SandboxState
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text, local_stack, thread_text, wait_confirmation, wait_parent, wait_thread

PROD_UID = "1111111111111111"
STAGING_UID = "2222222222222222"
ROLE = "vpn-bot"


def _accounts(update_seconds: float) -> tuple[dict[str, SandboxAccount], str]:
    """``prod`` with the usual seeded world, ``staging`` with one connection of its own."""
    prod = SandboxAccount(PROD_UID, SandboxState(update_seconds=update_seconds), {ROLE: SandboxRole(ROLE)})
    staging_state = SandboxState(update_seconds=update_seconds, seed=False)
    (staging_vco,) = staging_state.seed_connections("cn-hangzhou", 1)
    staging = SandboxAccount(STAGING_UID, staging_state, {ROLE: SandboxRole(ROLE)})
    return {"prod": prod, "staging": staging}, staging_vco


@pytest.fixture
def trust_sandbox_ca(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Trust the STS sandbox's CA the standard way (SSL_CERT_FILE / REQUESTS_CA_BUNDLE)."""

    def trust(stack: LocalStack) -> None:
        assert stack.sts is not None
        monkeypatch.setenv("SSL_CERT_FILE", stack.sts.ca_file)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", stack.sts.ca_file)

    return trust


@contextlib.asynccontextmanager
async def _stack(
    sqlite_url: str, trust: Any, *, update_seconds: float = 0.3, **kwargs: Any
) -> AsyncIterator[tuple[LocalStack, str]]:
    """Both accounts' stack, the bot trusting the STS sandbox; and staging's connection."""
    accounts, staging_vco = _accounts(update_seconds)
    async with local_stack(sqlite_url, update_seconds=update_seconds, accounts=accounts, **kwargs) as stack:
        trust(stack)
        yield stack, staging_vco


@pytest.fixture
async def two_accounts(sqlite_url: str, trust_sandbox_ca: Any) -> AsyncIterator[tuple[LocalStack, str]]:
    async with _stack(sqlite_url, trust_sandbox_ca) as started:
        yield started


def _state(stack: LocalStack, name: str) -> SandboxState:
    return stack.accounts[name].state


def _signed_by(stack: LocalStack, request: RecordedRequest) -> tuple[str, str]:
    """(role ARN, session name) of the STS key that signed ``request``."""
    assert stack.sts is not None
    issued = next(c for c in stack.sts.calls if c.access_key_id == request.access_key_id)
    return issued.role_arn, issued.session


async def _told(stack: LocalStack, needle: str, *, user: str = ALICE) -> str:
    """Wait for an ephemeral reply to ``user`` containing ``needle``; return its text."""

    def found() -> str | None:
        texts = (f"{m.text}\n{all_text(m)}" for m in stack.slack.state.ephemerals(user, CHANNEL))
        return next((t for t in texts if needle in t), None)

    return await stack.slack.state.wait_for(found, timeout=10, what=f"a reply saying {needle!r}")


async def _delete(stack: LocalStack, text: str, vco_id: str, *, approver: str = BOB) -> str:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200, reply.body
    card = await wait_confirmation(stack.slack.state, vco_id)
    await stack.agent.click(approver, CHANNEL, card.ts, ActionId.APPROVE, None)
    return card.ts


async def test_a_deletion_in_each_of_two_accounts_goes_through_its_role(
    two_accounts: tuple[LocalStack, str],
) -> None:
    """prod and staging each delete their own connection, signed by their role, the approver named."""
    stack, staging_vco = two_accounts
    assert stack.sts is not None
    prod_arn = stack.accounts["prod"].role_arn(ROLE)
    staging_arn = stack.accounts["staging"].role_arn(ROLE)

    ts = await _delete(stack, f"delete {SEED_VCO_HANGZHOU} cn-hangzhou account=prod", SEED_VCO_HANGZHOU)
    card = stack.slack.state.message(CHANNEL, ts)
    assert card is not None
    assert "*Account `prod`*" in all_text(card)  # prominently, next to the region
    await wait_parent(stack.slack.state, ts, "Deleted VPN connection")
    assert "in account `prod`" in thread_text(stack.slack.state, ts)

    ts2 = await _delete(stack, f"delete {staging_vco} --account staging", staging_vco)
    await wait_parent(stack.slack.state, ts2, "Deleted VPN connection")

    for name, arn, vco in (("prod", prod_arn, SEED_VCO_HANGZHOU), ("staging", staging_arn, staging_vco)):
        state = _state(stack, name)
        state.settle()
        assert vco not in state.connections
        (delete,) = state.accepted("DeleteVpnConnection")
        # ActionTrail sees the approver: the delete was signed in the session named after them.
        assert _signed_by(stack, delete) == (arn, f"vpnbot-{BOB}")
        lookups = state.accepted("DescribeVpnConnection")
        assert lookups
        assert all(_signed_by(stack, r) == (arn, "vpnbot") for r in lookups)
    # Nothing reached the home account with the bot's own key.
    assert not stack.vpc.state.accepted("DeleteVpnConnection")
    # Bounded: one AssumeRole per (account, session) for the credentials' lifetime.
    for arn in (prod_arn, staging_arn):
        assert len(stack.sts.assumed(role_arn=arn, session="vpnbot")) == 1
        assert len(stack.sts.assumed(role_arn=arn, session=f"vpnbot-{BOB}")) == 1

    async def audited() -> bool:
        entries = await stack.bot.app.store.recent_audit(limit=50)
        return {e.account for e in entries if e.action == "delete_sent"} == {"prod", "staging"}

    await stack.slack.state.wait_for(audited, timeout=5, what="the audit to name both accounts")
    await stack.agent.slash_command(ALICE, CHANNEL, "history 20")
    history = await _told(stack, "*delete_sent*")
    assert "account `staging`" in history
    assert "account `prod`" in history


async def test_a_connection_of_staging_is_not_found_with_prod_credentials(
    two_accounts: tuple[LocalStack, str],
) -> None:
    """The same id in the wrong account is simply not there: no card, nothing deleted."""
    stack, staging_vco = two_accounts
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=prod")
    assert reply.status == 200
    await _told(stack, "InvalidVpnConnectionInstanceId.NotFound")
    assert staging_vco in _state(stack, "staging").connections
    assert not _state(stack, "prod").accepted("DeleteVpnConnection")


async def test_several_accounts_and_no_choice_lists_the_accounts(
    two_accounts: tuple[LocalStack, str],
) -> None:
    stack, _ = two_accounts
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    text = await _told(stack, "Which Alibaba Cloud account?")
    assert "`prod`" in text
    assert "`staging`" in text
    assert stack.sts is not None
    assert not stack.sts.calls
    assert not await stack.bot.app.store.list_operations()


async def test_a_channel_bound_to_one_account_is_refused_on_the_other(
    sqlite_url: str, trust_sandbox_ca: Any
) -> None:
    """C0VPNOPS=prod: staging is refused in the ack (nothing assumed or recorded); prod is the default."""
    async with _stack(sqlite_url, trust_sandbox_ca, settings={"channel_accounts": f"{CHANNEL}=prod"}) as (
        stack,
        staging_vco,
    ):
        assert stack.sts is not None
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
        assert reply.status == 200
        await _told(stack, "may act only on the account `prod`, not `staging`")
        assert not stack.sts.calls
        assert not await stack.bot.app.store.list_operations()

        await stack.agent.slash_command(ALICE, CHANNEL, "help")
        await _told(stack, "here you may use `prod` (`prod` when you give none).")

        ts = await _delete(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        await wait_parent(stack.slack.state, ts, "Deleted VPN connection")
        (op,) = await stack.bot.app.store.list_operations()
        assert op.account == "prod"
        assert staging_vco in _state(stack, "staging").connections


@pytest.mark.parametrize(
    ("arn", "code"),
    [
        pytest.param(f"acs:ram::{STAGING_UID}:role/no-such-role", "EntityNotExist.Role", id="no-such-role"),
        pytest.param(f"acs:ram::{STAGING_UID}:role/untrusting", "NoPermission", id="trust-policy"),
    ],
)
async def test_a_role_that_cannot_be_assumed_is_explained_and_nothing_starts(
    sqlite_url: str, trust_sandbox_ca: Any, arn: str, code: str
) -> None:
    accounts, staging_vco = _accounts(0.3)
    accounts["staging"].roles["untrusting"] = SandboxRole("untrusting", trusted=False)
    async with local_stack(
        database_url=sqlite_url,
        accounts=accounts,
        settings={"accounts": f"prod={accounts['prod'].role_arn(ROLE)},staging={arn}"},
    ) as stack:
        trust_sandbox_ca(stack)
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
        assert reply.status == 200

        text = await _told(stack, code)
        assert "Account `staging`" in text
        assert arn in text
        assert "administrator" in text
        assert "Traceback" not in text
        # No card, nothing sent to the VPC API of either account.
        assert not [m for m in stack.slack.state.messages(CHANNEL) if staging_vco in all_text(m)]
        assert not _state(stack, "staging").requests
        (op,) = await stack.bot.app.store.list_operations()
        assert op.state is OpState.FAILED
        assert op.account == "staging"


async def test_credentials_are_refreshed_across_expiry_during_a_long_operation(
    sqlite_url: str, trust_sandbox_ca: Any
) -> None:
    """Credentials live 3 s, the gateway updates for 4 s: polling goes on with fresh ones, never expired."""
    async with _stack(sqlite_url, trust_sandbox_ca, update_seconds=4.0, sts_lifetime_s=3.0) as (
        stack,
        staging_vco,
    ):
        assert stack.sts is not None
        ts = await _delete(stack, f"delete {staging_vco} account=staging", staging_vco)
        await wait_parent(stack.slack.state, ts, "Deleted VPN connection", within=30)
        state = _state(stack, "staging")
        polls = [r for r in state.requests if r.action == "DescribeVpnGateway"]
        keys = {r.access_key_id for r in polls}
        assert len(keys) >= 2, "the polling outlived one set of credentials"
        assert not [r for r in state.requests if r.code == "InvalidSecurityToken.Expired"]
        # Refreshed ahead of expiry, not per call: far fewer AssumeRoles than signed requests.
        read_assumes = stack.sts.assumed(role_arn=stack.accounts["staging"].role_arn(ROLE), session="vpnbot")
        assert 2 <= len(read_assumes) < len(state.requests)
        await wait_thread(stack.slack.state, ts, "Deleted in")


async def test_a_resume_on_another_replica_uses_the_operation_account(
    sqlite_url: str, trust_sandbox_ca: Any
) -> None:
    """Replica 1 stops mid-deletion without releasing its lease; replica 2 resumes in staging's role."""
    async with _stack(
        sqlite_url, trust_sandbox_ca, update_seconds=3.0, replicas=2, settings={"lease_seconds": 1.0}
    ) as (stack, staging_vco):
        assert stack.sts is not None
        first, second = stack.replicas
        ts = await _delete(stack, f"delete {staging_vco} account=staging", staging_vco)

        async def waiting() -> bool:
            ops = await first.app.store.list_operations()
            return [op.state for op in ops] == [OpState.WAITING_GATEWAY]

        await stack.slack.state.wait_for(waiting, timeout=10, what="the gateway to be polled")
        # Like a crash: the lease stays until it expires.
        await first.app.workflow.stop(release_leases=False, grace_s=1.0)
        stopped_at = len(stack.sts.calls)
        await wait_thread(stack.slack.state, ts, f"`{second.app.workflow.instance_id}`", within=10)
        await wait_parent(stack.slack.state, ts, "Deleted VPN connection", within=20)

        staging_arn = stack.accounts["staging"].role_arn(ROLE)
        later = stack.sts.calls[stopped_at:]
        assert later
        assert all(c.role_arn == staging_arn and c.code is None for c in later)
        (op,) = await second.app.store.list_operations()
        assert op.state is OpState.DELETED
        assert op.account == "staging"
        assert not _state(stack, "prod").accepted("DeleteVpnConnection")


def _rows(message: Any) -> list[str]:
    return [
        json.loads(b["accessory"]["value"])["v"]
        for b in message.blocks
        if b.get("accessory", {}).get("action_id") == ActionId.LIST_DELETE
    ]


async def _ephemeral(stack: LocalStack, needle: str) -> Any:
    def found() -> Any:
        return next(
            (m for m in reversed(stack.slack.state.ephemerals(ALICE, CHANNEL)) if needle in all_text(m)), None
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"ephemeral with {needle!r}")


async def test_list_and_status_read_the_chosen_account_and_delete_from_its_row(
    two_accounts: tuple[LocalStack, str],
) -> None:
    """`/vpn list account=staging` lists staging's connections only; its row's Delete… asks in staging."""
    stack, staging_vco = two_accounts
    await stack.agent.slash_command(ALICE, CHANNEL, "list cn-hangzhou account=staging")
    page = await _ephemeral(stack, "IPsec-VPN connections in account `staging`")
    assert _rows(page) == [staging_vco]

    await stack.agent.slash_command(ALICE, CHANNEL, f"status {staging_vco} --account staging")
    status = await _ephemeral(stack, f"{staging_vco}` in `cn-hangzhou`, account `staging`")
    assert "Tunnel status" in all_text(status)
    await stack.agent.slash_command(ALICE, CHANNEL, f"status {staging_vco} account=prod")
    await _told(stack, "InvalidVpnConnectionInstanceId.NotFound")

    await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)
    card = await wait_confirmation(stack.slack.state, staging_vco)
    assert "*Account `staging`*" in all_text(card)
    (op,) = await stack.bot.app.store.list_operations()
    assert op.account == "staging"


async def test_a_listing_button_for_another_account_is_refused_in_a_bound_channel(
    sqlite_url: str, trust_sandbox_ca: Any
) -> None:
    """Buttons are checked again on click: a Delete… naming staging, in a channel bound to prod, starts nothing."""
    async with _stack(sqlite_url, trust_sandbox_ca, settings={"channel_accounts": f"{CHANNEL}=prod"}) as (
        stack,
        staging_vco,
    ):
        await stack.agent.slash_command(ALICE, CHANNEL, "list office")
        page = await _ephemeral(stack, "IPsec-VPN connections in account `prod`")
        forged = json.dumps({"r": "cn-hangzhou", "v": staging_vco, "a": "staging"})
        await stack.agent.click(
            ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE, value=forged, require_button=False
        )
        await _told(stack, "may act only on the account `prod`, not `staging`")
        assert not await stack.bot.app.store.list_operations()
        assert stack.sts is not None
        assert not stack.sts.assumed(role_arn=stack.accounts["staging"].role_arn(ROLE))


async def test_the_picker_offers_the_accounts_and_searches_the_chosen_one(
    two_accounts: tuple[LocalStack, str],
) -> None:
    from slack_sdk.models.views import View

    from bot.sandbox.slack_user import selected_option
    from bot.slack.block_ids import BlockId

    stack, staging_vco = two_accounts
    await stack.agent.slash_command(ALICE, CHANNEL, "delete")
    view = await stack.slack.state.wait_for(
        lambda: next(iter(stack.slack.state.views.values()), None), timeout=10, what="the picker"
    )
    View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
    select = next(b for b in view["blocks"] if b["block_id"] == BlockId.PICK_ACCOUNT)
    assert [o["value"] for o in select["element"]["options"]] == ["prod", "staging"]

    values: dict[str, dict[str, Any]] = {
        BlockId.PICK_ACCOUNT: {ActionId.PICK_ACCOUNT: selected_option({"text": {}, "value": "staging"})},
        BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": "cn-hangzhou"})},
    }
    found = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, "", values)
    options = found.json()["options"]
    assert [o["value"] for o in options] == [staging_vco]
    values[BlockId.PICK_CONNECTION] = {
        ActionId.PICK_CONNECTION: selected_option(options[0], "external_select")
    }
    done = await stack.agent.submit(ALICE, view["id"], values)
    assert done.status == 200
    assert not done.json()
    card = await wait_confirmation(stack.slack.state, staging_vco)
    assert "*Account `staging`*" in all_text(card)


async def test_a_role_refused_at_delete_time_fails_without_deleting(
    two_accounts: tuple[LocalStack, str],
) -> None:
    """The trust policy changes between the card and the click: the approver's session cannot be
    had, so DeleteVpnConnection is never sent and the card says which account and what to fix."""
    stack, staging_vco = two_accounts
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
    card = await wait_confirmation(stack.slack.state, staging_vco)
    stack.accounts["staging"].roles[ROLE].trusted = False
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE, None)
    final = await wait_parent(stack.slack.state, card.ts, "Could not delete VPN connection")
    text = all_text(final)
    assert "Account `staging`" in text
    assert "NoPermission" in text
    assert "trust policy" in text
    assert not _state(stack, "staging").calls("DeleteVpnConnection")
    assert staging_vco in _state(stack, "staging").connections


async def test_an_sts_outage_at_delete_time_is_waited_out(two_accounts: tuple[LocalStack, str]) -> None:
    """STS answers 503 when the approver's session is first needed: the bot says so in the thread,
    retries with a fresh token (nothing was sent), and deletes once STS is back."""
    stack, staging_vco = two_accounts
    assert stack.sts is not None
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
    card = await wait_confirmation(stack.slack.state, staging_vco)
    stack.sts.outage(True)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE, None)
    await wait_thread(stack.slack.state, card.ts, "could not get an answer from Alibaba Cloud STS")
    assert not _state(stack, "staging").calls("DeleteVpnConnection")
    stack.sts.outage(False)
    await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection", within=20)
    (delete,) = _state(stack, "staging").accepted("DeleteVpnConnection")
    assert _signed_by(stack, delete)[1] == f"vpnbot-{BOB}"
