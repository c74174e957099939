"""Metrics: the registry, the VPC and Slack instruments on real loopback servers, the store gauges."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from fakes import FakeVpc, make_connection
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError

from bot.app import create_app
from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.domain import Operation, OpState, VpnGateway
from bot.errors import CloudApiError, CloudTransportError
from bot.metrics import (
    MAX_LABEL_VALUES,
    MeteredWebClient,
    Metrics,
    exported_names,
    make_metrics_handler,
    metered_vpc_http,
)
from bot.sandbox.local import LOCAL_BOT_TOKEN, local_settings
from bot.sandbox.slack import SlackStandin, demo_workspace, start_slack_standin
from bot.sandbox.vpc import RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SandboxState
from bot.store import Store

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


# --- the registry --------------------------------------------------------------------------------


def test_every_name_starts_with_vpnbot_and_each_app_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()  # no "Duplicated timeseries" error: separate registries
    one.request_shed()
    assert value(one, "vpnbot_slack_requests_shed_total") == 1
    assert value(two, "vpnbot_slack_requests_shed_total") == 0
    names = exported_names(one.registry)
    assert names, "nothing exported"
    assert all(n.startswith("vpnbot_") for n in names), names
    assert {
        "vpnbot_vpc_api_requests_total",
        "vpnbot_vpc_api_request_duration_seconds_bucket",
        "vpnbot_slack_api_calls_total",
        "vpnbot_slash_command_ack_seconds_count",
        "vpnbot_operations_finished_total",
        "vpnbot_operation_approval_to_final_seconds_sum",
        "vpnbot_operations_in_flight",
        "vpnbot_deletions_queued",
        "vpnbot_store_up",
        "vpnbot_operations_driven",
        "vpnbot_operations_driven_limit",
    } <= names


def test_operations_driven_are_read_at_each_scrape_against_the_limit() -> None:
    metrics = Metrics()
    driving = [0]
    metrics.watch_driving(lambda: driving[0], 200)
    assert value(metrics, "vpnbot_operations_driven") == 0
    assert value(metrics, "vpnbot_operations_driven_limit") == 200
    driving[0] = 7
    assert value(metrics, "vpnbot_operations_driven") == 7


def test_exported_names_covers_a_foreign_registry_too() -> None:
    assert exported_names(CollectorRegistry()) == set()


def test_operation_finished_counts_each_outcome_and_times_approved_ones() -> None:
    metrics = Metrics()
    assert value(metrics, "vpnbot_operations_finished_total", outcome="deleted") == 0  # present at 0
    metrics.operation_finished("deleted", 42.0)
    metrics.operation_finished("deleted", 100.0)
    metrics.operation_finished("cancelled", None)  # never approved: counted, not timed
    assert value(metrics, "vpnbot_operations_finished_total", outcome="deleted") == 2
    assert value(metrics, "vpnbot_operations_finished_total", outcome="cancelled") == 1
    assert value(metrics, "vpnbot_operation_approval_to_final_seconds_count", outcome="deleted") == 2
    assert value(metrics, "vpnbot_operation_approval_to_final_seconds_sum", outcome="deleted") == 142
    assert (
        value(metrics, "vpnbot_operation_approval_to_final_seconds_bucket", outcome="deleted", le="60.0") == 1
    )
    assert value(metrics, "vpnbot_operation_approval_to_final_seconds_count", outcome="cancelled") is None


def test_label_values_are_bounded() -> None:
    """A server inventing codes cannot grow the series without bound: the rest count as 'other'."""
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES + 10):
        metrics.vpc_request("DescribeRegions", f"Weird.Code{n}", None)
    codes = {
        dict(labels)["code"]
        for (name, labels), _ in samples(metrics).items()
        if name == "vpnbot_vpc_api_requests_total"
    }
    assert len(codes) == MAX_LABEL_VALUES + 1
    assert value(metrics, "vpnbot_vpc_api_requests_total", action="DescribeRegions", code="other") == 10
    metrics.vpc_request("DescribeRegions", "Weird.Code0", None)  # a value already seen keeps its series
    assert value(metrics, "vpnbot_vpc_api_requests_total", action="DescribeRegions", code="Weird.Code0") == 2


# --- VPC OpenAPI, through the real client against the signature-checking sandbox -----------------


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start_vpc_sandbox(state=SandboxState(update_seconds=0.1))
    try:
        yield running
    finally:
        await running.close()


async def _vpc(metrics: Metrics, endpoint: str, sandbox: RunningSandbox) -> VpcClient:
    return VpcClient(
        StaticCredentialsProvider(sandbox.credentials),
        http=metered_vpc_http(metrics),
        endpoint=endpoint,
        max_attempts=1,  # each attempt is counted; one keeps the arithmetic plain
    )


async def test_vpc_calls_are_counted_by_action_and_code_with_latency(sandbox: RunningSandbox) -> None:
    metrics = Metrics()
    vpc = await _vpc(metrics, sandbox.url, sandbox)
    http = vpc._http  # the client does not own an injected http client; close it ourselves
    try:
        await vpc.describe_vpn_connection_detail(region="cn-hangzhou", vco_id=SEED_VCO_HANGZHOU)
        sandbox.state.faults.add(action="DescribeRegions", code="Throttling.User", times=1)
        with pytest.raises(CloudApiError):
            await vpc.describe_regions()
        sandbox.state.faults.add(action="DescribeRegions", non_json=True, times=1)
        with pytest.raises(CloudTransportError):
            await vpc.describe_regions()
    finally:
        await http.aclose()
    assert value(metrics, "vpnbot_vpc_api_requests_total", action="DescribeVpnConnection", code="ok") == 1
    assert (
        value(metrics, "vpnbot_vpc_api_requests_total", action="DescribeRegions", code="Throttling.User") == 1
    )
    assert (
        value(
            metrics, "vpnbot_vpc_api_requests_total", action="DescribeRegions", code="Transport.BadResponse"
        )
        == 1
    )
    assert value(metrics, "vpnbot_vpc_api_request_duration_seconds_count", action="DescribeRegions") == 2
    assert (
        value(metrics, "vpnbot_vpc_api_request_duration_seconds_count", action="DescribeVpnConnection") == 1
    )


async def test_vpc_connection_failures_count_as_transport_codes(sandbox: RunningSandbox) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    metrics = Metrics()
    vpc = await _vpc(metrics, closed, sandbox)
    try:
        with pytest.raises(CloudTransportError):
            await vpc.describe_regions()
    finally:
        await vpc._http.aclose()
    assert (
        value(
            metrics, "vpnbot_vpc_api_requests_total", action="DescribeRegions", code="Transport.ConnectError"
        )
        == 1
    )


# --- Slack Web API, through slack_sdk against the stand-in --------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    standin = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    try:
        yield standin
    finally:
        await standin.close()


async def test_slack_calls_are_counted_by_method_and_error(slack: SlackStandin) -> None:
    metrics = Metrics()
    client = MeteredWebClient(token=LOCAL_BOT_TOKEN, base_url=slack.url.rstrip("/") + "/", metrics=metrics)
    await client.auth_test()
    slack.state.fail("chat.postMessage", "not_in_channel")
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C0VPNOPS", text="hello")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        client.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with pytest.raises(Exception):  # noqa: B017, PT011 - aiohttp's connection error, whatever its class
        await client.auth_test()
    assert value(metrics, "vpnbot_slack_api_calls_total", method="auth.test", error="ok") == 1
    assert (
        value(metrics, "vpnbot_slack_api_calls_total", method="chat.postMessage", error="not_in_channel") == 1
    )
    assert value(metrics, "vpnbot_slack_api_calls_total", method="auth.test", error="transport") == 1


async def test_bolt_takes_the_metered_client_without_a_warning(
    slack: SlackStandin, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt reads SLACK_BOT_TOKEN itself and would warn that it is unused next to our client."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", LOCAL_BOT_TOKEN)
    settings = local_settings(database_url=sqlite_url, vpc_url="http://127.0.0.1:9", slack_url=slack.url)
    with caplog.at_level(logging.WARNING):
        app = await create_app(settings, vpc=FakeVpc())
    try:
        assert app.bolt.client is app.slack
        assert isinstance(app.slack, MeteredWebClient)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("slack_bolt")] == []
        assert str(app.slack.token) == LOCAL_BOT_TOKEN
        slack_side = {r.resource.canonical for r in app.web.router.routes() if r.resource is not None}
        ops_side = {r.resource.canonical for r in app.ops.router.routes() if r.resource is not None}
        assert slack_side == {"/slack/events", "/livez", "/readyz", "/healthz"}  # never /metrics
        assert ops_side == {"/metrics", "/livez", "/readyz", "/healthz"}
    finally:
        await app.aclose()


# --- gauges from the store, read at scrape time ---------------------------------------------------


def _op(op_id: str, state: OpState, *, vco_id: str, gateway_id: str = "vpn-gw1") -> Operation:
    conn = make_connection(vco_id, gateway_id)
    return Operation(
        id=op_id,
        state=state,
        region=conn.region,
        connection=conn,
        gateway=VpnGateway(id=gateway_id, region=conn.region, name="office", status="active"),
        requester_id="U0REQ",
        channel_id="C0OPS",
        team_id="T0",
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        client_token=f"vpnbot-{op_id}",
    )


async def test_store_counts_unfinished_operations_and_queued_deletions(store: Store) -> None:
    assert await store.count_by_state() == {}
    assert await store.count_queued() == 0
    for op in (
        _op("a", OpState.WAITING_GATEWAY, vco_id="vco-a"),  # holds vpn-gw1
        _op("b", OpState.APPROVED, vco_id="vco-b"),  # queued behind a
        _op("c", OpState.APPROVED, vco_id="vco-c", gateway_id="vpn-gw2"),  # holds vpn-gw2 itself
        _op("d", OpState.AWAITING_APPROVAL, vco_id="vco-d"),
        _op("e", OpState.DELETED, vco_id="vco-e", gateway_id="vpn-gw3"),  # finished, still on its lock
        _op("f", OpState.APPROVED, vco_id="vco-f", gateway_id="vpn-gw3"),  # may take the stale lock over
    ):
        await store.create_operation(op=op)
    for op_id, gateway in (("a", "vpn-gw1"), ("c", "vpn-gw2"), ("e", "vpn-gw3")):
        region = make_connection("x", gateway).region
        assert await store.acquire_gateway(region=region, gateway_id=gateway, op_id=op_id, now=T0) == op_id
    assert await store.count_by_state() == {"waiting_gateway": 1, "approved": 3, "awaiting_approval": 1}
    assert await store.count_queued() == 1


class _SlowStore:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def count_by_state(self) -> dict[str, int]:
        await asyncio.sleep(self.delay)
        return {"approved": 2}

    async def count_queued(self) -> int:
        return 1

    async def phase_started_by_state(self) -> dict[str, datetime]:
        return {"waiting_gateway": datetime.now(UTC) - timedelta(minutes=25)}


async def _scrape(metrics: Metrics, store: _SlowStore, *, store_timeout: float) -> str:
    app = web.Application()
    app.router.add_get("/metrics", make_metrics_handler(metrics, store, store_timeout=store_timeout))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            reply = await http.get(f"http://{host}:{port}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        return reply.text
    finally:
        await runner.cleanup()


async def test_scrape_reports_the_store_gauges() -> None:
    text = await _scrape(Metrics(), _SlowStore(0), store_timeout=5)
    found = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert found[("vpnbot_operations_in_flight", (("state", "approved"),))] == 2
    assert found[("vpnbot_operations_in_flight", (("state", "waiting_gateway"),))] == 0  # zeros shown
    assert ("vpnbot_operations_in_flight", (("state", "deleted"),)) not in found  # final states are not
    assert found[("vpnbot_deletions_queued", ())] == 1
    assert found[("vpnbot_store_up", ())] == 1
    waited = found[("vpnbot_operation_oldest_age_seconds", (("state", "waiting_gateway"),))]
    assert 25 * 60 <= waited < 26 * 60
    assert found[("vpnbot_operation_oldest_age_seconds", (("state", "approved"),))] == 0


async def test_oldest_age_follows_one_operation_not_the_population(store: Store) -> None:
    """Back-to-back deletions never look stuck: the age is the oldest one's, from its phase's start."""
    old = _op("old", OpState.WAITING_GATEWAY, vco_id="vco-old")
    old = dataclasses.replace(old, approved_at=T0, started_at=T0 + timedelta(seconds=30))
    new = _op("new", OpState.WAITING_GATEWAY, vco_id="vco-new", gateway_id="vpn-gw2")
    new = dataclasses.replace(new, approved_at=T0, started_at=T0 + timedelta(minutes=40))
    waiting = _op("wait", OpState.AWAITING_APPROVAL, vco_id="vco-wait", gateway_id="vpn-gw3")
    for op in (old, new, waiting):
        await store.create_operation(op=op)
    started = await store.phase_started_by_state()
    assert started == {"waiting_gateway": T0 + timedelta(seconds=30), "awaiting_approval": T0}

    metrics = Metrics()
    await metrics.refresh_store(store, within=5, now=T0 + timedelta(minutes=41))
    ages = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
        if s.name == "vpnbot_operation_oldest_age_seconds"
    }
    assert ages["waiting_gateway"] == 41 * 60 - 30
    assert ages["awaiting_approval"] == 41 * 60
    assert ages["deleting"] == 0


async def test_a_slow_store_does_not_hold_the_scrape() -> None:
    """Past the timeout the scrape answers without the store gauges and says the store is not up."""
    text = await _scrape(Metrics(), _SlowStore(60), store_timeout=0.05)
    names = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert names["vpnbot_store_up"] == 0
    assert "vpnbot_operations_in_flight" not in names
    assert "vpnbot_deletions_queued" not in names


def test_account_label_is_bounded_by_the_configured_accounts() -> None:
    metrics = Metrics(accounts=["prod", "staging"])
    assert value(metrics, "vpnbot_operations_finished_total", outcome="deleted", account="staging") == 0
    metrics.operation_finished("deleted", 12.0, "staging")
    metrics.operation_finished("failed", None, "made-up")
    metrics.role_assumed("prod", "ok")
    metrics.role_assumed("prod", "NoPermission")
    assert value(metrics, "vpnbot_operations_finished_total", outcome="deleted", account="staging") == 1
    assert value(metrics, "vpnbot_operations_finished_total", outcome="failed", account="other") == 1
    assert (
        value(
            metrics, "vpnbot_operation_approval_to_final_seconds_count", outcome="deleted", account="staging"
        )
        == 1
    )
    assert value(metrics, "vpnbot_sts_assume_role_total", account="prod", code="ok") == 1
    assert value(metrics, "vpnbot_sts_assume_role_total", account="prod", code="NoPermission") == 1


def test_a_single_account_bot_has_no_account_label() -> None:
    metrics = Metrics()
    metrics.operation_finished("deleted", 1.0)
    assert value(metrics, "vpnbot_operations_finished_total", outcome="deleted") == 1
    assert b'account="' not in metrics.exposition()
