"""The two databases behind :class:`bot.store.Store`, and driver errors: outages told apart.

Both run a transaction the same way: one synchronous function of a SQLAlchemy ``Connection``
(``body``), awaited by :meth:`Database.run`. Everything here knows the drivers;
:mod:`bot.store.core` only sees a :class:`Database` and ``unavailable()``.

- **SQLite** (:class:`SQLiteDatabase`): SQLAlchemy's synchronous engine on the standard library's
  ``sqlite3``, with every transaction run on one thread of its own. One thread, one connection:
  transactions of a process run one after the other in arrival order, as SQLite's single write
  lock would have them anyway, and the event loop never waits for the disk or the lock. Those
  waiting together share one COMMIT (group commit, see the class).
- **PostgreSQL** (:class:`PostgresDatabase`): SQLAlchemy's asyncio engine on asyncpg, the body
  run by ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool, StaticPool

__all__ = [
    "Database",
    "PostgresDatabase",
    "SQLiteDatabase",
    "async_url",
    "open_database",
    "unavailable",
]

T = TypeVar("T")

# A PostgreSQL that does not answer must not hang a click or a health check for long.
_PG_CONNECT_TIMEOUT_S = 5.0
_PG_COMMAND_TIMEOUT_S = 15.0
# Switching a new SQLite file to WAL while another connection does the same can fail at once with
# "database is locked": SQLite skips the busy handler there to avoid a deadlock. Tries, and the
# pause between them (on the database's own thread; only ever while two openers race on a new file).
_WAL_ATTEMPTS = 20
_WAL_PAUSE_S = 0.01
# How long a SQLite transaction waits for another process's write lock before the database counts
# as unavailable.
_SQLITE_BUSY_TIMEOUT_MS = 15_000


def async_url(url: str) -> str:
    """Map a plain PostgreSQL URL to its asyncio driver (asyncpg); any other URL is returned as is.

    SQLite needs no asyncio driver: :class:`SQLiteDatabase` runs the standard library's ``sqlite3``
    on a thread of its own.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


# PostgreSQL SQLSTATEs (or classes, by prefix) that say the server cannot take our work right now:
# connection exceptions (08), read-only transaction (25006: a read-only replica or database),
# insufficient resources (53: disk full, out of memory, too many connections), operator
# intervention shutting down or starting up (57P). asyncpg maps most of them to a plain DBAPIError.
_UNAVAILABLE_SQLSTATES = ("08", "25006", "53", "57P")


# Out of disk: PostgreSQL's disk_full, SQLite's SQLITE_FULL (sqlite3 sets sqlite_errorcode).
_DISK_FULL_SQLSTATE = "53100"
_SQLITE_FULL = 13


