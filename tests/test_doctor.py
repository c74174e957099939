"""``vpn-bot doctor`` against the real loopback stand-ins: Slack Web API, VPC sandbox, SQLite."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, explicit_settings
from bot.doctor import PROBE_VCO_ID, RAM_ACTIONS, run_doctor
from bot.sandbox.slack import SlackStandin, start_slack_standin
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox

BOT_TOKEN = "xoxb-doctor-test-token-1234"
SIGNING_SECRET = "doctor-signing-secret-5678"
DB_PASSWORD = "doctor-db-password-9012"
_ROW = re.compile(r"^  (PASS|WARN|FAIL|SKIP)  (\S.*?)(?:\s{2,}|$)")


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    async with await start_slack_standin(bot_token=BOT_TOKEN) as running:
        yield running


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    async with await start_vpc_sandbox() as running:
        yield running


def make_settings(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": standin.url,
        "access_key_id": DEMO_ACCESS_KEY_ID,
        "access_key_secret": DEMO_ACCESS_KEY_SECRET,
        "vpc_endpoint": sandbox.url,
        "database_url": f"sqlite:///{tmp_path}/db.sqlite",
        "approvers": ["U0BOB", "S0NETADM"],
    }
    values.update(overrides)
    return explicit_settings(**values)


async def doctor(settings: Settings) -> tuple[int, str, dict[str, tuple[str, str]]]:
    """Run the doctor; return the exit status, the text, and {row name: (status, row text with fix)}."""
    out = io.StringIO()
    code = await run_doctor(settings, out=out)
    text = out.getvalue()
    rows: dict[str, tuple[str, str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            current = match.group(2)
            rows[current] = (match.group(1), line)
        elif current is not None and line.startswith(" " * 8) and line.strip():
            status, body = rows[current]
            rows[current] = (status, body + " " + line.strip())
        else:
            current = None
    return code, text, rows


def assert_no_secrets(text: str, *extra: str) -> None:
    for secret in (
        BOT_TOKEN,
        SIGNING_SECRET,
        DEMO_ACCESS_KEY_ID,
        DEMO_ACCESS_KEY_SECRET,
        DB_PASSWORD,
        *extra,
    ):
        assert secret not in text


def world(sandbox: RunningSandbox) -> tuple[set[str], dict[str, tuple[str, str | None]]]:
    """What a deletion would change: the connections and each gateway's status."""
    state = sandbox.state
    state.settle()
    return set(state.connections), {g.id: (g.status, g.pending_delete) for g in state.gateways.values()}


async def test_all_good_passes_every_row_and_deletes_nothing(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    before = world(sandbox)

    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    assert code == 0, text
    assert {status for status, _ in rows.values()} == {"PASS"}, text
    for name in ("auth.test", "Bot scopes", "User group S0NETADM", "Credentials", "Database"):
        assert name in rows
    assert all(action in rows for action in RAM_ACTIONS)
    assert "nothing is deleted" in rows["vpc:DeleteVpnConnection"][1]
    assert "schema version 1" in rows["Database"][1]
    assert world(sandbox) == before
    deletes = sandbox.state.calls("DeleteVpnConnection")
    assert [r.params["VpnConnectionId"] for r in deletes] == [PROBE_VCO_ID]
    assert deletes[0].client_token
    assert_no_secrets(text)


async def test_missing_scope_fails_naming_the_scope_and_the_fix(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    scopes = ("commands", "chat:write", "chat:write.public", "users:read")
    async with await start_slack_standin(bot_token=BOT_TOKEN, scopes=scopes) as standin:
        code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    assert code == 1
    status, row = rows["Bot scopes"]
    assert status == "FAIL"
    assert "missing: usergroups:read" in row
    assert "manifest.yml" in row
    assert "reinstall" in row
    # The approvers' user group cannot be read without that scope either.
    assert rows["User group S0NETADM"][0] == "FAIL"
    assert rows["Credentials"][0] == "PASS"
    assert_no_secrets(text)


async def test_wrong_bot_token_fails_and_the_other_checks_still_run(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    wrong = "xoxb-not-the-right-token-0000"
    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path, slack_bot_token=wrong))

    assert code == 1
    status, row = rows["auth.test"]
    assert status == "FAIL"
    assert "invalid_auth" in row
    assert "SLACK_BOT_TOKEN" in row
    assert rows["Bot scopes"][0] == "SKIP"
    assert rows["vpc:DeleteVpnConnection"][0] == "PASS"
    assert rows["Database"][0] == "PASS"
    assert_no_secrets(text, wrong)


async def test_wrong_access_key_secret_fails_with_the_fix(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    wrong = "NotTheSandboxSecretAtAll0000"
    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path, access_key_secret=wrong))

    assert code == 1
    status, row = rows["Credentials"]
    assert status == "FAIL"
    assert "SignatureDoesNotMatch" in row
    assert "fix:" in row
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in row
    # No permission probe is sent with a key that does not work.
    assert rows["vpc:DeleteVpnConnection"][0] == "SKIP"
    assert sandbox.state.calls("DeleteVpnConnection") == []
    assert rows["auth.test"][0] == "PASS"
    assert_no_secrets(text, wrong)


