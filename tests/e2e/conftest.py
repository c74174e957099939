"""End-to-end fixtures: the real bot over HTTP, the VPC sandbox and the Slack stand-in on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.sandbox.local import LocalStack

from .support import local_stack

CHANNEL = "C0VPNOPS"
ALICE = "U0ALICE"
BOB = "U0BOB"
CAROL = "U0CAROL"


@pytest.fixture
async def stack(sqlite_url: str) -> AsyncIterator[LocalStack]:
    """One bot replica on SQLite, with fast polling and a quick sandbox gateway."""
    async with local_stack(sqlite_url, update_seconds=0.3) as running:
        yield running
