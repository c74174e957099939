"""Prometheus metrics: one :class:`Metrics` per app, with its own ``CollectorRegistry``.

Every name starts with ``vpnbot_``; every label value is bounded (no ids, no user names, and
at most :data:`MAX_LABEL_VALUES` distinct values per label, the rest counted as ``other``).
The instruments attach at the boundaries, without changing the code they measure:

- VPC OpenAPI calls: :func:`metered_vpc_http` builds the ``httpx.AsyncClient`` the VPC client
  is given, with event hooks (action, Alibaba ``Code``, latency) and a transport wrapper that
  counts failures as the client's ``Transport.*`` pseudo-codes;
- Slack Web API calls: :class:`MeteredWebClient`, the ``AsyncWebClient`` handed to Bolt;
- slash-command ack latency: :class:`MeteredAsyncApp`, Bolt's app timing its own dispatch (HTTP mode
  and Socket Mode alike);
- operations in flight and queued deletions: read from the store when ``/metrics`` is scraped
  (:func:`make_metrics_handler`), under a short timeout, so every replica reports the same truth.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import httpx
from aiohttp import FormData, web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.cloud.codes import TRANSPORT_BAD_RESPONSE, TRANSPORT_CONNECT_ERROR, TRANSPORT_TIMEOUT
from bot.cloud.transport import VpcTransport
from bot.domain import TERMINAL_STATES, OpState

__all__ = [
    "MAX_LABEL_VALUES",
    "MeteredAsyncApp",
    "MeteredTransport",
    "MeteredWebClient",
    "Metrics",
    "StateCounts",
    "exported_names",
    "make_metrics_handler",
    "metered_vpc_http",
]

log = logging.getLogger(__name__)

# A misbehaving endpoint must not be able to grow the series without bound.
MAX_LABEL_VALUES: Final = 60
_OTHER: Final = "other"
_STARTED: Final = "vpnbot_started"  # httpx request extension: perf_counter() at send

# Seconds. VPC calls: tens of ms to the API's own 10 s ceiling, plus slow retries.
_VPC_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Slack gives an ack 3 s; the interesting part is below that.
_ACK_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
# Approval to the final state: a gateway stays "updating" for minutes; the delete timeout is 15 min.
_FINAL_BUCKETS: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

IN_FLIGHT_STATES: Final = tuple(s.value for s in OpState if s not in TERMINAL_STATES)
OUTCOMES: Final = tuple(s.value for s in OpState if s in TERMINAL_STATES)


class StateCounts(Protocol):
    """The store queries read at scrape time (implemented by :class:`bot.store.Store`)."""

    async def count_by_state(self) -> dict[str, int]:
        """Operations not yet finished, by state."""
        ...

    async def count_queued(self) -> int:
        """Approved operations waiting for another one's delete on the same gateway."""
        ...

    async def phase_started_by_state(self) -> dict[str, datetime]:
        """For each unfinished state, when its oldest operation entered its current phase."""
        ...


