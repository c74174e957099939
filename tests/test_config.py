"""Settings validation at start: load_settings raises one ConfigError naming each bad env var."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from bot.config import ANYONE, PLACEHOLDERS, Settings, load_settings
from bot.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's environment or a ``.env`` file leaks into these tests."""
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for name in names:
            if isinstance(name, str):
                monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # Settings reads ``.env`` from the working directory


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value.problems


def test_defaults_load_without_any_setting() -> None:
    settings = load_settings()
    assert settings.port == 3000
    assert settings.approvers == []


def test_lists_are_comma_separated_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_APPROVERS", " U0BOB, S0NETADM ,W0ENTERPRISE,")
    monkeypatch.setenv("VPNBOT_ALLOWED_REGIONS", "cn-hangzhou,ap-southeast-1")
    monkeypatch.setenv("VPNBOT_ALLOWED_CHANNELS", "C0VPNOPS,G0SECRET")
    monkeypatch.setenv("VPNBOT_REQUIRE_SECOND_APPROVER", "true")
    settings = load_settings()
    assert settings.approvers == ["U0BOB", "S0NETADM", "W0ENTERPRISE"]
    assert settings.allowed_regions == ["cn-hangzhou", "ap-southeast-1"]
    assert settings.allowed_channels == ["C0VPNOPS", "G0SECRET"]
    assert settings.require_second_approver is True


