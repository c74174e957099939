"""A whole vpn-bot world on loopback: the VPC sandbox, the Slack stand-in and one or more bot
replicas serving real HTTP. Used by ``vpn-bot demo`` and by the end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.app import BotApp, create_app
from bot.config import Settings, explicit_settings
from bot.ports import Clock
from bot.sandbox.slack import SlackStandin, SlackUserAgent, demo_workspace, start_slack_standin
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SandboxState

__all__ = ["LOCAL_SIGNING_SECRET", "LocalStack", "Replica", "start_local_stack"]

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
) -> LocalStack:
    """Start the sandbox, the Slack stand-in and ``replicas`` bots sharing ``database_url``."""
    vpc = await start_vpc_sandbox(state=SandboxState(update_seconds=update_seconds))
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN, workspace=demo_workspace())
    stack = LocalStack(
        vpc=vpc,
        slack=slack,
        settings=local_settings(
            database_url=database_url, vpc_url=vpc.url, slack_url=slack.url, **dict(settings or {})
        ),
    )
    try:
        for _ in range(replicas):
            await stack.add_replica(clock=clock)
    except BaseException:
        await stack.aclose()
        raise
    return stack
