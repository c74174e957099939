"""The composition root: ``create_app(settings, ...)`` wires Slack, the cloud client, the store and
the workflow. It is the only module that imports both the Slack side and the cloud side.

Nothing is created at import time, so each test builds a fresh app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import httpx
from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.web.async_client import AsyncWebClient

from bot.cloud.accounts import AccountClients
from bot.cloud.adapter import VpcAdapter
from bot.cloud.client import VpcClient
from bot.cloud.credentials import build_credentials_provider
from bot.cloud.models import VpnConnectionDetail
from bot.config import Settings
from bot.domain import VpnGateway
from bot.errors import ConfigError, StoreUnavailable
from bot.logs import LogThrottle
from bot.metrics import MeteredAsyncApp, MeteredWebClient, Metrics, make_metrics_handler, metered_vpc_http
from bot.ports import Clock, SystemClock, VpcApi, VpcApis
from bot.slack import ConnectionRow, InFlight, register
from bot.slack.codes import SLACK_FAILURES, translate
from bot.slack.codes import lookup as slack_lookup
from bot.slack.http import make_aiohttp_handler
from bot.slack.notifier import SlackNotifier, configure_retries
from bot.slack.policy import SlackGroupDirectory, SlackPolicy, approval_progress_text, approval_rule_text
from bot.slack.visibility import SlackChannelDirectory, Visibility
from bot.store import Store
from bot.workflow import Workflow, WorkflowConfig

__all__ = [
    "BotApp",
    "Readiness",
    "RegionCache",
    "check_bot_token",
    "create_app",
    "default_instance_id",
    "require_serve_settings",
]

log = logging.getLogger(__name__)

REGIONS_TTL_SECONDS = 3600.0
# A probe must answer even when the database or Slack hangs: probes time out after a few seconds.
HEALTH_TIMEOUT_SECONDS = 2.0
# /readyz asks Slack (auth.test) at most this often; the answer is reused in between.
SLACK_CHECK_INTERVAL_SECONDS = 15.0


def default_instance_id() -> str:
    """A name for this replica in leases and logs: host, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def require_serve_settings(settings: Settings, *, socket_mode: bool) -> None:
    """Raise ConfigError listing every setting the bot needs but lacks (Slack, approvers)."""
    problems = []
    if settings.slack_bot_token is None:
        problems.append("SLACK_BOT_TOKEN: required (the bot token, xoxb-…)")
    if socket_mode and settings.slack_app_token is None:
        problems.append("SLACK_APP_TOKEN: required for Socket Mode (an app-level token, xapp-…)")
    if not socket_mode and settings.slack_signing_secret is None:
        problems.append(
            "SLACK_SIGNING_SECRET: required in HTTP mode (Basic Information → Signing Secret); "
            "or set SLACK_APP_TOKEN (xapp-…) to use Socket Mode, which needs no signing secret"
        )
    if not settings.approvers:
        # Secure by default: nobody gets to approve production deletions by an unset variable.
        problems.append(
            "VPNBOT_APPROVERS: required; set who may approve deletions as Slack user or group ids "
            "(VPNBOT_APPROVERS=U0123ABCD,S0456EFGH), or * to let anyone who sees the confirmation approve"
        )
    if problems:
        raise ConfigError(problems)


class _DropMessage(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


@contextlib.contextmanager
def _quiet_bolt_token_warning() -> Iterator[None]:
    """Silence Bolt's "token will be unused" while it is built with our client.

    Bolt reads SLACK_BOT_TOKEN from the environment by itself and warns that it is ignored when a
    client is given, even though the client carries that very token.
    """
    logger = logging.getLogger("slack_bolt.AsyncApp")
    quiet = _DropMessage(warning_client_prioritized_and_token_skipped())
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


async def check_bot_token(settings: Settings) -> None:
    """Ask Slack (auth.test) whose token this is: refused is a ConfigError, unreachable a warning."""
    if settings.slack_bot_token is None:
        return
    # A client of its own, before the app exists: a refused token should stop the start before
    # anything (a database file, migrations) is created.
    slack = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=_base_url(settings))
    try:
        await slack.auth_test()
    except SLACK_FAILURES as exc:
        error = translate(exc)
        if slack_lookup(error.error).token_refused:
            raise ConfigError(
                [
                    f"SLACK_BOT_TOKEN: Slack refused it ({error.error}); copy the Bot User OAuth Token "
                    "(xoxb-…) from OAuth & Permissions, and reinstall the app if it was revoked"
                ]
            ) from None
        if error.transient:
            log.warning("Slack is unreachable (auth.test: %s); starting anyway", error.error)
        else:
            log.warning("Slack did not confirm the bot token (auth.test: %s); starting anyway", error.error)


