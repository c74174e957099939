"""The durable operation store: SQLAlchemy Core over SQLite (one host) or PostgreSQL (replicas).

Every public method is one atomic transaction. State changes are compare-and-set updates
(``UPDATE … WHERE state IN (…)``), so two replicas racing on the same click or the same lease
cannot both win. Times are stored and returned as aware UTC datetimes.

Tables::

    schema_version  applied migrations (taken under an advisory lock on PostgreSQL)
    operations      one row per deletion request, with its lease (lease_owner, lease_expires_at)
    gateway_locks   (region, gateway_id) -> op_id: one DeleteVpnConnection per gateway at a time
    audit           who did what, when, with Alibaba's RequestId
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from dataclasses import fields as dc_fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator

from bot.domain import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    AuditEntry,
    Operation,
    OpState,
    VpnConnection,
    VpnGateway,
)

__all__ = ["SCHEMA_VERSION", "Store", "async_url"]

log = logging.getLogger("bot.store")

# Arbitrary constant naming our migration lock among the database's advisory locks.
_MIGRATION_LOCK_KEY = 0x76706E626F74  # "vpnbot"


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


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime; SQLite stores it naive (in UTC), PostgreSQL as timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store only takes aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

operations = Table(
    "operations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("region", String(64), nullable=False),
    Column("vco_id", String(128), nullable=False),
    Column("gateway_id", String(128), nullable=False),
    Column("connection", JSON, nullable=False),
    Column("gateway", JSON, nullable=False),
    Column("requester_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("team_id", String(64), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("client_token", String(64), nullable=False),
    Column("message_ts", String(64)),
    Column("response_url", Text),
    Column("approver_id", String(64)),
    Column("approved_at", UtcDateTime),
    Column("cancelled_by", String(64)),
    Column("delete_request_id", String(128)),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("deadline_at", UtcDateTime),
    Column("error_code", String(128)),
    Column("error_text", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=0),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", UtcDateTime),
    Index("ix_operations_state", "state"),
)

gateway_locks = Table(
    "gateway_locks",
    metadata,
    Column("region", String(64), primary_key=True),
    Column("gateway_id", String(128), primary_key=True),
    Column("op_id", String(64), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("action", String(64), nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("op_id", String(64)),
    Column("vco_id", String(128)),
    Column("region", String(64)),
    Column("detail", Text, nullable=False, default=""),
    Column("request_id", String(128)),
    Index("ix_audit_at", "at"),
)


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[operations, gateway_locks, audit], checkfirst=True)


# Append only: each step runs once, in order, under the migration lock.
MIGRATIONS: Sequence[Callable[[Connection], None]] = (_migration_1,)
SCHEMA_VERSION = len(MIGRATIONS)

# Operation fields a caller may set through transition()/set_fields(); the rest are derived.
_SETTABLE = frozenset(f.name for f in dc_fields(Operation)) - {
    "id",
    "state",
    "region",
    "connection",
    "gateway",
    "created_at",
    "updated_at",
    "client_token",
    "version",
}


def _connection_json(c: VpnConnection) -> dict[str, Any]:
    return {
        "id": c.id,
        "region": c.region,
        "name": c.name,
        "gateway_id": c.gateway_id,
        "customer_gateway_id": c.customer_gateway_id,
        "status": c.status,
        "local_subnet": c.local_subnet,
        "remote_subnet": c.remote_subnet,
        "created_at": c.created_at.isoformat() if c.created_at else None,
    }


def _gateway_json(g: VpnGateway) -> dict[str, Any]:
    return {
        "id": g.id,
        "region": g.region,
        "name": g.name,
        "status": g.status,
        "business_status": g.business_status,
    }


def _loads(value: Any) -> dict[str, Any]:
    # Some drivers hand JSON back as text.
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, dict):
        raise TypeError(f"expected a JSON object, got {type(loaded).__name__}")
    return loaded


def _row_to_op(row: Row[Any]) -> Operation:
    m = row._mapping
    c = _loads(m["connection"])
    g = _loads(m["gateway"])
    created = c.get("created_at")
    return Operation(
        id=m["id"],
        state=OpState(m["state"]),
        region=m["region"],
        connection=VpnConnection(
            id=c["id"],
            region=c["region"],
            name=c["name"],
            gateway_id=c["gateway_id"],
            customer_gateway_id=c["customer_gateway_id"],
            status=c["status"],
            local_subnet=c["local_subnet"],
            remote_subnet=c["remote_subnet"],
            created_at=datetime.fromisoformat(created) if created else None,
        ),
        gateway=VpnGateway(
            id=g["id"],
            region=g["region"],
            name=g["name"],
            status=g["status"],
            business_status=g.get("business_status", "Normal"),
        ),
        requester_id=m["requester_id"],
        channel_id=m["channel_id"],
        team_id=m["team_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        expires_at=m["expires_at"],
        client_token=m["client_token"],
        message_ts=m["message_ts"],
        response_url=m["response_url"],
        approver_id=m["approver_id"],
        approved_at=m["approved_at"],
        cancelled_by=m["cancelled_by"],
        delete_request_id=m["delete_request_id"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        deadline_at=m["deadline_at"],
        error_code=m["error_code"],
        error_text=m["error_text"],
        attempts=m["attempts"],
        version=m["version"],
    )


def _row_to_audit(row: Row[Any]) -> AuditEntry:
    m = row._mapping
    return AuditEntry(
        at=m["at"],
        action=m["action"],
        actor_id=m["actor_id"],
        op_id=m["op_id"],
        vco_id=m["vco_id"],
        region=m["region"],
        detail=m["detail"],
        request_id=m["request_id"],
    )


def _check_fields(values: dict[str, Any]) -> None:
    unknown = set(values) - _SETTABLE
    if unknown:
        raise TypeError(f"not settable operation fields: {', '.join(sorted(unknown))}")


def _states(states: Collection[OpState]) -> list[str]:
    return [OpState(s).value for s in states]


def _terminal_values() -> list[str]:
    return _states(TERMINAL_STATES)


class Store:
    """The operation store. Build with ``await Store.open(url)``; ``await close()`` at the end."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to ``url`` (sqlite:///… or postgresql://…) and apply pending migrations."""
        engine = _make_engine(async_url(url))
        store = cls(engine)
        try:
            await store._migrate()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect

    async def _migrate(self) -> None:
        async with self._engine.begin() as conn:
            if self._dialect == "postgresql":
                # Replicas starting together queue here; the lock ends with the transaction.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            # On SQLite the transaction is BEGIN IMMEDIATE (see _make_engine), which serialises too.
            await conn.run_sync(lambda c: schema_version.create(c, checkfirst=True))
            current = (await conn.execute(select(func.max(schema_version.c.version)))).scalar() or 0
            for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
                log.info("applying database migration %d", number)
                await conn.run_sync(step)
                await conn.execute(
                    insert(schema_version).values(version=number, applied_at=datetime.now(UTC))
                )

    async def schema_versions(self) -> list[int]:
        """The applied migration numbers, in order (for tests and ``doctor``)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(schema_version.c.version).order_by(schema_version.c.version))
            return [r[0] for r in rows]

    # --- operations --------------------------------------------------------------------------

    async def create_operation(self, *, op: Operation) -> Operation:
        """Insert a new operation (no lease)."""
        values: dict[str, Any] = {
            "id": op.id,
            "state": op.state.value,
            "region": op.region,
            "vco_id": op.vco_id,
            "gateway_id": op.gateway_id,
            "connection": _connection_json(op.connection),
            "gateway": _gateway_json(op.gateway),
            "created_at": op.created_at,
            "updated_at": op.updated_at,
            "client_token": op.client_token,
            "version": op.version,
            **{name: getattr(op, name) for name in _SETTABLE},
        }
        async with self._engine.begin() as conn:
            row = (await conn.execute(insert(operations).values(**values).returning(*operations.c))).one()
        return _row_to_op(row)

    async def get_operation(self, *, op_id: str) -> Operation | None:
        """The operation, or None if there is no such id."""
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(operations).where(operations.c.id == op_id))).first()
        return _row_to_op(row) if row else None

    async def transition(
        self,
        op_id: str,
        *,
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        require_owner: str | None = None,
        lease: tuple[str, datetime] | None = None,
        **fields: Any,
    ) -> Operation | None:
        """Move ``op_id`` from one of ``from_states`` to ``to`` and set ``fields``, atomically.

        Returns the updated operation, or None if it lost: the state was not one of
        ``from_states`` (or ``require_owner`` no longer holds the lease). ``lease`` takes the
        lease in the same statement, so no other replica sees the new state unleased.
        Entering a terminal state drops the lease.
        """
        _check_fields(fields)
        values: dict[str, Any] = {
            **fields,
            "state": OpState(to).value,
            "updated_at": now,
            "version": operations.c.version + 1,
        }
        if lease is not None:
            values["lease_owner"], values["lease_expires_at"] = lease
        if to in TERMINAL_STATES:
            values["lease_owner"] = None
            values["lease_expires_at"] = None
        stmt = update(operations).where(
            operations.c.id == op_id, operations.c.state.in_(_states(from_states))
        )
        if require_owner is not None:
            stmt = stmt.where(operations.c.lease_owner == require_owner)
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt.values(**values).returning(*operations.c))).first()
        return _row_to_op(row) if row else None

    async def set_fields(
        self,
        op_id: str,
        *,
        now: datetime,
        states: Collection[OpState] | None = None,
        require_owner: str | None = None,
        **fields: Any,
    ) -> Operation | None:
        """Set ``fields`` without changing the state; None if the op is gone or a condition failed."""
        _check_fields(fields)
        stmt = update(operations).where(operations.c.id == op_id)
        if states is not None:
            stmt = stmt.where(operations.c.state.in_(_states(states)))
        if require_owner is not None:
            stmt = stmt.where(operations.c.lease_owner == require_owner)
        values = {**fields, "updated_at": now, "version": operations.c.version + 1}
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt.values(**values).returning(*operations.c))).first()
        return _row_to_op(row) if row else None

    # --- leases ------------------------------------------------------------------------------

    async def claim_lease(
        self, *, owner: str, until: datetime, now: datetime, op_id: str | None = None
    ) -> Operation | None:
        """Take the lease on ``op_id`` (or on the next due active operation) if free or expired.

        Only operations in ACTIVE_STATES can be leased. Returns the claimed operation or None.
        """
        async with self._engine.begin() as conn:
            if op_id is None:
                candidates = [
                    r[0]
                    for r in await conn.execute(
                        select(operations.c.id)
                        .where(operations.c.state.in_(_states(ACTIVE_STATES)), self._lease_free(now))
                        .order_by(operations.c.updated_at)
                        .limit(20)
                    )
                ]
            else:
                candidates = [op_id]
            for candidate in candidates:
                row = (
                    await conn.execute(
                        update(operations)
                        .where(
                            operations.c.id == candidate,
                            operations.c.state.in_(_states(ACTIVE_STATES)),
                            or_(self._lease_free(now), operations.c.lease_owner == owner),
                        )
                        .values(lease_owner=owner, lease_expires_at=until)
                        .returning(*operations.c)
                    )
                ).first()
                if row is not None:
                    return _row_to_op(row)
        return None

    async def renew_lease(self, *, op_id: str, owner: str, until: datetime) -> bool:
        """Extend a lease this owner still holds; False if it was lost."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(operations)
                .where(operations.c.id == op_id, operations.c.lease_owner == owner)
                .values(lease_expires_at=until)
                .returning(operations.c.id)
            )
            return result.first() is not None

    async def release_lease(self, *, op_id: str, owner: str) -> None:
        """Give a lease back so another worker may resume the operation at once."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(operations)
                .where(operations.c.id == op_id, operations.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def lease_of(self, *, op_id: str) -> tuple[str | None, datetime | None]:
        """``(owner, expires_at)`` of the lease on ``op_id`` (for diagnostics and tests)."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(operations.c.lease_owner, operations.c.lease_expires_at).where(
                        operations.c.id == op_id
                    )
                )
            ).first()
        return (row[0], row[1]) if row else (None, None)

    @staticmethod
    def _lease_free(now: datetime) -> Any:
        return or_(operations.c.lease_owner.is_(None), operations.c.lease_expires_at < now)

    async def list_resumable(self, *, now: datetime) -> list[Operation]:
        """Active operations nobody holds a live lease on (crashed or stopped workers)."""
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                select(operations)
                .where(operations.c.state.in_(_states(ACTIVE_STATES)), self._lease_free(now))
                .order_by(operations.c.updated_at)
            )
            return [_row_to_op(r) for r in rows]

    async def list_expired_confirmations(self, *, now: datetime) -> list[Operation]:
        """Confirmations still awaiting approval whose ``expires_at`` has passed."""
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                select(operations).where(
                    operations.c.state == OpState.AWAITING_APPROVAL.value, operations.c.expires_at <= now
                )
            )
            return [_row_to_op(r) for r in rows]

    async def list_operations(self, *, states: Collection[OpState] | None = None) -> list[Operation]:
        """Operations, oldest first, optionally only in ``states``."""
        stmt = select(operations).order_by(operations.c.created_at)
        if states is not None:
            stmt = stmt.where(operations.c.state.in_(_states(states)))
        async with self._engine.begin() as conn:
            return [_row_to_op(r) for r in await conn.execute(stmt)]

    # --- per-gateway serialisation -----------------------------------------------------------

    async def acquire_gateway(self, *, region: str, gateway_id: str, op_id: str, now: datetime) -> str:
        """Take the gateway for ``op_id`` if free or held by a finished operation; return the holder.

        The result equals ``op_id`` when this operation holds the gateway (re-acquiring is a no-op).
        Safe under READ COMMITTED: the takeover UPDATE re-checks its WHERE on the row a racing
        writer left behind, so only one of several racing operations can see it free.
        """
        key = (gateway_locks.c.region == region, gateway_locks.c.gateway_id == gateway_id)
        finished = select(operations.c.id).where(operations.c.state.in_(_terminal_values()))
        existing = select(operations.c.id)
        for _ in range(5):
            async with self._engine.begin() as conn:
                ins = self._insert(gateway_locks).values(
                    region=region, gateway_id=gateway_id, op_id=op_id, acquired_at=now
                )
                ins = ins.on_conflict_do_nothing(index_elements=["region", "gateway_id"])
                if (await conn.execute(ins.returning(gateway_locks.c.op_id))).first() is not None:
                    return op_id
                taken = await conn.execute(
                    update(gateway_locks)
                    .where(
                        *key,
                        or_(
                            gateway_locks.c.op_id == op_id,
                            gateway_locks.c.op_id.in_(finished),
                            gateway_locks.c.op_id.not_in(existing),
                        ),
                    )
                    .values(op_id=op_id, acquired_at=now)
                    .returning(gateway_locks.c.op_id)
                )
                if taken.first() is not None:
                    return op_id
                holder = (await conn.execute(select(gateway_locks.c.op_id).where(*key))).scalar()
                if holder is not None:
                    return str(holder)
            # The holder released between our statements; try again.
        raise RuntimeError(f"could not settle the lock on gateway {gateway_id}")  # pragma: no cover

    async def release_gateway(self, *, region: str, gateway_id: str, op_id: str) -> None:
        """Free the gateway if ``op_id`` holds it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(gateway_locks).where(
                    gateway_locks.c.region == region,
                    gateway_locks.c.gateway_id == gateway_id,
                    gateway_locks.c.op_id == op_id,
                )
            )

    async def gateway_holder(self, *, region: str, gateway_id: str) -> str | None:
        """The op id holding the gateway lock, if any."""
        async with self._engine.begin() as conn:
            return (
                await conn.execute(
                    select(gateway_locks.c.op_id).where(
                        gateway_locks.c.region == region, gateway_locks.c.gateway_id == gateway_id
                    )
                )
            ).scalar()

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    # --- audit -------------------------------------------------------------------------------

    async def add_audit(
        self,
        *,
        at: datetime,
        action: str,
        actor_id: str,
        op_id: str | None = None,
        vco_id: str | None = None,
        region: str | None = None,
        detail: str = "",
        request_id: str | None = None,
    ) -> AuditEntry:
        """Append one audit record."""
        entry = AuditEntry(
            at=at,
            action=action,
            actor_id=actor_id,
            op_id=op_id,
            vco_id=vco_id,
            region=region,
            detail=detail,
            request_id=request_id,
        )
        async with self._engine.begin() as conn:
            await conn.execute(insert(audit).values(**asdict(entry)))
        return entry

    async def recent_audit(self, *, limit: int = 10, op_id: str | None = None) -> list[AuditEntry]:
        """The newest audit records first, optionally for one operation."""
        stmt = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        if op_id is not None:
            stmt = stmt.where(audit.c.op_id == op_id)
        async with self._engine.begin() as conn:
            return [_row_to_audit(r) for r in await conn.execute(stmt)]

    # --- metrics (read when /metrics is scraped) ---------------------------------------------

    async def count_by_state(self) -> dict[str, int]:
        """How many operations are in each state that is not final (states with none are absent)."""
        stmt = (
            select(operations.c.state, func.count())
            .where(operations.c.state.not_in(_terminal_values()))
            .group_by(operations.c.state)
        )
        async with self._engine.begin() as conn:
            return {str(state): int(n) for state, n in await conn.execute(stmt)}

    async def count_queued(self) -> int:
        """How many approved operations wait for a gateway another unfinished operation holds."""
        holder = operations.alias("holder")
        stmt = (
            select(func.count())
            .select_from(operations)
            .join(
                gateway_locks,
                (gateway_locks.c.region == operations.c.region)
                & (gateway_locks.c.gateway_id == operations.c.gateway_id),
            )
            .join(holder, holder.c.id == gateway_locks.c.op_id)
            .where(
                operations.c.state == OpState.APPROVED.value,
                gateway_locks.c.op_id != operations.c.id,
                holder.c.state.not_in(_terminal_values()),
            )
        )
        async with self._engine.begin() as conn:
            return int((await conn.execute(stmt)).scalar() or 0)


def _make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        memory = ":memory:" in url or url.rstrip("/").endswith("sqlite+aiosqlite:")
        # One connection per process, handed to one transaction at a time in arrival order.
        # SQLite has one writer anyway, and every transaction takes the write lock up front
        # (BEGIN IMMEDIATE, below); with a pool of many connections, waiters inside one process
        # raced for the lock unfairly and a burst could outwait busy_timeout ("database is
        # locked"). An in-memory database must live in one connection in any case.
        engine = create_async_engine(
            url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0, pool_timeout=120
        )
        _configure_sqlite(engine, wal=not memory)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: AsyncEngine, *, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the driver must not.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # Wait (rather than fail) when another process holds the write lock; set before WAL,
        # whose switch itself needs the lock when two processes open a new file together.
        cursor.execute("PRAGMA busy_timeout = 15000")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
        # fail with SQLITE_BUSY on upgrade, and busy_timeout applies instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
