"""VPNBOT_APPROVERS=* : the explicit opt-in to "anyone who sees the confirmation may approve"."""

from __future__ import annotations

import pytest
from slack_sdk.models.blocks import Block
from slackfakes import make_op, make_settings

from bot.errors import NotAllowed
from bot.slack.block_ids import BlockId
from bot.slack.blocks import build_confirmation, build_parent
from bot.slack.policy import SlackPolicy


class NoGroups:
    """A directory that fails the test if anyone asks it: ``*`` needs no group lookup."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise AssertionError(f"no group lookup expected, got {group_id}")


async def test_star_lets_anyone_approve_and_cancel() -> None:
    policy = SlackPolicy(make_settings(approvers="*"), directory=NoGroups())
    op = make_op()
    await policy.check_approval(user_id="U0ANYONE", op=op)
    await policy.check_cancel(user_id="U0SOMEONE", op=op)
    await policy.check_history(user_id="U0READER", channel_id="C0ANY")


async def test_star_still_honours_four_eyes() -> None:
    policy = SlackPolicy(make_settings(approvers="*", require_second_approver=True), directory=NoGroups())
    op = make_op()
    with pytest.raises(NotAllowed):
        await policy.check_approval(user_id=op.requester_id, op=op)


async def test_a_list_without_star_still_refuses_others() -> None:
    policy = SlackPolicy(make_settings(approvers="U0BOSS"), directory=NoGroups())
    with pytest.raises(NotAllowed):
        await policy.check_approval(user_id="U0ANYONE", op=make_op())


def _summary(message: dict[str, object]) -> str:
    blocks = message["blocks"]
    assert isinstance(blocks, list)
    summary = next(b for b in blocks if b.get("block_id") == BlockId.SUMMARY.value)
    assert Block.parse(summary) is not None  # valid Block Kit
    return str(summary["text"]["text"])


def test_the_card_says_anyone_may_approve() -> None:
    op = make_op()
    open_card = _summary(build_confirmation(op, anyone_may_approve=True))
    assert "Anyone who can see this message may approve" in open_card
    assert "VPNBOT_APPROVERS=*" in open_card
    assert "Someone allowed to approve" not in open_card
    # Re-rendered while still awaiting approval, the card keeps saying so.
    assert _summary(build_parent(op, anyone_may_approve=True)) == open_card


def test_the_default_card_names_no_open_approval() -> None:
    card = _summary(build_confirmation(make_op()))
    assert "Someone allowed to approve clicks *Delete*" in card
    assert "Anyone" not in card
