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
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from storetools import claim_outbox, gateway_holder, lease_of, pending_effects

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
from bot.store.engine import SQLiteDatabase, disk_full
from bot.store.engine import unavailable as is_unavailable

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def execute_sql(store: Store, *statements: str) -> None:
    """Run ``statements`` in one of the store's transactions (to turn a database back into an older one)."""

    def run(conn: Connection) -> None:
        for sql in statements:
            conn.exec_driver_sql(sql)

    await store._run(run)


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
        # SQLite needs no asyncio driver: the store runs sqlite3 on a thread of its own.
        ("sqlite:///var/lib/bot.db", "sqlite:///var/lib/bot.db"),
        ("sqlite:////abs/bot.db", "sqlite:////abs/bot.db"),
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
    assert await lease_of(store, op_id="op-1") == ("b", later + timedelta(seconds=30))
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
    assert await lease_of(store, op_id="op-1") == ("a", later)
    assert await lease_of(store, op_id="op-2") == ("a", later)
    assert await lease_of(store, op_id="op-3") == ("b", until)  # someone else's: untouched
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
    assert await lease_of(store, op_id="op-1") == (None, None)


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
    assert await gateway_holder(store, region="cn-hangzhou", gateway_id="vpn-gw1") == "b"
    await store.transition("b", from_states={OpState.APPROVED}, to=OpState.DELETED, now=T0)
    assert await gateway_holder(store, region="cn-hangzhou", gateway_id="vpn-gw1") is None


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
        assert await gateway_holder(store, region="cn-hangzhou", gateway_id="vpn-gw1") == winner
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


async def test_audit_of_one_channel_and_its_accounts(store: Store) -> None:
    """/vpn history in a channel: that channel's operations, in the accounts it may use, nothing else."""
    for op_id, channel, account in (
        ("p1", "C0PROD", "prod"),
        ("s1", "C0STAGE", "staging"),
        ("p2", "C0OPS", "prod"),
    ):
        await store.create_operation(
            op=make_op(op_id, vco_id=f"vco-{op_id}", channel_id=channel, account=account),
            audit_entry=AuditEntry(at=T0, action="requested", actor_id="U0", op_id=op_id, account=account),
        )
    await store.add_audit(AuditEntry(at=T0, action="refused", actor_id="U0", detail="no operation"))

    def ops(entries: list[AuditEntry]) -> set[str | None]:
        return {e.op_id for e in entries}

    assert ops(await store.recent_audit(channel_id="C0PROD")) == {"p1"}
    assert ops(await store.recent_audit(channel_id="C0OPS", accounts=["staging"])) == set()
    assert ops(await store.recent_audit(channel_id="C0OPS", accounts=["prod"])) == {"p2"}
    assert ops(await store.recent_audit(accounts=["prod"])) == {"p1", "p2"}
    assert ops(await store.recent_audit(channel_id="C0PROD", accounts=[])) == set()
    assert ops(await store.recent_audit()) == {"p1", "s1", "p2", None}


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


async def test_a_sqlite_connection_closed_underneath_is_an_outage_once_then_replaced(sqlite_url: str) -> None:
    # The pooled sqlite3 connection closed in the middle of a transaction: its COMMIT fails, which
    # SQLAlchemy tells as a disconnect (StoreUnavailable), and the next transaction gets a new one.
    store = await Store.open(sqlite_url)
    try:
        with pytest.raises(StoreUnavailable):
            await store._run(lambda conn: conn.connection.dbapi_connection.close())  # type: ignore[union-attr]
        assert await store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await store.close()


async def test_a_sqlite_database_locked_by_another_process_is_an_outage_and_the_connection_recovers(
    sqlite_url: str,
) -> None:
    # BEGIN IMMEDIATE waits busy_timeout for another process's write lock, then fails as
    # SQLAlchemy's error; the connection is usable (and not left in a transaction) once the lock is gone.
    await (await Store.open(sqlite_url)).close()  # creates the file and its tables
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)
    db = SQLiteDatabase(sqlite_url, busy_timeout_ms=200)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(sa_exc.OperationalError, match="locked") as locked:
            await db.run(lambda conn: conn.exec_driver_sql("SELECT 1"))
        assert is_unavailable(locked.value)
        other.execute("ROLLBACK")

        def write(conn: Connection) -> object:
            timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            conn.exec_driver_sql("DELETE FROM heartbeats")
            return timeout

        assert await db.run(write) == 200
        other.execute("BEGIN IMMEDIATE")  # the write lock is free again: nothing was left open
        other.execute("ROLLBACK")
    finally:
        other.close()
        await db.close()


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
    pending = await pending_effects(store, op_id="op-1")
    assert [(e.kind, e.event) for e in pending] == [
        (EffectKind.UPDATE_CARD, None),
        (EffectKind.THREAD, Accepted(request_id="R1")),
    ]