class _Bounded:
    """Pass label values through until ``limit`` distinct ones were seen; later new ones become ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES, *, preset: Iterable[str] = ()) -> None:
        self._seen: set[str] = set(preset)
        self._limit = limit

    def __call__(self, value: str) -> str:
        value = value[:80] or "unknown"
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return _OTHER
        self._seen.add(value)
        return value


class _StoreGauges(Collector):
    """Gauges from the last store snapshot taken by the ``/metrics`` handler."""

    def __init__(self) -> None:
        self.by_state: dict[str, int] | None = None
        self.queued: int | None = None
        self.oldest_age: dict[str, float] | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(by_state={}, queued=None, oldest_age={}, up=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(
            by_state=self.by_state,
            queued=self.queued,
            oldest_age=self.oldest_age,
            up=self.by_state is not None,
        )

    @staticmethod
    def _families(
        *,
        by_state: Mapping[str, int] | None,
        queued: int | None,
        oldest_age: Mapping[str, float] | None,
        up: bool,
    ) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "vpnbot_operations_in_flight",
            "Operations not finished yet, by state, as the store has them (all replicas).",
            labels=["state"],
        )
        if by_state is not None:
            for state in IN_FLIGHT_STATES:
                in_flight.add_metric([state], by_state.get(state, 0))
        yield in_flight
        oldest = GaugeMetricFamily(
            "vpnbot_operation_oldest_age_seconds",
            "Seconds since the oldest operation in each unfinished state entered its phase "
            "(requested, approved, or delete sent); 0 where the state has none.",
            labels=["state"],
        )
        if oldest_age is not None:
            for state in IN_FLIGHT_STATES:
                oldest.add_metric([state], oldest_age.get(state, 0.0))
        yield oldest
        queued_family = GaugeMetricFamily(
            "vpnbot_deletions_queued",
            "Approved deletions waiting for another deletion on the same gateway to finish.",
        )
        if queued is not None:
            queued_family.add_metric([], queued)
        yield queued_family
        yield GaugeMetricFamily(
            "vpnbot_store_up",
            "1 if the store answered the scrape-time query in time, else 0 (the gauges above are then absent).",
            value=1 if up else 0,
        )


class Metrics:
    """Every metric of one bot app, in its own registry (tests build several apps side by side)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, accounts: Iterable[str] = ()) -> None:
        """``accounts`` (VPNBOT_ACCOUNTS names) adds an ``account`` label bounded by them; none: no label."""
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._accounts = tuple(accounts)
        by_account = ["account"] if self._accounts else []
        self._vpc_requests = Counter(
            "vpnbot_vpc_api_requests",
            "VPC OpenAPI requests (each attempt), by action and code: ok, the Alibaba code, or Transport.*.",
            ["action", "code"],
            registry=reg,
        )
        self._vpc_seconds = Histogram(
            "vpnbot_vpc_api_request_duration_seconds",
            "Time from sending a VPC OpenAPI request to its answer (or failure), by action.",
            ["action"],
            buckets=_VPC_BUCKETS,
            registry=reg,
        )
        self._slack_calls = Counter(
            "vpnbot_slack_api_calls",
            "Slack Web API calls by method and error: ok, Slack's error code, http_NNN or transport.",
            ["method", "error"],
            registry=reg,
        )
        self._ack_seconds = Histogram(
            "vpnbot_slash_command_ack_seconds",
            "Time from Bolt receiving a /vpn command to its ack being ready (Slack allows 3 s).",
            buckets=_ACK_BUCKETS,
            registry=reg,
        )
        self._shed = Counter(
            "vpnbot_slack_requests_shed",
            "Delete requests turned away in the ack because too much work was in flight.",
            registry=reg,
        )
        self._finished = Counter(
            "vpnbot_operations_finished",
            "Operations that reached a final state, by outcome (and account, with several).",
            ["outcome", *by_account],
            registry=reg,
        )
        self._approval_to_final = Histogram(
            "vpnbot_operation_approval_to_final_seconds",
            "Time from approval to the final state, by outcome (and account; approved operations only).",
            ["outcome", *by_account],
            buckets=_FINAL_BUCKETS,
            registry=reg,
        )
        self._driven = Gauge(
            "vpnbot_operations_driven",
            "Operations this process carries out right now; past vpnbot_operations_driven_limit, "
            "approvals wait for room.",
            registry=reg,
        )
        self._driven_limit = Gauge(
            "vpnbot_operations_driven_limit",
            "How many operations this process carries out at once (VPNBOT_MAX_DRIVEN_OPERATIONS).",
            registry=reg,
        )
        self._assumed = Counter(
            "vpnbot_sts_assume_role",
            "STS AssumeRole calls for an account's RAM role, by account and code: ok or STS's code.",
            ["account", "code"],
            registry=reg,
        )
        for outcome in OUTCOMES:  # present from the start, so rate() and increase() see the first one
            for account in self._accounts or (None,):
                self._finished.labels(outcome, *([account] if account else []))
        self._store = _StoreGauges()
        reg.register(self._store)
        self._action = _Bounded()
        self._code = _Bounded()
        self._method = _Bounded()
        self._error = _Bounded()
        self._outcome = _Bounded(preset=OUTCOMES)

    # --- recording ---------------------------------------------------------------------------

    def vpc_request(self, action: str, code: str, seconds: float | None) -> None:
        """Count one VPC OpenAPI attempt and, if known, how long it took."""
        action = self._action(action)
        self._vpc_requests.labels(action, self._code(code)).inc()
        if seconds is not None:
            self._vpc_seconds.labels(action).observe(seconds)

    def slack_call(self, method: str, error: str) -> None:
        """Count one Slack Web API call (after slack_sdk's own retries)."""
        self._slack_calls.labels(self._method(method), self._error(error)).inc()

    def observe_ack(self, seconds: float) -> None:
        """Record how long one /vpn command took to be acked."""
        self._ack_seconds.observe(seconds)

    def watch_driving(self, driving: Callable[[], int], limit: int) -> None:
        """Report ``driving()``, the operations this process drives, at each scrape, and its ``limit``."""
        self._driven.set_function(driving)
        self._driven_limit.set(limit)

    def request_shed(self) -> None:
        """Count one request turned away under load."""
        self._shed.inc()

    def _account_labels(self, account: str) -> list[str]:
        if not self._accounts:
            return []
        return [account if account in self._accounts else _OTHER]

    def operation_finished(self, outcome: str, approval_to_final_s: float | None, account: str = "") -> None:
        """Count an operation reaching its final state; the workflow calls this once per operation."""
        labels = [self._outcome(outcome), *self._account_labels(account)]
        self._finished.labels(*labels).inc()
        if approval_to_final_s is not None:
            self._approval_to_final.labels(*labels).observe(max(0.0, approval_to_final_s))

    def role_assumed(self, account: str, code: str) -> None:
        """Count one AssumeRole for ``account``: ``ok`` or STS's code."""
        self._assumed.labels(*self._account_labels(account) or [account], self._code(code)).inc()

    # --- scraping ----------------------------------------------------------------------------

    async def refresh_store(self, store: StateCounts, *, within: float, now: datetime | None = None) -> None:
        """Read the in-flight gauges from the store; on error or timeout they are left out."""
        try:
            async with asyncio.timeout(within):
                by_state = await store.count_by_state()
                queued = await store.count_queued()
                started = await store.phase_started_by_state()
        except Exception as exc:  # noqa: BLE001 - a scrape reports any store failure as vpnbot_store_up 0
            log.warning("metrics: store query failed", extra={"error": type(exc).__name__})
            self._store.by_state = self._store.queued = self._store.oldest_age = None
        else:
            at = now or datetime.now(UTC)
            self._store.by_state, self._store.queued = by_state, queued
            self._store.oldest_age = {
                state: max(0.0, (at - t).total_seconds()) for state, t in started.items()
            }

    def exposition(self) -> bytes:
        """The text exposition format of every metric (fast: no I/O, a few hundred series)."""
        return generate_latest(self.registry)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can expose, with _total/_bucket/_count/_sum suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def make_metrics_handler(
    metrics: Metrics, store: StateCounts, *, store_timeout: float = 2.0
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return the aiohttp handler for ``GET /metrics``."""

    async def handle_metrics(_: web.Request) -> web.Response:
        """Serve the exposition, with the store gauges read just now."""
        await metrics.refresh_store(store, within=store_timeout)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle_metrics


# --- VPC OpenAPI over httpx --------------------------------------------------------------------


def _alibaba_code(response: httpx.Response) -> str:
    """``ok``, the body's ``Code``, or Transport.BadResponse, as :func:`bot.cloud.client.translate_response` decides."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return TRANSPORT_BAD_RESPONSE
    if not isinstance(body, dict):
        return TRANSPORT_BAD_RESPONSE
    if body.get("Code"):
        return str(body["Code"])
    return TRANSPORT_BAD_RESPONSE if response.is_error else "ok"


class MeteredTransport(httpx.AsyncBaseTransport):
    """Wrap a transport to count requests that got no HTTP answer, as ``Transport.*`` codes."""

    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException):
                code = TRANSPORT_TIMEOUT
            elif isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
                code = TRANSPORT_BAD_RESPONSE
            else:
                code = TRANSPORT_CONNECT_ERROR
            self._metrics.vpc_request(_action(request), code, _elapsed(request))
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


