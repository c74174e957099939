"""SQLite on a thread of its own (bot/store/engine.py, SQLiteDatabase): one transaction at a time, off the loop."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, event
from sqlalchemy import exc as sa_exc
from test_store import T0, make_op

from bot.domain import OpState
from bot.store import Store
from bot.store.engine import SQLiteDatabase

_THREAD = "vpnbot-sqlite"


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(_THREAD)]


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[SQLiteDatabase]:
    await (await Store.open(sqlite_url)).close()  # the file and its tables
    database = SQLiteDatabase(sqlite_url)
    try:
        yield database
    finally:
        await database.close()


async def test_transactions_run_one_at_a_time_on_one_thread_that_is_not_the_loops(db: SQLiteDatabase) -> None:
    inside = 0
    most = 0
    threads: set[int] = set()
    guard = threading.Lock()

    def body(conn: Connection) -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        threads.add(threading.get_ident())
        conn.exec_driver_sql("SELECT count(*) FROM heartbeats").scalar()
        time.sleep(0.002)  # long enough for a second transaction to overlap, were that possible
        with guard:
            inside -= 1

    await asyncio.gather(*(db.run(body) for _ in range(20)))
    assert most == 1
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


async def test_the_event_loop_runs_while_a_transaction_waits(db: SQLiteDatabase) -> None:
    # The body waits for the loop itself to let it go: on the loop's thread it would wait in vain.
    release = threading.Event()

    def slow(conn: Connection) -> bool:
        conn.exec_driver_sql("DELETE FROM heartbeats")
        return release.wait(timeout=5)

    running = asyncio.ensure_future(db.run(slow))
    await asyncio.sleep(0.05)  # the loop goes on with other work
    assert not running.done()
    release.set()
    assert await asyncio.wait_for(running, timeout=5) is True


async def test_a_transaction_holds_the_write_lock_from_its_start(db: SQLiteDatabase, sqlite_url: str) -> None:
    # BEGIN IMMEDIATE: even a transaction that has only read keeps other writers out until it ends.
    read = threading.Event()
    done = threading.Event()

    def reader(conn: Connection) -> None:
        conn.exec_driver_sql("SELECT count(*) FROM heartbeats").scalar()
        read.set()
        done.wait(timeout=5)

    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, timeout=0)
    try:
        running = asyncio.ensure_future(db.run(reader))
        assert await asyncio.to_thread(read.wait, 5)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        done.set()
        await running
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        done.set()
        other.close()


async def test_read_then_write_transactions_of_two_processes_neither_fail_nor_lose_updates(
    sqlite_url: str,
) -> None:
    # Two stores on one file stand for two processes. Each transaction reads a value and writes it
    # back plus one. With a deferred BEGIN, both would read, and the second to write would get
    # "database is locked" at once (SQLite does not wait when a reader's snapshot is stale).
    await (await Store.open(sqlite_url)).close()
    a, b = SQLiteDatabase(sqlite_url), SQLiteDatabase(sqlite_url)
    await a.run(lambda conn: conn.exec_driver_sql("INSERT INTO heartbeats (instance, at) VALUES ('n', '0')"))

    def increment(conn: Connection) -> None:
        value = int(conn.exec_driver_sql("SELECT at FROM heartbeats WHERE instance = 'n'").scalar_one())
        time.sleep(0.001)  # widens the window between the read and the write
        conn.exec_driver_sql("UPDATE heartbeats SET at = ? WHERE instance = 'n'", (str(value + 1),))

    try:
        await asyncio.gather(*(db.run(increment) for _ in range(15) for db in (a, b)))
        final = await a.run(lambda conn: conn.exec_driver_sql("SELECT at FROM heartbeats").scalar_one())
        assert int(final) == 30
    finally:
        await a.close()
        await b.close()


async def test_a_failed_body_rolls_back_what_its_transaction_wrote(db: SQLiteDatabase) -> None:
    def insert_twice(conn: Connection) -> None:
        for _ in range(2):
            conn.exec_driver_sql("INSERT INTO heartbeats (instance, at) VALUES ('dup', '2026-01-01')")

    with pytest.raises(sa_exc.IntegrityError):
        await db.run(insert_twice)
    assert await db.run(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM heartbeats").scalar()) == 0


async def test_the_callers_context_goes_along_to_the_thread(db: SQLiteDatabase) -> None:
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request")
    request.set("r-1")
    assert await db.run(lambda _conn: request.get()) == "r-1"


async def test_close_ends_the_thread_and_closes_the_connection(sqlite_url: str) -> None:
    before = _store_threads()
    store = await Store.open(sqlite_url)
    await store.create_operation(op=make_op(state=OpState.APPROVED))
    assert len(_store_threads()) == len(before) + 1
    await store.close()
    assert _store_threads() == before
    # Nothing is left holding the file: another connection takes the write lock at once.
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
    # A closed store opens its connection again when used (and is closed again).
    try:
        found = await store.get_operation(op_id="op-1")
        assert found is not None
        assert found.created_at == T0
    finally:
        await store.close()
    assert _store_threads() == before


async def test_a_store_that_fails_to_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    before = _store_threads()
    with pytest.raises(sa_exc.DatabaseError, match="not a database"):
        await Store.open(f"sqlite:///{path}")
    assert _store_threads() == before


async def test_close_waits_for_the_transactions_queued_before_it(db: SQLiteDatabase) -> None:
    release = threading.Event()

    def slow(conn: Connection) -> int:
        release.wait(timeout=5)
        conn.exec_driver_sql("INSERT INTO heartbeats (instance, at) VALUES ('late', '2026-01-01')")
        return 1

    running = asyncio.ensure_future(db.run(slow))
    await asyncio.sleep(0)  # handed to the thread
    closing = asyncio.ensure_future(db.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    release.set()
    await closing
    assert await running == 1
    assert (
        await db.run(lambda conn: conn.exec_driver_sql("SELECT instance FROM heartbeats").scalar()) == "late"
    )


async def _queued_behind_a_held_thread(db: SQLiteDatabase) -> tuple[threading.Event, asyncio.Future[None]]:
    """A first transaction holding the store's thread until the event is set (others queue behind it)."""
    release = threading.Event()
    started = threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        release.wait(timeout=5)

    held = asyncio.ensure_future(db.run(hold))
    assert await asyncio.to_thread(started.wait, 5)
    return release, held