async def test_forbidden_delete_fails_names_the_action_and_deletes_nothing(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", code="Forbidden.RAM")
    before = world(sandbox)

    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    assert code == 1
    status, row = rows["vpc:DeleteVpnConnection"]
    assert status == "FAIL"
    assert "Forbidden.RAM" in row
    assert "Grant vpc:DeleteVpnConnection" in row
    # The least-privilege policy is printed, with every action the bot uses.
    assert "Least-privilege RAM policy" in text
    assert all(f'"{action}"' in text for action in RAM_ACTIONS)
    assert rows["vpc:DescribeVpnConnection"][0] == "PASS"
    assert world(sandbox) == before
    deletes = sandbox.state.calls("DeleteVpnConnection")
    assert [r.params["VpnConnectionId"] for r in deletes] == [PROBE_VCO_ID]
    assert_no_secrets(text)


async def test_forbidden_read_fails_that_permission_only(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    sandbox.state.faults.add(action="DescribeVpnGateway", code="Forbidden")

    code, _, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    assert code == 1
    assert rows["vpc:DescribeVpnGateway"][0] == "FAIL"
    assert rows["vpc:DeleteVpnConnection"][0] == "PASS"


async def test_unreachable_database_fails_and_the_other_checks_still_run(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:1/x"
    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path, database_url=url))

    assert code == 1
    status, row = rows["Database"]
    assert status == "FAIL"
    assert "postgresql://postgres:***@127.0.0.1:1/x" in row
    assert "VPNBOT_DATABASE_URL" in row
    assert rows["auth.test"][0] == "PASS"
    assert rows["vpc:DeleteVpnConnection"][0] == "PASS"
    assert "Traceback" not in text
    assert_no_secrets(text)


async def test_empty_approvers_warns_but_passes(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    code, text, rows = await doctor(make_settings(standin, sandbox, tmp_path, approvers=[]))

    assert code == 0
    status, row = rows["Approvers"]
    assert status == "WARN"
    assert "anyone who sees the message may approve" in row
    assert "VPNBOT_APPROVERS" in row
    assert "User group S0NETADM" not in rows
    assert "1 warning" in text


async def test_unknown_user_group_fails(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    code, _, rows = await doctor(make_settings(standin, sandbox, tmp_path, approvers=["U0BOB", "S0NOSUCH"]))

    assert code == 1
    status, row = rows["User group S0NOSUCH"]
    assert status == "FAIL"
    assert "VPNBOT_APPROVERS" in row


async def test_missing_settings_fail_without_calling_out(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    settings = make_settings(
        standin,
        sandbox,
        tmp_path,
        slack_bot_token=None,
        slack_signing_secret=None,
        access_key_secret=None,
    )

    code, text, rows = await doctor(settings)

    assert code == 1
    assert rows["Slack bot token"][0] == "FAIL"
    assert rows["Slack connection mode"][0] == "FAIL"
    assert "SLACK_SIGNING_SECRET" in rows["Slack connection mode"][1]
    assert rows["Alibaba credentials source"][0] == "FAIL"
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in rows["Alibaba credentials source"][1]
    assert rows["auth.test"][0] == "SKIP"
    assert rows["Credentials"][0] == "FAIL"
    assert rows["Database"][0] == "PASS"
    assert standin.state.api_calls == []
    assert sandbox.state.requests == []
    assert_no_secrets(text)


async def test_socket_mode_with_app_token_passes(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    app_token = "xapp-1-doctor-test-app-token"
    settings = make_settings(standin, sandbox, tmp_path, slack_signing_secret=None, slack_app_token=app_token)

    code, text, rows = await doctor(settings)

    assert code == 0, text
    assert rows["Slack connection mode"][0] == "PASS"
    assert "Socket Mode" in rows["Slack connection mode"][1]
    assert_no_secrets(text, app_token)
