"""The operation store on SQLite and PostgreSQL: CAS transitions, leases, gateway locks, audit, migrations."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from fakes import make_connection
from pgtools import PG_URL, fresh_postgres_database
from sqlalchemy import exc as sa_exc

from bot.domain import (
    ACTIVE_STATES,
    Accepted,
    AuditEntry,
    Effect,
    EffectKind,
    Operation,
    OpState,
    VpnGateway,
)
from bot.errors import StoreUnavailable
from bot.store import SCHEMA_VERSION, Store, async_url
from bot.store.engine import make_engine
from bot.store.engine import unavailable as is_unavailable

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def make_op(
    op_id: str = "op-1",
    *,
    state: OpState = OpState.AWAITING_APPROVAL,
    vco_id: str = "vco-1",
    gateway_id: str = "vpn-gw1",
    **fields: object,
) -> Operation:
    conn = make_connection(vco_id, gateway_id)
    op = Operation(
        id=op_id,
        state=state,
        region=conn.region,
        connection=conn,
        gateway=VpnGateway(id=gateway_id, region=conn.region, name="office", status="active"),
        requester_id="U0REQ",
        channel_id="C0OPS",
        team_id="T0",
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        client_token=f"vpnbot-{op_id}",
    )
    return dataclasses.replace(op, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/lib/bot.db", "sqlite+aiosqlite:///var/lib/bot.db"),
        ("sqlite:////abs/bot.db", "sqlite+aiosqlite:////abs/bot.db"),
        ("postgresql://u:p@db:5432/bot", "postgresql+asyncpg://u:p@db:5432/bot"),
        ("postgres://u@db/bot", "postgresql+asyncpg://u@db/bot"),
        ("postgresql+asyncpg://u@db/bot", "postgresql+asyncpg://u@db/bot"),
    ],
)
def test_async_url_picks_the_asyncio_driver(url: str, expected: str) -> None:
    assert async_url(url) == expected


async def test_operation_round_trips_with_aware_utc_times(store: Store) -> None:
    op = make_op(message_ts="1700000000.000100", response_url="https://hooks.slack.test/x")
    created = await store.create_operation(op=op)
    loaded = await store.get_operation(op_id="op-1")
    assert loaded == created == op
    assert loaded is not None
    assert loaded.created_at.tzinfo is UTC
    assert loaded.connection.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await store.get_operation(op_id="nope") is None


async def test_times_in_other_zones_are_stored_as_utc(store: Store) -> None:
    plus8 = datetime(2025, 1, 1, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    await store.create_operation(op=make_op(created_at=plus8))
    loaded = await store.get_operation(op_id="op-1")
    assert loaded is not None
    assert loaded.created_at == T0
    assert loaded.created_at.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        await store.create_operation(op=make_op(created_at=datetime(2025, 1, 1)))  # noqa: DTZ001


async def test_transition_is_compare_and_set(store: Store) -> None:
    await store.create_operation(op=make_op())
    moved = await store.transition(
        "op-1",
        from_states={OpState.AWAITING_APPROVAL},
        to=OpState.APPROVED,
        now=T0 + timedelta(seconds=1),
        approver_id="U0APP",
        approved_at=T0,
    )
    assert moved is not None
    assert (moved.state, moved.approver_id, moved.version) == (OpState.APPROVED, "U0APP", 1)
    assert moved.updated_at == T0 + timedelta(seconds=1)
    lost = await store.transition(
        "op-1", from_states={OpState.AWAITING_APPROVAL}, to=OpState.CANCELLED, now=T0, cancelled_by="U0X"
    )
    assert lost is None
    current = await store.get_operation(op_id="op-1")
    assert current is not None
    assert (current.state, current.cancelled_by) == (OpState.APPROVED, None)


async def test_only_one_of_many_concurrent_transitions_wins(store: Store) -> None:
    await store.create_operation(op=make_op())

    async def click(i: int) -> Operation | None:
        return await store.transition(
            "op-1", from_states={OpState.AWAITING_APPROVAL}, to=OpState.APPROVED, now=T0, approver_id=f"U{i}"
        )

    results = await asyncio.gather(*(click(i) for i in range(20)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    current = await store.get_operation(op_id="op-1")
    assert current is not None
    assert current.approver_id == winners[0].approver_id
    assert current.version == 1


async def test_transition_requiring_an_owner_loses_without_the_lease(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.APPROVED))
    assert await store.claim_lease(op_id="op-1", owner="a", until=T0 + timedelta(seconds=30), now=T0)
    lost = await store.transition(
        "op-1", from_states={OpState.APPROVED}, to=OpState.DELETING, now=T0, require_owner="b"
    )
    assert lost is None
    won = await store.transition(
        "op-1", from_states={OpState.APPROVED}, to=OpState.DELETING, now=T0, require_owner="a"
    )
    assert won is not None
    assert won.state is OpState.DELETING


async def test_set_fields_sets_typed_fields_and_honours_conditions(store: Store) -> None:
    await store.create_operation(op=make_op())
    updated = await store.set_fields("op-1", now=T0, message_ts="123.456")
    assert updated is not None
    assert updated.message_ts == "123.456"
    assert await store.set_fields("op-1", now=T0, states={OpState.DELETING}, message_ts="x") is None


async def test_a_found_connection_replaces_the_placeholder_and_its_id_columns(store: Store) -> None:
    placeholder = make_op(state=OpState.LOOKING_UP)
    await store.create_operation(op=placeholder)
    found = replace(placeholder.connection, name="office", gateway_id="vpn-gw9")
    moved = await store.transition(
        "op-1", from_states={OpState.LOOKING_UP}, to=OpState.AWAITING_APPROVAL, now=T0, connection=found
    )
    assert moved is not None
    assert (moved.connection, moved.gateway_id) == (found, "vpn-gw9")
    assert (await store.get_operation(op_id="op-1")) == moved


async def test_leases_claim_renew_release(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.WAITING_GATEWAY))
    await store.create_operation(op=make_op("op-2"))  # awaiting approval: never leased
    until = T0 + timedelta(seconds=30)
    assert [o.id for o in await store.list_resumable(now=T0)] == ["op-1"]

    assert await store.claim_lease(op_id="op-1", owner="a", until=until, now=T0) is not None
    assert await store.claim_lease(op_id="op-1", owner="b", until=until, now=T0) is None
    assert await store.claim_lease(op_id="op-2", owner="b", until=until, now=T0) is None
    assert await store.list_resumable(now=T0) == []

    # Renewing pushes the expiry; after it, the lease is up for grabs.
    assert await store.renew_leases(op_ids=["op-1"], owner="a", until=until + timedelta(seconds=30)) == {
        "op-1"
    }
    assert (
        await store.claim_lease(op_id="op-1", owner="b", until=until, now=until + timedelta(seconds=1))
        is None
    )
    later = until + timedelta(seconds=31)
    assert [o.id for o in await store.list_resumable(now=later)] == ["op-1"]
    assert (
        await store.claim_lease(op_id="op-1", owner="b", until=later + timedelta(seconds=30), now=later)
        is not None
    )
    assert await store.lease_of(op_id="op-1") == ("b", later + timedelta(seconds=30))
    assert await store.renew_leases(op_ids=["op-1"], owner="a", until=later) == set()

    # Releasing by a non-owner does nothing; by the owner frees it at once.
    await store.release_lease(op_id="op-1", owner="a")
    assert await store.list_resumable(now=later) == []
    await store.release_lease(op_id="op-1", owner="b")
    assert [o.id for o in await store.list_resumable(now=later)] == ["op-1"]


async def test_resumable_are_listed_longest_untouched_first_up_to_the_limit(store: Store) -> None:
    # A replica with room for two reads two, not its whole backlog (VPNBOT_MAX_DRIVEN_OPERATIONS).
    for i, minutes in enumerate((3, 1, 2)):
        await store.create_operation(
            op=make_op(f"op-{i}", state=OpState.APPROVED, updated_at=T0 + timedelta(minutes=minutes))
        )
    later = T0 + timedelta(minutes=5)
    assert [o.id for o in await store.list_resumable(now=later)] == ["op-1", "op-2", "op-0"]
    assert [o.id for o in await store.list_resumable(now=later, limit=2)] == ["op-1", "op-2"]
    assert await store.list_resumable(now=later, limit=0) == []


async def test_leases_are_renewed_together_only_where_the_owner_still_holds_them(store: Store) -> None:
    until = T0 + timedelta(seconds=30)
    for op_id, owner in (("op-1", "a"), ("op-2", "a"), ("op-3", "b")):
        await store.create_operation(op=make_op(op_id, state=OpState.WAITING_GATEWAY), lease=(owner, until))
    later = until + timedelta(seconds=30)
    # More ids than one statement takes, most of them unknown: every one is looked at.
    ids = [f"op-x{i}" for i in range(1_100)] + ["op-3", "op-2", "op-1"]
    assert await store.renew_leases(op_ids=ids, owner="a", until=later) == {"op-1", "op-2"}
    assert await store.lease_of(op_id="op-1") == ("a", later)
    assert await store.lease_of(op_id="op-2") == ("a", later)
    assert await store.lease_of(op_id="op-3") == ("b", until)  # someone else's: untouched
    assert await store.renew_leases(op_ids=[], owner="a", until=later) == set()


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.APPROVED))
    results = await asyncio.gather(
        *(
            store.claim_lease(op_id="op-1", owner=f"w{i}", until=T0 + timedelta(seconds=30), now=T0)
            for i in range(10)
        )
    )
    assert sum(r is not None for r in results) == 1


async def test_terminal_transition_drops_the_lease(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.VERIFYING))
    await store.claim_lease(op_id="op-1", owner="a", until=T0 + timedelta(seconds=30), now=T0)
    await store.transition("op-1", from_states=ACTIVE_STATES, to=OpState.DELETED, now=T0, require_owner="a")
    assert await store.lease_of(op_id="op-1") == (None, None)


async def test_expired_confirmations(store: Store) -> None:
    await store.create_operation(op=make_op("old", expires_at=T0))
    await store.create_operation(op=make_op("fresh", expires_at=T0 + timedelta(minutes=5)))
    await store.create_operation(op=make_op("done", state=OpState.CANCELLED, expires_at=T0))
    assert [o.id for o in await store.list_expired_confirmations(now=T0)] == ["old"]


async def test_gateway_lock_serialises_and_frees_on_terminal(store: Store) -> None:
    for op_id, vco in (("a", "vco-a"), ("b", "vco-b"), ("c", "vco-c")):
        await store.create_operation(op=make_op(op_id, state=OpState.APPROVED, vco_id=vco))

    async def acquire(op_id: str) -> str:
        return await store.acquire_gateway(region="cn-hangzhou", gateway_id="vpn-gw1", op_id=op_id, now=T0)

    assert await acquire("a") == "a"
    assert await acquire("a") == "a"  # re-acquire is a no-op
    assert await acquire("b") == "a"
    # Another gateway is independent.
    assert await store.acquire_gateway(region="cn-hangzhou", gateway_id="vpn-other", op_id="b", now=T0) == "b"

    # A holder that ended without releasing (crash) does not block forever.
    await store.transition("a", from_states={OpState.APPROVED}, to=OpState.FAILED, now=T0)
    assert await acquire("b") == "b"
    assert await acquire("c") == "b"

    # Ending an operation that does not hold the gateway leaves the holder in place; ending the
    # holder frees it in the same transaction.
    await store.transition("c", from_states={OpState.APPROVED}, to=OpState.CANCELLED, now=T0)
    assert await store.gateway_holder(region="cn-hangzhou", gateway_id="vpn-gw1") == "b"
    await store.transition("b", from_states={OpState.APPROVED}, to=OpState.DELETED, now=T0)
    assert await store.gateway_holder(region="cn-hangzhou", gateway_id="vpn-gw1") is None


async def test_concurrent_gateway_acquires_have_one_holder(store: Store) -> None:
    ids = [f"op-{i}" for i in range(12)]
    for op_id in ids:
        await store.create_operation(op=make_op(op_id, state=OpState.APPROVED, vco_id=f"vco-{op_id}"))
    # A finished holder makes every contender race on the takeover UPDATE, not just the INSERT.
    await store.create_operation(op=make_op("old", state=OpState.DELETED))
    await store.acquire_gateway(region="cn-hangzhou", gateway_id="vpn-gw1", op_id="old", now=T0)

    for _ in range(3):
        holders = await asyncio.gather(
            *(
                store.acquire_gateway(region="cn-hangzhou", gateway_id="vpn-gw1", op_id=op_id, now=T0)
                for op_id in ids
            )
        )
        assert len(set(holders)) == 1
        winner = holders[0]
        assert winner in ids
        assert await store.gateway_holder(region="cn-hangzhou", gateway_id="vpn-gw1") == winner
        await store.transition(winner, from_states={OpState.APPROVED}, to=OpState.DELETED, now=T0)
        ids.remove(winner)


async def test_audit_newest_first(store: Store) -> None:
    for i, action in enumerate(["requested", "approved", "deleted"]):
        await store.add_audit(
            AuditEntry(
                at=T0 + timedelta(seconds=i), action=action, actor_id="U0", op_id="op-1", request_id=f"R{i}"
            )
        )
    await store.add_audit(AuditEntry(at=T0, action="requested", actor_id="U1", op_id="op-2"))
    recent = await store.recent_audit(limit=2)
    assert [e.action for e in recent] == ["deleted", "approved"]
    assert recent[0].request_id == "R2"
    assert recent[0].at == T0 + timedelta(seconds=2)
    assert [e.op_id for e in await store.recent_audit(limit=10, op_id="op-2")] == ["op-2"]


async def test_migrations_run_once_and_reopen_keeps_data(empty_db_url: str) -> None:
    first = await Store.open(empty_db_url)
    await first.create_operation(op=make_op())
    await first.close()
    second = await Store.open(empty_db_url)
    try:
        assert await second.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        assert await second.get_operation(op_id="op-1") is not None
    finally:
        await second.close()


async def test_concurrent_migrations_on_a_fresh_database(empty_db_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(empty_db_url) for _ in range(4)))
    try:
        for s in stores:
            assert await s.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        await stores[0].create_operation(op=make_op())
        assert await stores[3].get_operation(op_id="op-1") is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_processes_opening_a_new_sqlite_file_together_all_start_in_wal_mode(tmp_path: Path) -> None:
    # Switching a new file to WAL can fail at once with "database is locked" when another opener
    # switches it too (SQLite skips the busy handler there); it happened about once in twenty
    # rounds of four. Every round must open all four, and the file must end up in WAL mode.
    for round_ in range(40):
        path = tmp_path / f"new-{round_}.db"
        stores = await asyncio.gather(*(Store.open(f"sqlite:///{path}") for _ in range(4)))
        await asyncio.gather(*(s.close() for s in stores))
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_sqlite_connection_returned_inside_a_transaction_is_rolled_back(sqlite_url: str) -> None:
    # The pool skips its rollback on return when no transaction is open (bot/store/engine.py);
    # one left open behind SQLAlchemy's back must still be rolled back, or it would keep the write
    # lock and every later transaction would fail to begin.
    store = await Store.open(sqlite_url)
    try:
        async with store._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute("BEGIN IMMEDIATE")
            await raw.driver_connection.execute("DELETE FROM schema_version")
        assert await store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        await store.create_operation(op=make_op())
        assert await store.get_operation(op_id="op-1") is not None
    finally:
        await store.close()


async def test_a_sqlite_connection_closed_underneath_is_an_outage_once_then_replaced(sqlite_url: str) -> None:
    # BEGIN IMMEDIATE goes to the driver directly (bot/store/engine.py); a failure must still come
    # out as SQLAlchemy's error (StoreUnavailable) and the dead connection be replaced.
    store = await Store.open(sqlite_url)
    try:
        async with store._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.close()
        with pytest.raises(StoreUnavailable):
            await store.schema_versions()
        assert await store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await store.close()


async def test_a_sqlite_database_locked_by_another_process_is_an_outage_and_the_connection_recovers(
    sqlite_url: str,
) -> None:
    # BEGIN IMMEDIATE travels with a transaction's first statement (bot/store/sqlite_driver.py): a
    # lock held past busy_timeout comes back from that statement as SQLAlchemy's error, and the
    # connection is usable (and not left in a transaction) once the lock is gone.
    await (await Store.open(sqlite_url)).close()  # creates the file and its tables
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)
    engine = make_engine(async_url(sqlite_url), sqlite_busy_timeout_ms=200)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(sa_exc.OperationalError, match="locked") as locked:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT 1")
        assert is_unavailable(locked.value)
        other.execute("ROLLBACK")
        async with engine.begin() as conn:
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            await conn.exec_driver_sql("DELETE FROM heartbeats")
        assert timeout == 200
        other.execute("BEGIN IMMEDIATE")  # the write lock is free again: nothing was left open
        other.execute("ROLLBACK")
    finally:
        other.close()
        await engine.dispose()


async def test_two_stores_on_one_sqlite_file_share_state(sqlite_url: str) -> None:
    a, b = await Store.open(sqlite_url), await Store.open(sqlite_url)
    try:
        await a.create_operation(op=make_op(state=OpState.APPROVED))
        results = await asyncio.gather(
            a.claim_lease(op_id="op-1", owner="a", until=T0 + timedelta(seconds=5), now=T0),
            b.claim_lease(op_id="op-1", owner="b", until=T0 + timedelta(seconds=5), now=T0),
        )
        assert sum(r is not None for r in results) == 1
    finally:
        await a.close()
        await b.close()


async def test_in_memory_sqlite_serves_concurrent_calls() -> None:
    store = await Store.open("sqlite:///:memory:")
    try:
        await asyncio.gather(
            *(store.add_audit(AuditEntry(at=T0, action="x", actor_id=f"U{i}")) for i in range(10))
        )
        assert len(await store.recent_audit(limit=50)) == 10
    finally:
        await store.close()


async def test_transition_writes_its_audit_entry_and_effects_only_when_it_wins(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.WAITING_GATEWAY))
    entry = AuditEntry(at=T0, action="deleted", actor_id="vpn-bot", op_id="op-1", request_id="R1")
    effects = [Effect(EffectKind.UPDATE_CARD), Effect(EffectKind.THREAD, Accepted(request_id="R1"))]
    won = await store.transition(
        "op-1",
        from_states={OpState.WAITING_GATEWAY},
        to=OpState.DELETED,
        now=T0,
        audit_entry=entry,
        effects=effects,
    )
    assert won is not None
    lost = await store.transition(
        "op-1",
        from_states={OpState.WAITING_GATEWAY},
        to=OpState.FAILED,
        now=T0,
        audit_entry=entry,
        effects=effects,
    )
    assert lost is None
    assert [e.action for e in await store.recent_audit(op_id="op-1")] == ["deleted"]
    pending = await store.pending_effects(op_id="op-1")
    assert [(e.kind, e.event) for e in pending] == [
        (EffectKind.UPDATE_CARD, None),
        (EffectKind.THREAD, Accepted(request_id="R1")),
    ]


async def test_outbox_claims_are_exclusive_and_due_effects_are_listed_once_unclaimed(store: Store) -> None:
    await store.create_operation(op=make_op())
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.UPDATE_CARD)], now=T0)
    assert await store.ops_with_due_effects(now=T0) == ["op-1"]
    until = T0 + timedelta(seconds=30)
    assert await store.claim_outbox(op_id="op-1", owner="a", until=until, now=T0)
    assert not await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)
    assert await store.ops_with_due_effects(now=T0) == []  # someone delivers it
    # An expired claim (a crashed deliverer) is taken over.
    later = until + timedelta(seconds=1)
    assert await store.claim_outbox(op_id="op-1", owner="b", until=later + timedelta(seconds=30), now=later)
    await store.release_outbox(op_id="op-1", owner="b")
    (effect,) = await store.pending_effects(op_id="op-1")
    await store.reschedule_effect(effect_id=effect.id, next_at=T0 + timedelta(minutes=5), error="ratelimited")
    assert await store.ops_with_due_effects(now=T0 + timedelta(minutes=1)) == []
    (again,) = await store.pending_effects(op_id="op-1")
    assert again.attempts == 1
    await store.complete_effects(ids=[effect.id], now=T0)
    assert await store.pending_effects(op_id="op-1") == []


async def test_confirmation_posted_records_the_ts_with_the_effect(store: Store) -> None:
    await store.create_operation(op=make_op())
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.POST_CONFIRMATION)], now=T0)
    (effect,) = await store.pending_effects(op_id="op-1")
    await store.confirmation_posted(effect_id=effect.id, op_id="op-1", ts="1700000000.1", now=T0)
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.message_ts == "1700000000.1"
    assert await store.pending_effects(op_id="op-1") == []


async def test_completing_the_last_effect_gives_the_delivery_claim_back_in_the_same_go(store: Store) -> None:
    # The deliverer learns whether anything is left without another transaction, and a claim
    # given back lets another replica deliver what is written next.
    await store.create_operation(op=make_op())
    effects = [Effect(EffectKind.POST_CONFIRMATION), Effect(EffectKind.UPDATE_CARD)]
    await store.enqueue(op_id="op-1", effects=effects, now=T0)
    until = T0 + timedelta(seconds=30)
    assert await store.claim_outbox(op_id="op-1", owner="a", until=until, now=T0)
    posted, card = await store.pending_effects(op_id="op-1")

    left = await store.confirmation_posted(effect_id=posted.id, op_id="op-1", ts="1.1", now=T0, owner="a")
    assert left is True
    assert not await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)  # still a's

    left = await store.complete_effects(ids=[card.id], now=T0, release=("op-1", "a"))
    assert left is False
    assert await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)  # given back
    # Without ``release`` nothing is given back, and the answer says only "maybe".
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.UPDATE_CARD)], now=T0)
    (last,) = await store.pending_effects(op_id="op-1")
    assert await store.complete_effects(ids=[last.id], now=T0) is True
    assert not await store.claim_outbox(op_id="op-1", owner="a", until=until, now=T0)


async def test_a_transition_can_take_the_delivery_claim_and_read_the_effects_in_the_same_go(
    store: Store,
) -> None:
    # The lookup's move hands its card to the outbox without the outbox's own claim-and-read.
    await store.create_operation(op=make_op(state=OpState.LOOKING_UP))
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.THREAD, Accepted(request_id="R0"))], now=T0)
    until = T0 + timedelta(seconds=30)
    entry = AuditEntry(at=T0, action="looked_up", actor_id="vpn-bot", op_id="op-1")
    taken = await store.transition_and_claim(
        "op-1",
        claim=("a", until),
        from_states={OpState.LOOKING_UP},
        to=OpState.AWAITING_APPROVAL,
        now=T0,
        audit_entry=entry,
        effects=[Effect(EffectKind.POST_CONFIRMATION)],
        message_ts="1.1",
    )
    assert taken is not None
    moved, pending = taken
    assert (moved.state, moved.message_ts) == (OpState.AWAITING_APPROVAL, "1.1")
    assert moved == await store.get_operation(op_id="op-1")
    # Everything pending, oldest first, as the outbox's own read (take_next) would have it.
    assert pending == await store.pending_effects(op_id="op-1")
    assert [e.kind for e in pending] == [EffectKind.THREAD, EffectKind.POST_CONFIRMATION]
    assert [e.action for e in await store.recent_audit(op_id="op-1")] == ["looked_up"]
    assert await store.ops_with_due_effects(now=T0) == []  # claimed: no pass takes it
    assert not await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)
    # Held until it runs out: then any replica's pass delivers it.
    later = until + timedelta(seconds=1)
    assert await store.ops_with_due_effects(now=later) == ["op-1"]
    assert await store.claim_outbox(op_id="op-1", owner="b", until=later, now=later)


async def test_a_transition_that_finds_the_delivery_claimed_elsewhere_still_moves(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.LOOKING_UP))
    until = T0 + timedelta(seconds=30)
    assert await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)
    taken = await store.transition_and_claim(
        "op-1",
        claim=("a", until),
        from_states={OpState.LOOKING_UP},
        to=OpState.AWAITING_APPROVAL,
        now=T0,
        effects=[Effect(EffectKind.POST_CONFIRMATION)],
    )
    assert taken is not None
    moved, pending = taken
    assert moved.state is OpState.AWAITING_APPROVAL
    assert pending is None  # b delivers it (or its claim runs out)
    assert [e.kind for e in await store.pending_effects(op_id="op-1")] == [EffectKind.POST_CONFIRMATION]
    assert not await store.claim_outbox(op_id="op-1", owner="a", until=until, now=T0)  # still b's


async def test_a_transition_that_loses_claims_nothing_and_writes_nothing(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.AWAITING_APPROVAL))
    until = T0 + timedelta(seconds=30)
    lost = await store.transition_and_claim(
        "op-1",
        claim=("a", until),
        from_states={OpState.LOOKING_UP},
        to=OpState.AWAITING_APPROVAL,
        now=T0,
        audit_entry=AuditEntry(at=T0, action="looked_up", actor_id="vpn-bot", op_id="op-1"),
        effects=[Effect(EffectKind.POST_CONFIRMATION)],
    )
    assert lost is None
    assert await store.pending_effects(op_id="op-1") == []
    assert await store.recent_audit(op_id="op-1") == []
    assert await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)


async def test_a_transition_with_nothing_to_deliver_gives_the_claim_back_at_once(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.WAITING_GATEWAY))
    until = T0 + timedelta(seconds=30)
    taken = await store.transition_and_claim(
        "op-1", claim=("a", until), from_states={OpState.WAITING_GATEWAY}, to=OpState.VERIFYING, now=T0
    )
    assert taken is not None
    assert taken[1] == []
    assert await store.claim_outbox(op_id="op-1", owner="b", until=until, now=T0)


async def test_a_version_1_database_is_upgraded_in_place(empty_db_url: str) -> None:
    store = await Store.open(empty_db_url)
    await store.create_operation(op=make_op())
    # Turn it back into what release 1 left behind.
    async with store._engine.begin() as conn:
        for column in ("token_seq", "crashes"):
            await conn.exec_driver_sql(f"ALTER TABLE operations DROP COLUMN {column}")
        for table in ("outbox", "outbox_claims", "heartbeats"):
            await conn.exec_driver_sql(f"DROP TABLE {table}")
        await conn.exec_driver_sql("DELETE FROM schema_version WHERE version > 1")
    await store.close()

    upgraded = await Store.open(empty_db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        op = await upgraded.get_operation(op_id="op-1")
        assert op is not None
        assert (op.token_seq, op.crashes) == (0, 0)
        await upgraded.enqueue(op_id="op-1", effects=[Effect(EffectKind.UPDATE_CARD)], now=T0)
    finally:
        await upgraded.close()


async def test_a_read_only_database_is_unavailable_not_a_bug(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = await Store.open(f"sqlite:///{path}")  # creates and migrates the file
    await store.close()
    read_only = await Store.open(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with pytest.raises(StoreUnavailable):
            await read_only.heartbeat(instance="i-1", now=T0)
    finally:
        await read_only.close()


async def test_an_unreachable_database_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await Store.open("postgresql://postgres@127.0.0.1:9/none")


@pytest.mark.postgres
async def test_a_read_only_postgresql_is_unavailable_not_a_bug() -> None:
    """SQLSTATE 25006 (read-only transaction) is an outage: reads still work, writes say unavailable."""
    async with fresh_postgres_database() as url:
        name = url.rpartition("/")[2]
        store = await Store.open(url)
        try:
            await _admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await store.close()  # the setting applies to new sessions
            assert await store.recent_audit() == []
            with pytest.raises(StoreUnavailable) as refused:
                await store.heartbeat(instance="i-1", now=T0)
            assert "read-only" in refused.value.detail
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (asyncpg.exceptions.DiskFullError("could not extend file"), True),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.UndefinedColumnError("no such column"), False),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
    ],
)
def test_postgresql_errors_are_classified_by_sqlstate(error: Exception, unavailable: bool) -> None:
    """Disk full, read-only, too many connections, shutdown: outages; a bad query stays a bug."""
    wrapped = sa_exc.DBAPIError("INSERT INTO heartbeats", None, error)
    assert is_unavailable(wrapped) is unavailable


async def test_a_version_4_database_gains_the_account_columns(empty_db_url: str) -> None:
    """Migration 5 adds operations.account ("" for the single-account rows) and audit.account."""
    store = await Store.open(empty_db_url)
    await store.create_operation(op=make_op())
    async with store._engine.begin() as conn:
        for table in ("operations", "audit"):
            await conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN account")
        await conn.exec_driver_sql("DELETE FROM schema_version WHERE version > 4")
    await store.close()

    upgraded = await Store.open(empty_db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        old = await upgraded.get_operation(op_id="op-1")
        assert old is not None
        assert old.account == ""
        await upgraded.create_operation(
            op=make_op("op-2", account="staging"),
            audit_entry=AuditEntry(at=T0, action="requested", actor_id="U1", op_id="op-2", account="staging"),
        )
        again = await upgraded.get_operation(op_id="op-2")
        assert again is not None
        assert again.account == "staging"
        (entry,) = await upgraded.recent_audit(op_id="op-2")
        assert entry.account == "staging"
    finally:
        await upgraded.close()
