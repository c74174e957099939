"""/metrics end to end: the real bot over HTTP, scraped and parsed with prometheus_client's parser.

The counts are checked against what the stand-ins themselves recorded, request by request.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tooling import require_tool

from bot.app import BotApp
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_user import SocketModeUser
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    bot_env,
    free_port,
    local_stack,
    ops_listener,
    sandbox_and_slack,
    wait_confirmation,
    wait_parent,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(target: str | BotApp) -> Samples:
    """GET /metrics (from a URL, or from an in-process bot's ops listener) and parse it."""
    if not isinstance(target, str):
        async with ops_listener(target) as url:
            return await scrape(url)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        reply = await http.get(f"{target}/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 for a labelled counter that never counted (it has no series yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_label(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name`` keyed by the values of ``keys``, zeros left out."""
    return {tuple(dict(labels)[k] for k in keys): v for (n, labels), v in samples.items() if n == name and v}


def vpc_requests_seen_by_sandbox(stack: LocalStack) -> dict[tuple[str, str], float]:
    """What the sandbox answered, as (action, ok-or-code) -> count."""
    return dict(Counter((r.action, r.code or "ok") for r in stack.vpc.state.requests))


async def _request(stack: LocalStack, text: str) -> None:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200, reply.body


async def _approve(stack: LocalStack, vco_id: str) -> str:
    confirmation = await wait_confirmation(stack.slack.state, vco_id)
    reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
    assert reply.status == 200
    return confirmation.ts


async def _settled(stack: LocalStack) -> Samples:
    """Scrape once no operation is left unfinished (the store says so, through the gauges)."""
    for _ in range(200):
        samples = await scrape(stack.bot.app)
        if get(samples, "vpnbot_store_up") == 1 and not by_label(
            samples, "vpnbot_operations_in_flight", "state"
        ):
            return samples
        await asyncio.sleep(0.05)
    pytest.fail(f"operations still in flight: {by_label(samples, 'vpnbot_operations_in_flight', 'state')}")


async def _slack_counted(
    stack: LocalStack,
) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], int]]:
    """The Slack calls the metrics counted and those the stand-in saw, once they agree (or at 10 s)."""
    slack: dict[tuple[str, ...], float] = {}
    seen: dict[tuple[str, ...], int] = {}
    for _ in range(200):
        samples = await scrape(stack.bot.app)
        slack = by_label(samples, "vpnbot_slack_api_calls_total", "method", "error")
        # Bolt's own auth.test goes through a client Bolt builds per request, outside our instrument.
        calls = [c for c in stack.slack.state.calls() if c.method != "auth.test"]
        seen = dict(Counter((c.method, "ok" if c.ok else str(c.error)) for c in calls))
        if slack == seen:
            break
        await asyncio.sleep(0.05)
    return slack, seen


async def test_a_deletion_is_counted_call_by_call(stack: LocalStack) -> None:
    """Every VPC request and Slack call of a deletion shows up once, with the ack of its command."""
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    ts = await _approve(stack, SEED_VCO_HANGZHOU)
    await wait_parent(stack.slack.state, ts, "Deleted")
    samples = await _settled(stack)

    vpc = by_label(samples, "vpnbot_vpc_api_requests_total", "action", "code")
    assert vpc == vpc_requests_seen_by_sandbox(stack)
    assert vpc[("DeleteVpnConnection", "ok")] == 1
    for action, _code in vpc:
        assert get(samples, "vpnbot_vpc_api_request_duration_seconds_count", action=action) == sum(
            n for (a, _), n in vpc.items() if a == action
        )
    # The outbox may still be delivering the last replies (the requester's message, the audit line)
    # when the operation is final: a call is counted once its answer is back, so wait for that.
    slack, seen = await _slack_counted(stack)
    assert slack == seen
    assert slack[("chat.postMessage", "ok")] >= 2  # the confirmation and its thread
    assert get(samples, "vpnbot_slash_command_ack_seconds_count") == 1
    assert get(samples, "vpnbot_slack_requests_shed_total") == 0
    assert get(samples, "vpnbot_deletions_queued") == 0
    assert get(samples, "vpnbot_operations_finished_total", outcome="deleted") == 1
    assert get(samples, "vpnbot_operation_approval_to_final_seconds_count", outcome="deleted") == 1


