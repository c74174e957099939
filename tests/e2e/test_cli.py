"""The ``vpn-bot`` command as a user runs it: sandbox, demo, doctor and bare invocations."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest
import yaml

from bot.__main__ import _parser
from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU, Fault, SandboxState

from .support import BotProcess, child_env, free_port, run_to_exit


async def _run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    return await run_to_exit(
        [sys.executable, "-m", "bot", *args], env=child_env(tmp_path, **env), cwd=tmp_path
    )


def _sandbox_command(port: int, *args: str, sigint_ignored: bool = False) -> list[str]:
    command = [sys.executable, "-m", "bot", "sandbox", "--port", str(port), *args]
    if sigint_ignored:
        # What a background job without job control gets (`cmd &` in a script, some CI runners):
        # SIGINT ignored, inherited through exec. Python then never raises KeyboardInterrupt.
        return ["/bin/sh", "-c", "trap '' INT; exec \"$@\"", "sh", *command]
    return command


async def _read_banner(process: asyncio.subprocess.Process, last: str) -> str:
    """The sandbox's start-up lines, up to the one containing ``last``."""
    assert process.stdout is not None
    banner = ""
    async with asyncio.timeout(30):
        while last not in banner:
            line = await process.stdout.readline()
            assert line, f"the sandbox exited before printing its banner:\n{banner}"
            banner += line.decode()
    return banner


@pytest.mark.process
@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["foreground", "background-job"])
async def test_sandbox_command_serves_the_vpc_api_until_interrupted(
    tmp_path: Path, sigint_ignored: bool
) -> None:
    """`vpn-bot sandbox --port N` prints where to connect and the demo keys, answers signed calls,
    and stops cleanly on SIGINT, also when started with SIGINT ignored (the old flaky failure:
    the sandbox waited for a KeyboardInterrupt that such a process never gets)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *_sandbox_command(port, "--update-seconds", "0.2", sigint_ignored=sigint_ignored),
        env=child_env(tmp_path),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = await _read_banner(process, "ALIBABA_CLOUD_ACCESS_KEY_SECRET=")
        assert f"export VPNBOT_VPC_ENDPOINT=http://127.0.0.1:{port}" in banner
        assert DEMO_ACCESS_KEY_ID in banner

        creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
        async with VpcClient(creds, endpoint=f"http://127.0.0.1:{port}") as client:
            detail = await client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        assert detail.vpn_connection_id == SEED_VCO_HANGZHOU

        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0
        assert "Traceback" not in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _exports(banner: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of the banner, as a shell would read them."""
    found = {}
    for line in banner.splitlines():
        if line.strip().startswith("export "):
            name, _, value = line.strip().removeprefix("export ").partition("=")
            found[name] = shlex.split(value)[0]
    return found


@pytest.mark.process
async def test_sandbox_with_slack_prints_the_exports_a_bot_runs_on(tmp_path: Path) -> None:
    """`vpn-bot sandbox --slack`: the printed exports are enough for `vpn-bot serve` to start
    against both stand-ins (auth.test answered, so no "unreachable" warning) and stop on SIGTERM."""
    port, slack_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *_sandbox_command(port, "--slack", "--slack-port", str(slack_port)),
        env=child_env(tmp_path),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        exports = _exports(await _read_banner(process, "VPNBOT_APPROVERS="))
        assert exports["VPNBOT_SLACK_API_URL"] == f"http://127.0.0.1:{slack_port}/api/"
        assert exports["VPNBOT_VPC_ENDPOINT"] == f"http://127.0.0.1:{port}"
        assert set(exports) >= {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_ID"}

        bot = BotProcess(
            env=child_env(tmp_path, **exports, VPNBOT_LOG_FORMAT="text"),
            cwd=tmp_path,
            log_path=tmp_path / "bot.log",
        )
        try:
            await bot.wait_healthy()
            bot.terminate()
            assert await bot.wait_exit(within=10) == 0, bot.log()
            log = bot.log()
        finally:
            bot.close()
        assert "unreachable" not in log
        assert "anyone who can see a confirmation may approve" in log  # the * opt-in is announced
        assert "Traceback" not in log
        process.terminate()
        await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_every_subcommand_and_option_has_help_with_its_default() -> None:
    """The parser itself: each subcommand has help, each option's help names its default."""
    parser = _parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subcommands._choices_actions}
    assert set(helps) == {"serve", "sandbox", "demo", "doctor", "audit"}
    assert all(helps.values())
    for name, sub in subcommands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings}"
            assert "(default:" in action.help, f"{name} {action.option_strings}"


