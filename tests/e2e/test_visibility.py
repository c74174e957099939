"""Least privilege end to end: who sees which operation, and where a bound account may be used.

The real bot over HTTP with Slack-signed requests, the Slack stand-in (which knows who is in each
channel and answers users.conversations), the VPC sandbox with two accounts behind the STS sandbox.

The world: ``prod`` is bound to the private channel #prod-ops (Alice and Bob are in it), ``staging``
is bound to nothing, so under the default exclusive binding #vpn-ops (everyone, Carol included) and
DMs may use staging only. Alice asks to delete a prod connection in #prod-ops and a staging one in
#vpn-ops; Carol, who is only in #vpn-ops, must learn nothing about the prod one — not its
connection, id, account, requester or a link into #prod-ops — from the Home tab, ``/vpn history``,
``/vpn status``, ``/vpn list`` or the picker, and nobody may use prod outside #prod-ops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack_api import Channel, Message
from bot.sandbox.slack_user import selected_option
from bot.sandbox.sts import SandboxAccount, SandboxRole
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SandboxState
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, has_buttons, op_id_of, wait_confirmation

PROD_CHANNEL = "C0PRODOPS"
ROLE = "vpn-bot"


def _accounts() -> tuple[dict[str, SandboxAccount], str]:
    """``prod`` with the usual seeded world, ``staging`` with one connection of its own."""
    prod = SandboxAccount("1111111111111111", SandboxState(update_seconds=0.3), {ROLE: SandboxRole(ROLE)})
    staging_state = SandboxState(update_seconds=0.3, seed=False)
    (staging_vco,) = staging_state.seed_connections("cn-hangzhou", 1)
    staging = SandboxAccount("2222222222222222", staging_state, {ROLE: SandboxRole(ROLE)})
    return {"prod": prod, "staging": staging}, staging_vco


class World:
    """The running stack, the staging connection, and the prod operation Alice requested."""

    def __init__(
        self, stack: LocalStack, staging_vco: str, prod_card: Message, staging_card: Message
    ) -> None:
        self.stack = stack
        self.staging_vco = staging_vco
        self.prod_card = prod_card
        self.prod_op = op_id_of(prod_card)
        self.staging_card = staging_card
        self.staging_op = op_id_of(staging_card)
        self.startup_log: list[str] = []

    def secrets(self) -> tuple[str, ...]:
        """What Carol must never be shown about the prod operation."""
        return (SEED_VCO_HANGZHOU, self.prod_op, PROD_CHANNEL, "`prod`", self.prod_card.ts.replace(".", ""))


async def _card_in(stack: LocalStack, channel: str, vco_id: str) -> Message:
    def found() -> Message | None:
        return next(
            (m for m in stack.slack.state.messages(channel) if vco_id in all_text(m) and has_buttons(m)), None
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id} in {channel}")


@pytest.fixture
async def world(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[World]:
    caplog.set_level(logging.INFO, logger="bot.app")
    accounts, staging_vco = _accounts()
    stack = await start_local_stack(
        database_url=sqlite_url,
        update_seconds=0.3,
        accounts=accounts,
        settings={"approvers": [BOB], "channel_accounts": f"{PROD_CHANNEL}=prod"},
    )
    try:
        assert stack.sts is not None
        # Trust the STS sandbox's CA the standard way.
        monkeypatch.setenv("SSL_CERT_FILE", stack.sts.ca_file)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", stack.sts.ca_file)
        state = stack.slack.state
        state.add_channel(Channel(PROD_CHANNEL, "prod-ops", is_private=True, members=(ALICE, BOB)))
        state.set_members(CHANNEL, (ALICE, BOB, CAROL))

        reply = await stack.agent.slash_command(ALICE, PROD_CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        assert reply.status == 200, reply.body
        prod_card = await _card_in(stack, PROD_CHANNEL, SEED_VCO_HANGZHOU)
        assert "*Account `prod`*" in all_text(prod_card)
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {staging_vco} account=staging")
        staging_card = await wait_confirmation(state, staging_vco)
        assert "*Account `staging`*" in all_text(staging_card)
        world = World(stack, staging_vco, prod_card, staging_card)
        world.startup_log = [r.getMessage() for r in caplog.records if "unbound channels" in r.getMessage()]
        yield world
    finally:
        await stack.aclose()


def _leaks(world: World, text: str) -> list[str]:
    return [s for s in world.secrets() if s in text]


async def _reply(stack: LocalStack, user: str, channel: str, needle: str) -> str:
    """The text of the newest ephemeral to ``user`` in ``channel`` containing ``needle``."""

    def found() -> str | None:
        texts = (f"{m.text}\n{all_text(m)}" for m in reversed(stack.slack.state.ephemerals(user, channel)))
        return next((t for t in texts if needle in t), None)

    return await stack.slack.state.wait_for(found, timeout=10, what=f"a reply saying {needle!r}")


async def _home(stack: LocalStack, user: str) -> str:
    stack.slack.state.home_views.pop(user, None)
    reply = await stack.agent.open_home(user)
    assert reply.status == 200
    view = await stack.slack.state.wait_for(
        lambda: stack.slack.state.home_views.get(user), timeout=10, what=f"the Home tab of {user}"
    )
    View(**{k: v for k, v in view.items() if k not in ("id", "team_id")}).validate_json()
    return json.dumps(view["blocks"])


# --- reading -----------------------------------------------------------------------------------


async def test_the_home_tab_shows_nothing_of_a_private_channels_operation_to_others(world: World) -> None:
    stack = world.stack
    carol = await _home(stack, CAROL)
    assert world.staging_vco in carol, "her channel's operation is there"
    assert _leaks(world, carol) == [], carol

    bob = await _home(stack, BOB)  # a named approver, in #prod-ops: it awaits him
    assert SEED_VCO_HANGZHOU in bob
    assert world.prod_card.ts.replace(".", "") in bob, "with a link to its thread"
    alice = await _home(stack, ALICE)  # her own requests
    assert SEED_VCO_HANGZHOU in alice
    assert world.staging_vco in alice


async def test_history_in_a_channel_lists_that_channels_operations_only(world: World) -> None:
    stack = world.stack
    await stack.agent.slash_command(CAROL, CHANNEL, "history 50")
    text = await _reply(stack, CAROL, CHANNEL, world.staging_vco)
    assert _leaks(world, text) == [], text

    await stack.agent.slash_command(ALICE, PROD_CHANNEL, "history 50")
    prod = await _reply(stack, ALICE, PROD_CHANNEL, SEED_VCO_HANGZHOU)
    assert world.staging_vco not in prod, "nor the other way round"


async def test_status_of_another_channels_request_is_refused_without_a_word_of_it(world: World) -> None:
    stack = world.stack
    await stack.agent.slash_command(CAROL, CHANNEL, f"status {world.prod_op}")
    text = await _reply(stack, CAROL, CHANNEL, "can't see request")
    assert _leaks(world, text) == [world.prod_op], text  # only the id she typed is echoed
    # Alice requested it, but #vpn-ops may not use prod: not there either.
    await stack.agent.slash_command(ALICE, CHANNEL, f"status {world.prod_op}")
    await _reply(stack, ALICE, CHANNEL, "can't see request")
    # Where it was requested, it is shown.
    await stack.agent.slash_command(ALICE, PROD_CHANNEL, f"status {world.prod_op}")
    await _reply(stack, ALICE, PROD_CHANNEL, SEED_VCO_HANGZHOU)
    # Carol may see her channel's own operation.
    await stack.agent.slash_command(CAROL, CHANNEL, f"status {world.staging_op}")
    await _reply(stack, CAROL, CHANNEL, world.staging_vco)


async def test_list_from_an_unbound_channel_shows_only_unbound_accounts(world: World) -> None:
    stack = world.stack
    before = len(stack.accounts["prod"].state.calls("DescribeVpnConnections"))
    await stack.agent.slash_command(CAROL, CHANNEL, "list cn-hangzhou account=prod")
    text = await _reply(stack, CAROL, CHANNEL, "reserved for")
    assert f"<#{PROD_CHANNEL}>" in text, "says where to go instead"
    await stack.agent.slash_command(CAROL, CHANNEL, "list cn-hangzhou")
    listing = await _reply(stack, CAROL, CHANNEL, world.staging_vco)
    assert "account `staging`" in listing
    assert SEED_VCO_HANGZHOU not in listing
    assert len(stack.accounts["prod"].state.calls("DescribeVpnConnections")) == before, "prod never asked"


async def test_the_picker_offers_and_searches_only_unbound_accounts(world: World) -> None:
    stack = world.stack
    state = stack.slack.state
    state.views.clear()
    await stack.agent.slash_command(CAROL, CHANNEL, "delete")
    view = await state.wait_for(lambda: next(iter(state.views.values()), None), timeout=10, what="the picker")
    text = json.dumps(view["blocks"])
    assert '"prod"' not in text, "prod is not offered"
    # A search forged to name prod is answered with the refusal, not prod's connections.
    values: dict[str, dict[str, Any]] = {
        BlockId.PICK_ACCOUNT: {ActionId.PICK_ACCOUNT: selected_option({"text": {}, "value": "prod"})},
        BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": "cn-hangzhou"})},
    }
    found = await stack.agent.suggest(CAROL, view["id"], ActionId.PICK_CONNECTION, "", values)
    options = found.json()["options"]
    assert [o["value"] for o in options] == ["none"]
    assert "reserved for" in options[0]["text"]["text"]
    assert SEED_VCO_HANGZHOU not in json.dumps(options)


# --- acting: an exclusive binding ----------------------------------------------------------------


@pytest.mark.parametrize("place", [CHANNEL, f"D{CAROL[1:]}"], ids=["unbound-channel", "dm"])
async def test_a_bound_account_is_refused_elsewhere(world: World, place: str) -> None:
    stack = world.stack
    reply = await stack.agent.slash_command(CAROL, place, f"delete {SEED_VCO_HANGZHOU} account=prod")
    assert reply.status == 200
    body = reply.json()
    assert "The account `prod` is reserved for" in body["text"]
    assert "Here you may use `staging`" in body["text"]
    ops = await stack.bot.app.store.list_operations()
    assert {op.id for op in ops} == {world.prod_op, world.staging_op}, "nothing recorded"
    assert next(op for op in ops if op.id == world.prod_op).state is OpState.AWAITING_APPROVAL
    assert [c for c in stack.slack.state.messages(place) if SEED_VCO_HANGZHOU in all_text(c)] == []


async def test_a_bound_channel_still_uses_its_account(world: World) -> None:
    """The binding is not a lock-out: in #prod-ops prod is the default, and Bob approves there."""
    stack = world.stack
    reply = await stack.agent.click(BOB, PROD_CHANNEL, world.prod_card.ts, ActionId.APPROVE, None)
    assert reply.status == 200

    def settled() -> Message | None:
        card = stack.slack.state.message(PROD_CHANNEL, world.prod_card.ts)
        return card if card is not None and not has_buttons(card) else None

    await stack.slack.state.wait_for(settled, timeout=10, what="the prod card approved")
    op = await stack.bot.app.store.get_operation(op_id=world.prod_op)
    assert op is not None
    assert op.account == "prod"
    assert op.approver_id == BOB


async def test_the_start_up_log_says_which_accounts_unbound_channels_reach(world: World) -> None:
    assert world.startup_log == [
        "accounts reachable from DMs and unbound channels (VPNBOT_ACCOUNT_BINDING=exclusive): staging"
    ]
