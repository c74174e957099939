"""reason=… in /vpn delete, and the reason rules (VPNBOT_REQUIRE_REASON, VPNBOT_TICKET_PATTERN)."""

from __future__ import annotations

import pytest

from bot.config import explicit_settings, load_settings
from bot.errors import ConfigError, NotAllowed, UsageError
from bot.slack.parsing import DeleteCommand, PickCommand, parse_command
from bot.slack.reason import check_reason, split_reason

VCO = "vco-bp1abc2def3gh"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f'delete {VCO} reason="CHG-1 site closed"', "CHG-1 site closed"),
        (f"delete {VCO} reason='CHG-1 site closed' cn-shanghai", "CHG-1 site closed"),
        (f"delete {VCO} --reason “CHG-1 site  closed”", "CHG-1 site closed"),
        (f"delete {VCO} --reason=CHG-1", "CHG-1"),
        (f"delete --reason CHG-1 {VCO}", "CHG-1"),
        (f"delete {VCO} REASON=&lt;b&gt;&amp;", "<b>&"),
    ],
)
def test_reason_forms(text: str, reason: str) -> None:
    parsed = parse_command(text, default_region="cn-hangzhou")
    assert isinstance(parsed, DeleteCommand)
    assert parsed.vco_id == VCO
    assert parsed.reason == reason


def test_the_region_and_account_still_parse_around_a_reason() -> None:
    parsed = parse_command(
        f'delete {VCO} reason="a b" cn-shanghai account=prod', default_region="cn-hangzhou"
    )
    assert parsed == DeleteCommand(vco_id=VCO, region="cn-shanghai", account="prod", reason="a b")


def test_a_reason_fills_the_picker() -> None:
    parsed = parse_command('delete reason="CHG-2 x"', default_region="cn-hangzhou")
    assert parsed == PickCommand(region="cn-hangzhou", reason="CHG-2 x")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (f"delete {VCO} reason=", "needs a value"),
        (f'delete {VCO} reason=""', "empty"),
        (f"delete {VCO} reason=a --reason b", "twice"),
        (f"delete {VCO} reason={'x' * 501}", "too long"),
        ("history 5 reason=x", "delete"),
        (f"delete {VCO} reason=two words", 'goes in quotes: `reason="…"`'),
    ],
)
def test_bad_reasons_are_explained(text: str, said: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text, default_region="cn-hangzhou")
    assert said in caught.value.friendly


def test_split_reason_leaves_other_words_alone() -> None:
    assert split_reason(f"delete {VCO} region=cn-shanghai") == (f"delete {VCO} region=cn-shanghai", None)
    assert split_reason(f"delete {VCO} treason=x")[1] is None


def test_rules_per_account() -> None:
    settings = explicit_settings(require_reason=["staging"], ticket_patterns={"prod": "CHG-[0-9]+"})
    assert check_reason(settings, account="dev", reason=None) is None
    assert check_reason(settings, account="staging", reason="cleanup") is None
    assert check_reason(settings, account="prod", reason="see CHG-42, CHG-43") == "CHG-42"
    with pytest.raises(NotAllowed, match="need a reason"):
        check_reason(settings, account="staging", reason=None)
    with pytest.raises(NotAllowed, match="CHG-"):
        check_reason(settings, account="prod", reason=None)
    with pytest.raises(NotAllowed, match="none was found"):
        check_reason(settings, account="prod", reason="no ticket")


def test_star_applies_to_the_single_account_bot() -> None:
    settings = explicit_settings(require_reason=["*"], ticket_patterns={"*": "INC-[0-9]+"})
    assert check_reason(settings, account="", reason="INC-7") == "INC-7"
    with pytest.raises(NotAllowed):
        check_reason(settings, account="", reason="nothing")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_REQUIRE_REASON", "true")
    monkeypatch.setenv("VPNBOT_TICKET_PATTERN", "prod=CHG-[0-9]+,*=INC-[0-9]+")
    settings = load_settings(_env_file=None)
    assert settings.reason_required("") is True
    assert settings.ticket_pattern("prod") == "CHG-[0-9]+"
    assert settings.ticket_pattern("staging") == "INC-[0-9]+"
    monkeypatch.setenv("VPNBOT_REQUIRE_REASON", "prod,staging")
    settings = load_settings(_env_file=None)
    assert settings.reason_required("prod") is True
    assert settings.reason_required("") is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VPNBOT_REQUIRE_REASON", "Prod!"),
        ("VPNBOT_TICKET_PATTERN", "prod=CHG-[0-9"),
        ("VPNBOT_TICKET_PATTERN", "CHG-[0-9]+"),
        ("VPNBOT_TICKET_PATTERN", "prod=a,prod=b"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None)
