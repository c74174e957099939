"""A whole vpn-bot world on loopback: the VPC sandbox, the Slack stand-in and one or more bot
replicas serving real HTTP. Used by ``vpn-bot demo`` and by the end-to-end tests; and
:func:`serve_local_tools`, the stand-ins alone for ``vpn-bot sandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml
from aiohttp import web

from bot.app import BotApp, create_app
from bot.config import ANYONE, Settings, explicit_settings
from bot.errors import StartupError
from bot.ports import Clock
from bot.sandbox.slack import SlackStandin, SlackUserAgent, demo_workspace, start_slack_standin
from bot.sandbox.sts import KeyRing, RunningSts, SandboxAccount, SandboxRole, start_sts_sandbox
from bot.sandbox.vpc import (
    API_VERSION,
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    RunningSandbox,
    load_faults_file,
    start_vpc_sandbox,
)
from bot.sandbox.vpc_state import SandboxState
from bot.startup import listen_error

__all__ = ["LOCAL_SIGNING_SECRET", "LocalStack", "Replica", "serve_local_tools", "start_local_stack"]

LOCAL_SIGNING_SECRET = "local-signing-secret-0123456789"  # noqa: S105 - loopback-only demo value
LOCAL_BOT_TOKEN = "xoxb-local-demo-token"  # noqa: S105 - loopback-only demo value


@dataclass
class Replica:
    """One bot process-equivalent: its app and the HTTP server in front of it."""

    app: BotApp
    url: str
    runner: web.AppRunner

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    async def aclose(self) -> None:
        await self.runner.cleanup()
        await self.app.aclose()


@dataclass
class LocalStack:
    """The sandbox, the Slack stand-in, the bot replicas and a fake Slack user driving them."""

    vpc: RunningSandbox
    slack: SlackStandin
    settings: Settings
    replicas: list[Replica] = field(default_factory=list)
    agents: list[SlackUserAgent] = field(default_factory=list)
    # With several accounts: the STS sandbox (TLS) and each account by its VPNBOT_ACCOUNTS name.
    sts: RunningSts | None = None
    accounts: dict[str, SandboxAccount] = field(default_factory=dict)

    @property
    def bot(self) -> Replica:
        return self.replicas[0]

    @property
    def agent(self) -> SlackUserAgent:
        return self.agents[0]

    async def add_replica(self, *, clock: Clock | None = None, instance_id: str | None = None) -> Replica:
        """Start another bot on the same database, sandbox and Slack (a second replica)."""
        app = await create_app(self.settings, clock=clock, instance_id=instance_id)
        runner = web.AppRunner(app.web, access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            replica = Replica(app=app, url=f"http://{host}:{port}", runner=runner)
            await app.start()
        except BaseException:
            await runner.cleanup()
            await app.aclose()
            raise
        self.replicas.append(replica)
        self.agents.append(
            SlackUserAgent(
                events_url=replica.events_url, signing_secret=LOCAL_SIGNING_SECRET, state=self.slack.state
            )
        )
        return replica

    async def aclose(self) -> None:
        for agent in self.agents:
            await agent.aclose()
        for replica in reversed(self.replicas):
            await replica.aclose()
        await self.slack.close()
        await self.vpc.close()
        if self.sts is not None:
            await self.sts.close()


def local_settings(*, database_url: str, vpc_url: str, slack_url: str, **overrides: Any) -> Settings:
    """Settings that point the bot at the local stand-ins."""
    values: dict[str, Any] = {
        "slack_bot_token": LOCAL_BOT_TOKEN,
        "slack_signing_secret": LOCAL_SIGNING_SECRET,
        "slack_api_url": slack_url,
        "access_key_id": DEMO_ACCESS_KEY_ID,
        "access_key_secret": DEMO_ACCESS_KEY_SECRET,
        "vpc_endpoint": vpc_url,
        "database_url": database_url,
        "default_region": "cn-hangzhou",
        "poll_interval_seconds": 0.2,
        "busy_retry_base_seconds": 0.2,
        "api_deadline_seconds": 10.0,
        # The local world has no real people to protect; tests that check the policy set their own.
        "approvers": [ANYONE],
    }
    values.update(overrides)
    # Built from these values only, never from the developer's environment or .env file.
    return explicit_settings(**values)


async def start_local_stack(
    *,
    database_url: str,
    update_seconds: float = 0.5,
    settings: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    replicas: int = 1,
    accounts: Mapping[str, SandboxAccount] | None = None,
    sts_lifetime_s: float | None = None,
) -> LocalStack:
    """Start the sandbox, the Slack stand-in and ``replicas`` bots sharing ``database_url``.

    ``accounts`` (VPNBOT_ACCOUNTS name -> sandbox account) adds the STS sandbox over TLS and sets
    VPNBOT_ACCOUNTS (each account's first role) and VPNBOT_STS_ENDPOINT; the caller must make the
    bot trust ``stack.sts.ca_file`` (SSL_CERT_FILE) before an operation assumes a role.
    """
    keys = KeyRing()
    by_uid = {a.uid: a.state for a in (accounts or {}).values()}
    vpc = await start_vpc_sandbox(
        state=SandboxState(update_seconds=update_seconds), keys=keys, accounts=by_uid
    )
    sts: RunningSts | None = None
    extra: dict[str, Any] = {}
    if accounts:
        sts = await start_sts_sandbox(
            keys=keys, accounts={a.uid: a for a in accounts.values()}, lifetime_s=sts_lifetime_s
        )
        extra = {
            "accounts": ",".join(f"{name}={a.role_arn(next(iter(a.roles)))}" for name, a in accounts.items()),
            "sts_endpoint": sts.endpoint,
        }
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    stack = LocalStack(
        vpc=vpc,
        slack=slack,
        settings=local_settings(
            database_url=database_url, vpc_url=vpc.url, slack_url=slack.url, **(extra | dict(settings or {}))
        ),
        sts=sts,
        accounts=dict(accounts or {}),
    )
    try:
        for _ in range(replicas):
            await stack.add_replica(clock=clock)
    except BaseException:
        await stack.aclose()
        raise
    return stack


def _load_faults(state: SandboxState, path: str) -> None:
    """Load ``path`` into the sandbox's faults; any problem is a StartupError naming the file."""
    fix = "see `vpn-bot sandbox --help` for the faults file format"
    try:
        added = state.faults.load(load_faults_file(path))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(
            f"cannot read the faults file {path} ({reason})", "check the path after --faults"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise StartupError(f"the faults file {path} is not YAML or JSON{where}", fix) from None
    except ValueError as exc:
        raise StartupError(f"the faults file {path} is not valid: {exc}", fix) from None
    except TypeError:  # a comparison or conversion inside FaultSet.add met a value of the wrong type
        raise StartupError(
            f"the faults file {path} has a value of the wrong type (numbers for latency, times, after, "
            "http_status; true/false for drop, non_json, after_processing)",
            fix,
        ) from None
    if not added:
        raise StartupError(f"the faults file {path} holds no faults", fix)


# ``vpn-bot sandbox --accounts``: two demo accounts behind the STS sandbox. prod's resources are the
# usual seeded world (the same the bot's own key sees); staging has three connections of its own.
DEMO_ACCOUNTS = {"prod": "1000000000000001", "staging": "1000000000000002"}
DEMO_ROLE = "vpn-bot"
DEMO_STAGING_CONNECTIONS = 3


def demo_accounts(home: SandboxState, *, update_seconds: float) -> dict[str, SandboxAccount]:
    """The demo accounts by VPNBOT_ACCOUNTS name: prod over ``home``, staging on its own."""
    staging = SandboxState(update_seconds=update_seconds, seed=False)
    staging.seed_connections("cn-hangzhou", DEMO_STAGING_CONNECTIONS)
    roles = {DEMO_ROLE: SandboxRole(DEMO_ROLE)}
    return {
        "prod": SandboxAccount(DEMO_ACCOUNTS["prod"], home, dict(roles)),
        "staging": SandboxAccount(DEMO_ACCOUNTS["staging"], staging, dict(roles)),
    }


def _banner(
    vpc: RunningSandbox,
    slack: SlackStandin | None,
    *,
    demo_keys: bool,
    sts: RunningSts | None = None,
    accounts: Mapping[str, SandboxAccount] | None = None,
) -> str:
    """Where the tools listen, and the ``export`` lines that point serve and doctor at them."""
    lines = [f"VPC sandbox (API {API_VERSION}) listening on {vpc.url}"]
    lines.append(f"  control API: {vpc.url}/_sandbox/state (also /_sandbox/faults, /_sandbox/reset)")
    if sts is not None and accounts:
        lines.append(
            f"STS sandbox (AssumeRole, TLS) listening on https://{sts.endpoint}, its CA in {sts.ca_file}"
        )
        lines += [
            f"  account {name}: {a.uid}, {len(a.state.connections)} connections"
            for name, a in accounts.items()
        ]
    if slack is not None:
        lines.append(f"Slack Web API stand-in listening on {slack.url}")
    lines += ["Point `vpn-bot serve` and `vpn-bot doctor` at them (paste into their shell):"]
    exports = [f"VPNBOT_VPC_ENDPOINT={vpc.url}"]
    if demo_keys:
        # The demo key pair is public and only opens this sandbox, so printing it is safe.
        exports += [
            f"ALIBABA_CLOUD_ACCESS_KEY_ID={vpc.credentials.access_key_id}",
            f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={vpc.credentials.access_key_secret}",
        ]
    else:
        lines.append(
            f"  (accepting AccessKey id {vpc.credentials.access_key_id} from the environment; secret not shown)"
        )
    if slack is not None:
        exports += [
            f"VPNBOT_SLACK_API_URL={slack.url}",
            f"SLACK_BOT_TOKEN={LOCAL_BOT_TOKEN}",
            f"SLACK_SIGNING_SECRET={LOCAL_SIGNING_SECRET}",
            "VPNBOT_APPROVERS='*'",
        ]
    if sts is not None and accounts:
        roles = ",".join(f"{name}={a.role_arn(DEMO_ROLE)}" for name, a in accounts.items())
        exports += [
            f"VPNBOT_STS_ENDPOINT={sts.endpoint}",
            f"VPNBOT_ACCOUNTS={roles}",
            # The bot trusts the sandbox's CA the standard way; TLS verification stays on.
            f"SSL_CERT_FILE={sts.ca_file}",
            f"REQUESTS_CA_BUNDLE={sts.ca_file}",
        ]
    lines += [f"  export {line}" for line in exports]
    return "\n".join(lines)


async def serve_local_tools(
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    faults_file: str | None,
    update_seconds: float,
    slack_port: int | None,
    out: TextIO | None = None,
    sts_port: int | None = None,
    sts_lifetime_s: float | None = None,
) -> None:
    """``vpn-bot sandbox``: serve the VPC sandbox (and the Slack stand-in) until ``stop`` is set.

    The sandbox accepts the AccessKey pair from the environment if both halves are set, else the
    public demo pair. With ``sts_port``, the STS sandbox serves AssumeRole over TLS for two demo
    accounts (prod, staging). Failures to start (busy port, bad faults file) are StartupErrors.
    """
    env_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    env_secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    demo_keys = not (env_id and env_secret)
    state = SandboxState(update_seconds=update_seconds)
    if faults_file:
        _load_faults(state, faults_file)
    keys = KeyRing()
    accounts = demo_accounts(state, update_seconds=update_seconds) if sts_port is not None else {}
    async with contextlib.AsyncExitStack() as running:
        try:
            vpc = await start_vpc_sandbox(
                host,
                port,
                state=state,
                keys=keys,
                accounts={a.uid: a.state for a in accounts.values()},
                access_key_id=DEMO_ACCESS_KEY_ID if demo_keys else str(env_id),
                access_key_secret=DEMO_ACCESS_KEY_SECRET if demo_keys else str(env_secret),
                security_token=None if demo_keys else os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None,
                access_log=True,
            )
        except OSError as exc:
            raise listen_error(host, port, exc, setting="--port") from None
        running.push_async_callback(vpc.close)
        sts: RunningSts | None = None
        if sts_port is not None:
            try:
                sts = await start_sts_sandbox(
                    keys=keys,
                    accounts={a.uid: a for a in accounts.values()},
                    host=host,
                    port=sts_port,
                    lifetime_s=sts_lifetime_s,
                )
            except OSError as exc:
                raise listen_error(host, sts_port, exc, setting="--sts-port") from None
            running.push_async_callback(sts.close)
        slack = None
        if slack_port is not None:
            try:
                slack = await start_slack_standin(
                    host, slack_port, bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace()
                )
            except OSError as exc:
                raise listen_error(host, slack_port, exc, setting="--slack-port") from None
            running.push_async_callback(slack.close)
        banner = _banner(vpc, slack, demo_keys=demo_keys, sts=sts, accounts=accounts)
        print(banner, file=out or sys.stdout, flush=True)
        await stop.wait()