def test_every_problem_is_listed_by_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four bad values at once: one error, four lines, each starting with the variable to fix."""
    problems = _problems(
        monkeypatch,
        VPNBOT_APPROVERS="U0BOB,bob,@carol",
        VPNBOT_DEFAULT_REGION="Hangzhou",
        VPNBOT_VPC_ENDPOINT="vpc.cn-hangzhou.aliyuncs.com",
        VPNBOT_PORT="70000",
    )
    assert len(problems) == 4
    by_name = {p.split(":", 1)[0]: p for p in problems}
    assert set(by_name) == {"VPNBOT_APPROVERS", "VPNBOT_DEFAULT_REGION", "VPNBOT_VPC_ENDPOINT", "VPNBOT_PORT"}
    # Each line says which values are wrong and what a good one looks like.
    assert "bob" in by_name["VPNBOT_APPROVERS"]
    assert "@carol" in by_name["VPNBOT_APPROVERS"]
    assert "U0BOB" not in by_name["VPNBOT_APPROVERS"]
    assert "cn-hangzhou" in by_name["VPNBOT_DEFAULT_REGION"]
    assert "http" in by_name["VPNBOT_VPC_ENDPOINT"]
    assert "65535" in by_name["VPNBOT_PORT"]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("VPNBOT_APPROVERS", "u0bob", "u0bob"),
        ("VPNBOT_REQUESTERS", "C0VPNOPS", "C0VPNOPS"),  # a channel id is not a person
        ("VPNBOT_ALLOWED_CHANNELS", "#vpn-ops", "#vpn-ops"),
        ("VPNBOT_ALLOWED_REGIONS", "cn-hangzhou,mars", "mars"),
        ("VPNBOT_DEFAULT_REGION", "cn_hangzhou", "cn_hangzhou"),
        ("VPNBOT_SLACK_API_URL", "slack.com/api", "slack.com/api"),
        ("VPNBOT_VPC_ENDPOINT", "ftp://vpc.example", "URL"),
        ("VPNBOT_DATABASE_URL", "mysql://db/vpn", "sqlite"),
        ("VPNBOT_PORT", "0", "VPNBOT_PORT"),
        ("VPNBOT_PORT", "http", "integer"),
        ("VPNBOT_POLL_INTERVAL_SECONDS", "-1", "greater than 0"),
        ("VPNBOT_LOG_LEVEL", "LOUD", "DEBUG"),
        ("VPNBOT_LOG_FORMAT", "xml", "json"),
    ],
)
def test_one_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    problems = _problems(monkeypatch, **{name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}: ")
    assert needle in problems[0]


def test_the_error_message_lists_each_problem_on_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_PORT", "99999")
    monkeypatch.setenv("VPNBOT_ALLOWED_REGIONS", "moon,")
    with pytest.raises(ConfigError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert any(line.startswith("  - VPNBOT_PORT: ") for line in lines)
    assert any(line.startswith("  - VPNBOT_ALLOWED_REGIONS: ") for line in lines)


def test_secret_values_never_appear_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad setting next to real secrets: the error names the problem, never the secrets."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-111-222-supersecretvalue")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ak-secret-do-not-print")
    monkeypatch.setenv("VPNBOT_PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = f"{info.value} {info.value.problems!r}"
    assert "supersecretvalue" not in text
    assert "ak-secret-do-not-print" not in text


def test_overrides_are_validated_like_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(approvers=["U0OK", "nobody"])
    assert info.value.problems == [
        "VPNBOT_APPROVERS: not Slack user ids (U…/W…) or user-group ids (S…): nobody"
    ]


# --- placeholders, tokens, approvers and the wording of every problem -------------------------


def test_env_example_placeholders_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(monkeypatch, **PLACEHOLDERS)
    assert [p.split(":", 1)[0] for p in problems] == list(PLACEHOLDERS)
    assert all("is the .env.example placeholder; set" in p for p in problems), problems


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "SLACK_BOT_TOKEN",
            "xapp-1-A0APP-1-abcdef0123456789",
            "SLACK_BOT_TOKEN: 'xapp-…' (masked) is an app-level token; set the Bot User OAuth Token "
            "(xoxb-…, OAuth & Permissions)",
        ),
        (
            "SLACK_BOT_TOKEN",
            "hunter2-not-a-token",
            "SLACK_BOT_TOKEN: the value (masked) is not a bot token; set the Bot User OAuth Token "
            "(xoxb-…, OAuth & Permissions)",
        ),
        (
            "SLACK_APP_TOKEN",
            "xoxb-1-bot-token-in-the-wrong-place",
            "SLACK_APP_TOKEN: 'xoxb-…' (masked) is not an app-level token; set an app-level token "
            "(xapp-…, Basic Information → App-Level Tokens) or unset it",
        ),
    ],
)
def test_a_token_of_the_wrong_kind_is_named_masked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    assert _problems(monkeypatch, **{name: value}) == [expected]


def test_approvers_star_is_the_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_APPROVERS", " * ")
    settings = load_settings()
    assert settings.approvers == [ANYONE]
    assert settings.anyone_may_approve
    assert not load_settings(approvers=["U0BOB"]).anyone_may_approve


def test_approvers_star_cannot_be_mixed_with_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, VPNBOT_APPROVERS="*,U0BOB") == [
        "VPNBOT_APPROVERS: '*' (anyone) cannot be combined with ids; set either * or a list of ids"
    ]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("VPNBOT_PORT", "http", "VPNBOT_PORT: 'http' is not accepted; use an integer from 1 to 65535"),
        ("VPNBOT_PORT", "0", "VPNBOT_PORT: '0' is not accepted; use an integer from 1 to 65535"),
        (
            "VPNBOT_POLL_INTERVAL_SECONDS",
            "-1",
            "VPNBOT_POLL_INTERVAL_SECONDS: '-1' is not accepted; use a number greater than 0 and at most 300",
        ),
        ("VPNBOT_LOG_FORMAT", "xml", "VPNBOT_LOG_FORMAT: 'xml' is not accepted; use 'json' or 'text'"),
        (
            "VPNBOT_REQUIRE_SECOND_APPROVER",
            "maybe",
            "VPNBOT_REQUIRE_SECOND_APPROVER: 'maybe' is not accepted; use true or false",
        ),
        (
            "VPNBOT_LOG_LEVEL",
            "LOUD",
            "VPNBOT_LOG_LEVEL: 'LOUD' is not accepted; use DEBUG, INFO, WARNING or ERROR",
        ),
        (
            "VPNBOT_DATABASE_URL",
            "mysql://root:pw-hidden@db/vpn",
            "VPNBOT_DATABASE_URL: 'mysql' is not accepted; use sqlite:///path/to/file.db or postgresql://…",
        ),
    ],
)
def test_each_line_names_setting_value_and_accepted_form(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """No raw pydantic text ("Input should be…", "String should match pattern…"): our own sentence."""
    assert _problems(monkeypatch, **{name: value}) == [expected]


def test_no_line_is_raw_pydantic_text(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(
        monkeypatch,
        VPNBOT_PORT="x",
        VPNBOT_LEASE_SECONDS="0",
        VPNBOT_API_DEADLINE_SECONDS="soon",
        VPNBOT_BUSY_RETRY_ATTEMPTS="1.5",
        VPNBOT_LOG_FORMAT="yaml",
        VPNBOT_REQUIRE_SECOND_APPROVER="perhaps",
        VPNBOT_MAX_DRIVEN_OPERATIONS="0",
    )
    assert len(problems) == 7
    for line in problems:
        assert "should" not in line.lower(), line
        assert "Value error" not in line, line
        assert "is not accepted; use " in line, line


def test_no_settings_at_all_points_at_socket_mode_for_the_signing_secret() -> None:
    """`serve` with nothing set: the signing-secret line names Socket Mode as the alternative."""
    from bot.app import require_serve_settings

    with pytest.raises(ConfigError) as info:
        require_serve_settings(load_settings(), socket_mode=False)
    by_name = {p.split(":", 1)[0]: p for p in info.value.problems}
    assert set(by_name) == {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "VPNBOT_APPROVERS"}
    assert "SLACK_APP_TOKEN" in by_name["SLACK_SIGNING_SECRET"]
    assert "Socket Mode" in by_name["SLACK_SIGNING_SECRET"]
    assert "VPNBOT_APPROVERS=U0123ABCD,S0456EFGH" in by_name["VPNBOT_APPROVERS"]
    assert "* to let anyone" in by_name["VPNBOT_APPROVERS"]


ARN_PROD = "acs:ram::1234567890123456:role/vpn-bot"
ARN_STAGING = "acs:ram::6543210987654321:role/vpn-bot"


def test_accounts_and_channel_bindings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ACCOUNTS", f" prod={ARN_PROD} , staging={ARN_STAGING}")
    monkeypatch.setenv("VPNBOT_CHANNEL_ACCOUNTS", "C0PROD=prod,C0OPS=prod,C0OPS=staging")
    monkeypatch.setenv("VPNBOT_STS_ENDPOINT", "sts-vpc.cn-hangzhou.aliyuncs.com")
    settings = load_settings()
    assert settings.accounts == {"prod": ARN_PROD, "staging": ARN_STAGING}
    assert settings.channel_accounts == {"C0PROD": ["prod"], "C0OPS": ["prod", "staging"]}
    assert settings.multi_account
    assert settings.sts_endpoint == "sts-vpc.cn-hangzhou.aliyuncs.com"


def test_without_accounts_the_bot_is_single_account() -> None:
    settings = load_settings()
    assert settings.accounts == {}
    assert not settings.multi_account


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"VPNBOT_ACCOUNTS": "prod"}, "is not name=role-ARN"),
        ({"VPNBOT_ACCOUNTS": "Prod!=" + ARN_PROD}, "is not name=role-ARN"),
        ({"VPNBOT_ACCOUNTS": "prod=acs:ram::123:user/bot"}, "is not a RAM role ARN"),
        ({"VPNBOT_ACCOUNTS": f"prod={ARN_PROD},prod={ARN_STAGING}"}, "given twice"),
        ({"VPNBOT_CHANNEL_ACCOUNTS": "C0PROD=prod"}, "needs VPNBOT_ACCOUNTS"),
        (
            {"VPNBOT_ACCOUNTS": f"prod={ARN_PROD}", "VPNBOT_CHANNEL_ACCOUNTS": "C0X=staging"},
            "does not define: staging",
        ),
        (
            {"VPNBOT_ACCOUNTS": f"prod={ARN_PROD}", "VPNBOT_CHANNEL_ACCOUNTS": "general=prod"},
            "CHANNEL_ID=account",
        ),
        ({"VPNBOT_STS_ENDPOINT": "https://sts.aliyuncs.com"}, "no scheme"),
        ({"VPNBOT_STS_DURATION_SECONDS": "60"}, "VPNBOT_STS_DURATION_SECONDS"),
    ],
)
def test_bad_account_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    problems = _problems(monkeypatch, **env)
    assert any(says in p for p in problems), problems
