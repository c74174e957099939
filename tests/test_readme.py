"""The front door tells the truth: the README's commands, settings and codes match the code."""

from __future__ import annotations

import re
from pathlib import Path

from bot.cloud.codes import ERROR_TABLE
from bot.config import Settings, load_settings

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
    assert tests.replace("pip install -e", "pip install -q -e") in ci


def test_every_setting_is_documented_in_readme_and_env_example() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in _env_names():
        assert f"`{name}`" in README, name
        assert name in example, name


def test_env_example_is_valid_settings() -> None:
    """Every uncommented line of .env.example parses as a valid setting."""
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    fields = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
    settings = load_settings(**{fields[k]: v for k, v in values.items() if v != ""})
    assert settings.default_region == "cn-hangzhou"


def test_every_error_code_has_a_troubleshooting_row() -> None:
    section = README.split("## Troubleshooting by error code", 1)[1].split("\n## ", 1)[0]
    for code in ERROR_TABLE:
        assert f"`{code}`" in section, code
