"""Shared fixtures: a store on SQLite and on PostgreSQL (a fresh database per test), a fake clock."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fakes import FakeClock

from bot.store import Store

_SETTINGS_PREFIXES = ("SLACK_", "VPNBOT_", "ALIBABA_CLOUD_")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a developer's own settings (environment, .env, ~/.aliyun) out of every test."""
    for name in list(os.environ):
        if name.startswith(_SETTINGS_PREFIXES) and name != "VPNBOT_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


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


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vpnbot.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL, once for SQLite (a temp file) and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vpnbot.db'}"
        return
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An opened, migrated store on each backend."""
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
