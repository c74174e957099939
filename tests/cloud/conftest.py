"""Fixtures for the cloud client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.sandbox.vpc import RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SandboxState

from .fakes import AK, FakeVpc


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    """The VPC sandbox on loopback, its gateways updating for 0.2 s after a change."""
    running = await start_vpc_sandbox(state=SandboxState(update_seconds=0.2))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
def fake() -> FakeVpc:
    return FakeVpc()


@pytest.fixture
async def make_client(fake: FakeVpc) -> AsyncIterator[Callable[..., VpcClient]]:
    clients: list[httpx.AsyncClient] = []

    def build(**kwargs: Any) -> VpcClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        clients.append(http)
        kwargs.setdefault("wait_jitter", 0.0)
        return VpcClient(kwargs.pop("credentials", StaticCredentialsProvider(AK)), http=http, **kwargs)

    yield build
    for http in clients:
        await http.aclose()