def _base_url(settings: Settings) -> str:
    url = settings.slack_api_url
    return url if url.endswith("/") else url + "/"


class RegionCache:
    """The regions DescribeRegions knows, fetched once an hour; ``None`` while it cannot say."""

    def __init__(self, vpc: VpcApi, *, ttl: float = REGIONS_TTL_SECONDS) -> None:
        self._vpc = vpc
        self._ttl = ttl
        self._regions: frozenset[str] = frozenset()
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    async def __call__(self) -> Collection[str]:
        if time.monotonic() - self._fetched < self._ttl:
            return self._regions
        async with self._lock:
            if time.monotonic() - self._fetched >= self._ttl:
                self._regions = frozenset(await self._vpc.list_regions())
                self._fetched = time.monotonic()
        return self._regions


def _row(detail: VpnConnectionDetail) -> ConnectionRow:
    return ConnectionRow(
        id=detail.vpn_connection_id,
        name=detail.name,
        gateway_id=detail.vpn_gateway_id,
        status=detail.status,
        remote_subnet=detail.remote_subnet,
        local_subnet=detail.local_subnet,
        tunnels=tuple(t.status or t.state or "" for t in detail.tunnels),
    )


class VpcInventory:
    """:class:`bot.slack.Inventory` over the VPC client: the reads behind /vpn list and /vpn status.

    With several accounts, ``accounts`` gives each account's client (its role's read-only session).
    """

    def __init__(self, vpc: VpcClient, *, accounts: AccountClients | None = None) -> None:
        self._vpc = vpc
        self._accounts = accounts

    def _client(self, account: str) -> VpcClient:
        return self._accounts.client(account) if self._accounts is not None else self._vpc

    async def connections(
        self, *, region: str, gateway_id: str | None = None, account: str = ""
    ) -> list[ConnectionRow]:
        # Everything here only informs a person: reads join the same reads already on the way.
        found = await self._client(account).describe_vpn_connections(
            region=region, vpn_gateway_id=gateway_id, shared=True
        )
        return [_row(d) for d in found]

    async def connection(self, *, region: str, vco_id: str, account: str = "") -> ConnectionRow:
        vpc = self._client(account)
        return _row(await vpc.describe_vpn_connection_detail(region=region, vco_id=vco_id, shared=True))

    async def gateway(self, *, region: str, gateway_id: str, account: str = "") -> VpnGateway:
        detail = await self._client(account).describe_vpn_gateway_detail(
            region=region, gateway_id=gateway_id, shared=True
        )
        return detail.to_domain(region)

    async def route_count(self, *, region: str, gateway_id: str, vco_id: str, account: str = "") -> int:
        vpc = self._client(account)
        routes, pbr = await asyncio.gather(
            vpc.describe_vpn_route_entries(region=region, gateway_id=gateway_id, shared=True),
            vpc.describe_vpn_pbr_route_entries(region=region, gateway_id=gateway_id, shared=True),
        )
        return sum(r.next_hop == vco_id for r in routes) + sum(r.next_hop == vco_id for r in pbr)


@dataclass
class BotApp:
    """A running vpn-bot: the Bolt app, the workflow and its two aiohttp apps.

    ``web`` serves Slack (``POST /slack/events``, HTTP mode) and the probes; ``ops`` serves
    ``/metrics`` and the probes, on its own listener (VPNBOT_METRICS_HOST, VPNBOT_METRICS_PORT).
    """

    settings: Settings
    bolt: AsyncApp
    workflow: Workflow
    store: Store
    vpc: VpcApi
    slack: AsyncWebClient
    ops: web.Application  # before ``web``: after it, that name is the field, not the module
    web: web.Application
    inflight: InFlight = field(default_factory=InFlight)
    metrics: Metrics = field(default_factory=Metrics)
    _owned_vpc: VpcClient | None = None
    _owned_http: httpx.AsyncClient | None = None
    _started: bool = field(default=False)

    async def start(self) -> None:
        """Start the workflow's background loops (resume unfinished operations, expire confirmations)."""
        if not self._started:
            await self.workflow.start()
            self._started = True

    async def aclose(self, *, grace_s: float = 10.0) -> None:
        """Stop gracefully: requests in flight finish, background work stops at a safe point, and
        leases are released so another replica resumes at once."""
        try:
            await self.inflight.drain(grace_s)
            await self.workflow.stop(grace_s=grace_s)
        finally:
            if self._owned_vpc is not None:
                await self._owned_vpc.aclose()
            if self._owned_http is not None:
                await self._owned_http.aclose()
            await self.store.close()
            await _close_session(self.slack)


