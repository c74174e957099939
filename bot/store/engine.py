"""Engines and driver errors: SQLite's pragmas and pool, PostgreSQL's timeouts, outages told apart.

Everything here knows the drivers; :mod:`bot.store.core` only sees an engine and ``unavailable()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolResetState

from bot.store.sqlite_driver import OneTripDBAPI, begin_immediate_on_first_statement

__all__ = ["async_url", "make_engine", "sqlite_threads_finished", "unavailable"]

# A PostgreSQL that does not answer must not hang a click or a health check for long.
_PG_CONNECT_TIMEOUT_S = 5.0
# Switching a new SQLite file to WAL while another connection does the same can fail at once with
# "database is locked": SQLite skips the busy handler there to avoid a deadlock. Tries, and the
# pause between them (blocking, but only ever while two openers race on a brand-new file).
_WAL_ATTEMPTS = 20
_WAL_PAUSE_S = 0.01
_PG_COMMAND_TIMEOUT_S = 15.0


def async_url(url: str) -> str:
    """Map a plain database URL to its asyncio driver: aiosqlite or asyncpg."""
    for prefix, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return driver + url.removeprefix(prefix)
    return url


# PostgreSQL SQLSTATEs (or classes, by prefix) that say the server cannot take our work right now:
# connection exceptions (08), read-only transaction (25006: a read-only replica or database),
# insufficient resources (53: disk full, out of memory, too many connections), operator
# intervention shutting down or starting up (57P). asyncpg maps most of them to a plain DBAPIError.
_UNAVAILABLE_SQLSTATES = ("08", "25006", "53", "57P")
# How long a SQLite transaction waits for another process's write lock before the database counts
# as unavailable.
_SQLITE_BUSY_TIMEOUT_MS = 15_000


def unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the database is unreachable or unwritable, not a bug of ours."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        # OperationalError: refused or lost connections, SQLite's locked, read-only or full database.
        # InterfaceError: the driver's connection is closed or broken.
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or isinstance(
            exc.orig, OSError | TimeoutError
        )
    return isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError)


async def sqlite_threads_finished(started: set[threading.Thread], within: float = 2.0) -> None:
    """Let aiosqlite's worker threads of a failed connect end while the event loop still runs.

    A connect that fails stops its worker thread by a message the thread answers on the event
    loop; if the process exits first (a start-up failure), the thread finds the loop closed and
    prints a traceback. Waiting here (in a thread, so the loop keeps running) lets it finish.
    """
    workers = [t for t in started if "_connection_worker_thread" in t.name and t.is_alive()]
    for worker in workers:
        await asyncio.to_thread(worker.join, within)


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = _SQLITE_BUSY_TIMEOUT_MS) -> AsyncEngine:
    """The engine for ``url``; on SQLite, a transaction waits ``sqlite_busy_timeout_ms`` for the lock."""
    if url.startswith("sqlite"):
        memory = ":memory:" in url or url.rstrip("/").endswith("sqlite+aiosqlite:")
        # One connection per process, handed to one transaction at a time in arrival order.
        # SQLite has one writer anyway, and every transaction takes the write lock up front
        # (BEGIN IMMEDIATE, below); with a pool of many connections, waiters inside one process
        # raced for the lock unfairly and a burst could outwait busy_timeout ("database is
        # locked"). An in-memory database must live in one connection in any case.
        engine = create_async_engine(
            url,
            # SQLAlchemy's aiosqlite adapter with two round trips to the driver's thread per transaction.
            module=OneTripDBAPI(),
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            # See _on_reset below: the pool rolls back only a connection still in a transaction.
            pool_reset_on_return=None,
        )
        _configure_sqlite(engine, wal=not memory, busy_timeout_ms=sqlite_busy_timeout_ms)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=_PG_COMMAND_TIMEOUT_S,
        connect_args={"timeout": _PG_CONNECT_TIMEOUT_S, "command_timeout": _PG_COMMAND_TIMEOUT_S},
    )


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, tried again while a concurrent opener holds the lock."""
    for attempt in range(1, _WAL_ATTEMPTS + 1):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as err:
            if "locked" not in str(err) or attempt == _WAL_ATTEMPTS:
                raise
            time.sleep(_WAL_PAUSE_S * attempt)


def _configure_sqlite(engine: AsyncEngine, *, wal: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the driver must not.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # Wait (rather than fail) when another process holds the write lock; set before WAL,
        # whose switch itself needs the lock when two processes open a new file together.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if wal:
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
        # fail with SQLITE_BUSY on upgrade, and busy_timeout applies instead. It is sent in the
        # round trip of the transaction's first statement (bot/store/sqlite_driver.py); an error
        # there (locked past busy_timeout, a closed connection) comes back from that statement,
        # raised and handled by SQLAlchemy like any other.
        if not begin_immediate_on_first_statement(conn.connection.dbapi_connection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
        # Every transaction has ended (committed or rolled back) by the time its connection goes
        # back to the pool, so the pool's own rollback on return cost a round trip to aiosqlite's
        # thread for nothing. Only a connection still in a transaction (a commit that failed) is
        # rolled back, as the pool would; a connection being thrown away is left to be closed.
        if not state.asyncio_safe:
            return
        try:
            open_transaction = dbapi_conn.driver_connection.in_transaction
        except ValueError:  # aiosqlite's connection is closed: nothing to roll back
            return
        if open_transaction:
            dbapi_conn.rollback()