def disk_full(exc: BaseException) -> bool:
    """Whether a driver error says the database's disk is full (a cause a person must fix, not wait out)."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return sqlstate == _DISK_FULL_SQLSTATE or getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL


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


class Database(Protocol):
    """Where the store's transactions run."""

    @property
    def dialect_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        ...

    async def run(self, body: Callable[[Connection], T]) -> T:
        """Run ``body(conn)`` as one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def close(self) -> None:
        """Close every connection (and, on SQLite, the database's thread); a later ``run`` reopens them."""
        ...


def open_database(url: str, *, sqlite_busy_timeout_ms: int = _SQLITE_BUSY_TIMEOUT_MS) -> Database:
    """The database at ``url`` (``sqlite:///…`` or ``postgresql://…``); nothing is connected yet.

    On SQLite, a transaction waits ``sqlite_busy_timeout_ms`` for another process's write lock.
    """
    if make_url(url).get_backend_name() == "sqlite":
        return SQLiteDatabase(url, busy_timeout_ms=sqlite_busy_timeout_ms)
    return PostgresDatabase(async_url(url))


class SQLiteDatabase:
    """SQLite through SQLAlchemy's synchronous ``sqlite3`` engine, on one thread of its own.

    Every transaction runs from BEGIN to COMMIT on that thread (a single-worker executor), so:

    - the event loop waits for nothing: not for the write lock (``busy_timeout``, when another
      process holds it), not for the disk (COMMIT's fsync), not for the statements;
    - one transaction runs at a time, in the order they were asked for. That is how SQLite's one
      write lock would order them anyway; inside one process it is fair (no waiter can lose the
      race for the lock until ``busy_timeout``) and costs no lock traffic;
    - the engine's one connection is only ever used by the thread that opened it.

    A transaction is one hand-over to the thread and one back. Every transaction takes the write lock
    up front (``BEGIN IMMEDIATE``, SQLAlchemy's documented recipe for SQLite): a read-then-write
    transaction can then never fail on upgrading its lock, and another process's writer waits up to
    ``busy_timeout`` instead. Files are in WAL mode, so other processes may read meanwhile.

    **Group commit.** The bodies waiting when the thread comes to them (up to ``_GROUP_MAX``) run
    one after the other inside one BEGIN IMMEDIATE … COMMIT, and each caller is answered only once
    that COMMIT is durable. Run in order on one connection, they see exactly what they would have
    seen one transaction each; what a burst saves is a COMMIT (its fsync) and a BEGIN per body,
    and the hand-overs of the thread's connection and the loop's wake-ups. If a body raises, or the
    COMMIT fails, nothing of the group is kept: the group is rolled back and every body of it runs
    again alone, in order, as its own transaction, so each caller gets the result (or the error)
    it would have had alone. A BEGIN that fails (another process held the write lock past
    ``busy_timeout``) fails every caller of the group, as it would have failed each in turn.
    """

    dialect_name = "sqlite"

    def __init__(self, url: str, *, busy_timeout_ms: int = _SQLITE_BUSY_TIMEOUT_MS) -> None:
        parsed = make_url(url)
        memory = parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
        # One connection, for the one thread; an in-memory database lives in that connection.
        pool: dict[str, Any] = (
            {"poolclass": StaticPool}
            if memory
            else {"poolclass": QueuePool, "pool_size": 1, "max_overflow": 0}
        )
        self.engine: Engine = create_engine(url, **pool)
        _configure_sqlite(self.engine, wal=not memory, busy_timeout_ms=busy_timeout_ms)
        # Started by the first transaction, ended by close().
        self._thread: ThreadPoolExecutor | None = None
        # Bodies waiting for the thread, and whether a drain of them is handed to it already.
        self._waiting: deque[_Waiting] = deque()
        self._draining = False
        self._lock = threading.Lock()

    async def run(self, body: Callable[[Connection], T]) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpnbot-sqlite")
        loop = asyncio.get_running_loop()
        # The caller's context goes along, as asyncio.to_thread takes it (log fields, for one).
        waiting = _Waiting(body, contextvars.copy_context(), loop.create_future(), loop)
        with self._lock:
            self._waiting.append(waiting)
            start, self._draining = not self._draining, True
        if start:
            try:
                self._thread.submit(self._drain)
            except BaseException:
                with self._lock:
                    self._waiting.remove(waiting)
                    self._draining = False
                raise
        result: T = await waiting.future
        return result

    def _drain(self) -> None:
        """On the thread: run the waiting bodies, a group at a time, until none is left."""
        while True:
            with self._lock:
                if not self._waiting:
                    self._draining = False
                    return
                group = [self._waiting.popleft() for _ in range(min(len(self._waiting), _GROUP_MAX))]
            # A caller cancelled before its body started: as a cancelled executor job, it never runs.
            group = [w for w in group if not w.future.cancelled()]
            if len(group) == 1:
                _answer([(group[0], *self._alone(group[0]))])
            elif group:
                _answer(self._together(group))

    def _alone(self, waiting: _Waiting) -> tuple[Any, BaseException | None]:
        try:
            return waiting.context.run(self._transaction, waiting.body), None
        except BaseException as exc:  # noqa: BLE001 - handed to its caller, as run_in_executor would
            return None, exc

    def _together(self, group: list[_Waiting]) -> list[tuple[_Waiting, Any, BaseException | None]]:
        """``group`` in one transaction (see the class); each body alone if any of it fails."""
        results: list[Any] = []
        begun = False
        try:
            with self.engine.begin() as conn:
                begun = True
                for waiting in group:
                    results.append(waiting.context.run(waiting.body, conn))
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, or each body runs alone
            if not begun:
                return [(w, None, exc) for w in group]
            return [(w, *self._alone(w)) for w in group]
        return [(w, r, None) for w, r in zip(group, results, strict=True)]

    def _transaction(self, body: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return body(conn)

    async def close(self) -> None:
        """Close the connection and end the thread; a transaction after this starts them again."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        # The connection is closed by the thread that opened it, after every transaction queued
        # before; then the thread, idle by now, ends.
        try:
            await asyncio.get_running_loop().run_in_executor(thread, self.engine.dispose)
        finally:
            thread.shutdown(wait=True)


# The most bodies one SQLite transaction carries (group commit, see SQLiteDatabase). Every body of a
# group waits for the group's COMMIT, so the first waits for the others' statements: in a burst whose
# reads all end together (50 requests for one connection), the earliest request's state change would
# wait for 15 others at 16. 8 keeps that wait to a few ms. On the issue-24 benchmark (a loaded
# machine) 4, 8 and 16 were within noise of one another; 1 and 64 were the worst.
_GROUP_MAX = 8


@dataclass(frozen=True)
class _Waiting:
    """A body waiting for the SQLite thread, the context it runs in and the future its caller awaits."""

    body: Callable[[Connection], Any]
    context: contextvars.Context
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _answer(done: list[tuple[_Waiting, Any, BaseException | None]]) -> None:
    """From the thread: hand each caller its result or error, with one wake-up of each loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiting, Any, BaseException | None]]] = {}
    for item in done:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[_Waiting, Any, BaseException | None]]) -> None:
    for waiting, result, exc in items:
        if waiting.future.done():  # cancelled meanwhile
            continue
        if exc is not None:
            waiting.future.set_exception(exc)
        else:
            waiting.future.set_result(result)


class PostgresDatabase:
    """PostgreSQL through SQLAlchemy's asyncio engine on asyncpg; its pool serves many transactions at once."""

    dialect_name = "postgresql"

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=_PG_COMMAND_TIMEOUT_S,
            connect_args={"timeout": _PG_CONNECT_TIMEOUT_S, "command_timeout": _PG_COMMAND_TIMEOUT_S},
        )

    async def run(self, body: Callable[[Connection], T]) -> T:
        def transaction(conn: Connection) -> T:
            # BEGIN, the body and COMMIT in the one greenlet of run_sync, not one each.
            with conn.begin():
                return body(conn)

        async with self.engine.connect() as conn:
            return await conn.run_sync(transaction)

    async def close(self) -> None:
        await self.engine.dispose()


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


def _configure_sqlite(engine: Engine, *, wal: bool, busy_timeout_ms: int) -> None:
    """WAL, busy_timeout, foreign keys, and BEGIN IMMEDIATE for every transaction.

    The BEGIN recipe is SQLAlchemy's ("Serializable isolation / Savepoints / Transactional DDL" in
    its SQLite dialect's documentation): ``sqlite3`` is told not to begin transactions itself, and
    the engine's ``begin`` event emits the BEGIN.
    """

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
        # fail with SQLITE_BUSY on upgrade, and busy_timeout applies instead. An error here (locked
        # past busy_timeout, a closed connection) is raised and handled by SQLAlchemy like any other.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
