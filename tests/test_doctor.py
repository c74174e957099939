"""``vpn-bot doctor`` against the real loopback stand-ins: Slack Web API, VPC sandbox, SQLite."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e.support import child_env, free_port, run_to_exit
from pgtools import fresh_postgres_database
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from bot.cloud.client import VpcClient
from bot.cloud.codes import ERROR_TABLE
from bot.cloud.credentials import ChainCredentialsProvider
from bot.config import Settings, explicit_settings
from bot.doctor import PROBE_VCO_ID, RAM_ACTIONS, DoctorClients, run_doctor
from bot.doctor.permissions import ALLOWED_ANSWERS, DENIED_ANSWERS
from bot.errors import CloudError
from bot.sandbox.slack import SlackStandin, start_slack_standin
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.store import SCHEMA_VERSION, Store, async_url

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


async def doctor(
    settings: Settings, clients: DoctorClients | None = None
) -> tuple[int, str, dict[str, tuple[str, str]]]:
    """Run the doctor; return the exit status, the text, and {row name: (status, row text with fix)}."""
    out = io.StringIO()
    code = await run_doctor(settings, out=out, clients=clients)
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


def files(folder: Path) -> dict[str, int]:
    """Each file in ``folder`` with its modification time."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


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
    for name in ("auth.test", "Bot scopes", "User group S0NETADM", "Credentials", "Signature", "Database"):
        assert name in rows
    assert all(action in rows for action in RAM_ACTIONS)
    assert "nothing is deleted" in rows["vpc:DeleteVpnConnection"][1]
    assert "no database yet; `serve` will create it" in rows["Database"][1]
    assert files(tmp_path) == {}  # the doctor created no database
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
    assert rows["Credentials"][0] == "PASS"
    status, row = rows["Signature"]
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
    assert "nothing accepts connections" in row
    assert rows["auth.test"][0] == "PASS"
    assert rows["vpc:DeleteVpnConnection"][0] == "PASS"
    assert "Traceback" not in text
    assert_no_secrets(text)


