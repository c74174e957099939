"""The front door tells the truth: the README's commands, settings and codes match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.cloud.codes import ERROR_TABLE
from bot.config import PLACEHOLDERS, Settings, load_settings
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _env_names() -> list[str]:
    return [str(field.validation_alias) for field in Settings.model_fields.values()]


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "vpn-bot demo" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-c requirements.lock.txt" in demo
    assert "-c requirements.lock.txt" in tests
    assert tests.replace("pip install -c", "pip install -q -c") in ci


def test_every_setting_is_documented_in_readme_and_env_example() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in _env_names():
        assert f"`{name}`" in README, name
        assert name in example, name


def test_env_example_is_valid_settings_except_its_placeholders() -> None:
    """Every uncommented line of .env.example parses as a valid setting, except the placeholders,
    which are refused (a copied, unedited file must not start a bot), one line each."""
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    fields = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
    with pytest.raises(ConfigError) as info:
        load_settings(**{fields[k]: v for k, v in values.items() if v != ""})
    assert set(info.value.fields) == {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"}
    assert all(".env.example placeholder" in problem for problem in info.value.problems)
    real = {k: v for k, v in values.items() if v != "" and k not in PLACEHOLDERS}
    settings = load_settings(**{fields[k]: v for k, v in real.items()})
    assert settings.default_region == "cn-hangzhou"


def test_env_example_access_key_lines_are_commented_out_placeholders() -> None:
    """Its own comment says to leave the pair unset for the credential chain: so it ships unset."""
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        assert f"# {name}={PLACEHOLDERS[name]}" in example
        assert f"\n{name}=" not in example


def test_every_error_code_has_a_troubleshooting_row() -> None:
    section = README.split("## Troubleshooting by error code", 1)[1].split("\n## ", 1)[0]
    for code in ERROR_TABLE:
        assert f"`{code}`" in section, code


def _slack_table() -> str:
    start = README.index("## Using it in Slack")
    return README[start : README.index("\n## ", start + 1)]


def test_help_and_the_slack_table_list_the_same_commands_and_options() -> None:
    """`/vpn help` (USAGE_TEXT) and README's "Using it in Slack" name the same commands and options."""
    from bot.slack.blocks.text import USAGE_TEXT

    table = _slack_table()
    rows = [line for line in table.splitlines() if line.startswith("| `/vpn")]
    in_table = {word for row in rows for word in re.findall(r"`/vpn (\w+)", row)}
    in_help = set(re.findall(r"`/vpn (\w+)", USAGE_TEXT))
    assert in_table == in_help == {"delete", "list", "status", "history", "freeze", "unfreeze", "help"}
    # What issues 26 and 27 added: reasons and tickets, run times, quorums, withdrawing, cancelling with a
    # reason, change windows and their override, freezes.
    for option in (
        'reason="',
        '--reason "',
        "VPNBOT_TICKET_PATTERN",
        "at 2026-12-10 02:00 Asia/Shanghai",
        "at now",
        "VPNBOT_APPROVAL_RULES",
        "Withdraw my approval",
        "Override window",
        "freeze 2h",
        "unfreeze",
    ):
        assert option in USAGE_TEXT, option
        assert option in table or option.replace("2h", "<duration>") in table, option
