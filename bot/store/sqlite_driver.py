"""SQLite through aiosqlite with two round trips to its thread per transaction.

aiosqlite runs every sqlite3 call on a thread of its own and hands the result back to the event
loop. SQLAlchemy's adapter makes one such round trip per cursor call: open the cursor, execute,
fetch the rows, close the cursor, and one more for the BEGIN of each transaction. Every round trip
costs a future, a wake-up of the loop and a hand-over of the GIL, and since a process has one SQLite
connection (see :func:`bot.store.engine.make_engine`) the connection stays held through all of them:
in a burst of commands, transactions queue behind each other's round trips while the loop is busy
elsewhere.

Here a transaction makes two:

- its ``BEGIN IMMEDIATE`` travels with its first statement. That is the one call that may wait
  (for another process's write lock, up to ``busy_timeout``), so it runs on the driver's thread;
- the statements after it run at once on the event loop's thread: the transaction holds the write
  lock, so they wait for nothing, and on a local file they take microseconds. In a transaction
  run as one synchronous body (:func:`synchronous_statements`, which is how the store runs every
  transaction) they do not even leave SQLAlchemy's greenlet;
- the COMMIT goes to the driver's thread, because it waits for the disk (fsync).

So a statement that is not a transaction's first holds the event loop for as long as it runs. The
store's are all small; a large read belongs alone in its transaction, where it runs on the thread.

A statement outside a transaction (the PRAGMAs when a connection opens) goes to the thread too.

The adapter is SQLAlchemy's own (:mod:`sqlalchemy.dialects.sqlite.aiosqlite`) with its cursor
replaced; the dialect, its error handling and its pool are unchanged. It reaches into aiosqlite the
way SQLAlchemy's adapter itself does (the connection's ``_execute`` and ``_conn``), which is why
``pyproject.toml`` keeps both libraries to the minor versions tested. The sqlite3 connection is
opened with ``check_same_thread=False`` so that the loop's thread may use it; the adapter's mutex
and the single pooled connection keep its calls one at a time.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from collections.abc import Iterator
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

__all__ = ["OneTripDBAPI", "begin_immediate_on_first_statement", "synchronous_statements"]

_Description = tuple[tuple[Any, ...], ...] | None
_Outcome = tuple[_Description, list[Any], int, int | None]


def _statement(
    conn: sqlite3.Connection, begin: bool, operation: str, parameters: Any, many: bool
) -> _Outcome:
    """On aiosqlite's thread: the transaction's BEGIN if due, the statement and all its rows."""
    if begin:
        conn.execute("BEGIN IMMEDIATE")
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose ``execute`` is one round trip or none; it keeps the rows and facts it got back."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # No driver cursor is opened here (that is a round trip of its own): _statement opens one.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: _Description = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        """Nothing to close: the driver cursor was closed on the thread with the statement."""

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if not self._ran_here(operation, parameters, many=False):
            super().execute(operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        if not self._ran_here(operation, seq_of_parameters, many=True):
            super().executemany(operation, seq_of_parameters)

    def _ran_here(self, operation: str, parameters: Any, *, many: bool) -> bool:
        """Run the statement now, on the loop's thread, if its transaction holds the write lock.

        Only inside :func:`synchronous_statements`: then no coroutine is made and SQLAlchemy's
        greenlet is not left either. False: it goes the long way (:meth:`_round_trip`), as a
        transaction's first statement must; that too runs it on the loop's thread when it can.
        """
        adapt: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        if not adapt.run_here or adapt.begin_pending or adapt._execute_mutex.locked():
            return False
        driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        try:
            conn = driver._conn
        except ValueError:  # closed: the long way raises it as SQLAlchemy expects
            return False
        if not conn.in_transaction:
            return False
        try:
            outcome = _statement(conn, False, operation, parameters, many)
        except Exception as error:
            adapt._handle_exception(error)
        self._keep(outcome)
        return True

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._round_trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._round_trip(operation, seq_of_parameters, many=True)

    async def _round_trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        adapt: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapt._execute_mutex:
            begin, adapt.begin_pending = adapt.begin_pending, False
            driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            conn = driver._conn
            outcome: _Outcome
            if not begin and conn.in_transaction:
                outcome = _statement(conn, False, operation, parameters, many)
            else:
                outcome = await driver._execute(  # type: ignore[no-untyped-call]
                    _statement, conn, begin, operation, parameters, many
                )
        self._keep(outcome)

    def _keep(self, outcome: _Outcome) -> None:
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter with :class:`_OneTripCursor` and a deferred BEGIN."""

    __slots__ = ("begin_pending", "run_here")

    _cursor_cls = _OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # Set when SQLAlchemy begins a transaction; the next statement's round trip sends the BEGIN.
        self.begin_pending = False
        # Set by synchronous_statements: SQLAlchemy's asyncio API insists that each of its calls
        # awaits something, so only a transaction run as one synchronous body may skip the await.
        self.run_here = False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to pass as ``create_async_engine(..., module=OneTripDBAPI())``."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        if kw.pop("async_creator_fn", None) is not None:
            raise TypeError("async_creator_fn is not supported by this adapter")
        # Statements inside a transaction run on the event loop's thread (see the module's doc).
        kw["check_same_thread"] = False
        connection = aiosqlite.connect(*arg, **kw)
        thread = getattr(connection, "_thread", None)
        if isinstance(thread, Thread):
            # As SQLAlchemy does: the driver's thread must not keep a process alive at exit.
            thread.daemon = True
        return OneTripConnection(self, await_(connection))


@contextlib.contextmanager
def synchronous_statements(dbapi_connection: Any) -> Iterator[None]:
    """Within: statements that need no hand-over run without leaving SQLAlchemy's greenlet.

    For a transaction whose body is one synchronous function run by ``greenlet_spawn``
    (:meth:`bot.store.Store._run`); a no-op on any other driver.
    """
    if not isinstance(dbapi_connection, OneTripConnection):
        yield
        return
    dbapi_connection.run_here = True
    try:
        yield
    finally:
        dbapi_connection.run_here = False


def begin_immediate_on_first_statement(dbapi_connection: Any) -> bool:
    """Defer this transaction's ``BEGIN IMMEDIATE`` to its first statement's round trip.

    Returns False if ``dbapi_connection`` is not a :class:`OneTripConnection` (the caller then
    sends BEGIN itself).
    """
    if not isinstance(dbapi_connection, OneTripConnection):
        return False
    dbapi_connection.begin_pending = True
    return True