async def test_outbox_claims_are_exclusive_and_due_effects_are_listed_once_unclaimed(store: Store) -> None:
    await store.create_operation(op=make_op())
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.UPDATE_CARD)], now=T0)
    assert await store.ops_with_due_effects(now=T0) == ["op-1"]
    until = T0 + timedelta(seconds=30)
    assert await claim_outbox(store, op_id="op-1", owner="a", until=until, now=T0)
    assert not await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)
    assert await store.ops_with_due_effects(now=T0) == []  # someone delivers it
    # An expired claim (a crashed deliverer) is taken over.
    later = until + timedelta(seconds=1)
    assert await claim_outbox(store, op_id="op-1", owner="b", until=later + timedelta(seconds=30), now=later)
    await store.release_outbox(op_id="op-1", owner="b")
    (effect,) = await pending_effects(store, op_id="op-1")
    await store.reschedule_effect(effect_id=effect.id, next_at=T0 + timedelta(minutes=5), error="ratelimited")
    assert await store.ops_with_due_effects(now=T0 + timedelta(minutes=1)) == []
    (again,) = await pending_effects(store, op_id="op-1")
    assert again.attempts == 1
    await store.complete_effects(ids=[effect.id], now=T0)
    assert await pending_effects(store, op_id="op-1") == []


async def test_confirmation_posted_records_the_ts_with_the_effect(store: Store) -> None:
    await store.create_operation(op=make_op())
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.POST_CONFIRMATION)], now=T0)
    (effect,) = await pending_effects(store, op_id="op-1")
    await store.confirmation_posted(effect_id=effect.id, op_id="op-1", ts="1700000000.1", now=T0)
    op = await store.get_operation(op_id="op-1")
    assert op is not None
    assert op.message_ts == "1700000000.1"
    assert await pending_effects(store, op_id="op-1") == []


async def test_completing_the_last_effect_gives_the_delivery_claim_back_in_the_same_go(store: Store) -> None:
    # The deliverer learns whether anything is left without another transaction, and a claim
    # given back lets another replica deliver what is written next.
    await store.create_operation(op=make_op())
    effects = [Effect(EffectKind.POST_CONFIRMATION), Effect(EffectKind.UPDATE_CARD)]
    await store.enqueue(op_id="op-1", effects=effects, now=T0)
    until = T0 + timedelta(seconds=30)
    assert await claim_outbox(store, op_id="op-1", owner="a", until=until, now=T0)
    posted, card = await pending_effects(store, op_id="op-1")

    left = await store.confirmation_posted(effect_id=posted.id, op_id="op-1", ts="1.1", now=T0, owner="a")
    assert left is True
    assert not await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)  # still a's

    left = await store.complete_effects(ids=[card.id], now=T0, release=("op-1", "a"))
    assert left is False
    assert await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)  # given back
    # Without ``release`` nothing is given back, and the answer says only "maybe".
    await store.enqueue(op_id="op-1", effects=[Effect(EffectKind.UPDATE_CARD)], now=T0)
    (last,) = await pending_effects(store, op_id="op-1")
    assert await store.complete_effects(ids=[last.id], now=T0) is True
    assert not await claim_outbox(store, op_id="op-1", owner="a", until=until, now=T0)


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
    assert pending == await pending_effects(store, op_id="op-1")
    assert [e.kind for e in pending] == [EffectKind.THREAD, EffectKind.POST_CONFIRMATION]
    assert [e.action for e in await store.recent_audit(op_id="op-1")] == ["looked_up"]
    assert await store.ops_with_due_effects(now=T0) == []  # claimed: no pass takes it
    assert not await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)
    # Held until it runs out: then any replica's pass delivers it.
    later = until + timedelta(seconds=1)
    assert await store.ops_with_due_effects(now=later) == ["op-1"]
    assert await claim_outbox(store, op_id="op-1", owner="b", until=later, now=later)


async def test_a_transition_that_finds_the_delivery_claimed_elsewhere_still_moves(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.LOOKING_UP))
    until = T0 + timedelta(seconds=30)
    assert await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)
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
    assert [e.kind for e in await pending_effects(store, op_id="op-1")] == [EffectKind.POST_CONFIRMATION]
    assert not await claim_outbox(store, op_id="op-1", owner="a", until=until, now=T0)  # still b's


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
    assert await pending_effects(store, op_id="op-1") == []
    assert await store.recent_audit(op_id="op-1") == []
    assert await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)