async def test_a_failed_deletion_counts_alibabas_code_and_slacks_error(stack: LocalStack) -> None:
    stack.vpc.state.faults.add(action="DeleteVpnConnection", code="Forbidden.RAM", times=1)
    stack.slack.state.fail("chat.postMessage", "not_in_channel")  # the first confirmation is refused
    await _request(stack, f"delete {SEED_VCO_HANGZHOU_BGP}")
    await stack.slack.state.wait_for(
        lambda: any("not_in_channel" in c.error for c in stack.slack.state.calls() if c.error),
        what="the refused post",
    )
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    ts = await _approve(stack, SEED_VCO_HANGZHOU)
    await wait_parent(stack.slack.state, ts, "Forbidden.RAM")
    samples = await _settled(stack)

    assert (
        get(samples, "vpnbot_vpc_api_requests_total", action="DeleteVpnConnection", code="Forbidden.RAM") == 1
    )
    assert get(samples, "vpnbot_vpc_api_requests_total", action="DeleteVpnConnection", code="ok") == 0
    assert (
        get(samples, "vpnbot_slack_api_calls_total", method="chat.postMessage", error="not_in_channel") == 1
    )
    assert by_label(
        samples, "vpnbot_vpc_api_requests_total", "action", "code"
    ) == vpc_requests_seen_by_sandbox(stack)
    assert get(samples, "vpnbot_slash_command_ack_seconds_count") == 2
    # Both requests failed: the refused confirmation and the refused delete.
    assert get(samples, "vpnbot_operations_finished_total", outcome="failed") == 2
    assert get(samples, "vpnbot_operation_approval_to_final_seconds_count", outcome="failed") == 1


async def test_a_throttled_call_is_counted_then_its_retry(stack: LocalStack) -> None:
    stack.vpc.state.faults.add(action="DescribeVpnConnection", code="Throttling.User", times=1)
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU, within=20)
    samples = await scrape(stack.bot.app)
    described = by_label(samples, "vpnbot_vpc_api_requests_total", "action", "code")
    assert described[("DescribeVpnConnection", "Throttling.User")] == 1
    assert described[("DescribeVpnConnection", "ok")] >= 1
    assert get(samples, "vpnbot_operations_in_flight", state="awaiting_approval") == 1


async def test_requests_shed_under_load_are_counted(stack: LocalStack) -> None:
    stack.bot.app.inflight.limit = 0  # as if 2,000 requests were already being worked on
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    samples = await scrape(stack.bot.app)
    assert get(samples, "vpnbot_slack_requests_shed_total") == 1
    assert get(samples, "vpnbot_slash_command_ack_seconds_count") == 1
    assert by_label(samples, "vpnbot_vpc_api_requests_total", "action", "code") == {}


@pytest.fixture
async def slow_gateway_stack(sqlite_url: str) -> AsyncIterator[LocalStack]:
    """A gateway that stays 'updating' long enough to see a second deletion queue behind the first."""
    async with local_stack(sqlite_url, update_seconds=2.0) as running:
        yield running


async def test_gauges_show_operations_by_state_and_the_queue(slow_gateway_stack: LocalStack) -> None:
    stack = slow_gateway_stack
    for vco in (SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP):  # two connections on one gateway
        await _request(stack, f"delete {vco}")
        await wait_confirmation(stack.slack.state, vco)
    samples = await scrape(stack.bot.app)
    assert get(samples, "vpnbot_operations_in_flight", state="awaiting_approval") == 2
    # Whichever takes the gateway first, the other waits: the gateway stays updating for 2 s.
    first = await _approve(stack, SEED_VCO_HANGZHOU)
    second = await _approve(stack, SEED_VCO_HANGZHOU_BGP)

    for _ in range(200):
        samples = await scrape(stack.bot.app)
        # Two queries, two moments: wait until both show both approvals.
        states = by_label(samples, "vpnbot_operations_in_flight", "state")
        if (
            get(samples, "vpnbot_deletions_queued") == 1
            and ("awaiting_approval",) not in states
            and states.get(("approved",)) == 1
        ):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"no queued deletion seen: {by_label(samples, 'vpnbot_operations_in_flight', 'state')}")
    assert sum(states.values()) == 2  # the queued one approved, the other one past it
    # This replica drives both (one waits for the gateway), against the default limit.
    assert get(samples, "vpnbot_operations_driven") == 2
    assert get(samples, "vpnbot_operations_driven_limit") == 200

    await wait_parent(stack.slack.state, first, "Deleted", within=30)
    await wait_parent(stack.slack.state, second, "Deleted", within=30)
    samples = await _settled(stack)
    assert get(samples, "vpnbot_deletions_queued") == 0
    for _ in range(200):  # a driver ends just after its final write
        if get(samples, "vpnbot_operations_driven") == 0:
            break
        await asyncio.sleep(0.02)
        samples = await scrape(stack.bot.app)
    assert get(samples, "vpnbot_operations_driven") == 0
    assert get(samples, "vpnbot_vpc_api_requests_total", action="DeleteVpnConnection", code="ok") == 2


