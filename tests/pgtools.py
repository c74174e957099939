"""PostgreSQL for tests: a fresh database per test at VPNBOT_TEST_POSTGRES_URL.

Unreachable PostgreSQL skips the test with the reason on a developer's machine and fails it in
CI (``CI`` set), where the PostgreSQL tests must run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

PG_URL = os.environ.get("VPNBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_unavailable(reason: str) -> None:
    message = f"PostgreSQL not reachable at {PG_URL} ({reason}); set VPNBOT_TEST_POSTGRES_URL"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def _admin_execute(sql: str) -> None:
    try:
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _pg_unavailable(f"{type(exc).__name__}: {exc}")
        raise  # unreachable: skip/fail raise
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """Create an empty PostgreSQL database for one test and drop it afterwards; yield its URL."""
    name = f"vpnbot_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(PG_URL, name)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
