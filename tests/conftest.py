"""Shared fixtures: a store on SQLite and on PostgreSQL (one database per test
process, emptied before each test; a fresh one where a test needs an empty database), a fake clock.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import stamina
from fakes import FakeClock
from pgtools import SharedDatabase, fresh_postgres_database
from workflow_harness import Harness, make_harness

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


@pytest.fixture(autouse=True)
def _stamina_test_mode() -> Iterator[None]:
    """Retries without back-off waits; cap=True keeps each caller's own attempt limit.

    Tests of the back-off itself turn it off with ``stamina.set_testing(False)``.
    """
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vpnbot.db'}"


@pytest.fixture(scope="session")
def shared_postgres() -> Iterator[SharedDatabase]:
    """This process's PostgreSQL test database (created on first use, dropped at the end)."""
    shared = SharedDatabase()
    try:
        yield shared
    finally:
        shared.drop()


@pytest.fixture
async def postgres_url(shared_postgres: SharedDatabase) -> str:
    """A PostgreSQL database with no rows in it, migrated or not (the shared one, emptied)."""
    return await shared_postgres.empty()


_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=_BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, shared_postgres: SharedDatabase) -> str:
    """A database URL with no rows in it, once for SQLite (a temp file) and once for PostgreSQL.

    The PostgreSQL one may already be migrated (see ``postgres_url``); tests of migrations from
    scratch take ``empty_db_url``.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vpnbot.db'}"
    return await shared_postgres.empty()


@pytest.fixture(params=_BACKENDS)
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, not even the schema: a new SQLite file, a new PostgreSQL database."""
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


@pytest.fixture
async def h(store: Store, clock: FakeClock) -> AsyncIterator[Harness]:
    """A workflow harness on each backend (see tests/workflow_harness.py)."""
    async with make_harness(store, clock) as harness:
        yield harness