# --- Socket Mode: /healthz and /metrics on VPNBOT_METRICS_PORT ------------------------------------

APP_TOKEN = "xapp-1-A0VPNBOT-1-metrics-e2e"


class _SocketProcess(BotProcess):
    @staticmethod
    def command(*, port: int) -> list[str]:
        return [sys.executable, "-m", "bot", "serve", "--socket", "--host", "127.0.0.1", "--port", str(port)]


@pytest.mark.process
async def test_socket_mode_serves_health_and_metrics_on_the_metrics_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)  # slack_sdk's socket client reads them itself
    async with sandbox_and_slack(update_seconds=0.3, app_token=APP_TOKEN) as (vpc, slack):
        metrics_port = free_port()
        env = bot_env(
            tmp_path,
            database_url=f"sqlite:///{tmp_path / 'bot.db'}",
            vpc=vpc,
            slack=slack,
            SLACK_APP_TOKEN=APP_TOKEN,
            VPNBOT_METRICS_PORT=str(metrics_port),
        )
        del env["SLACK_SIGNING_SECRET"]
        process = _SocketProcess(env=env, cwd=tmp_path, log_path=tmp_path / "socket.log")
        try:
            await process.wait_healthy()
            await slack.state.socket_mode.wait_connected(timeout=20)
            ack = await SocketModeUser(state=slack.state, ack_timeout=10).slash_command(
                ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}"
            )
            assert ack.payload is not None
            await wait_confirmation(slack.state, SEED_VCO_HANGZHOU)

            samples = await scrape(process.metrics_url)
            assert get(samples, "vpnbot_operations_in_flight", state="awaiting_approval") == 1
            assert (
                get(samples, "vpnbot_slack_api_calls_total", method="apps.connections.open", error="ok") == 1
            )
            assert get(samples, "vpnbot_slash_command_ack_seconds_count") == 1  # acked over the socket
            assert (
                get(samples, "vpnbot_vpc_api_requests_total", action="DescribeVpnConnection", code="ok") >= 1
            )
            async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
                assert (await http.get(f"{process.metrics_url}/readyz")).json() == {"status": "ok"}
                with pytest.raises(httpx.ConnectError):  # --port is not listened on: the metrics port is
                    await http.get(f"{process.url}/healthz")
            process.terminate()
            assert await process.wait_exit(within=10) == 0, process.log()
            assert "Traceback" not in process.log()
        finally:
            process.close()


async def test_a_live_scrape_passes_promtool_check_metrics(stack: LocalStack) -> None:
    """Prometheus's own linter on what a scraper gets after a deletion (names, help, types, units)."""
    promtool = require_tool("promtool", "Debian's prometheus package")
    await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
    ts = await _approve(stack, SEED_VCO_HANGZHOU)
    await wait_parent(stack.slack.state, ts, "Deleted")
    await _settled(stack)
    async with ops_listener(stack.bot.app) as url, httpx.AsyncClient(trust_env=False, timeout=5) as http:
        exposition = (await http.get(f"{url}/metrics")).text
    assert "vpnbot_operation_oldest_age_seconds" in exposition
    checked = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(checked.communicate(exposition.encode()), timeout=60)
    assert checked.returncode == 0, (out + err).decode()
