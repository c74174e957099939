"""The shared PostgreSQL test database (tests/pgtools.py) is emptied between tests as a new one would be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from pgtools import SharedDatabase

from bot.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def shared() -> AsyncIterator[SharedDatabase]:
    """A shared database of its own (not this process's), dropped after the test."""
    database = SharedDatabase()
    try:
        yield database
    finally:
        database.drop()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_rows_go_sequences_restart_and_the_migrations_stay(shared: SharedDatabase) -> None:
    url = await shared.empty()
    store = await Store.open(url)
    try:
        await store.heartbeat(instance="i-1", now=T0)
    finally:
        await store.close()
    assert await _fetchval(url, "SELECT nextval(pg_get_serial_sequence('audit', 'id'))") == 1
    assert await _fetchval(url, "SELECT nextval(pg_get_serial_sequence('audit', 'id'))") == 2

    assert await shared.empty() == url
    assert await _fetchval(url, "SELECT count(*) FROM heartbeats") == 0
    assert await _fetchval(url, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION
    assert await _fetchval(url, "SELECT nextval(pg_get_serial_sequence('audit', 'id'))") == 1


async def test_a_schema_a_test_changed_is_dropped_so_the_next_store_migrates_anew(
    shared: SharedDatabase,
) -> None:
    url = await shared.empty()
    store = await Store.open(url)
    await store.close()
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(
            "ALTER TABLE operations DROP COLUMN account; DELETE FROM schema_version WHERE version > 4"
        )
    finally:
        await conn.close()

    await shared.empty()
    assert await _fetchval(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    store = await Store.open(url)
    try:
        assert await store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await store.close()


async def test_a_connection_a_test_left_open_does_not_hold_up_the_next(shared: SharedDatabase) -> None:
    url = await shared.empty()
    store = await Store.open(url)
    await store.close()
    leaked = await asyncpg.connect(url, timeout=5)
    try:
        await leaked.execute("BEGIN; LOCK TABLE operations IN ACCESS EXCLUSIVE MODE")
        await shared.empty()
        assert leaked.is_closed() or not await _still_alive(leaked)
    finally:
        leaked.terminate()


async def _still_alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True
