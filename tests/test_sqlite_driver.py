"""SQLite through aiosqlite, one round trip to the driver's thread per statement (bot/store/sqlite_driver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import greenlet
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_store import T0, make_op

from bot.domain import Effect, EffectKind, OpState
from bot.store import Store, async_url
from bot.store.engine import make_engine


class _CountingQueue:
    """Stands in for aiosqlite's request queue on the event loop's side: counts the round trips."""

    def __init__(self, inner: queue.SimpleQueue[Any]) -> None:
        self.inner = inner
        self.puts = 0

    def put_nowait(self, item: Any) -> None:
        self.puts += 1
        self.inner.put_nowait(item)


@contextlib.contextmanager
def _greenlet_switches() -> Iterator[list[str]]:
    """The greenlet switches made meanwhile (greenlet's own tracing hook)."""
    seen: list[str] = []
    previous = greenlet.settrace(lambda event, _args: seen.append(event))
    try:
        yield seen
    finally:
        greenlet.settrace(previous)


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await (await Store.open(sqlite_url)).close()  # the file and its tables
    engine = make_engine(async_url(sqlite_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _count_round_trips(engine: AsyncEngine) -> _CountingQueue:
    """Wrap the request queue of the engine's one pooled connection (SQLite: a pool of one)."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        counter = _CountingQueue(driver._tx)
        driver._tx = counter
    return counter


async def test_a_transaction_is_two_round_trips_however_many_statements_it_has(engine: AsyncEngine) -> None:
    trips = await _count_round_trips(engine)
    async with engine.begin() as conn:
        for n in range(5):
            await conn.execute(
                text("INSERT INTO heartbeats (instance, at) VALUES (:i, '2026-01-01 00:00:00.000000')"),
                {"i": f"i{n}"},
            )
        rows = (await conn.execute(text("SELECT instance FROM heartbeats ORDER BY instance"))).all()
    # BEGIN IMMEDIATE with the first INSERT, then the COMMIT; the other statements run on the
    # loop's thread. SQLAlchemy's own adapter makes 1 + 5 * 3 + 4 + 1.
    assert trips.puts == 2
    assert [r.instance for r in rows] == [f"i{n}" for n in range(5)]


async def test_a_store_transaction_of_four_statements_is_two_round_trips(sqlite_url: str) -> None:
    # The store runs each transaction as one synchronous body (Store._run): the statements after
    # the first neither go to the driver's thread nor leave SQLAlchemy's greenlet.
    store = await Store.open(sqlite_url)
    try:
        op = make_op(state=OpState.LOOKING_UP)
        await store.create_operation(op=op)
        trips = await _count_round_trips(store._engine)
        with _greenlet_switches() as one_statement:
            await store.release_lease(op_id=op.id, owner="nobody")
        with _greenlet_switches() as four_statements:
            moved = await store.transition_and_claim(  # UPDATE, INSERT effect, claim, read the effects
                op.id,
                claim=("me", T0 + timedelta(minutes=1)),
                from_states={OpState.LOOKING_UP},
                to=OpState.AWAITING_APPROVAL,
                now=T0,
                effects=[Effect(EffectKind.POST_CONFIRMATION)],
            )
        assert trips.puts == 2 + 2
        assert len(four_statements) == len(one_statement) > 0
        assert moved is not None
        found, pending = moved
        assert found.state is OpState.AWAITING_APPROVAL
        assert pending is not None
        assert [e.kind for e in pending] == [EffectKind.POST_CONFIRMATION]
    finally:
        await store.close()


async def test_rows_counts_and_many_parameter_sets_come_back_from_the_one_round_trip(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO heartbeats (instance, at) VALUES (:i, '2026-01-01 00:00:00.000000')"),
            [{"i": f"i{n}"} for n in range(5)],  # executemany
        )
        updated = await conn.execute(
            text("UPDATE heartbeats SET at = at WHERE instance IN ('i1', 'i2', 'x')")
        )
        assert updated.rowcount == 2
        empty = await conn.execute(text("SELECT instance FROM heartbeats WHERE instance = 'x'"))
        assert empty.all() == []
        ordered = await conn.execute(text("SELECT instance FROM heartbeats ORDER BY instance DESC LIMIT 3"))
        assert ordered.scalars().all() == ["i4", "i3", "i2"]


async def test_a_failed_statement_rolls_back_what_its_transaction_wrote(engine: AsyncEngine) -> None:
    async def insert_twice() -> None:
        async with engine.begin() as conn:
            for _ in range(2):
                await conn.execute(text("INSERT INTO heartbeats (instance, at) VALUES ('dup', '2026-01-01')"))

    with pytest.raises(sa_exc.IntegrityError):
        await insert_twice()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM heartbeats"))).scalar() == 0


async def test_a_transaction_holds_the_write_lock_from_its_first_statement(
    engine: AsyncEngine, sqlite_url: str
) -> None:
    # BEGIN IMMEDIATE, deferred to the first statement, still takes the write lock before a read:
    # another writer waits until the transaction ends.
    other = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), isolation_level=None, timeout=0, check_same_thread=False
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT count(*) FROM heartbeats"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
