"""Fixtures for the VPC sandbox tests: a real loopback sandbox and a plain signed httpx caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from vpc_sandbox_support import UPDATE_SECONDS, Caller

from bot.sandbox.vpc import RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SandboxState


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start_vpc_sandbox(state=SandboxState(update_seconds=UPDATE_SECONDS))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def caller(sandbox: RunningSandbox) -> AsyncIterator[Caller]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield Caller(http, sandbox.url)
