"""Reasons and change tickets, and the approval rule on the card, end to end (issue 26, points 3 and 5).

The real app over signed HTTP, the Slack stand-in and the VPC sandbox (two accounts through STS):
``prod`` needs a change ticket (VPNBOT_TICKET_PATTERN), ``staging`` a reason (VPNBOT_REQUIRE_REASON).
A request without them is refused with the rule and changes nothing; one with them shows the reason
and the ticket on the card, in /vpn history, on the Home tab and in every audit entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import ANYONE
from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack_api import Message
from bot.sandbox.sts import SandboxAccount, SandboxRole
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SandboxState
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, op_id_of, valid_block_kit, wait_confirmation, wait_parent

ROLE = "vpn-bot"
REFUSED = ":no_entry:"


@contextlib.asynccontextmanager
async def two_accounts(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[tuple[LocalStack, str]]:
    prod = SandboxAccount("1111111111111111", SandboxState(update_seconds=0.3), {ROLE: SandboxRole(ROLE)})
    staging_state = SandboxState(update_seconds=0.3, seed=False)
    (staging_vco,) = staging_state.seed_connections("cn-hangzhou", 1)
    staging = SandboxAccount("2222222222222222", staging_state, {ROLE: SandboxRole(ROLE)})
    stack = await start_local_stack(
        database_url=sqlite_url,
        update_seconds=0.3,
        accounts={"prod": prod, "staging": staging},
        settings=settings,
    )
    assert stack.sts is not None
    monkeypatch.setenv("SSL_CERT_FILE", stack.sts.ca_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", stack.sts.ca_file)
    try:
        yield stack, staging_vco
    finally:
        await stack.aclose()


async def _refused(stack: LocalStack, user: str, text: str, *, mark: str = REFUSED) -> str:
    """Run ``/vpn text`` as ``user`` and return the refusal shown to them alone."""
    before = len(stack.slack.state.ephemerals(user, CHANNEL))
    reply = await stack.agent.slash_command(user, CHANNEL, text)
    assert reply.status == 200, reply.body

    def found() -> Message | None:
        new = stack.slack.state.ephemerals(user, CHANNEL)[before:]
        return next((m for m in new if mark in m.text), None)

    refusal = await stack.slack.state.wait_for(found, timeout=5, what=f"refusal of {text!r}")
    valid_block_kit(refusal)
    return all_text(refusal)


async def test_reason_and_ticket_rules_per_account(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: PLR0915 - one story end to end, asserted step by step
    async with two_accounts(
        sqlite_url,
        monkeypatch,
        approvers=[BOB],
        require_second_approver=True,
        require_reason=["staging"],
        ticket_patterns={"prod": "CHG-[0-9]+"},
    ) as (stack, staging_vco):
        state = stack.slack.state
        # prod: no reason, then a reason without a ticket: both refused, stating the rule.
        text = await _refused(stack, ALICE, f"delete {SEED_VCO_HANGZHOU} account=prod")
        assert "change ticket matching `CHG-[0-9]+`" in text
        assert "VPNBOT_TICKET_PATTERN" in text
        text = await _refused(stack, ALICE, f'delete {SEED_VCO_HANGZHOU} account=prod reason="site closed"')
        assert "none was found" in text
        # staging: a reason is required, any reason will do.
        text = await _refused(stack, ALICE, f"delete {staging_vco} account=staging")
        assert "need a reason" in text
        assert "VPNBOT_REQUIRE_REASON" in text
        # A reason longer than 500 characters is refused too.
        text = await _refused(
            stack, ALICE, f"delete {staging_vco} account=staging reason={'x' * 501}", mark="too long"
        )
        assert "too long" in text
        # Nothing was posted or looked up for any of them.
        assert state.messages(CHANNEL) == []
        assert await stack.bot.app.store.list_operations() == []

        # With a ticket: the card shows the reason (inert) and the ticket, and who may approve.
        reason = "CHG-4711 branch closed <!channel> *now*"
        reply = await stack.agent.slash_command(
            ALICE, CHANNEL, f'delete {SEED_VCO_HANGZHOU} account=prod reason="{reason}"'
        )
        assert reply.status == 200
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        valid_block_kit(card)
        shown = {b.get("block_id"): b for b in card.blocks}
        reason_text = shown[BlockId.REASON]["text"]["text"]
        assert "CHG-4711 branch closed &lt;!channel&gt;" in reason_text
        assert "<!channel>" not in all_text(card)
        assert "*Ticket:* `CHG-4711`" in reason_text
        assert "&lt;!channel&gt;" in card.text  # the fallback says it too, inert
        rule = shown[BlockId.APPROVAL_RULE]["elements"][0]["text"]
        assert rule == f"*Approval:* <@{BOB}>; the requester cannot approve their own request (four-eyes)."

        # staging with a reason and no ticket rule: accepted, no ticket shown.
        await stack.agent.slash_command(
            ALICE, CHANNEL, f"delete {staging_vco} account=staging reason=cleanup"
        )
        staging_card = await wait_confirmation(state, staging_vco)
        assert "*Reason:* `cleanup`" in all_text(staging_card)
        assert "Ticket" not in all_text(staging_card)

        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        final = await wait_parent(state, card.ts, "and deleted")
        valid_block_kit(final)
        assert "CHG-4711 branch closed &lt;!channel&gt;" in all_text(final)

        op = await stack.bot.app.store.get_operation(op_id=op_id)
        assert op is not None
        assert op.reason == reason
        assert op.ticket == "CHG-4711"
        entries = [e for e in await stack.bot.app.store.recent_audit(limit=50) if e.op_id == op_id]
        actions = {e.action for e in entries}
        assert {"requested", "approved", "deleted"} <= actions
        assert all(f"reason (ticket CHG-4711): {reason}" in e.detail for e in entries)

        # /vpn history shows it, escaped.
        await stack.agent.slash_command(BOB, CHANNEL, "history 10")

        def history() -> Message | None:
            return next(
                (
                    m
                    for m in state.ephemerals(BOB, CHANNEL)
                    if any(b.get("block_id") == BlockId.HISTORY for b in m.blocks)
                ),
                None,
            )

        listed = await state.wait_for(history, timeout=5, what="history")
        valid_block_kit(listed)
        assert "`reason (ticket CHG-4711): CHG-4711 branch closed &lt;!channel&gt;" in all_text(listed)
        assert "<!channel>" not in all_text(listed)

        # The Home tab shows it on the operation's line.
        await stack.agent.open_home(CAROL)

        def home() -> dict[str, Any] | None:
            view = state.home_views.get(CAROL)
            return view if view is not None and "CHG-4711" in str(view) else None

        view = await state.wait_for(home, timeout=5, what="Carol's Home tab")
        assert "_Reason:_ `CHG-4711 branch closed &lt;!channel&gt;" in str(view)


async def test_reason_in_picker_is_checked_and_kept(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The picker's reason field: prefilled from reason=…, refused without a ticket, kept with one."""
    async with two_accounts(
        sqlite_url, monkeypatch, approvers=[ANYONE], ticket_patterns={"*": "CHG-[0-9]+"}
    ) as (stack, _):
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, 'delete account=prod reason="CHG-9 from the command"')
        view_id, view = await state.wait_for(
            lambda: next(iter(state.views.items()), None), timeout=5, what="the picker"
        )
        fields = {b.get("block_id"): b for b in view["blocks"]}
        assert fields[BlockId.PICK_REASON]["element"]["initial_value"] == "CHG-9 from the command"
        assert "CHG-[0-9]+" in fields[BlockId.PICK_REASON]["hint"]["text"]

        pick: dict[str, dict[str, Any]] = {
            BlockId.PICK_CONNECTION: {
                ActionId.PICK_CONNECTION: {
                    "type": "external_select",
                    "selected_option": {
                        "text": {"type": "plain_text", "text": "x"},
                        "value": SEED_VCO_HANGZHOU,
                    },
                }
            }
        }
        no_ticket: dict[str, dict[str, Any]] = {
            **pick,
            BlockId.PICK_REASON: {ActionId.PICK_REASON: {"type": "plain_text_input", "value": "no ticket"}},
        }
        reply = await stack.agent.submit(ALICE, view_id, no_ticket)
        answer = reply.json() or {}
        assert answer.get("response_action") == "errors"
        assert "CHG-[0-9]+" in answer["errors"][BlockId.PICK_REASON]
        assert state.messages(CHANNEL) == []

        with_ticket: dict[str, dict[str, Any]] = {
            **pick,
            BlockId.PICK_REASON: {ActionId.PICK_REASON: {"type": "plain_text_input", "value": "CHG-77 done"}},
        }
        reply = await stack.agent.submit(ALICE, view_id, with_ticket)
        assert not (reply.json() or {}).get("response_action")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        assert "*Reason:* `CHG-77 done` · *Ticket:* `CHG-77`" in all_text(card)
        rule = next(b for b in card.blocks if b.get("block_id") == BlockId.APPROVAL_RULE)
        assert "anyone who can see this message" in rule["elements"][0]["text"]