@pytest.mark.process
async def test_sandbox_help_documents_the_faults_file(tmp_path: Path) -> None:
    status, out, _ = await _run(tmp_path, "sandbox", "--help")
    assert status == 0
    for field in ("action", "params", "after, times", "latency", "code", "http_status", "drop", "non_json"):
        assert f"\n  {field} " in out, field  # the faults file format, field by field
    assert "after_processing" in out
    assert "example:" in out


@pytest.mark.process
async def test_demo_command_exits_zero(tmp_path: Path) -> None:
    """`vpn-bot demo` runs the whole story as a process and prints the transcript, no traceback."""
    status, stdout, stderr = await _run(tmp_path, "demo")
    assert status == 0, stderr
    assert "Deleted in" in stdout
    assert "Traceback" not in stdout + stderr


@pytest.mark.process
async def test_doctor_with_bad_settings_exits_two_without_traceback(tmp_path: Path) -> None:
    status, _, stderr = await _run(tmp_path, "doctor", VPNBOT_DEFAULT_REGION="Not A Region")
    assert status == 2
    assert "VPNBOT_DEFAULT_REGION" in stderr
    assert "Traceback" not in stderr


@pytest.mark.process
async def test_no_command_prints_help_and_exits_two(tmp_path: Path) -> None:
    status, stdout, _ = await _run(tmp_path)
    assert status == 2
    assert "serve" in stdout
    assert "demo" in stdout


def test_readme_documents_every_fault_field_and_its_example_loads() -> None:
    """The README's faults file table names every field the sandbox accepts; its example loads."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("The faults file (`--faults`)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", section, flags=re.M))
    names = {name for pair in documented for name in pair if name}
    accepted = {f.name for f in dataclasses.fields(Fault)} - {"id", "seen", "fired"}
    assert names == accepted
    example = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert example is not None
    assert len(SandboxState().faults.load(yaml.safe_load(example.group(1)))) == 2


@pytest.mark.process
async def test_sandbox_with_accounts_serves_sts_over_tls_for_two_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vpn-bot sandbox --accounts`: the printed exports (STS endpoint, VPNBOT_ACCOUNTS, the CA file)
    are enough to assume each account's role and see that account's connections only."""
    from bot.cloud.accounts import AccountClients

    port, sts_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *_sandbox_command(port, "--accounts", "--sts-port", str(sts_port)),
        env=child_env(tmp_path),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        exports = _exports(await _read_banner(process, "REQUESTS_CA_BUNDLE="))
        assert exports["VPNBOT_STS_ENDPOINT"] == f"127.0.0.1:{sts_port}"
        assert exports["SSL_CERT_FILE"] == exports["REQUESTS_CA_BUNDLE"]
        monkeypatch.setenv("SSL_CERT_FILE", exports["SSL_CERT_FILE"])
        roles = dict(part.split("=", 1) for part in exports["VPNBOT_ACCOUNTS"].split(","))
        assert set(roles) == {"prod", "staging"}

        base = StaticCredentialsProvider(
            Credentials(exports["ALIBABA_CLOUD_ACCESS_KEY_ID"], exports["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])
        )
        async with VpcClient(base, endpoint=exports["VPNBOT_VPC_ENDPOINT"]) as client:
            accounts = AccountClients(
                base=client, base_credentials=base, roles=roles, sts_endpoint=exports["VPNBOT_STS_ENDPOINT"]
            )
            prod = {c.vpn_connection_id for c in await client.describe_vpn_connections(region=SEED_REGION)}
            staging = accounts.client("staging")
            seen = {c.vpn_connection_id for c in await staging.describe_vpn_connections(region=SEED_REGION)}
            via_prod = accounts.client("prod")
            prod_seen = {
                c.vpn_connection_id for c in await via_prod.describe_vpn_connections(region=SEED_REGION)
            }
        assert SEED_VCO_HANGZHOU in prod_seen
        assert prod_seen == prod  # prod is the usual seeded world
        assert len(seen) == 3
        assert not seen & prod_seen

        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0
        assert "Traceback" not in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