async def _close_session(slack: AsyncWebClient) -> None:
    session = getattr(slack, "session", None)
    if session is not None and not session.closed:
        await session.close()


# slack_sdk's own default for one Web API call.
_SLACK_CALL_TIMEOUT_S = 30.0


# The Web API client's logger: a child of slack_sdk's, so configure_logging's floor for library
# chatter still applies to it (request bodies are never logged at our DEBUG).
_SLACK_CLIENT_LOGGER = "slack_sdk.web.vpn_bot"


def _slack_client_logger() -> logging.Logger:
    """The client's logger, its own level set to the level logging is configured for now.

    slack_sdk decides whether to build each call's debug lines (URL, parameters with the blocks,
    headers, the whole answer) from ``logger.level``, the level set on that very logger, and not
    from the effective one (slackapi/python-slack-sdk#1957): with the level left unset they are
    formatted, then dropped, on every call. The level is fixed when the app is built, after
    ``configure_logging``.
    """
    logger = logging.getLogger(_SLACK_CLIENT_LOGGER)
    logger.setLevel(logger.getEffectiveLevel())
    return logger


def _build_slack(settings: Settings, metrics: Metrics) -> tuple[MeteredWebClient, MeteredAsyncApp]:
    """The Web API client (metered, with slack_sdk's retry handlers) and the Bolt app around it."""
    assert settings.slack_bot_token is not None  # noqa: S101 - require_serve_settings checked it
    # One long-lived session (closed in BotApp.aclose): without it slack_sdk opens a new session, so
    # a new connection and TLS handshake, for every call. Its timeout is the client's per-call one.
    timeout = aiohttp.ClientTimeout(total=_SLACK_CALL_TIMEOUT_S)
    slack = MeteredWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=_base_url(settings),
        metrics=metrics,
        timeout=int(_SLACK_CALL_TIMEOUT_S),
        session=aiohttp.ClientSession(timeout=timeout, trust_env=False),
        logger=_slack_client_logger(),
    )
    configure_retries(slack, backoff_s=settings.slack_retry_base_seconds / 4)
    signing_secret = _signing_secret(settings)
    with _quiet_bolt_token_warning():
        bolt = MeteredAsyncApp(
            name="vpn-bot",
            metrics=metrics,
            client=slack,
            signing_secret=signing_secret or "socket-mode-does-not-sign",
            request_verification_enabled=signing_secret is not None,
            process_before_response=False,
            raise_error_for_unhandled_request=False,
        )
    return slack, bolt


def _signing_secret(settings: Settings) -> str | None:
    return settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None


# The probes' answers: a reason code and nothing else (no host, pid or driver text: the log has it).
_OK = {"status": "ok"}


def _not_ok(reason: str) -> web.Response:
    return web.json_response({"status": "not ok", "reason": reason}, status=503)