async def test_unset_approvers_fail_as_serve_would(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    code, _text, rows = await doctor(make_settings(standin, sandbox, tmp_path, approvers=[]))

    assert code == 1
    status, row = rows["Approvers"]
    assert status == "FAIL"
    assert "refuses to start" in row
    assert "VPNBOT_APPROVERS" in row
    assert "User group S0NETADM" not in rows


async def test_anyone_may_approve_is_a_warning(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    code, _text, rows = await doctor(make_settings(standin, sandbox, tmp_path, approvers=["*"]))

    assert code == 0
    status, row = rows["Approvers"]
    assert status == "WARN"
    assert "anyone who sees the confirmation may approve" in row


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
    assert rows["Credentials"][0] == "FAIL"
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in rows["Credentials"][1]
    assert rows["auth.test"][0] == "SKIP"
    assert rows["Signature"][0] == "SKIP"
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


# --- credentials --------------------------------------------------------------------------------


def uri_config(url: str) -> Any:
    """An ``alibabacloud_credentials`` Config that reads the key from a credentials URI."""
    from alibabacloud_credentials.models import Config

    return Config(type="credentials_uri", credentials_uri=url)


@contextlib.asynccontextmanager
async def chain_clients(
    settings: Settings, standin: SlackStandin, credentials_uri: str
) -> AsyncIterator[DoctorClients]:
    """The bot's clients, with the Alibaba credential chain reading a credentials URI."""
    provider = ChainCredentialsProvider(uri_config(credentials_uri))
    slack = AsyncWebClient(token=BOT_TOKEN, base_url=standin.url + "/")
    async with VpcClient.from_settings(settings, credentials=provider) as vpc:
        try:
            yield DoctorClients(slack=slack, vpc=vpc, credentials=provider)
        finally:
            if slack.session is not None:
                await slack.session.close()


async def test_no_credentials_found_fails_with_the_fix_and_no_library_noise(
    standin: SlackStandin,
    sandbox: RunningSandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(standin, sandbox, tmp_path, access_key_id=None, access_key_secret=None)
    nothing_there = "http://127.0.0.1:1/credentials"  # refused: the chain finds no key
    # Without the doctor, the credential library logs the failure with its traceback…
    with caplog.at_level(logging.INFO), pytest.raises(CloudError, match="no Alibaba Cloud credentials"):
        await ChainCredentialsProvider(uri_config(nothing_there)).get()
    assert any(r.name == "credentials" for r in caplog.records)
    caplog.clear()
    capfd.readouterr()

    with caplog.at_level(logging.INFO):
        async with chain_clients(settings, standin, nothing_there) as clients:
            code, _, rows = await doctor(settings, clients)

    assert code == 1
    status, row = rows["Credentials"]
    assert status == "FAIL"
    assert "no Alibaba Cloud credentials found" in row
    assert "fix: Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET" in row
    assert rows["Signature"][0] == "SKIP"
    assert sandbox.state.requests == []
    # …and with it, none of that reaches a handler or the terminal.
    assert not [r for r in caplog.records if r.name == "credentials"]
    assert "Traceback" not in capfd.readouterr().err


async def test_credentials_from_the_chain_pass(standin: SlackStandin, tmp_path: Path) -> None:
    from aiohttp import web

    async def sts(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "Code": "Success",
                "AccessKeyId": DEMO_ACCESS_KEY_ID,
                "AccessKeySecret": DEMO_ACCESS_KEY_SECRET,
                "SecurityToken": "sts-token-doctor",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )

    app = web.Application()
    app.router.add_get("/credentials", sts)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with await start_vpc_sandbox(security_token="sts-token-doctor") as sandbox:
            settings = make_settings(standin, sandbox, tmp_path, access_key_id=None, access_key_secret=None)
            async with chain_clients(settings, standin, f"http://127.0.0.1:{port}/credentials") as clients:
                _, text, rows = await doctor(settings, clients)
    finally:
        await runner.cleanup()

    assert rows["Credentials"][0] == "PASS", text
    assert "credential chain" in rows["Credentials"][1]
    assert rows["Signature"][0] == "PASS", text


# --- the four-eyes rule ---------------------------------------------------------------------------


async def test_one_approver_with_four_eyes_warns_only_about_their_own_requests(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    settings = make_settings(standin, sandbox, tmp_path, approvers=["U0BOB"], require_second_approver=True)

    code, _, rows = await doctor(settings)

    assert code == 0
    status, row = rows["Approvers"]
    assert status == "WARN"
    assert "the single approver cannot approve their own requests" in row
    assert "can approve others' requests" in row
    assert "no deletion can ever be approved" not in row


async def test_one_approver_who_never_requests_passes_with_four_eyes(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    settings = make_settings(
        standin, sandbox, tmp_path, approvers=["U0BOB"], requesters=["U0ALICE"], require_second_approver=True
    )

    _, _, rows = await doctor(settings)

    status, row = rows["Approvers"]
    assert status == "PASS"
    assert "every request can be approved" in row


# --- the database, read only ------------------------------------------------------------------------


async def test_migrated_sqlite_is_read_without_touching_its_files(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = await Store.open(url)
    await store.close()
    before = files(tmp_path)

    _, _, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    status, row = rows["Database"]
    assert status == "PASS"
    assert f"schema version {SCHEMA_VERSION} (up to date)" in row
    assert files(tmp_path) == before


async def test_sqlite_in_use_by_a_running_bot_is_read_too(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        names = set(files(tmp_path))
        _, _, rows = await doctor(make_settings(standin, sandbox, tmp_path))
        assert set(files(tmp_path)) == names
    finally:
        await store.close()

    assert rows["Database"][0] == "PASS"
    assert f"schema version {SCHEMA_VERSION} (up to date)" in rows["Database"][1]


async def test_sqlite_directory_missing_fails_and_creates_nothing(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/db.sqlite"

    code, _, rows = await doctor(make_settings(standin, sandbox, tmp_path, database_url=url))

    assert code == 1
    status, row = rows["Database"]
    assert status == "FAIL"
    assert "does not exist" in row
    assert not (tmp_path / "no").exists()


async def test_a_file_that_is_not_sqlite_fails_by_its_error_code(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"this is not a database, just some bytes " * 200)

    code, _, rows = await doctor(make_settings(standin, sandbox, tmp_path))

    assert code == 1
    status, row = rows["Database"]
    assert status == "FAIL"
    assert "not a SQLite database" in row


@pytest.mark.postgres
async def test_empty_postgres_is_reported_not_migrated(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    async with fresh_postgres_database() as url:
        _, _, rows = await doctor(make_settings(standin, sandbox, tmp_path, database_url=url))

        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        finally:
            await engine.dispose()

    status, row = rows["Database"]
    assert status == "PASS"
    assert "no tables yet; `serve` will create them" in row
    assert tables == []


@pytest.mark.postgres
async def test_unknown_postgres_user_is_told_by_the_driver_error(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    async with fresh_postgres_database() as good:
        host_and_db = good.rpartition("@")[2]
        url = f"postgresql://nosuchuser:{DB_PASSWORD}@{host_and_db}"
        _, text, rows = await doctor(make_settings(standin, sandbox, tmp_path, database_url=url))

    status, row = rows["Database"]
    assert status == "FAIL"
    assert "PostgreSQL refused the user or password" in row
    assert_no_secrets(text)


# --- Alibaba answers are read through the error table ------------------------------------------------


def test_probe_answers_are_rows_of_the_error_table() -> None:
    assert ALLOWED_ANSWERS.issubset(ERROR_TABLE)
    assert DENIED_ANSWERS.issubset(ERROR_TABLE)


async def test_throttled_probe_is_a_warning_to_run_again(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    sandbox.state.faults.add(action="DescribeVpnGateway", code="Throttling.User", times=20)
    settings = make_settings(standin, sandbox, tmp_path, api_deadline_seconds=1.0)

    _, _, rows = await doctor(settings)

    status, row = rows["vpc:DescribeVpnGateway"]
    assert status == "WARN"
    assert "run the doctor again" in row


# --- the command ---------------------------------------------------------------------------------------


@pytest.mark.process
async def test_doctor_in_an_empty_directory_creates_nothing(tmp_path: Path) -> None:
    """`vpn-bot doctor` with no settings at all: FAIL rows, the database line, no file, no noise."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    # Off ECS: the chain must not wait for a metadata service the test cannot reach.
    env = child_env(home, ALIBABA_CLOUD_ECS_METADATA_DISABLED="true")

    status, stdout, stderr = await run_to_exit([sys.executable, "-m", "bot", "doctor"], env=env, cwd=work)

    assert status == 1
    assert "sqlite:///vpn-bot.db: no database yet; `serve` will create it." in stdout
    assert re.search(r"FAIL  Credentials +no Alibaba Cloud credentials found", stdout)
    assert files(work) == {}
    assert stderr == ""


async def test_several_accounts_assume_each_role_and_probe_through_it(
    standin: SlackStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prod's role is assumed and every permission passes through it; staging's role does not
    exist: its AssumeRole row fails with the fix, its probes are skipped; nothing is deleted."""
    from bot.sandbox.sts import KeyRing, SandboxAccount, SandboxRole, start_sts_sandbox
    from bot.sandbox.vpc_state import SandboxState

    keys = KeyRing()
    prod = SandboxAccount("1000000000000001", SandboxState(), {"vpn-bot": SandboxRole("vpn-bot")})
    staging = SandboxAccount("1000000000000002", SandboxState(seed=False), {})
    accounts = {a.uid: a for a in (prod, staging)}
    async with await start_vpc_sandbox(keys=keys, accounts={u: a.state for u, a in accounts.items()}) as vpc:
        sts = await start_sts_sandbox(keys=keys, accounts=accounts)
        try:
            monkeypatch.setenv("SSL_CERT_FILE", sts.ca_file)
            settings = make_settings(
                standin,
                vpc,
                tmp_path,
                accounts=f"prod={prod.role_arn('vpn-bot')},staging={staging.role_arn('vpn-bot')}",
                sts_endpoint=sts.endpoint,
            )
            code, text, rows = await doctor(settings)
        finally:
            await sts.close()
    assert code == 1, text
    assert rows["[prod] AssumeRole"][0] == "PASS"
    assert all(rows[f"[prod] {action}"][0] == "PASS" for action in RAM_ACTIONS), text
    status, line = rows["[staging] AssumeRole"]
    assert status == "FAIL"
    assert "EntityNotExist.Role" in line
    assert "trust policy" in line
    assert rows["[staging] vpc:DeleteVpnConnection"][0] == "SKIP"
    # The bot's own key is not probed for VPC permissions: it only assumes roles.
    assert "vpc:DescribeRegions" not in rows
    assert not vpc.state.requests
    assert [r.params["VpnConnectionId"] for r in prod.state.calls("DeleteVpnConnection")] == [PROBE_VCO_ID]
    assert_no_secrets(text)


@pytest.mark.parametrize(
    ("channel", "status", "needle"),
    [
        ("C0AUDIT", "PASS", "#vpn-audit, one line per decision (the bot is a member)"),
        ("C0RANDOM", "PASS", "chat:write.public"),
        ("G0SECRET", "FAIL", "gone, or private without the bot"),
        ("C0GONE", "FAIL", "Slack shows the bot no channel C0GONE"),
    ],
)
async def test_the_audit_channel_and_the_escalation_group_are_checked(
    standin: SlackStandin, sandbox: RunningSandbox, tmp_path: Path, channel: str, status: str, needle: str
) -> None:
    settings = make_settings(standin, sandbox, tmp_path, audit_channel=channel, escalate_to="S0NETADM")
    _, _, rows = await doctor(settings)
    got, text = rows[f"Audit channel {channel}"]
    assert got == status, text
    assert needle in text
    group_status, group_text = rows["User group S0NETADM"]
    assert group_status == "PASS"
    assert "VPNBOT_ESCALATE_TO" in group_text
