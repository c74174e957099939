"""Choosing the account of a command: account=NAME, the channel's binding, or a list to choose from."""

from __future__ import annotations

import pytest
from slack_sdk.models.blocks import Block
from slackfakes import make_op
from test_blocks import walk_limits

from bot.config import explicit_settings
from bot.domain import AuditEntry, OpState
from bot.errors import NotAllowed, UsageError
from bot.slack.accounts import choose_account
from bot.slack.blocks import build_confirmation, build_history, build_looking_up, build_parent, build_refusal
from bot.slack.parsing import DeleteCommand, parse_command

ARNS = {"prod": "acs:ram::1234567890123456:role/vpn-bot", "staging": "acs:ram::6543210987654321:role/vpn-bot"}


def _settings(**extra: object):  # type: ignore[no-untyped-def]
    accounts = ",".join(f"{k}={v}" for k, v in ARNS.items())
    return explicit_settings(approvers=["*"], accounts=accounts, **extra)


def test_single_account_bot_needs_no_choice_and_refuses_one() -> None:
    settings = explicit_settings(approvers=["*"])
    assert choose_account(settings, channel_id="C0ANY", asked=None) == ""
    with pytest.raises(UsageError, match="one Alibaba Cloud account"):
        choose_account(settings, channel_id="C0ANY", asked="prod")


def test_an_unbound_channel_with_several_accounts_must_choose() -> None:
    settings = _settings()
    with pytest.raises(UsageError) as which:
        choose_account(settings, channel_id="C0ANY", asked=None)
    assert (
        which.value.friendly
        == "Which Alibaba Cloud account? Add `account=NAME`; you may use: `prod`, `staging`."
    )
    assert choose_account(settings, channel_id="C0ANY", asked="staging") == "staging"
    with pytest.raises(UsageError, match="There is no account `dev`"):
        choose_account(settings, channel_id="C0ANY", asked="dev")


def test_a_bound_channel_defaults_to_its_account_and_refuses_others() -> None:
    settings = _settings(channel_accounts="C0PROD=prod,C0OPS=prod,C0OPS=staging")
    assert choose_account(settings, channel_id="C0PROD", asked=None) == "prod"
    assert choose_account(settings, channel_id="C0PROD", asked="prod") == "prod"
    with pytest.raises(NotAllowed, match="may act only on the account `prod`, not `staging`"):
        choose_account(settings, channel_id="C0PROD", asked="staging")
    with pytest.raises(UsageError, match="this channel may use: `prod`, `staging`"):
        choose_account(settings, channel_id="C0OPS", asked=None)
    assert choose_account(settings, channel_id="C0OPS", asked="staging") == "staging"


@pytest.mark.parametrize(
    "text",
    [
        "delete vco-bp1abc2def3gh account=prod",
        "delete --account prod vco-bp1abc2def3gh",
        "delete vco-bp1abc2def3gh --account=PROD",
    ],
)
def test_the_account_is_parsed_anywhere_in_the_command(text: str) -> None:
    assert parse_command(text, default_region="cn-hangzhou") == DeleteCommand(
        vco_id="vco-bp1abc2def3gh", region="cn-hangzhou", account="prod"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("delete vco-bp1abc2def3gh account=", "needs a value"),
        ("delete vco-bp1abc2def3gh --account", "needs a value"),
        ("delete vco-bp1abc2def3gh account=a account=b", "given twice"),
        ("delete vco-bp1abc2def3gh account=<!channel>", "is not an account name"),
    ],
)
def test_bad_account_options_are_explained(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_command(text, default_region="cn-hangzhou")


def _valid(message: dict) -> None:  # type: ignore[type-arg]
    walk_limits(message)
    for raw in message["blocks"]:
        parsed = Block.parse(raw)
        assert parsed is not None
        parsed.validate_json()


LONGEST = "a" * 32  # the longest account name VPNBOT_ACCOUNTS accepts


@pytest.mark.parametrize("state", list(OpState))
def test_the_account_is_on_every_card_next_to_the_region(state: OpState) -> None:
    message = build_parent(make_op(state=state, account=LONGEST))
    _valid(message)
    first_section = next(b for b in message["blocks"] if b["type"] == "section")["text"]["text"]
    assert first_section.startswith(f":office: *Account `{LONGEST}`* · region `cn-hangzhou`")
    details = next(b for b in message["blocks"] if b.get("fields"))
    assert f"*Account*\n`{LONGEST}`" in [f["text"] for f in details["fields"]]


def test_single_account_cards_do_not_mention_accounts() -> None:
    message = build_confirmation(make_op())
    assert "Account" not in str(message)


def test_confirmation_fallback_and_dialog_name_the_account() -> None:
    message = build_confirmation(make_op(account="staging"))
    assert "in account staging, region cn-hangzhou" in message["text"]
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert "in account staging" in actions["elements"][0]["confirm"]["text"]["text"]


def test_history_and_acks_name_the_account() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    history = build_history(
        [AuditEntry(at=now, action="approved", actor_id="U0BOB", account="prod")], now=now
    )
    _valid(history)
    assert "account `prod`" in str(history)
    ack = build_looking_up("vco-bp1abc2def3gh", "cn-hangzhou", "staging")
    _valid(ack)
    assert "account `staging`, region `cn-hangzhou`" in ack["text"]
    _valid(build_refusal("Which Alibaba Cloud account? Add `account=NAME`; you may use: `prod`."))


def test_home_names_the_account_of_each_operation() -> None:
    from datetime import UTC, datetime

    from slack_sdk.models.views import View

    from bot.slack.blocks.views import build_home

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    op = make_op(state=OpState.WAITING_GATEWAY, account=LONGEST)
    view = build_home(pending=[], running=[op], finished=[make_op()], links={}, now=now)
    View(**view).validate_json()
    text = str(view)
    assert f"`{LONGEST}` / `cn-hangzhou`" in text
    assert text.count(" / `cn-hangzhou`") == 1  # the single-account operation shows its region only


def test_help_names_the_accounts_only_with_several() -> None:
    from bot.slack.blocks import build_usage

    plain = build_usage()
    assert "account" not in str(plain).lower()
    several = build_usage(accounts=("prod", "staging"))
    _valid(several)
    assert "here you may use `prod`, `staging`." in str(several)
    bound = build_usage(error="oops", accounts=("prod",))
    _valid(bound)
    assert "(`prod` when you give none)" in str(bound)
