"""Unanswered confirmations remind the approvers once, and escalate once, across restarts (issue 26, point 4).

The real app over signed HTTP with the Slack stand-in and the VPC sandbox, on a controlled clock:
time is moved, the runner's passes are run by hand on every live replica, and the bot is restarted
(a new instance on the same database, the old one gone) between the passes.
"""

from __future__ import annotations

from fakes import FakeClock

from bot.sandbox.local import LocalStack, Replica
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    all_text,
    deny,
    local_stack,
    op_id_of,
    valid_block_kit,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

GROUP = "S0NETADM"
ONCALL = "S0ONCALL"
TTL = 900.0


def _replies(stack: LocalStack, ts: str, needle: str) -> list[Message]:
    return [m for m in stack.slack.state.thread(CHANNEL, ts) if needle in all_text(m)]


async def _passes(stack: LocalStack) -> None:
    """One resume, expiry (reminders, escalations) and outbox pass on every replica, then quiet."""
    for replica in stack.replicas:
        await replica.app.workflow.run_once()
    for replica in stack.replicas:
        await replica.app.workflow.wait_idle()


async def _restart(stack: LocalStack, clock: FakeClock) -> Replica:
    """Stop the first replica (as a restart does) after starting its successor on the same database."""
    successor = await stack.add_replica(clock=clock)
    old, agent = stack.replicas.pop(0), stack.agents.pop(0)
    await agent.aclose()
    await old.aclose()
    return successor


async def test_the_reminder_and_the_escalation_each_fire_once_across_restarts(db_url: str) -> None:
    """On SQLite and on PostgreSQL, with two replicas running every pass."""
    clock = FakeClock()
    settings = {
        "approvers": [BOB, GROUP],
        "confirmation_ttl_seconds": TTL,
        "remind_after_seconds": 120,
        "escalate_to": ONCALL,
        "escalate_before_expiry_seconds": 300,
    }
    async with local_stack(db_url, clock=clock, settings=settings) as stack:
        await stack.add_replica(clock=clock)  # two replicas run every pass
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)

        clock.advance(119)
        await _passes(stack)
        assert _replies(stack, card.ts, ":bell:") == [], "not before VPNBOT_REMIND_AFTER_SECONDS"

        clock.advance(2)
        await _passes(stack)
        said = await wait_thread(state, card.ts, ":bell:")
        assert f"<@{BOB}>" in said
        assert f"<!subteam^{GROUP}>" in said
        assert "waited 2 min" in said

        await _restart(stack, clock)
        clock.advance(60)
        await _passes(stack)
        await _restart(stack, clock)
        await _passes(stack)
        assert len(_replies(stack, card.ts, ":bell:")) == 1
        assert _replies(stack, card.ts, ":rotating_light:") == [], "not yet: 300 s before expiry"

        clock.advance(TTL - 300 - 181 + 1)  # 1 s into the escalation window
        await _passes(stack)
        called = await wait_thread(state, card.ts, ":rotating_light:")
        assert f"<!subteam^{ONCALL}>" in called
        assert "expires in 4 min 59 s" in called
        await _restart(stack, clock)
        await _restart(stack, clock)
        clock.advance(30)
        await _passes(stack)
        assert len(_replies(stack, card.ts, ":rotating_light:")) == 1
        assert len(_replies(stack, card.ts, ":bell:")) == 1
        for reply in _replies(stack, card.ts, ":"):
            valid_block_kit(reply)

        op = await stack.bot.app.store.get_operation(op_id=op_id)
        assert op is not None
        assert op.reminded_at is not None
        assert op.escalated_at is not None
        assert op.reminded_at < op.escalated_at


async def test_nothing_is_said_about_a_request_that_was_answered_or_without_the_settings(
    sqlite_url: str,
) -> None:
    clock = FakeClock()
    settings = {"approvers": [BOB], "remind_after_seconds": 60, "escalate_to": ONCALL}
    async with local_stack(sqlite_url, clock=clock, settings=settings) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        reply = await deny(stack, BOB, card.ts, "not this one")
        assert reply.status == 200
        await wait_parent(state, card.ts, "ancelled")
        clock.advance(TTL - 1)  # past the reminder and inside the default escalation window
        await _passes(stack)
        assert _replies(stack, card.ts, ":bell:") == []
        assert _replies(stack, card.ts, ":rotating_light:") == []

    async with local_stack(
        sqlite_url + "-2", clock=(clock := FakeClock()), settings={"approvers": [BOB]}
    ) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        clock.advance(TTL - 1)
        await _passes(stack)
        assert _replies(stack, card.ts, ":bell:") == []
        assert _replies(stack, card.ts, ":rotating_light:") == []
