"""Scale and start-up (issue 14, points 5 and 6).

- **Scale**: N operations already approved, one per gateway, in the database before a real
  ``vpn-bot serve`` process starts; the gateways stay ``updating`` for a while after each delete.
  The process resumes them and drives them to the end, at most ``VPNBOT_MAX_DRIVEN_OPERATIONS``
  (200 by default) at once; the rest wait in the database for room. Reported: the process's peak
  RSS, the Alibaba Cloud request rate the sandbox saw (the busiest 1 s and 10 s windows) against
  the rate limiter's ceiling, and whether all finished. One more row, informative, lifts the limit
  to N so that all are driven at once.
- **Start-up**: from ``exec`` of ``vpn-bot serve`` to its first answered request (``/healthz``),
  the median of a few starts; and the time to import the bot's modules.

    .venv/bin/python benchmarks/scale.py [--quick] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bot.domain import Operation, OpState, VpnConnection, VpnGateway, client_token_for
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET
from bot.sandbox.slack import demo_workspace, start_slack_standin
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_REGION, Connection, Gateway, SandboxState
from bot.store import Store

REPO = Path(__file__).resolve().parents[1]
CEILING = 100.0


@dataclass(frozen=True)
class ScaleResult:
    operations: int
    finished: int
    peak_rss_mb: float
    busiest_1s: int
    busiest_10s_per_s: float
    took_s: float


def _env(home: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VPNBOT_", "ALIBABA_CLOUD_"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **settings}


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _busiest(times: Sequence[float], window: float) -> int:
    """Most requests in any ``window`` seconds (two pointers over the sorted times)."""
    ordered, most, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@contextlib.asynccontextmanager
async def serve(
    home: Path, settings: dict[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A ``vpn-bot serve --http`` child process; yields it and its base URL once it answers."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with socket.socket() as sock:  # the operations listener: not the shared default 9464
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
        env=_env(home, {"VPNBOT_METRICS_PORT": str(metrics_port), **settings}), cwd=home, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _healthy(url: str, proc: asyncio.subprocess.Process, *, within: float) -> float:
    """Seconds until ``/healthz`` answers 200 (polled every 5 ms)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as http:
        while time.perf_counter() - started < within:
            if proc.returncode is not None:
                raise RuntimeError(f"vpn-bot serve exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return time.perf_counter() - started
            await asyncio.sleep(0.005)
    raise TimeoutError("vpn-bot serve did not answer")


def _settings(vpc_url: str, slack_url: str, db_url: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": LOCAL_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": LOCAL_SIGNING_SECRET,
        "VPNBOT_SLACK_API_URL": slack_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "VPNBOT_VPC_ENDPOINT": vpc_url,
        "VPNBOT_DATABASE_URL": db_url,
        "VPNBOT_LOG_LEVEL": "ERROR",
        "VPNBOT_APPROVERS": "*",
        "VPNBOT_API_RATE_PER_SECOND": str(CEILING),
        "VPNBOT_LEASE_SECONDS": "30",
    }


async def _approved(db_url: str, state: SandboxState, n: int) -> None:
    """N approved operations, one per new gateway, as a crashed replica would have left them."""
    now = datetime.now(UTC)
    store = await Store.open(db_url)
    try:
        for i in range(n):
            gw = Gateway(
                f"vpn-scale{i:05d}", SEED_REGION, f"scale-{i}", "vpc-scale", "vsw-scale", "198.51.100.1"
            )
            conn = Connection(
                f"vco-scale{i:05d}", SEED_REGION, gw.id, "cgw-scale", f"scale-{i}", "10.0.0.0/16",
                "192.168.0.0/24", psk="scale-psk",
            )  # fmt: skip
            state.gateways[gw.id] = gw
            state.connections[conn.id] = conn
            op_id = f"scale{i:05d}"
            await store.create_operation(
                op=Operation(
                    id=op_id,
                    state=OpState.APPROVED,
                    region=SEED_REGION,
                    # As the sandbox has it: the approval is bound to what it showed (bot.workflow.binding).
                    connection=VpnConnection(
                        conn.id,
                        SEED_REGION,
                        conn.name,
                        gw.id,
                        conn.customer_gateway_id,
                        conn.status,
                        conn.local_subnet,
                        conn.remote_subnet,
                    ),
                    gateway=VpnGateway(gw.id, SEED_REGION, gw.name, "active"),
                    requester_id="U0ALICE",
                    channel_id="C0VPNOPS",
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(minutes=15),
                    client_token=client_token_for(op_id),
                    approver_id="U0BOB",
                    approved_at=now,
                    deadline_at=now + timedelta(minutes=30),
                )
            )
    finally:
        await store.close()


async def bench_scale(
    n: int, *, update_s: float, db_url: str | None, max_driven: int | None = None
) -> ScaleResult:
    vpc = await start_vpc_sandbox(state=SandboxState(update_seconds=update_s))
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    try:
        with tempfile.TemporaryDirectory(prefix="vpnbot-scale-") as tmp:
            home = Path(tmp)
            url = db_url or f"sqlite:///{home / 'scale.db'}"
            await _approved(url, vpc.state, n)
            vpc.state.requests.clear()
            started = time.perf_counter()
            settings = _settings(vpc.url, slack.url, url)
            if max_driven is not None:
                settings["VPNBOT_MAX_DRIVEN_OPERATIONS"] = str(max_driven)
            async with serve(home, settings) as (proc, base):
                await _healthy(base, proc, within=60)
                store = await Store.open(url)
                try:
                    deadline = time.perf_counter() + 600
                    finished = 0
                    while time.perf_counter() < deadline:
                        done = await store.list_operations(
                            states={OpState.DELETED, OpState.FAILED, OpState.TIMED_OUT}
                        )
                        finished = len(done)
                        if finished >= n:
                            break
                        await asyncio.sleep(0.5)
                    peak = _peak_rss_kb(proc.pid) / 1024
                finally:
                    await store.close()
            took = time.perf_counter() - started
        times = [r.at.timestamp() for r in vpc.state.requests]
        return ScaleResult(
            operations=n,
            finished=finished,
            peak_rss_mb=peak,
            busiest_1s=_busiest(times, 1.0),
            busiest_10s_per_s=_busiest(times, 10.0) / 10,
            took_s=took,
        )
    finally:
        await slack.close()
        await vpc.close()


@contextlib.asynccontextmanager
async def _scratch(server_url: str | None) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database on ``server_url``'s server for the run, dropped after (None: SQLite)."""
    if server_url is None:
        yield None
        return
    import asyncpg  # no stubs; used only for the scratch database

    name = f"vpnbot_scale_{os.getpid()}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server_url.rpartition('/')[0]}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench_startup(runs: int) -> tuple[float, float]:
    """(median seconds from exec to the first answered /healthz, seconds to import the bot)."""
    vpc = await start_vpc_sandbox(state=SandboxState())
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    try:
        starts = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="vpnbot-start-") as tmp:
                home = Path(tmp)
                async with serve(home, _settings(vpc.url, slack.url, f"sqlite:///{home / 's.db'}")) as (
                    proc,
                    base,
                ):
                    starts.append(await _healthy(base, proc, within=30))
    finally:
        await slack.close()
        await vpc.close()
    code = (
        "import time; t = time.perf_counter(); import bot.__main__, bot.app; print(time.perf_counter() - t)"
    )
    out = subprocess.run(  # noqa: S603, ASYNC221 - a fixed interpreter and a fixed script
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return statistics.median(starts), float(out.stdout.strip())


async def amain(quick: bool, postgres: str | None) -> None:
    n, update = (50, 2.0) if quick else (1000, 20.0)
    print("| benchmark | result | goal | met |")
    print("|---|---|---|---|")
    runs = [("SQLite", None, None), ("PostgreSQL", postgres, None)]
    # Informative: every operation driven at once, the per-process limit lifted to N.
    runs.append(("PostgreSQL" if postgres else "SQLite", postgres, n))
    for label, url, max_driven in runs:
        if label == "PostgreSQL" and url is None:
            continue
        async with _scratch(url) as scratch:
            r = await bench_scale(n, update_s=update, db_url=scratch, max_driven=max_driven)
        met = r.finished == n and r.peak_rss_mb < 150 and r.busiest_10s_per_s <= CEILING
        where = f"{label}, all {n} driven at once" if max_driven else f"{label}"
        verdict = ("✅" if met else "❌") if max_driven is None else "(informative)"
        print(
            f"| {n} approved operations on {n} gateways ({where}) | {r.finished}/{n} finished in {r.took_s:.0f} s; "
            f"peak RSS {r.peak_rss_mb:.0f} MB; busiest second {r.busiest_1s} requests, busiest 10 s "
            f"{r.busiest_10s_per_s:.0f}/s (ceiling {CEILING:.0f}/s) | all finish, RSS < 150 MB, rate ≤ ceiling | "
            f"{verdict} |",
            flush=True,
        )
    start, imports = await bench_startup(2 if quick else 5)
    print(
        f"| `vpn-bot serve` start-up | first answered request {start * 1000:.0f} ms after exec (median); "
        f"importing the bot {imports * 1000:.0f} ms | < 1 s | {'✅' if start < 1 else '❌'} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vpn-bot at scale, and its start-up")
    parser.add_argument("--quick", action="store_true", help="50 operations: checks the script works")
    parser.add_argument(
        "--postgres", metavar="URL", help="also run the scale benchmark on this (scratch) database"
    )
    args = parser.parse_args(argv)
    asyncio.run(amain(args.quick, args.postgres))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
