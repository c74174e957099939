"""The ``vpn-bot`` command as a user runs it: sandbox, demo, doctor and bare invocations."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU

from .support import child_env, free_port, run_to_exit


async def _run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    return await run_to_exit(
        [sys.executable, "-m", "bot", *args], env=child_env(tmp_path, **env), cwd=tmp_path
    )


async def test_sandbox_command_serves_the_vpc_api_until_interrupted(tmp_path: Path) -> None:
    """`vpn-bot sandbox --port N` prints where to connect and the demo keys, answers signed calls,
    and stops cleanly on Ctrl-C."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "sandbox",
        "--port",
        str(port),
        "--update-seconds",
        "0.2",
        env=child_env(tmp_path),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = ""
        async with asyncio.timeout(20):
            while "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" not in banner:
                line = await process.stdout.readline()
                assert line, "the sandbox exited before printing its banner"
                banner += line.decode()
        assert f"VPNBOT_VPC_ENDPOINT=http://127.0.0.1:{port}" in banner
        assert DEMO_ACCESS_KEY_ID in banner

        creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
        async with VpcClient(creds, endpoint=f"http://127.0.0.1:{port}") as client:
            connection = await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        assert connection.id == SEED_VCO_HANGZHOU

        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0
        assert "Traceback" not in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_command_exits_zero(tmp_path: Path) -> None:
    """`vpn-bot demo` runs the whole story as a process and prints the transcript, no traceback."""
    status, stdout, stderr = await _run(tmp_path, "demo")
    assert status == 0, stderr
    assert "Deleted in" in stdout
    assert "Traceback" not in stdout + stderr


async def test_doctor_with_bad_settings_exits_two_without_traceback(tmp_path: Path) -> None:
    status, _, stderr = await _run(tmp_path, "doctor", VPNBOT_DEFAULT_REGION="Not A Region")
    assert status == 2
    assert "VPNBOT_DEFAULT_REGION" in stderr
    assert "Traceback" not in stderr


async def test_no_command_prints_help_and_exits_two(tmp_path: Path) -> None:
    status, stdout, _ = await _run(tmp_path)
    assert status == 2
    assert "serve" in stdout
    assert "demo" in stdout