async def test_a_transition_with_nothing_to_deliver_gives_the_claim_back_at_once(store: Store) -> None:
    await store.create_operation(op=make_op(state=OpState.WAITING_GATEWAY))
    until = T0 + timedelta(seconds=30)
    taken = await store.transition_and_claim(
        "op-1", claim=("a", until), from_states={OpState.WAITING_GATEWAY}, to=OpState.VERIFYING, now=T0
    )
    assert taken is not None
    assert taken[1] == []
    assert await claim_outbox(store, op_id="op-1", owner="b", until=until, now=T0)


async def test_a_version_1_database_is_upgraded_in_place(empty_db_url: str) -> None:
    store = await Store.open(empty_db_url)
    await store.create_operation(op=make_op())
    # Turn it back into what release 1 left behind.
    await execute_sql(
        store,
        *(f"ALTER TABLE operations DROP COLUMN {column}" for column in ("token_seq", "crashes")),
        *(f"DROP TABLE {table}" for table in ("outbox", "outbox_claims", "heartbeats")),
        "DELETE FROM schema_version WHERE version > 1",
    )
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
    await execute_sql(
        store,
        *(f"ALTER TABLE {table} DROP COLUMN account" for table in ("operations", "audit")),
        "DELETE FROM schema_version WHERE version > 4",
    )
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


async def test_a_full_disk_is_said_as_a_full_disk_not_as_an_unreachable_database(sqlite_url: str) -> None:
    """SQLITE_FULL (here from a page limit, as from a full disk) is StoreUnavailable with its own text."""
    store = await Store.open(sqlite_url)
    try:
        # The store's one SQLite connection may grow the file by a few pages at most from here on.
        pages: list[int] = []
        await store._run(
            lambda conn: pages.append(int(conn.exec_driver_sql("PRAGMA page_count").scalar_one()))
        )
        await execute_sql(store, f"PRAGMA max_page_count = {pages[0] + 2}")

        async def fill() -> None:
            for n in range(500):
                url = "https://example.invalid/" + "x" * 4000
                await store.create_operation(op=make_op(f"op-{n}", vco_id=f"vco-{n}", response_url=url))

        with pytest.raises(StoreUnavailable) as caught:
            await fill()
        assert caught.value.disk_full
        assert "no disk space left" in caught.value.friendly
        assert "unreachable" not in caught.value.friendly
    finally:
        await store.close()


