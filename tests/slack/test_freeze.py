"""Freezes in the Slack layer: the duration and scope of ``/vpn freeze`` and ``/vpn unfreeze``, and their texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from slackfakes import parse, valid_block_kit

from bot.config import explicit_settings
from bot.domain import Freeze, Held
from bot.errors import Frozen, UsageError
from bot.slack.accounts import check_freeze_account
from bot.slack.blocks import (
    USAGE_TEXT,
    build_freeze_answer,
    build_frozen_request_note,
    build_progress,
    build_unfreeze_answer,
    home_freeze_blocks,
)
from bot.slack.errors import reply_for
from bot.slack.parsing import FreezeCommand, UnfreezeCommand, parse_duration

T0 = datetime(2026, 12, 8, 6, 0, tzinfo=UTC)
EVIL = "<!channel> *x* <@U0BOB> & `y`\nnext"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2H", timedelta(hours=2)),
        ("30d", timedelta(days=30)),
        ("`4h`", timedelta(hours=4)),
    ],
)
def test_durations(word: str, expected: timedelta) -> None:
    assert parse_duration(word) == expected


@pytest.mark.parametrize(
    ("word", "says"),
    [
        ("2", "is not a duration"),
        ("h", "is not a duration"),
        ("2 hours", "is not a duration"),
        ("1m1h", "is not a duration"),  # out of order
        ("-1h", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("0m", "at least a minute"),
        ("0d0h", "at least a minute"),
        ("31d", "at most 30 days"),
        ("30d1m", "at most 30 days"),
        ("721h", "at most 30 days"),
    ],
)
def test_bad_durations_are_explained(word: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(word)
    assert says in info.value.friendly


def test_freeze_of_every_account_and_of_one() -> None:
    assert parse('freeze 2h reason="INC-42 core incident"') == FreezeCommand(
        duration=timedelta(hours=2), reason="INC-42 core incident", account=None
    )
    assert parse("freeze 1d prod reason=upgrade") == FreezeCommand(
        duration=timedelta(days=1), reason="upgrade", account="prod"
    )
    assert parse("freeze 30m account=staging --reason 'two words'") == FreezeCommand(
        duration=timedelta(minutes=30), reason="two words", account="staging"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("freeze 2h", "needs a reason"),
        ("freeze reason=x", "How long?"),
        ("freeze prod 2h reason=x", "is not a duration"),
        ("freeze 2h prod account=prod reason=x", "given twice"),
        ("freeze 2h reason=three more words", "in quotes"),
        ("freeze 2h prod extra reason=x", "Too many words"),
        ("freeze 45d reason=x", "at most 30 days"),
        ("unfreeze prod staging", "Too many words"),
        ("unfreeze reason=x", "reason goes with"),
    ],
)
def test_bad_freeze_commands_are_explained(text: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert says in info.value.friendly


def test_unfreeze_scope() -> None:
    assert parse("unfreeze") == UnfreezeCommand(account=None)
    assert parse("unfreeze prod") == UnfreezeCommand(account="prod")
    assert parse("unfreeze --account prod") == UnfreezeCommand(account="prod")


def test_scope_and_time_of_a_freeze() -> None:
    everything = Freeze("a", None, "r", "U0ADMIN", T0, T0 + timedelta(hours=1))
    prod = Freeze("b", "prod", "r", "U0ADMIN", T0, T0 + timedelta(hours=1))
    assert everything.applies_to("")
    assert everything.applies_to("prod")
    assert everything.applies_to("staging")
    assert prod.applies_to("prod")
    assert not prod.applies_to("staging")
    assert not prod.applies_to("")
    assert not prod.active_at(T0 - timedelta(seconds=1))
    assert prod.active_at(T0)
    assert prod.active_at(T0 + timedelta(minutes=59))
    assert not prod.active_at(T0 + timedelta(hours=1))
    lifted = Freeze("c", None, "r", "U0ADMIN", T0, T0 + timedelta(hours=1), "U0ADMIN", T0)
    assert not lifted.active_at(T0 + timedelta(minutes=1))


def test_help_lists_freeze_and_unfreeze() -> None:
    assert "/vpn freeze" in USAGE_TEXT
    assert "/vpn unfreeze" in USAGE_TEXT


def test_every_freeze_text_renders_the_reason_inert() -> None:
    freeze = Freeze("a", "prod", EVIL, "U0ADMIN", T0, T0 + timedelta(hours=2))
    answer = build_freeze_answer(freeze, [freeze])
    assert answer["response_type"] == "in_channel"
    unfrozen = build_unfreeze_answer("U0ADMIN", [freeze], still=freeze)
    assert unfrozen["response_type"] == "in_channel"
    nothing = build_unfreeze_answer("U0ADMIN", [])
    assert nothing["response_type"] == "ephemeral"
    refusal = reply_for(Frozen(freeze), kind="block_actions")
    home = {"text": "home", "blocks": home_freeze_blocks([freeze])}
    held = build_progress(Held(until=freeze.until, reason=EVIL, by="U0ADMIN", account="prod"))
    note = build_frozen_request_note(freeze)
    assert note["response_type"] == "ephemeral"
    for message in (answer, unfrozen, nothing, refusal, home, note):
        valid_block_kit(message)
    texts = [str(answer), str(unfrozen), str(refusal), str(home), held, str(note)]
    for text in texts:
        assert "<!channel>" not in text
        assert "<@U0BOB>" not in text
        assert "&lt;!channel&gt;" in text
    assert "2026-12-08 08:00 UTC" in str(refusal)
    assert "until" in str(refusal)
    assert "held by a freeze until 2026-12-08 08:00 UTC" in held
    assert home_freeze_blocks([]) == []


def test_a_freeze_account_must_be_one_of_the_bots() -> None:
    one = explicit_settings(approvers=["*"])
    check_freeze_account(one, None)
    with pytest.raises(UsageError, match="one Alibaba Cloud account"):
        check_freeze_account(one, "prod")
    several = explicit_settings(
        approvers=["*"],
        accounts="prod=acs:ram::1234567890123456:role/vpn-bot,staging=acs:ram::6543210987654321:role/vpn-bot",
        channel_accounts="C0PROD=prod",
    )
    check_freeze_account(several, None)
    check_freeze_account(several, "staging")  # not bound to a channel: a freeze is every channel's
    with pytest.raises(UsageError, match="no account `dev`; its accounts are `prod`, `staging`"):
        check_freeze_account(several, "dev")
