"""Fixtures for the Slack-layer tests; the fakes themselves live in slackfakes.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from slackfakes import FakeSlack, FakeWorkflow


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's Slack/vpn-bot variables out of the tests."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "VPNBOT_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A loopback Slack Web API and response_url endpoint."""
    fake = FakeSlack()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def fake_workflow() -> FakeWorkflow:
    return FakeWorkflow()
