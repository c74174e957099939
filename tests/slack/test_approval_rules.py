"""VPNBOT_APPROVAL_RULES: the parser, scope resolution, start-up errors and what the card says."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slackfakes import T0, make_op

from bot.approval_rules import parse_approval_rules, rule_for
from bot.config import explicit_settings, load_settings
from bot.doctor.model import Status
from bot.doctor.settings import check_settings
from bot.domain import Approval, ApprovalRule, OpState
from bot.errors import ApprovalRefused, ConfigError, NotAllowed, SlackError
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks import build_confirmation, build_parent
from bot.slack.blocks.find import build_operation_status
from bot.slack.blocks.quorum import (
    approval_refused_text,
    quorum_count_text,
    quorum_progress_text,
    quorum_rule_text,
)
from bot.slack.blocks.text import MESSAGE_BUDGET, blocks_text_length
from bot.slack.blocks.views import build_home
from bot.slack.policy import SlackPolicy, approval_count_text, approval_progress_text, approval_rule_text

ACCOUNTS = ("prod", "staging")


def test_numbers_and_groups() -> None:
    rules = parse_approval_rules(" *=2 , prod=S0NETOPS+S0SECURITY,cn-beijing=1", accounts=ACCOUNTS)
    assert rules == {
        "*": ApprovalRule(count=2, scope="*"),
        "prod": ApprovalRule(count=2, groups=("S0NETOPS", "S0SECURITY"), scope="prod"),
        "cn-beijing": ApprovalRule(count=1, scope="cn-beijing"),
    }
    assert parse_approval_rules("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("*=0", "from 1 to 10"),
        ("*=11", "from 1 to 10"),
        ("prod", "is not SCOPE=RULE"),
        ("*=", "is not SCOPE=RULE"),
        ("=2", "is not SCOPE=RULE"),
        ("*=2,*=3", "given twice"),
        ("*=S0NET+U0BOB", "'U0BOB' is not a number of approvals or a Slack user-group id"),
        ("*=S0NET+S0NET", "named twice"),
        ("*=two", "'two' is not a number"),
        ("qa=2", "not an account VPNBOT_ACCOUNTS defines"),
        ("qa/cn-hangzhou=2", "'qa' is not an account"),
        ("prod/hangzhou=2", "'hangzhou' is not a region id"),
        ("PROD!=2", "not *, an account name, a region id or account/region"),
    ],
)
def test_bad_rules_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_approval_rules(text, accounts=ACCOUNTS)


def test_scope_resolution_most_specific_wins() -> None:
    rules = parse_approval_rules(
        "*=1,prod=2,cn-shanghai=3,prod/cn-shanghai=S0NETOPS+S0SECURITY", accounts=ACCOUNTS
    )

    def scope(account: str, region: str) -> str | None:
        rule = rule_for(rules, make_op(account=account, region=region))
        return rule.scope if rule else None

    assert scope("prod", "cn-shanghai") == "prod/cn-shanghai"
    assert scope("prod", "cn-hangzhou") == "prod"
    assert scope("staging", "cn-shanghai") == "cn-shanghai"
    assert scope("staging", "cn-hangzhou") == "*"
    assert scope("", "cn-shanghai") == "cn-shanghai"  # the single-account bot: regions and *
    assert scope("", "cn-hangzhou") == "*"
    # Without *, an operation no scope matches has no rule: one approver, as before.
    only_prod = parse_approval_rules("prod=2", accounts=ACCOUNTS)
    assert rule_for(only_prod, make_op(account="staging")) is None
    assert rule_for({}, make_op()) is None


def test_an_account_spelt_like_a_region_is_the_account() -> None:
    rules = parse_approval_rules("cn-hangzhou=2", accounts=("cn-hangzhou",))
    assert rule_for(rules, make_op(account="cn-hangzhou", region="cn-beijing")) is not None
    assert rule_for(rules, make_op(account="other", region="cn-beijing")) is None


ROLE = "acs:ram::1234567890123456:role/vpn-bot"


def test_settings_check_accounts_at_start() -> None:
    settings = load_settings(
        VPNBOT_ACCOUNTS=f"prod={ROLE},staging={ROLE}", VPNBOT_APPROVAL_RULES="prod=2,staging/cn-beijing=3"
    )
    assert set(settings.approval_rules) == {"prod", "staging/cn-beijing"}
    with pytest.raises(ConfigError) as caught:
        load_settings(VPNBOT_ACCOUNTS=f"prod={ROLE}", VPNBOT_APPROVAL_RULES="qa=2")
    assert "VPNBOT_APPROVAL_RULES: qa: not an account VPNBOT_ACCOUNTS defines (known: prod)" in str(
        caught.value
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(VPNBOT_APPROVAL_RULES="*=0")
    assert "VPNBOT_APPROVAL_RULES: *=0" in str(caught.value)
    # Unset: no rules at all (today's behaviour).
    assert explicit_settings().approval_rules == {}


# --- what the card says --------------------------------------------------------------------------------


def _valid(message: dict[str, Any]) -> None:
    assert message["text"].strip()
    for raw in message["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
    assert blocks_text_length(message["blocks"]) <= MESSAGE_BUDGET


def _block(message: dict[str, Any], block_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [b for b in message["blocks"] if b.get("block_id") == block_id]
    assert len(found) == 1, block_id
    return found[0]


def _actions(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for e in _block(message, BlockId.ACTIONS)["elements"]]


def test_rule_text_names_rule_people_and_scope() -> None:
    two = ApprovalRule(count=2, scope="prod")
    assert quorum_rule_text(two, ["S0NETOPS"]) == (
        "*Approval:* 2 approvals from <!subteam^S0NETOPS>, each by a different person; the requester cannot "
        "approve (VPNBOT_APPROVAL_RULES, rule for `prod`)."
    )
    assert "from anyone who can see this message" in quorum_rule_text(two, [])
    groups = ApprovalRule.of_groups(("S0NETOPS", "S0SECURITY"))
    assert "one approval from each of <!subteam^S0NETOPS> and <!subteam^S0SECURITY>" in quorum_rule_text(
        groups, None
    )
    assert "rule for every operation" in quorum_rule_text(groups, None)


def test_progress_counts_down() -> None:
    two = ApprovalRule(count=2)
    op = make_op(state=OpState.AWAITING_APPROVAL)
    assert quorum_progress_text(op, two, ["S0NETOPS"]) == (
        "*0 of 2 approvals* — waiting for two approvals from <!subteam^S0NETOPS>"
    )
    bob = replace(op, approvals=(Approval("U0BOB", T0),))
    assert quorum_progress_text(bob, two, ["S0NETOPS"]) == (
        "*1 of 2 approvals*: <@U0BOB> ✓ — waiting for one more from <!subteam^S0NETOPS>"
    )
    # Bob approved already and Alice asked: only Carol is awaited.
    people = ["U0ALICE", "U0BOB", "U0CAROL"]
    assert quorum_progress_text(replace(bob, requester_id="U0ALICE"), two, people) == (
        "*1 of 2 approvals*: <@U0BOB> ✓ — waiting for one more from <@U0CAROL>"
    )
    groups = ApprovalRule.of_groups(("S0NETOPS", "S0SECURITY"))
    bob = replace(op, approvals=(Approval("U0BOB", T0, "S0NETOPS", ("S0NETOPS",)),))
    assert quorum_progress_text(bob, groups, []) == (
        "*1 of 2 approvals*: <@U0BOB> ✓ (<!subteam^S0NETOPS>) — covered: <!subteam^S0NETOPS>; "
        "waiting for one from <!subteam^S0SECURITY>"
    )
    # Dave is in both groups: someone from netops may still come, Dave then counting for security.
    dave = replace(op, approvals=(Approval("U0DAVE", T0, "S0NETOPS", ("S0NETOPS", "S0SECURITY")),))
    assert quorum_progress_text(dave, groups, []) == (
        "*1 of 2 approvals*: <@U0DAVE> ✓ (<!subteam^S0NETOPS>) — covered: <!subteam^S0NETOPS>; "
        "waiting for one from <!subteam^S0SECURITY>, or from <!subteam^S0NETOPS> "
        "(<@U0DAVE> then counts for another group)"
    )
    assert quorum_progress_text(op, groups, []) == (
        "*0 of 2 approvals* — waiting for one from each of <!subteam^S0NETOPS> and <!subteam^S0SECURITY>"
    )


def test_card_shows_rule_progress_and_withdraw_within_budget() -> None:
    settings = explicit_settings(approvers=["S0NETOPS"], approval_rules="*=2")
    op = make_op(state=OpState.AWAITING_APPROVAL)
    fresh = build_confirmation(
        op, approval_rule=approval_rule_text(settings, op), progress=approval_progress_text(settings, op)
    )
    _valid(fresh)
    assert "0 of 2 approvals" in _block(fresh, BlockId.APPROVALS)["text"]["text"]
    assert ActionId.WITHDRAW.value not in _actions(fresh)
    assert "2 approvals" in _block(fresh, BlockId.APPROVAL_RULE)["elements"][0]["text"]

    # Ten approvals (the most a rule takes) still fit the budget, with Withdraw offered.
    ten = explicit_settings(approvers=["S0NETOPS"], approval_rules="*=10")
    approvals = tuple(Approval(f"U0APPR{i:02d}", T0) for i in range(9))
    waiting = replace(op, approvals=approvals, reason="x" * 500)
    card = build_parent(
        waiting, approval_rule=approval_rule_text(ten, waiting), progress=approval_progress_text(ten, waiting)
    )
    _valid(card)
    assert _actions(card) == [ActionId.APPROVE.value, ActionId.CANCEL.value, ActionId.WITHDRAW.value]
    assert "9 of 10 approvals" in card["text"]

    # Once approved, the card names everyone who approved.
    done = replace(
        op,
        state=OpState.APPROVED,
        approver_id="U0CAROL",
        approved_at=T0,
        approvals=(Approval("U0BOB", T0), Approval("U0CAROL", T0)),
    )
    assert "Approved by <@U0BOB> and <@U0CAROL>" in build_parent(done)["text"]


def test_recreate_card_under_a_rule() -> None:
    settings = explicit_settings(approvers=["U0BOB"], approval_rules="*=2")
    op = replace(
        make_op(state=OpState.AWAITING_APPROVAL, kind="recreate"), approvals=(Approval("U0BOB", T0),)
    )
    card = build_confirmation(
        op, approval_rule=approval_rule_text(settings, op), progress=approval_progress_text(settings, op)
    )
    _valid(card)
    assert ActionId.WITHDRAW.value in _actions(card)
    assert "1 of 2 approvals" in _block(card, BlockId.APPROVALS)["text"]["text"]


def test_refusals_name_the_rule() -> None:
    rule = ApprovalRule(count=2, scope="prod")
    for reason, needle in (
        ("repeated", "already approved"),
        ("covered", "would not count"),
        ("not_approved", "no approval of yours"),
        ("met", "can no longer be withdrawn"),
    ):
        text = approval_refused_text(ApprovalRefused(reason, make_op(), rule))
        assert needle in text, text
        assert "rule for `prod`" in text, text
    assert "No approval rule" in approval_refused_text(ApprovalRefused("no_rule", make_op()))


# --- the policy under a rule ---------------------------------------------------------------------


class _Groups:
    """Group lookups from a dict; a group mapped to None fails like a Slack outage."""

    def __init__(self, groups: dict[str, list[str] | None]) -> None:
        self.groups = groups

    async def members(self, group_id: str) -> frozenset[str]:
        members = self.groups.get(group_id)
        if members is None:
            raise SlackError("lookup failed", error="ratelimited")
        return frozenset(members)


def _policy(groups: dict[str, list[str] | None], **settings: Any) -> SlackPolicy:
    return SlackPolicy(explicit_settings(**settings), directory=_Groups(groups))


async def test_group_rule_decides_who_approves_and_cancels() -> None:
    groups: dict[str, list[str] | None] = {
        "S0NETOPS": ["U0BOB", "U0DAVE"],
        "S0SECURITY": ["U0CAROL", "U0DAVE"],
    }
    p = _policy(groups, approvers=["U0BOSS"], approval_rules="*=S0NETOPS+S0SECURITY")
    op = make_op(requester_id="U0ALICE")
    rule = p.rule_for(op)
    assert rule is not None
    assert await p.check_quorum_approval(user_id="U0DAVE", op=op, rule=rule) == ("S0NETOPS", "S0SECURITY")
    assert await p.check_quorum_approval(user_id="U0CAROL", op=op, rule=rule) == ("S0SECURITY",)
    # The group rule, not VPNBOT_APPROVERS, says who approves in its scope (the Home tab asks check_approval).
    await p.check_approval(user_id="U0CAROL", op=op)
    with pytest.raises(NotAllowed, match="none of the user groups"):
        await p.check_approval(user_id="U0BOSS", op=op)
    with pytest.raises(NotAllowed, match="never counts"):
        await p.check_approval(user_id="U0ALICE", op=make_op(requester_id="U0ALICE"))
    # Group members may cancel, as approvers may.
    await p.check_cancel(user_id="U0CAROL", op=op)
    with pytest.raises(NotAllowed):
        await p.check_cancel(user_id="U0ERIN", op=op)


async def test_group_rule_fails_closed_and_count_rule_keeps_the_approver_list() -> None:
    down = _policy({"S0NETOPS": None}, approvers=["U0BOB"], approval_rules="*=S0NETOPS")
    op = make_op(requester_id="U0ALICE")
    with pytest.raises(NotAllowed, match="fail closed"):
        await down.check_approval(user_id="U0BOB", op=op)
    count = _policy({}, approvers=["U0BOB", "U0CAROL"], approval_rules="*=2")
    await count.check_approval(user_id="U0CAROL", op=op)
    with pytest.raises(NotAllowed, match="not allowed to approve") as refused:
        await count.check_approval(user_id="U0ERIN", op=op)
    assert "2 approvals from <@U0BOB>, <@U0CAROL>" in refused.value.friendly


def test_doctor_lists_the_rules() -> None:
    rows = check_settings(
        explicit_settings(approvers=["U0BOB"], approval_rules="*=2,cn-shanghai=S0NET+S0SEC")
    )
    [row] = [r for r in rows if r.name == "Approval rules"]
    assert row.status is Status.PASS
    assert "*: 2 approvers; cn-shanghai: one from each of S0NET + S0SEC" in row.detail
    assert not [
        r for r in check_settings(explicit_settings(approvers=["U0BOB"])) if r.name == "Approval rules"
    ]


def test_status_and_home_show_the_progress_of_an_awaiting_operation() -> None:
    settings = explicit_settings(approvers=[], approval_rules="*=S0NETOPS+S0SECURITY")
    dave = Approval("U0DAVE", T0, "S0NETOPS", ("S0NETOPS", "S0SECURITY"))
    op = replace(make_op(state=OpState.AWAITING_APPROVAL), approvals=(dave,))
    assert quorum_count_text(op, ApprovalRule(count=2)) == "1 of 2 approvals"
    assert approval_count_text(settings, op) == "1 of 2 approvals, <!subteam^S0NETOPS> covered"
    assert approval_count_text(settings, replace(op, state=OpState.DELETED)) == ""
    assert approval_count_text(explicit_settings(approvers=[]), op) == ""

    status = build_operation_status(op, permalink=None, now=T0, progress=approval_progress_text(settings, op))
    _valid_message(status)
    text = status["blocks"][0]["text"]["text"]
    assert "• *1 of 2 approvals*: <@U0DAVE> ✓ (<!subteam^S0NETOPS>) — covered: <!subteam^S0NETOPS>" in text
    assert "1 of 2" not in build_operation_status(op, permalink=None, now=T0)["blocks"][0]["text"]["text"]

    # A hostile connection name stays inert next to the progress.
    named = replace(op, connection=replace(op.connection, name="<!channel> *bold*"))
    view = build_home(
        pending=[named],
        running=[],
        finished=[],
        links={},
        now=T0,
        progress={op.id: approval_count_text(settings, op)},
    )
    View(**view).validate_json()
    lines = [
        b["text"]["text"] for b in view["blocks"] if b["type"] == "section" and op.connection.id in str(b)
    ]
    assert len(lines) == 1
    assert "waiting for approval (1 of 2 approvals, <!subteam^S0NETOPS> covered)" in lines[0], lines
    assert "<!channel>" not in lines[0]


def _valid_message(message: dict[str, Any]) -> None:
    assert message["text"].strip()
    for raw in message["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
