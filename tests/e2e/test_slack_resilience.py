"""Slack-side trouble: channels the bot cannot post in, rate limits, failed updates, health."""

from __future__ import annotations

import httpx

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text as _all_text
from .support import has_buttons as _has_buttons
from .support import local_stack
from .test_delete_flow import _confirmation, _final_parent

PRIVATE = "G0SECRET"


async def test_private_channel_without_the_bot_explains_how_to_invite(stack: LocalStack) -> None:
    """The bot is not in a private channel: the requester learns how to invite it; nothing is pending."""
    reply = await stack.agent.slash_command(ALICE, PRIVATE, f"delete {SEED_VCO_HANGZHOU}")
    assert reply.status == 200
    answer = await stack.slack.state.wait_for(
        lambda: next((m for m in stack.slack.state.ephemerals(ALICE) if "/invite" in m.text), None),
        timeout=5,
        what="the invite hint",
    )
    assert "Nothing was deleted" in answer.text
    assert stack.slack.state.messages(PRIVATE) == []
    ops = await stack.bot.app.store.list_operations()
    assert all(op.state is not OpState.AWAITING_APPROVAL for op in ops)
    assert [r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection"] == []


async def test_rate_limited_posts_are_retried(stack: LocalStack) -> None:
    """429 with Retry-After on chat.postMessage is retried; the confirmation still appears."""
    stack.slack.state.rate_limit("chat.postMessage", times=1, retry_after=0)
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    await _confirmation(stack, SEED_VCO_HANGZHOU)
    post_calls = stack.slack.state.calls("chat.postMessage")
    assert [c.status for c in post_calls][:2] == [429, 200]


async def test_failed_chat_update_does_not_break_the_deletion(sqlite_url: str) -> None:
    """chat.update failing (even persistently) never stops the operation; the thread still reports."""
    # A short lease brings the outbox's pass around every second: the card update that fails after
    # the deletion is tried again then, not ten seconds later.
    async with local_stack(sqlite_url, update_seconds=0.3, settings={"lease_seconds": 3.0}) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
        stack.slack.state.fail("chat.update", "cant_update_message", times=1)
        stack.slack.state.server_error("chat.update", times=3, status=500)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)

        async def deleted() -> bool:
            ops = await stack.bot.app.store.list_operations()
            return [op.state for op in ops] == [OpState.DELETED]

        await stack.slack.state.wait_for(deleted, timeout=15, what="the operation to be deleted")

        async def thread_says_deleted() -> bool:
            return "Deleted in" in "\n".join(
                _all_text(m) for m in stack.slack.state.thread(CHANNEL, confirmation.ts)
            )

        await stack.slack.state.wait_for(thread_says_deleted, timeout=15, what="the thread's final reply")
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
        # Once Slack recovers, the final update lands: the parent shows the outcome without buttons.
        parent = await _final_parent(stack, confirmation.ts, "Deleted")
        assert not _has_buttons(parent)


async def test_healthz_reports_the_store(stack: LocalStack) -> None:
    """GET /healthz answers 200 while the store is reachable."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{stack.bot.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