def _action(request: httpx.Request) -> str:
    return str(request.headers.get("x-acs-action", "unknown"))


def _elapsed(request: httpx.Request) -> float | None:
    started = request.extensions.get(_STARTED)
    return time.perf_counter() - started if isinstance(started, float) else None


def metered_vpc_http(metrics: Metrics) -> httpx.AsyncClient:
    """The VPC client's HTTP client (same timeouts and transport as its default), with metrics attached."""

    async def on_request(request: httpx.Request) -> None:
        request.extensions[_STARTED] = time.perf_counter()

    async def on_response(response: httpx.Response) -> None:
        await response.aread()  # the client reads the whole body anyway; it is kept for it
        metrics.vpc_request(_action(response.request), _alibaba_code(response), _elapsed(response.request))

    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        transport=MeteredTransport(VpcTransport(), metrics),
        headers={"user-agent": "vpn-bot (httpx)"},
        event_hooks={"request": [on_request], "response": [on_response]},
    )


# --- Slack Web API -----------------------------------------------------------------------------


def _slack_error(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if response is not None else None
    if error:
        return str(error)
    return f"http_{response.status_code}" if response is not None else "unknown"


class MeteredWebClient(AsyncWebClient):
    """An AsyncWebClient that counts each API call by method and outcome, then behaves as usual."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        try:
            response = await super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=data,
                params=params,
                json=json,
                headers=headers,
                auth=auth,
            )
        except SlackApiError as exc:
            self.metrics.slack_call(api_method, _slack_error(exc))
            raise
        except Exception:  # aiohttp's and asyncio's errors: no answer from Slack at all
            self.metrics.slack_call(api_method, "transport")
            raise
        self.metrics.slack_call(api_method, "ok")
        return response


class MeteredAsyncApp(AsyncApp):
    """Bolt's AsyncApp, timing each slash command from dispatch to ack (both modes dispatch here)."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vpnbot_metrics = metrics

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        started = time.perf_counter()
        response = await super().async_dispatch(req)
        # Bolt returns once the listener has acked (process_before_response=False); the rest runs on.
        if isinstance(req.body, dict) and req.body.get("command"):
            self._vpnbot_metrics.observe_ack(time.perf_counter() - started)
        return response
