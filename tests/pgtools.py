"""PostgreSQL for tests at VPNBOT_TEST_POSTGRES_URL: one shared database per test process, emptied
before each test, and a fresh empty database for the tests that need one (migrations from scratch,
database-wide settings).

The shared database is created on first use with a random name (several checkouts may test against
one server at once) and dropped at the end of the session; each pytest-xdist worker is its own
process and so has its own. Emptying it (deleting every row but ``schema_version``'s, restarting the
sequences) costs a few milliseconds, where creating and dropping a database (and migrating it) costs
a few hundred.

Unreachable PostgreSQL skips the test with the reason on a developer's machine and fails it in
CI (``CI`` set), where the PostgreSQL tests must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.store import SCHEMA_VERSION
from bot.store.tables import metadata

PG_URL = os.environ.get("VPNBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_unavailable(reason: str) -> None:
    message = f"PostgreSQL not reachable at {PG_URL} ({reason}); set VPNBOT_TEST_POSTGRES_URL"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _pg_unavailable(f"{type(exc).__name__}: {exc}")
        raise  # unreachable: skip/fail raise


async def _admin_execute(sql: str) -> None:
    conn = await _connect(PG_URL)
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


# Every table a migrated store has; anything else in the shared database means a test changed the schema.
_STORE_TABLES = frozenset(metadata.tables)


class SharedDatabase:
    """One PostgreSQL database for all the tests of this process, emptied before each one."""

    def __init__(self) -> None:
        self._name: str | None = None

    async def empty(self) -> str:
        """The database's URL, with no rows in it (created on first use); migrated once it was opened."""
        if self._name is None:
            name = f"vpnbot_test_shared_{uuid.uuid4().hex[:12]}"
            await _admin_execute(f'CREATE DATABASE "{name}"')
            self._name = name
            return _with_database(PG_URL, name)
        url = _with_database(PG_URL, self._name)
        conn = await _connect(url)
        try:
            await _clear(conn, self._name)
        finally:
            await conn.close()
        return url

    def drop(self) -> None:
        """Drop the database (at the end of the session), from a thread of its own with its own loop."""
        if self._name is None:
            return
        statement = f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'
        failures: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(_admin_execute(statement))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failures.append(exc)

        worker = threading.Thread(target=run, name="drop-shared-test-database")
        worker.start()
        worker.join()
        self._name = None
        if failures:
            raise failures[0]


async def _clear(conn: asyncpg.Connection, name: str) -> None:
    """Delete every row (sequences restarted) but the applied migrations; or, if a test left the
    schema other than the migrations make it, drop the whole schema so the next store migrates anew.
    """
    # Connections a test left open (it should not) would hold locks TRUNCATE waits for, as
    # DROP DATABASE ... WITH (FORCE) ended them before.
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    tables = {
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    if not tables:
        return
    version = None
    if "schema_version" in tables:
        version = await conn.fetchval("SELECT max(version) FROM schema_version")
    if tables == _STORE_TABLES and version == SCHEMA_VERSION:
        # DELETE, not TRUNCATE: on tables of a few rows it takes a millisecond where TRUNCATE (new
        # files for every table and index) takes fifty. Foreign-key triggers off (there are none
        # today), so the order does not matter; sequences restarted as in a new database.
        deletes = "; ".join(f'DELETE FROM "{t}"' for t in sorted(tables - {"schema_version"}))  # noqa: S608 - our table names
        async with conn.transaction():
            await conn.execute(f"SET LOCAL session_replication_role = replica; {deletes}")
            await conn.execute(
                "SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'S' AND n.nspname = 'public'"
            )
    else:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
