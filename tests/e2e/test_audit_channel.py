"""VPNBOT_AUDIT_CHANNEL gets exactly one line per decision, each linking its card (issue 26, point 4).

The real app over signed HTTP with the Slack stand-in and the VPC sandbox. Each line is an outbox
effect written with the decision, posted once with its effect's key in the message metadata.
"""

from __future__ import annotations

from collections import Counter

from fakes import FakeClock
from slack_sdk.models.blocks import Block
from storetools import pending_effects

from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_SHANGHAI
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    AUDIT,
    BOB,
    CHANNEL,
    all_text,
    audit_lines,
    deny,
    local_stack,
    op_id_of,
    wait_audit_lines,
    wait_confirmation,
    wait_parent,
)


def _valid(message: Message) -> None:
    assert message.text
    assert message.blocks
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()


def _check(lines: list[Message], card_ts: str, words: list[str]) -> None:
    """One line per decision, in order, each saying its words, linking the card, valid, posted once."""
    assert len(lines) == len(words), [m.text for m in lines]
    for line, said in zip(lines, words, strict=True):
        assert said in line.text, (said, line.text)
        assert f"p{card_ts.replace('.', '')}" in all_text(line), "links the card"
        assert SEED_VCO_HANGZHOU in line.text or SEED_VCO_SHANGHAI in line.text
        _valid(line)
        assert line.metadata is not None
        assert line.metadata["event_type"] == "vpnbot_effect"
    keys = Counter(str(m.metadata["event_payload"]["effect_id"]) for m in lines if m.metadata)
    assert all(n == 1 for n in keys.values()), keys


async def test_one_line_per_decision_for_an_approved_deletion_and_a_denial(sqlite_url: str) -> None:
    async with local_stack(sqlite_url, settings={"approvers": [BOB], "audit_channel": AUDIT}) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(
            ALICE, CHANNEL, f'delete {SEED_VCO_HANGZHOU} reason="CHG-7 <!channel>"'
        )
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await wait_parent(state, card.ts, "and deleted")
        await wait_audit_lines(stack, op_id, 3)

        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
        second = await wait_confirmation(state, SEED_VCO_SHANGHAI)
        denied_id = op_id_of(second)
        await deny(stack, BOB, second.ts, "wrong site <@U0CAROL>")
        await wait_parent(state, second.ts, "ancelled")
        await wait_audit_lines(stack, denied_id, 2)
        await stack.bot.app.workflow.run_once()
        await stack.bot.app.workflow.wait_idle()

        lines = audit_lines(stack, op_id)
        _check(
            lines, card.ts, [f"requested by <@{ALICE}>", f"approved by <@{BOB}>", "the connection is deleted"]
        )
        assert "Reason: `CHG-7 &lt;!channel&gt;`" in lines[0].text, "the reason, inert"
        denied = audit_lines(stack, denied_id)
        _check(denied, second.ts, [f"requested by <@{ALICE}>", f"denied by <@{BOB}>"])
        assert "Reason: `wrong site &lt;@U0CAROL&gt;`" in denied[1].text
        assert "<!channel>" not in "".join(all_text(m) for m in state.messages(AUDIT))
        assert "<@U0CAROL>" not in "".join(all_text(m) for m in state.messages(AUDIT))


async def test_one_line_for_an_expired_request(sqlite_url: str) -> None:
    clock = FakeClock()
    async with local_stack(
        sqlite_url, clock=clock, settings={"approvers": [BOB], "audit_channel": AUDIT}
    ) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        clock.advance(stack.settings.confirmation_ttl_seconds + 1)
        await stack.bot.app.workflow.run_once()
        await wait_parent(state, card.ts, "xpired")
        await wait_audit_lines(stack, op_id, 2)
        await stack.bot.app.workflow.run_once()
        await stack.bot.app.workflow.wait_idle()
        _check(audit_lines(stack, op_id), card.ts, [f"requested by <@{ALICE}>", "expired without a decision"])


async def test_no_audit_channel_no_lines(sqlite_url: str) -> None:
    async with local_stack(sqlite_url, settings={"approvers": [BOB]}) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        await deny(stack, BOB, card.ts)
        await wait_parent(stack.slack.state, card.ts, "ancelled")
        await stack.bot.app.workflow.wait_idle()
        assert stack.slack.state.messages(AUDIT) == []


async def test_a_line_whose_answer_was_lost_is_posted_once(sqlite_url: str) -> None:
    """Slack posts the line and the answer is lost: the outbox looks in the channel and posts no copy."""
    async with local_stack(sqlite_url, settings={"approvers": [BOB], "audit_channel": AUDIT}) as stack:
        state = stack.slack.state
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await wait_audit_lines(stack, op_id, 1)
        # Alice withdraws her own request: the card is updated, then the next post is the line.
        state.drop_answer("chat.postMessage")
        await deny(stack, ALICE, card.ts)
        await wait_parent(state, card.ts, "ancelled")
        await wait_audit_lines(stack, op_id, 2)

        async def settled() -> bool:
            await stack.bot.app.workflow.run_once()
            await stack.bot.app.workflow.wait_idle()
            return not await pending_effects(stack.bot.app.store, op_id=op_id)

        await state.wait_for(settled, timeout=15, what="the outbox settled")
        dropped = [c for c in state.calls("chat.postMessage") if c.error == "answer_dropped"]
        assert [c.params.get("channel") for c in dropped] == [AUDIT]
        looks = [c for c in state.calls("conversations.history") if c.params.get("channel") == AUDIT]
        assert looks, "the bot did not look before posting again"
        _check(audit_lines(stack, op_id), card.ts, [f"requested by <@{ALICE}>", f"withdrawn by <@{ALICE}>"])