class Readiness:
    """Whether this replica can do its work: the database takes a write, and Slack answers.

    Each check has its own deadline, so a hung dependency is a quick "not ok". Checks running at
    once share one run (a flood of probes is one database write), and Slack is asked at most once
    per SLACK_CHECK_INTERVAL_SECONDS. Details go to the log, once per reason per minute.
    """

    def __init__(self, *, store: Store, slack: AsyncWebClient, instance_id: str) -> None:
        self._store = store
        self._slack = slack
        self._instance = instance_id
        self._running: asyncio.Future[str | None] | None = None
        self._slack_checked = float("-inf")
        self._slack_reason: str | None = None
        self._throttle = LogThrottle(log)

    async def reason(self) -> str | None:
        """None when ready, else a reason code such as ``database_unreachable``."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._check())
        # Shielded: a probe that gives up does not cancel the run the others wait for.
        return await asyncio.shield(self._running)

    async def _check(self) -> str | None:
        return await self._database() or await self._slack_reachable()

    async def _database(self) -> str | None:
        try:
            # Store calls are shielded: a slow write finishes in the background after we answer.
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self._store.heartbeat(instance=self._instance, now=datetime.now(UTC))
        except TimeoutError:
            self._warn(
                "database_timeout", "the database did not answer within %.0f s", HEALTH_TIMEOUT_SECONDS
            )
            return "database_timeout"
        except StoreUnavailable as err:
            self._warn("database_unreachable", "the database takes no writes: %s", err.detail)
            return "database_unreachable"
        return None

    async def _slack_reachable(self) -> str | None:
        if time.monotonic() - self._slack_checked < SLACK_CHECK_INTERVAL_SECONDS:
            return self._slack_reason
        reason: str | None = None
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self._slack.auth_test()
        except TimeoutError:
            reason = "slack_timeout"
            self._warn(reason, "Slack (auth.test) did not answer within %.0f s", HEALTH_TIMEOUT_SECONDS)
        except SLACK_FAILURES as exc:
            error = translate(exc)
            reason = "slack_token_refused" if slack_lookup(error.error).token_refused else "slack_unreachable"
            self._warn(reason, "Slack (auth.test) failed: %s", error.error)
        self._slack_checked, self._slack_reason = time.monotonic(), reason
        return reason

    def _warn(self, reason: str, message: str, *args: object) -> None:
        self._throttle.log(logging.WARNING, reason, "not ready: " + message, *args, reason=reason)


def _probes(web_app: web.Application, readiness: Readiness) -> None:
    """Add /livez, /readyz and /healthz (an alias of /readyz) to ``web_app``."""

    async def livez(_: web.Request) -> web.Response:
        """The process runs and its event loop answers; never looks at the database or Slack."""
        return web.json_response(_OK)

    async def readyz(_: web.Request) -> web.Response:
        reason = await readiness.reason()
        return web.json_response(_OK) if reason is None else _not_ok(reason)

    web_app.router.add_get("/livez", livez)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/healthz", readyz)  # the name older deployments probe


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected error is a bare 500: logged here with its traceback, never sent to the client."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


def _build_web(settings: Settings, *, bolt: AsyncApp, store: Store, readiness: Readiness) -> web.Application:
    """The Slack side: Slack's events (HTTP mode) and the probes; never /metrics."""
    web_app = web.Application(client_max_size=1024 * 1024, middlewares=[_no_tracebacks])
    signing_secret = _signing_secret(settings)
    if signing_secret is not None:

        async def record(timestamp: int, signature: str, forget_before: int) -> bool:
            return await store.first_delivery(
                timestamp=timestamp, signature=signature, forget_before=forget_before
            )

        handler = make_aiohttp_handler(bolt, signing_secret=signing_secret, record_delivery=record)
        web_app.router.add_post("/slack/events", handler)
    _probes(web_app, readiness)
    return web_app


def _build_ops(*, store: Store, metrics: Metrics, readiness: Readiness) -> web.Application:
    """The operations side (VPNBOT_METRICS_HOST:VPNBOT_METRICS_PORT): /metrics and the probes."""
    ops = web.Application(client_max_size=64 * 1024, middlewares=[_no_tracebacks])
    ops.router.add_get("/metrics", make_metrics_handler(metrics, store))
    _probes(ops, readiness)
    return ops


def _build_workflow(
    settings: Settings,
    *,
    store: Store,
    vpc: VpcApi,
    vpcs: VpcApis | None,
    slack: AsyncWebClient,
    policy: SlackPolicy,
    clock: Clock | None,
    instance_id: str | None,
    meter: Metrics,
) -> Workflow:
    """The workflow with its Slack notifier, on the app's clock."""
    clock = clock or SystemClock()
    notifier = SlackNotifier(
        slack,
        now=clock.now,
        anyone_may_approve=settings.anyone_may_approve,
        approval_rule=lambda op: approval_rule_text(settings, op),
        approval_progress=lambda op: approval_progress_text(settings, op),
        audit_channel=settings.audit_channel,
        change_windows=settings.change_windows_parsed(),
    )
    return Workflow(
        store=store,
        vpc=vpc,
        vpcs=vpcs,
        notifier=notifier,
        policy=policy,
        clock=clock,
        config=WorkflowConfig.from_settings(settings),
        instance_id=instance_id or default_instance_id(),
        meter=meter,
        # Without VPNBOT_APPROVAL_RULES every operation takes one approver, exactly as before.
        quorum=policy if settings.approval_rules else None,
    )


