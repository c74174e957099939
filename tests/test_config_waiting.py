"""Settings of reminders, escalation and the audit channel (issue 26, point 4)."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.workflow import WorkflowConfig


def test_off_by_default_and_empty_values_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VPNBOT_ESCALATE_TO", "VPNBOT_AUDIT_CHANNEL", "VPNBOT_ESCALATE_BEFORE_EXPIRY_SECONDS"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.remind_after_seconds == 0
    assert settings.escalate_to is None
    assert settings.audit_channel is None
    config = WorkflowConfig.from_settings(settings)
    assert (config.remind_after_s, config.escalate_to, config.audit_channel) == (0, None, False)


def test_escalation_defaults_to_a_quarter_of_the_confirmations_lifetime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VPNBOT_CONFIRMATION_TTL_SECONDS", "1200")
    monkeypatch.setenv("VPNBOT_ESCALATE_TO", "S0ONCALL")
    monkeypatch.setenv("VPNBOT_APPROVERS", "U0BOB,S0NETADM")
    config = WorkflowConfig.from_settings(load_settings())
    assert config.escalate_before_s == 300
    assert config.escalate_to == "S0ONCALL"
    assert config.approvers == ("U0BOB", "S0NETADM")
    monkeypatch.setenv("VPNBOT_ESCALATE_BEFORE_EXPIRY_SECONDS", "60")
    monkeypatch.setenv("VPNBOT_AUDIT_CHANNEL", "G0AUDIT")
    settings = load_settings()
    assert WorkflowConfig.from_settings(settings).escalate_before_s == 60
    assert settings.audit_channel == "G0AUDIT"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("VPNBOT_ESCALATE_TO", "U0BOB", "user-group id"),
        ("VPNBOT_ESCALATE_TO", "@oncall", "@oncall"),
        ("VPNBOT_AUDIT_CHANNEL", "#vpn-audit", "#vpn-audit"),
        ("VPNBOT_AUDIT_CHANNEL", "D0ALICE", "channel id"),
        ("VPNBOT_REMIND_AFTER_SECONDS", "-5", "VPNBOT_REMIND_AFTER_SECONDS"),
        ("VPNBOT_ESCALATE_BEFORE_EXPIRY_SECONDS", "0", "greater than 0"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    [problem] = info.value.problems
    assert problem.startswith(f"{name}: ")
    assert needle in problem
