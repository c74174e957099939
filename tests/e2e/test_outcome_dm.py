"""The requester is told the outcome in a direct message, and Cancel asks why (issue 26, points 3 and 4).

The real app over signed HTTP with the Slack stand-in and the VPC sandbox. The DM goes through the
outbox (conversations.open, then chat.postMessage carrying the effect's key) and links the card.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fakes import FakeClock

from bot.cloud.codes import ERROR_TABLE
from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_SHANGHAI
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text, deny, op_id_of, valid_block_kit, wait_confirmation, wait_parent, wait_thread

DM_ALICE = f"D{ALICE}"


@contextlib.asynccontextmanager
async def running(
    sqlite_url: str, clock: FakeClock | None = None, **settings: Any
) -> AsyncIterator[LocalStack]:
    stack = await start_local_stack(
        database_url=sqlite_url, update_seconds=0.3, settings=settings, clock=clock
    )
    try:
        yield stack
    finally:
        await stack.aclose()


async def _dm(stack: LocalStack, needle: str, *, count: int = 1) -> Message:
    """Wait for Alice's ``count``-th direct message and check it says ``needle``."""
    state = stack.slack.state

    def arrived() -> list[Message] | None:
        found = state.messages(DM_ALICE) if DM_ALICE in state.channels else []
        return found if len(found) >= count else None

    messages = await state.wait_for(arrived, timeout=15, what=f"Alice's DM #{count}")
    message = messages[count - 1]
    assert needle in all_text(message), all_text(message)
    valid_block_kit(message)
    return message


def _links_card(message: Message, card_ts: str) -> None:
    assert f"p{card_ts.replace('.', '')}" in all_text(message), "links to the card"


async def test_deny_with_a_reason_reaches_the_card_the_audit_and_the_requester(sqlite_url: str) -> None:
    async with running(sqlite_url, approvers=[BOB]) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f'delete {SEED_VCO_HANGZHOU} reason="CHG-1 move"')
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)

        reply = await deny(stack, BOB, card.ts, "wrong one <@U0CAROL> — use the Shanghai link")
        assert reply.status == 200
        closed = await wait_parent(state, card.ts, "ancelled")
        valid_block_kit(closed)
        status = next(b for b in closed.blocks if b.get("block_id") == BlockId.STATUS)["text"]["text"]
        assert f"Cancelled by <@{BOB}>" in status
        assert "*Reason:* `wrong one &lt;@U0CAROL&gt; — use the Shanghai link`" in status
        assert "<@U0CAROL>" not in all_text(closed)
        said = await wait_thread(state, card.ts, "Denied by")
        assert "Reason: `wrong one &lt;@U0CAROL&gt;" in said

        dm = await _dm(stack, f"was denied by <@{BOB}>")
        assert "wrong one &lt;@U0CAROL&gt;" in all_text(dm)
        assert "Your reason: `CHG-1 move" in all_text(dm)
        _links_card(dm, card.ts)
        # Sent once, through the outbox, carrying its effect's key.
        assert len(state.messages(DM_ALICE)) == 1
        assert dm.metadata is not None
        assert dm.metadata["event_type"] == "vpnbot_effect"

        entries = [e for e in await stack.bot.app.store.recent_audit(limit=20) if e.op_id == op_id]
        cancelled = next(e for e in entries if e.action == "cancelled")
        assert cancelled.actor_id == BOB
        assert cancelled.detail.startswith("denied: wrong one <@U0CAROL>")
        op = await stack.bot.app.store.get_operation(op_id=op_id)
        assert op is not None
        assert op.cancel_reason == "wrong one <@U0CAROL> — use the Shanghai link"
        assert stack.vpc.state.calls("DeleteVpnConnection") == []


async def test_a_denial_without_a_reason_and_a_self_cancel(sqlite_url: str) -> None:
    """An empty reason cancels all the same; the requester cancelling gets no DM about it."""
    async with running(sqlite_url, approvers=[BOB]) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        await deny(stack, BOB, card.ts)
        closed = await wait_parent(state, card.ts, "ancelled")
        assert "Reason" not in all_text(closed)
        dm = await _dm(stack, "No reason was given.")
        _links_card(dm, card.ts)

        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
        second = await wait_confirmation(state, SEED_VCO_SHANGHAI)
        await deny(stack, ALICE, second.ts, "changed my mind")
        closed = await wait_parent(state, second.ts, "ancelled")
        assert "*Reason:* `changed my mind`" in all_text(closed)
        await stack.bot.app.workflow.wait_idle()
        assert len(state.messages(DM_ALICE)) == 1


async def test_the_requester_is_told_when_it_is_deleted(sqlite_url: str) -> None:
    async with running(sqlite_url, approvers=[BOB]) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await wait_parent(state, card.ts, "and deleted")
        dm = await _dm(stack, f"was approved by <@{BOB}>: the connection is deleted.")
        assert SEED_VCO_HANGZHOU in all_text(dm)
        _links_card(dm, card.ts)
        assert state.calls("conversations.open")


async def test_the_requester_is_told_when_it_failed(sqlite_url: str) -> None:
    async with running(sqlite_url, approvers=[BOB]) as stack:
        state = stack.slack.state
        stack.vpc.state.faults.add(action="DeleteVpnConnection", code="Forbidden.SubUser", times=1)
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await wait_parent(state, card.ts, "Forbidden.SubUser")
        dm = await _dm(stack, "but it failed.")
        assert ERROR_TABLE["Forbidden.SubUser"].friendly in all_text(dm)
        _links_card(dm, card.ts)
        assert SEED_VCO_HANGZHOU in stack.vpc.state.connections


async def test_the_requester_is_told_when_it_expired(sqlite_url: str) -> None:
    clock = FakeClock()
    async with running(sqlite_url, clock, approvers=[BOB]) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        clock.advance(stack.settings.confirmation_ttl_seconds + 1)
        await stack.bot.app.workflow.run_once()
        await wait_parent(state, card.ts, "xpired")
        dm = await _dm(stack, "expired: nobody approved it in time. Nothing was changed.")
        _links_card(dm, card.ts)