def _log_account_binding(settings: Settings) -> None:
    """Say at start which accounts DMs and channels without a binding may use."""
    if not settings.multi_account:
        return
    reachable = settings.unbound_accounts
    log.info(
        "accounts reachable from DMs and unbound channels (VPNBOT_ACCOUNT_BINDING=%s): %s",
        settings.account_binding,
        ", ".join(reachable) if reachable else "none",
    )


async def create_app(
    settings: Settings,
    *,
    vpc: VpcApi | None = None,
    clock: Clock | None = None,
    instance_id: str | None = None,
    socket_mode: bool = False,
) -> BotApp:
    """Build the bot from ``settings``; ``vpc`` and ``clock`` may be injected (tests, demo)."""
    require_serve_settings(settings, socket_mode=socket_mode)

    metrics = Metrics(accounts=settings.accounts)
    slack, bolt = _build_slack(settings, metrics)
    try:
        store = await Store.open(settings.database_url)
    except BaseException:
        await _close_session(slack)
        raise
    inflight = InFlight(metrics=metrics)
    owned_vpc: VpcClient | None = None
    owned_http: httpx.AsyncClient | None = None
    try:
        accounts: AccountClients | None = None
        if vpc is None:
            owned_http = metered_vpc_http(metrics)
            base_credentials = build_credentials_provider(settings)
            owned_vpc = VpcClient.from_settings(settings, credentials=base_credentials, http=owned_http)
            vpc = VpcAdapter(owned_vpc)
            if settings.multi_account:
                # The bot's own credentials only assume each account's role; every call goes through one.
                accounts = AccountClients.from_settings(
                    settings,
                    base=owned_vpc,
                    base_credentials=base_credentials,
                    on_assume=metrics.role_assumed,
                )
                # Region lists and listings read through the first account's role.
                vpc = accounts.for_account(accounts.names[0])
        policy = SlackPolicy(settings, directory=SlackGroupDirectory(slack))
        workflow = _build_workflow(
            settings,
            store=store,
            vpc=vpc,
            vpcs=accounts,
            slack=slack,
            policy=policy,
            clock=clock,
            instance_id=instance_id,
            meter=metrics,
        )
        metrics.watch_driving(lambda: len(workflow.driving), settings.max_driven_operations)
        register(
            bolt,
            workflow=workflow,
            settings=settings,
            regions=RegionCache(vpc),
            operation=lambda op_id: store.get_operation(op_id=op_id),
            inflight=inflight,
            # Listing needs the full client (an injected VpcApi fake has no list calls).
            inventory=VpcInventory(vpc.wire, accounts=accounts) if isinstance(vpc, VpcAdapter) else None,
            read_policy=policy,
            cancel_policy=policy,
            recent_operations=store.recent_operations,
            approvals=policy,
            visibility=Visibility(settings, directory=SlackChannelDirectory(slack), approvers=policy),
            now=workflow.now,
            admin_policy=policy,
            freezes=workflow.active_freezes,
        )
        _log_account_binding(settings)
    except BaseException:
        if owned_vpc is not None:
            await owned_vpc.aclose()
        if owned_http is not None:
            await owned_http.aclose()
        await store.close()
        await _close_session(slack)
        raise

    readiness = Readiness(store=store, slack=slack, instance_id=workflow.instance_id)
    return BotApp(
        settings=settings,
        bolt=bolt,
        workflow=workflow,
        store=store,
        vpc=vpc,
        slack=slack,
        web=_build_web(settings, bolt=bolt, store=store, readiness=readiness),
        ops=_build_ops(store=store, metrics=metrics, readiness=readiness),
        inflight=inflight,
        metrics=metrics,
        _owned_vpc=owned_vpc,
        _owned_http=owned_http,
    )