async def test_bodies_waiting_together_are_committed_together_and_each_answered(db: SQLiteDatabase) -> None:
    # Group commit: what queued while the thread was busy goes in one BEGIN IMMEDIATE ... COMMIT.
    commits = 0

    def count(_conn: Connection) -> None:
        nonlocal commits
        commits += 1

    event.listen(db.engine, "commit", count)
    release, held = await _queued_behind_a_held_thread(db)

    def insert(name: str) -> Callable[[Connection], int]:
        def body(conn: Connection) -> int:
            conn.exec_driver_sql("INSERT INTO heartbeats (instance, at) VALUES (?, '2026-01-01')", (name,))
            # Each body sees what the ones queued before it wrote, as one transaction each would.
            return int(conn.exec_driver_sql("SELECT count(*) FROM heartbeats").scalar_one())

        return body

    queued = [asyncio.ensure_future(db.run(insert(f"i-{n}"))) for n in range(5)]
    await asyncio.sleep(0.05)  # all five wait for the thread
    release.set()
    await held
    assert await asyncio.gather(*queued) == [1, 2, 3, 4, 5]
    assert commits == 2  # the held one, then the five together (fewer than _GROUP_MAX)


async def test_a_failing_body_of_a_group_fails_alone_and_the_others_are_kept(db: SQLiteDatabase) -> None:
    release, held = await _queued_behind_a_held_thread(db)
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request")

    def insert(name: str, *, twice: bool = False) -> Callable[[Connection], str]:
        def body(conn: Connection) -> str:
            for _ in range(2 if twice else 1):
                conn.exec_driver_sql(
                    "INSERT INTO heartbeats (instance, at) VALUES (?, '2026-01-01')", (name,)
                )
            return request.get()

        return body

    async def run_as(name: str, body: Callable[[Connection], str]) -> str:
        request.set(name)
        return await db.run(body)

    first = asyncio.ensure_future(run_as("r-a", insert("a")))
    failing = asyncio.ensure_future(run_as("r-dup", insert("dup", twice=True)))
    last = asyncio.ensure_future(run_as("r-b", insert("b")))
    await asyncio.sleep(0.05)
    release.set()
    await held
    # Each caller's own context went along, in the group and when run again alone.
    assert await first == "r-a"
    assert await last == "r-b"
    with pytest.raises(sa_exc.IntegrityError):
        await failing
    rows = await db.run(lambda conn: [r[0] for r in conn.exec_driver_sql("SELECT instance FROM heartbeats")])
    assert sorted(rows) == ["a", "b"]


async def test_a_group_whose_begin_fails_fails_each_caller(sqlite_url: str) -> None:
    # Another process holds the write lock past busy_timeout: every caller waiting gets the outage.
    await (await Store.open(sqlite_url)).close()
    db = SQLiteDatabase(sqlite_url, busy_timeout_ms=200)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        release, held = await _queued_behind_a_held_thread(db)
        other.execute("BEGIN IMMEDIATE")
        queued = [
            asyncio.ensure_future(db.run(lambda conn: conn.exec_driver_sql("SELECT 1"))) for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        release.set()
        await held
        for outcome in await asyncio.gather(*queued, return_exceptions=True):
            assert isinstance(outcome, sa_exc.OperationalError)
            assert "locked" in str(outcome)
        other.execute("ROLLBACK")
        assert await db.run(lambda conn: conn.exec_driver_sql("SELECT 1").scalar()) == 1
    finally:
        other.close()
        await db.close()