async def test_refused_clicks_are_counted_on_one_row_per_person_and_operation(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.create_operation(op=make_op())
        t0 = datetime(2025, 1, 1, tzinfo=UTC)

        def refused(actor: str, minute: int, detail: str = "approve: no") -> AuditEntry:
            at = t0 + timedelta(minutes=minute)
            return AuditEntry(at=at, action="refused", actor_id=actor, op_id="op-1", detail=detail, times=1)

        for minute in range(3):
            await store.add_audit(refused("U0CAROL", minute, detail=f"approve: no {minute}"))
        await store.add_audit(refused("U0DAVE", 5))
        note = AuditEntry(at=t0, action="note", actor_id="U0CAROL", op_id="op-1")
        await store.add_audit(note)
        await store.add_audit(note)  # uncounted entries are each a row, as before
        rows = await store.recent_audit(limit=10, op_id="op-1")
        assert [(e.actor_id, e.action, e.times) for e in rows] == [
            ("U0DAVE", "refused", 1),
            ("U0CAROL", "refused", 3),
            ("U0CAROL", "note", None),
            ("U0CAROL", "note", None),
        ]
        carol = rows[1]
        assert (carol.at, carol.detail) == (t0 + timedelta(minutes=2), "approve: no 2")  # the latest
    finally:
        await store.close()


def test_disk_full_is_recognised_by_postgres_sqlstate_and_sqlite_code() -> None:
    class PgError(Exception):
        sqlstate = "53100"

    class OtherPgError(Exception):
        sqlstate = "08006"

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert disk_full(PgError())
    assert disk_full(full)
    assert not disk_full(OtherPgError())
    assert not disk_full(StoreUnavailable("x"))
    assert not StoreUnavailable("x").disk_full
    assert "unreachable" in StoreUnavailable("x").friendly


async def test_migration_8_keeps_refusal_rows_written_before_it(db_url: str) -> None:
    """A database of schema 7 may hold many refusal rows for one card and person; they stay, uncounted."""
    store = await Store.open(db_url)
    await store.create_operation(op=make_op())
    await store.close()
    store = await Store.open(db_url)
    insert = (
        "INSERT INTO audit (at, action, actor_id, op_id, detail) "
        "VALUES ('2025-01-01 00:00:00', 'refused', 'U0CAROL', 'op-1', 'approve: no')"
    )
    try:  # back to schema 7, with two rows for one click twice
        await execute_sql(
            store,
            "DROP INDEX ux_audit_repeats",
            "ALTER TABLE audit DROP COLUMN times",
            "DELETE FROM schema_version WHERE version >= 8",  # and what came after it
            insert,
            insert,
        )
    finally:
        await store.close()
    store = await Store.open(db_url)
    try:
        assert await store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        at = datetime(2025, 1, 2, tzinfo=UTC)
        for _ in range(2):
            await store.add_audit(
                AuditEntry(
                    at=at, action="refused", actor_id="U0CAROL", op_id="op-1", detail="approve: no", times=1
                )
            )
        rows = await store.recent_audit(limit=10, op_id="op-1")
        assert [e.times for e in rows] == [2, None, None]
    finally:
        await store.close()


async def test_a_version_8_database_gains_the_reason_columns(db_url: str) -> None:
    """Migration 9 adds reason, ticket and cancel_reason (None for older rows); they round-trip."""
    store = await Store.open(db_url)
    await store.create_operation(op=make_op())
    await execute_sql(
        store,
        *(f"ALTER TABLE operations DROP COLUMN {name}" for name in ("reason", "ticket", "cancel_reason")),
        "DELETE FROM schema_version WHERE version > 8",
    )
    await store.close()

    upgraded = await Store.open(db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        old = await upgraded.get_operation(op_id="op-1")
        assert old is not None
        assert (old.reason, old.ticket, old.cancel_reason) == (None, None, None)
        reason = "CHG-9 <@U1> " + "x" * 480
        await upgraded.create_operation(op=make_op("op-2", reason=reason, ticket="CHG-9"))
        moved = await upgraded.transition(
            "op-2",
            from_states={OpState.AWAITING_APPROVAL},
            to=OpState.CANCELLED,
            now=T0,
            cancelled_by="U2",
            cancel_reason="not this one",
        )
        assert moved is not None
        again = await upgraded.get_operation(op_id="op-2")
        assert again is not None
        assert (again.reason, again.ticket, again.cancel_reason) == (reason, "CHG-9", "not this one")
    finally:
        await upgraded.close()


async def test_reopening_an_approval_voids_it_and_gives_back_the_lease_and_the_gateway(store: Store) -> None:
    """DELETING -> AWAITING_APPROVAL (issue 26): one transaction, once, only by the lease holder."""
    op = make_op(
        state=OpState.DELETING,
        approver_id="U0BOSS",
        approved_at=T0,
        started_at=T0,
        deadline_at=T0 + timedelta(minutes=15),
        preview_fingerprint="a" * 64,
    )
    await store.create_operation(op=op, lease=("w1", T0 + timedelta(seconds=30)))
    assert (
        await store.acquire_gateway(region=op.region, gateway_id=op.gateway_id, op_id=op.id, now=T0) == op.id
    )
    later = T0 + timedelta(minutes=1)
    entry = AuditEntry(
        at=later, action="changed_since_approval", actor_id="vpn-bot", op_id=op.id, detail="routes: +x"
    )

    async def reopen(owner: str) -> Operation | None:
        return await store.reopen_approval(
            op.id,
            from_states={OpState.DELETING},
            now=later,
            require_owner=owner,
            audit_entry=entry,
            effects=[Effect(EffectKind.UPDATE_CARD)],
            expires_at=later + timedelta(minutes=15),
            preview_fingerprint="b" * 64,
            preview_changes=("routes: +x",),
            snapshot=None,
            started_at=None,
        )

    assert await reopen("w2") is None  # not the lease holder: nothing changes
    reopened = await reopen("w1")
    assert reopened is not None
    assert reopened.state is OpState.AWAITING_APPROVAL
    assert (reopened.approver_id, reopened.approved_at, reopened.deadline_at, reopened.started_at) == (
        None,
        None,
        None,
        None,
    )
    assert reopened.expires_at == later + timedelta(minutes=15)
    assert (reopened.preview_fingerprint, reopened.preview_changes) == ("b" * 64, ("routes: +x",))
    assert await lease_of(store, op_id=op.id) == (None, None)
    assert await gateway_holder(store, region=op.region, gateway_id=op.gateway_id) is None
    assert [e.kind for e in await pending_effects(store, op_id=op.id)] == [EffectKind.UPDATE_CARD]
    assert [e.action for e in await store.recent_audit(op_id=op.id)] == ["changed_since_approval"]
    # Exactly once: the second attempt finds it awaiting approval already.
    assert await reopen("w1") is None
    assert await store.get_operation(op_id=op.id) == reopened
