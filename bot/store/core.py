"""The durable operation store: SQLAlchemy Core over SQLite (one host) or PostgreSQL (replicas).

Every public method is one atomic transaction, written as one synchronous function of a
SQLAlchemy ``Connection`` and run by :meth:`Store._run` (on SQLite on the database's own thread,
on PostgreSQL in one greenlet of the asyncio engine; see :mod:`bot.store.engine`). State changes are
compare-and-set updates (``UPDATE … WHERE state IN (…)``), so two replicas racing on the same click
or the same lease cannot both win; the audit entry and the Slack effects a change causes are written in the same
transaction, so a crash can never keep one and lose the other. Times are aware UTC datetimes.
Driver failures that mean "the database is not there right now" become :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, Unpack

from pydantic import TypeAdapter
from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from bot import group_matching
from bot.domain import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Approval,
    ApprovalOutcome,
    ApprovalResult,
    AuditEntry,
    BatchMove,
    Effect,
    EffectKind,
    Freeze,
    Impact,
    Operation,
    OpFields,
    OpState,
    PendingEffect,
    RouteResult,
    Snapshot,
    VpnConnection,
    VpnGateway,
)
from bot.errors import StoreUnavailable
from bot.store.engine import Database, async_url, disk_full, open_database, unavailable
from bot.store.outbox import AUDIT_KEY_PREFIX, OutboxMixin, insert_effects
from bot.store.shield import shielded
from bot.store.tables import (
    MIGRATIONS,
    approvals,
    audit,
    batches,
    freezes,
    gateway_locks,
    heartbeats,
    operations,
    schema_version,
    slack_requests,
)

__all__ = ["Store", "async_url", "clear_approvals"]

log = logging.getLogger("bot.store")

T = TypeVar("T")

# Arbitrary constant naming our migration lock among the database's advisory locks.
_MIGRATION_LOCK_KEY = 0x76706E626F74  # "vpnbot"
# Leases renewed per statement: well under SQLite's bound-parameter limit.
_RENEW_CHUNK = 500

_CONNECTION = TypeAdapter(VpnConnection)
_GATEWAY = TypeAdapter(VpnGateway)
_IMPACT = TypeAdapter(Impact | None)
_SNAPSHOT = TypeAdapter(Snapshot | None)
_ROUTE_RESULTS = TypeAdapter(tuple[RouteResult, ...])
_APPROVALS = TypeAdapter(tuple[Approval, ...])
_CHANGES = TypeAdapter(tuple[str, ...])
# Operation fields stored as plain columns of the same name.
_PLAIN = tuple(
    f.name
    for f in fields(Operation)
    if f.name
    not in {
        "state",
        "connection",
        "gateway",
        "impact",
        "snapshot",
        "route_results",
        "approvals",
        "preview_changes",
    }
)


# Built once: their rows come as execute() parameters, so neither is rebuilt nor re-keyed per call.
_INSERT_OPERATION = insert(operations)
_INSERT_AUDIT = insert(audit)


def _check_columns() -> None:
    """Fail at import if the store would write a field that has no column.

    Unlike ``.values()``, execute() parameters that name no column are dropped without a word.
    """
    written = {
        operations: {*_PLAIN, *OpFields.__annotations__, "state", "vco_id", "gateway_id"},
        audit: {f.name for f in fields(AuditEntry)},
    }
    for table, names in written.items():
        missing = names - set(table.c.keys())
        if missing:
            raise RuntimeError(f"table {table.name} has no column for {sorted(missing)}")


_check_columns()


@functools.cache
def _update_statement(states: bool, owned: bool, unfrozen: bool = False) -> Any:
    """The compare-and-set UPDATE of an operation, built once per shape (see :func:`_update_operation`)."""
    stmt = update(operations).where(operations.c.id == bindparam("b_id"))
    if states:
        stmt = stmt.where(operations.c.state.in_(bindparam("b_states", expanding=True)))
    if owned:
        stmt = stmt.where(operations.c.lease_owner == bindparam("b_owner"))
    if unfrozen:
        # No freeze in force covers the operation's account: checked in the same statement as the
        # move, so a freeze committed a moment before an approval always wins over it.
        at = bindparam("b_frozen_at", type_=freezes.c.until.type)
        frozen = select(freezes.c.id).where(
            freezes.c.lifted_at.is_(None),
            freezes.c.starts_at <= at,
            freezes.c.until > at,
            or_(freezes.c.account.is_(None), freezes.c.account == operations.c.account),
        )
        stmt = stmt.where(~exists(frozen))
    return stmt.values(version=operations.c.version + 1).returning(*operations.c)


def _update_operation(
    op_id: str,
    values: dict[str, Any],
    states: Collection[OpState] | None,
    owner: str | None,
    unfrozen_at: datetime | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``execute()`` arguments that set ``values`` (columns) on ``op_id`` if in ``states``, leased to
    ``owner`` and (given ``unfrozen_at``) covered by no freeze in force then.

    The SET columns are the parameters' keys, so the statement itself is never rebuilt per call.
    """
    params = {**values, "b_id": op_id}
    if states is not None:
        params["b_states"] = _states(states)
    if owner is not None:
        params["b_owner"] = owner
    if unfrozen_at is not None:
        params["b_frozen_at"] = unfrozen_at
    statement = _update_statement(states is not None, owner is not None, unfrozen_at is not None)
    return statement, params


def _row_values(op: Operation) -> dict[str, Any]:
    """Every column of a new row for ``op``."""
    return {
        **{name: getattr(op, name) for name in _PLAIN},
        **_values(
            {
                "connection": op.connection,
                "gateway": op.gateway,
                "impact": op.impact,
                "snapshot": op.snapshot,
                "route_results": op.route_results,
                "approvals": op.approvals,
                "preview_changes": op.preview_changes,
            }
        ),
        "state": op.state.value,
    }


def _values(op_fields: OpFields) -> dict[str, Any]:
    """Column values for ``op_fields``: the connection and gateway go to JSON (and their id columns)."""
    values: dict[str, Any] = dict(op_fields)
    if "connection" in op_fields:
        connection = op_fields["connection"]
        values["connection"] = _CONNECTION.dump_python(connection, mode="json")
        values["vco_id"] = connection.id
        values["gateway_id"] = connection.gateway_id
    if "gateway" in op_fields:
        values["gateway"] = _GATEWAY.dump_python(op_fields["gateway"], mode="json")
    if "impact" in op_fields:
        values["impact"] = _IMPACT.dump_python(op_fields["impact"], mode="json")
    if "snapshot" in op_fields:
        values["snapshot"] = _SNAPSHOT.dump_python(op_fields["snapshot"], mode="json")
    if "route_results" in op_fields:
        values["route_results"] = _ROUTE_RESULTS.dump_python(op_fields["route_results"], mode="json")
    if "approvals" in op_fields:
        # None, not [], when there are none: the column of every operation that never had a rule.
        values["approvals"] = _APPROVALS.dump_python(op_fields["approvals"], mode="json") or None
    if "preview_changes" in op_fields:
        values["preview_changes"] = _CHANGES.dump_python(op_fields["preview_changes"], mode="json")
    return values


def _loads(value: Any) -> Any:
    # Some drivers hand JSON back as text.
    return json.loads(value) if isinstance(value, str) else value


def _row_to_op(row: Row[Any]) -> Operation:
    m = row._mapping
    return Operation(
        state=OpState(m["state"]),
        connection=_CONNECTION.validate_python(_loads(m["connection"])),
        gateway=_GATEWAY.validate_python(_loads(m["gateway"])),
        impact=_IMPACT.validate_python(_loads(m["impact"])),
        snapshot=_SNAPSHOT.validate_python(_loads(m["snapshot"])),
        route_results=_ROUTE_RESULTS.validate_python(_loads(m["route_results"]) or ()),
        approvals=_APPROVALS.validate_python(_loads(m["approvals"]) or ()),
        preview_changes=_CHANGES.validate_python(_loads(m["preview_changes"]) or ()),
        **{name: m[name] for name in _PLAIN},
    )


_AUDIT_FIELDS = tuple(f.name for f in fields(AuditEntry))


def _insert_audit_with(conn: Connection, entry: AuditEntry, effects: Sequence[Effect]) -> None:
    """One audit row and its ``effects`` (under its operation, or ``audit:<row id>`` for none)."""
    if not effects:
        conn.execute(_INSERT_AUDIT, _audit_row(entry))
        return
    row_id = conn.execute(insert(audit).values(_audit_row(entry)).returning(audit.c.id)).scalar_one()
    insert_effects(conn, op_id=entry.op_id or f"{AUDIT_KEY_PREFIX}{row_id}", effects=effects, now=entry.at)


def _audit_row(entry: AuditEntry) -> dict[str, Any]:
    """The audit row's values. Its fields are plain values: dataclasses.asdict's deep copy of each
    was 1.4% of the process's CPU in a burst of commands."""
    return {name: getattr(entry, name) for name in _AUDIT_FIELDS}


def _row_to_audit(row: Row[Any]) -> AuditEntry:
    m = row._mapping
    return AuditEntry(**{name: m[name] for name in _AUDIT_FIELDS})


_FREEZE_FIELDS = tuple(f.name for f in fields(Freeze))


def _row_to_freeze(row: Row[Any]) -> Freeze:
    m = row._mapping
    return Freeze(**{name: m[name] for name in _FREEZE_FIELDS})


def _log_audit(entry: AuditEntry, state: OpState | None) -> None:
    """One structured line per committed audit entry, so logs can be followed by op_id like the trail."""
    log.info(
        "operation %s",
        entry.action,
        extra={
            "op_id": entry.op_id,
            "vco_id": entry.vco_id,
            "state": state.value if state is not None else None,
            "action": entry.action,
            "actor_id": entry.actor_id,
            "request_id": entry.request_id,
        },
    )


def _request_lock_key(op: Operation) -> int:
    """A signed 64-bit advisory lock key for (requester, account, region, connection)."""
    digest = hashlib.sha256(f"{op.requester_id}\0{op.account}\0{op.region}\0{op.vco_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _states(states: Collection[OpState]) -> list[str]:
    return [OpState(s).value for s in states]


# The oldest open request by a requester to delete a connection (where a new one would be). Built
# once, like the other statements of the request path: building it cost every request ~0.5 ms of
# the event loop's CPU.
_OPEN_REQUEST = (
    select(operations)
    .where(
        operations.c.requester_id == bindparam("b_requester"),
        operations.c.vco_id == bindparam("b_vco"),
        operations.c.region == bindparam("b_region"),
        operations.c.account == bindparam("b_account"),
        operations.c.kind == bindparam("b_kind"),
        operations.c.state.in_(_states((OpState.LOOKING_UP, OpState.AWAITING_APPROVAL))),
        operations.c.expires_at > bindparam("b_now"),
    )
    .order_by(operations.c.created_at)
    .limit(1)
)


def _open_request(op: Operation) -> dict[str, Any]:
    """:data:`_OPEN_REQUEST`'s parameters for ``op``'s requester and connection (where ``op`` would be)."""
    return {
        "b_requester": op.requester_id,
        "b_vco": op.vco_id,
        "b_region": op.region,
        "b_account": op.account,
        "b_kind": op.kind,
        "b_now": op.created_at,
    }


# The replay record of a signed Slack request (see Store.first_delivery): the old entries go, then
# the claim. The claim's INSERT is the dialect's (ON CONFLICT), built once per store.
_FORGET_REQUESTS = delete(slack_requests).where(slack_requests.c.timestamp < bindparam("b_before"))


class Store(OutboxMixin):
    """The operation store. Build with ``await Store.open(url)``; ``await close()`` at the end."""

    _op_from_row = staticmethod(_row_to_op)

    def __init__(self, database: Database) -> None:
        self._db = database
        self._postgres = database.dialect_name == "postgresql"
        self._inflight: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to ``url`` (sqlite:///… or postgresql://…) and apply pending migrations."""
        store = cls(open_database(url))
        try:
            await store._migrate()
        except BaseException:
            await store._db.close()
            raise
        return store

    @classmethod
    def open_existing(cls, url: str) -> Store:
        """The store at ``url`` as it is, never migrated (readers such as ``vpn-bot audit export``)."""
        return cls(open_database(url))

    async def close(self, *, grace_s: float = 10.0) -> None:
        """Let transactions under way end (their callers may be gone), then close every connection.

        A transaction after this opens a connection again (and needs another ``close()``).
        """
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace_s)
        await self._db.close()

    async def _run(self, body: Callable[[Connection], T]) -> T:
        """Run ``body(conn)`` as one transaction; database outages become StoreUnavailable.

        ``body`` is synchronous and runs whole, from BEGIN to COMMIT, where the database runs its
        transactions (:meth:`bot.store.engine.Database.run`): on SQLite that is another thread, so
        a body touches nothing but ``conn`` and its own values.
        """
        try:
            return await self._db.run(body)
        except Exception as exc:
            if unavailable(exc):
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                raise StoreUnavailable(detail, disk_full=disk_full(exc)) from exc
            raise

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    async def _migrate(self) -> None:
        postgres = self._postgres

        def migrate(conn: Connection) -> None:
            if postgres:
                # Replicas starting together queue here; the lock ends with the transaction.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            # On SQLite the transaction is BEGIN IMMEDIATE (see bot/store/engine.py), which serialises too.
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
                log.info("applying database migration %d", number)
                step(conn)
                conn.execute(insert(schema_version).values(version=number, applied_at=datetime.now(UTC)))

        await self._run(migrate)

    @shielded
    async def schema_versions(self) -> list[int]:
        """The applied migration numbers, in order (for tests and ``doctor``)."""
        stmt = select(schema_version.c.version).order_by(schema_version.c.version)
        return await self._run(lambda conn: [r[0] for r in conn.execute(stmt)])

    @shielded
    async def heartbeat(self, *, instance: str, now: datetime) -> None:
        """Write this instance's heartbeat row: proves the database takes writes (``/healthz``)."""
        stmt = self._insert(heartbeats).values(instance=instance, at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["instance"], set_={"at": now})
        await self._run(lambda conn: conn.execute(stmt))

    @shielded
    async def instance_seen(self, *, instance: str) -> datetime | None:
        """When ``instance`` last wrote its heartbeat (None: never)."""
        stmt = select(heartbeats.c.at).where(heartbeats.c.instance == instance)
        seen: datetime | None = await self._run(lambda conn: conn.execute(stmt).scalar())
        return seen

    @shielded
    async def first_delivery(self, *, timestamp: int, signature: str, forget_before: int) -> bool:
        """Record a signed Slack request; False if it was recorded before (a replay).

        Entries whose timestamp is older than ``forget_before`` (epoch seconds) are dropped in the
        same transaction: Slack's signature check refuses such requests anyway.
        """
        claim = self._claim_request

        def record(conn: Connection) -> bool:
            conn.execute(_FORGET_REQUESTS, {"b_before": forget_before})
            return conn.execute(claim, {"timestamp": timestamp, "signature": signature}).first() is not None

        return await self._run(record)

    @functools.cached_property
    def _claim_request(self) -> Any:
        """Record a (timestamp, signature) unless it is recorded already; returns a row if it was new."""
        return (
            self._insert(slack_requests)
            .on_conflict_do_nothing(index_elements=["timestamp", "signature"])
            .returning(slack_requests.c.timestamp)
        )

    # --- operations --------------------------------------------------------------------------

    @shielded
    async def create_operation(
        self,
        *,
        op: Operation,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        one_open: bool = False,
    ) -> Operation:
        """Insert a new operation, optionally leased to its creator, with its first audit entry.

        Returns ``op``: the row holds exactly its fields (nothing is read back). With ``one_open``,
        if the same person already has an open request (looking up, or awaiting approval and not
        expired) to delete the same connection, nothing is written and that operation is returned
        instead, checked in the same transaction as the insert.
        """
        values = _row_values(op)
        if lease is not None:
            values["lease_owner"], values["lease_expires_at"] = lease
        open_request = _open_request(op) if one_open else None
        postgres = self._postgres

        def create(conn: Connection) -> Operation | None:
            if open_request is not None:
                if postgres:
                    # Two replicas asked at once both see no open request under READ COMMITTED; this
                    # lock (held to the commit) queues the second. SQLite's BEGIN IMMEDIATE already does.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _request_lock_key(op)})
                row = conn.execute(_OPEN_REQUEST, open_request).first()
                if row is not None:
                    return _row_to_op(row)
            conn.execute(_INSERT_OPERATION, values)
            if audit_entry is not None:
                conn.execute(_INSERT_AUDIT, _audit_row(audit_entry))
            return None

        existing = await self._run(create)
        if existing is not None:
            return existing
        if audit_entry is not None:
            _log_audit(audit_entry, op.state)
        return op

    @shielded
    async def create_recreation(
        self, *, op: Operation, audit_entry: AuditEntry, effects: Sequence[Effect] = ()
    ) -> Operation | None:
        """Insert recreation ``op`` unless its parent already has one open or done; None if it has.

        The parent's row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction
        is exclusive), so two modals submitted at once cannot both start a recreation. A recreation
        blocks another while it is not final, once it recreated the connection, or once it created
        one (``new_vco_id``) even if it did not finish.
        """
        values = _row_values(op)
        parent = select(operations.c.id).where(operations.c.id == op.parent_op_id)
        if self._postgres:
            parent = parent.with_for_update()
        blocking = select(operations.c.id).where(
            operations.c.parent_op_id == op.parent_op_id,
            or_(
                operations.c.state.not_in(_states(TERMINAL_STATES)),
                operations.c.state == OpState.RECREATED.value,
                operations.c.new_vco_id.is_not(None),
            ),
        )

        def create(conn: Connection) -> bool:
            conn.execute(parent)
            if conn.execute(blocking).first() is not None:
                return False
            conn.execute(_INSERT_OPERATION, values)
            conn.execute(_INSERT_AUDIT, _audit_row(audit_entry))
            insert_effects(conn, op_id=op.id, effects=effects, now=op.created_at)
            return True

        if not await self._run(create):
            return None
        _log_audit(audit_entry, op.state)
        return op

    @shielded
    async def get_operation(self, *, op_id: str) -> Operation | None:
        """The operation, or None if there is no such id."""
        stmt = select(operations).where(operations.c.id == op_id)
        row = await self._run(lambda conn: conn.execute(stmt).first())
        return _row_to_op(row) if row else None

    @shielded
    async def transition(
        self,
        op_id: str,
        *,
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        require_owner: str | None = None,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None:
        """Move ``op_id`` from one of ``from_states`` to ``to`` and set ``op_fields``, atomically.

        Returns the updated operation, or None if it lost: the state was not one of
        ``from_states`` (or ``require_owner`` no longer holds the lease). ``lease`` takes the
        lease in the same statement, so no other replica sees the new state unleased. Entering a
        terminal state drops the lease and frees the operation's gateway. ``audit_entry`` and
        ``effects`` are written in the same transaction, only if the move wins.
        """

        def move(conn: Connection) -> Operation | None:
            return _move(
                conn,
                op_id,
                from_states=from_states,
                to=to,
                now=now,
                require_owner=require_owner,
                lease=lease,
                audit_entry=audit_entry,
                effects=effects,
                op_fields=op_fields,
            )

        moved = await self._run(move)
        if moved is not None and audit_entry is not None:
            _log_audit(audit_entry, moved.state)
        return moved

    @shielded
    async def transition_and_claim(
        self,
        op_id: str,
        *,
        claim: tuple[str, datetime],
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        require_owner: str | None = None,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        effects: Sequence[Effect] = (),
        unfrozen: bool = False,
        **op_fields: Unpack[OpFields],
    ) -> tuple[Operation, list[PendingEffect] | None] | None:
        """:meth:`transition`, and if it wins, take the outbox's delivery claim in the same transaction.

        ``unfrozen``: the move also loses while a freeze covers the operation's account at ``now``
        (an approval: see :mod:`bot.workflow.freeze`).

        ``claim`` is ``(owner, until)`` as for :meth:`take_next`, whose read it saves the deliverer:
        the result is ``(moved, effects)`` with the operation's pending effects, oldest first, the
        claim held by ``owner`` (with nothing pending it is given back at once and ``effects`` is
        empty). ``effects`` is None when another replica holds a live claim: the move still won,
        and delivery goes as after :meth:`transition`. None: the move lost, nothing was claimed.
        """
        owner, until = claim

        def move_and_take(conn: Connection) -> tuple[Operation, list[PendingEffect] | None] | None:
            moved = _move(
                conn,
                op_id,
                from_states=from_states,
                to=to,
                now=now,
                require_owner=require_owner,
                lease=lease,
                audit_entry=audit_entry,
                effects=effects,
                op_fields=op_fields,
                unfrozen=unfrozen,
            )
            if moved is None:
                return None
            return moved, self._take(conn, op_id=op_id, owner=owner, until=until, now=now)

        result = await self._run(move_and_take)
        if result is not None and audit_entry is not None:
            _log_audit(audit_entry, result[0].state)
        return result

    @shielded
    async def reopen_approval(
        self,
        op_id: str,
        *,
        from_states: Collection[OpState],
        now: datetime,
        require_owner: str,
        audit_entry: AuditEntry,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None:
        """Move an approved ``op_id`` that sent nothing back to awaiting approval, atomically.

        For a preview that changed since it was approved (bot.workflow.binding): in one transaction,
        the compare-and-set (leased to ``require_owner``), ``op_fields`` set (a fresh ``expires_at``
        among them), every approval given so far made void (:func:`_void_approvals`), the lease and
        the gateway's turn given back, ``audit_entry`` and ``effects`` written. None if the move lost.
        """

        def reopen(conn: Connection) -> Operation | None:
            moved = _move(
                conn,
                op_id,
                from_states=from_states,
                to=OpState.AWAITING_APPROVAL,
                now=now,
                require_owner=require_owner,
                lease=None,
                audit_entry=audit_entry,
                effects=effects,
                op_fields=op_fields,
            )
            if moved is None:
                return None
            # Nobody drives a request awaiting approval; the next approval takes the lease again.
            conn.execute(
                update(operations)
                .where(operations.c.id == op_id)
                .values(lease_owner=None, lease_expires_at=None)
            )
            # The gateway's turn goes to whoever waits for it; the next approval queues again.
            _release_gateway(conn, moved)
            return _void_approvals(conn, moved)

        moved = await self._run(reopen)
        if moved is not None:
            _log_audit(audit_entry, moved.state)
        return moved

    @shielded
    async def set_fields(
        self,
        op_id: str,
        *,
        now: datetime,
        states: Collection[OpState] | None = None,
        require_owner: str | None = None,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None:
        """Set ``op_fields`` without changing the state; None if the op is gone or a condition failed."""
        values = {**_values(op_fields), "updated_at": now}

        def set_them(conn: Connection) -> Row[Any] | None:
            row = conn.execute(*_update_operation(op_id, values, states, require_owner)).first()
            if row is not None:
                insert_effects(conn, op_id=op_id, effects=effects, now=now)
            return row

        row = await self._run(set_them)
        return _row_to_op(row) if row else None

    # --- approvals under a quorum rule (VPNBOT_APPROVAL_RULES) ----------------------------------

    def _locked_operation(self, conn: Connection, op_id: str) -> Operation | None:
        """``op_id`` read with its row locked to the end of the transaction (SQLite: the write lock)."""
        stmt = select(operations).where(operations.c.id == op_id)
        if self._postgres:
            # Two replicas counting approvals at once under READ COMMITTED would each miss the other's.
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        return _row_to_op(row) if row is not None else None

    def _locked_awaiting(
        self, conn: Connection, moves: Sequence[BatchMove]
    ) -> list[tuple[BatchMove, Operation]]:
        """The members of ``moves`` awaiting approval, each with its row locked (in the order given)."""
        open_ones = []
        for m in moves:
            op = self._locked_operation(conn, m.op_id)
            if op is not None and op.state is OpState.AWAITING_APPROVAL:
                open_ones.append((m, op))
        return open_ones

    @shielded
    async def record_approval(
        self,
        op_id: str,
        *,
        user_id: str,
        groups: Sequence[str] | None,
        needed: int,
        now: datetime,
        claim: tuple[str, datetime],
        audit_entry: AuditEntry,
        progress_effects: Sequence[Effect],
        lease: tuple[str, datetime] | None = None,
        effects: Sequence[Effect] = (),
        to: OpState = OpState.APPROVED,
        **op_fields: Unpack[OpFields],
    ) -> ApprovalResult:
        """Record ``user_id``'s approval of ``op_id``; the one that meets the rule also approves it.

        One transaction with the operation's row locked, so each approval is counted once whatever the
        clicks and replicas: a person approves once (the ``approvals`` key); with ``groups`` (a group
        rule: the rule's groups this person is in, in the rule's order) the approval counts when the
        approvers so far and this one can each be given a different group of theirs (a matching,
        :mod:`bot.group_matching`; an earlier approver may move to another group, recorded here),
        COVERED otherwise. When this makes ``needed`` approvals (a group rule: every group has its
        own approver, as ``needed`` is the number of groups), the operation moves
        AWAITING_APPROVAL -> ``to`` (APPROVED; SCHEDULED for a later run) as :meth:`transition_and_claim`
        would (``lease``, ``effects`` and ``op_fields``); otherwise ``progress_effects`` (the card's update) are written. The audit entry
        is written either way, its detail ``k of n`` (and the group). The outbox's delivery claim is
        taken in the same transaction.
        """
        owner, until = claim

        def record(conn: Connection) -> ApprovalResult:
            op = self._locked_operation(conn, op_id)
            if op is None or op.state is not OpState.AWAITING_APPROVAL:
                return ApprovalResult(ApprovalOutcome.CLOSED, op)
            existing = _approvals_of(conn, op_id)
            if any(a.user_id == user_id for a in existing):
                return ApprovalResult(ApprovalOutcome.REPEATED, op)
            group: str | None = None
            mine = tuple(groups) if groups is not None else ()
            if groups is not None:
                # Matched again with this one: an earlier approver may move to another group of theirs.
                matched = _rematched(conn, op_id, (*existing, Approval(user_id=user_id, at=now, groups=mine)))
                if matched is None:
                    return ApprovalResult(ApprovalOutcome.COVERED, op)
                *existing_list, last = matched
                existing, group = tuple(existing_list), last.group
            conn.execute(
                insert(approvals).values(
                    op_id=op_id, user_id=user_id, user_group=group, at=now, user_groups=list(mine) or None
                )
            )
            now_approved = (*existing, Approval(user_id=user_id, at=now, group=group, groups=mine))
            detail = f"{len(now_approved)} of {needed}" + (f" ({group})" if group else "")
            entry = replace(audit_entry, detail=_joined(detail, audit_entry.detail))
            if len(now_approved) >= needed:
                moved = _move(
                    conn,
                    op_id,
                    from_states=(OpState.AWAITING_APPROVAL,),
                    to=to,
                    now=now,
                    require_owner=None,
                    lease=lease,
                    audit_entry=entry,
                    effects=effects,
                    op_fields={**op_fields, "approvals": now_approved},
                )
                outcome = ApprovalOutcome.COMPLETE
            else:
                # A click can come before the card's ts is recorded: keep it, or the card's update has no target.
                ts = op_fields.get("message_ts") if op.message_ts is None else None
                moved = _set_approvals(
                    conn, op_id, now_approved, now=now, entry=entry, effects=progress_effects, message_ts=ts
                )
                outcome = ApprovalOutcome.COUNTED
            if moved is None:  # pragma: no cover - the row is locked and was awaiting approval
                raise RuntimeError(f"operation {op_id} changed under its row lock")
            taken = self._take(conn, op_id=op_id, owner=owner, until=until, now=now)
            return ApprovalResult(outcome, moved, taken)

        result = await self._run(record)
        if result.op is not None and result.outcome in (ApprovalOutcome.COUNTED, ApprovalOutcome.COMPLETE):
            _log_audit(replace(audit_entry, detail=""), result.op.state)
        return result

    @shielded
    async def withdraw_approval(
        self,
        op_id: str,
        *,
        user_id: str,
        needed: int,
        now: datetime,
        claim: tuple[str, datetime],
        audit_entry: AuditEntry,
        effects: Sequence[Effect],
    ) -> ApprovalResult:
        """Remove ``user_id``'s approval of ``op_id`` while it still awaits approval (the rule not met).

        Audited (``k of n`` left) with ``effects`` (the card's update), the delivery claim taken, in one
        transaction. CLOSED once it is approved (or cancelled, expired): a met rule is never undone here.
        """
        owner, until = claim
        remove = (
            delete(approvals)
            .where(approvals.c.op_id == op_id, approvals.c.user_id == user_id)
            .returning(approvals.c.user_id)
        )

        def withdraw(conn: Connection) -> ApprovalResult:
            op = self._locked_operation(conn, op_id)
            if op is None or op.state is not OpState.AWAITING_APPROVAL:
                return ApprovalResult(ApprovalOutcome.CLOSED, op)
            if conn.execute(remove).first() is None:
                return ApprovalResult(ApprovalOutcome.NOT_APPROVED, op)
            left = _approvals_of(conn, op_id)
            if any(a.groups for a in left):
                # Those left may now be matched differently (always possible: a subset of a matching).
                left = _rematched(conn, op_id, left) or left
            entry = replace(audit_entry, detail=_joined(f"{len(left)} of {needed} left", audit_entry.detail))
            moved = _set_approvals(conn, op_id, left, now=now, entry=entry, effects=effects)
            taken = self._take(conn, op_id=op_id, owner=owner, until=until, now=now)
            return ApprovalResult(ApprovalOutcome.WITHDRAWN, moved, taken)

        result = await self._run(withdraw)
        if result.outcome is ApprovalOutcome.WITHDRAWN and result.op is not None:
            _log_audit(audit_entry, result.op.state)
        return result

    @shielded
    async def clear_approvals(self, op_id: str) -> int:
        """Void every approval of ``op_id`` (the table and the row's copy); how many there were.

        Inside another transaction use :func:`clear_approvals` (this module); :meth:`transition` does it
        itself when an operation goes back to awaiting approval from a later state.
        """
        return await self._run(lambda conn: clear_approvals(conn, op_id))

    @shielded
    async def approvals_of(self, *, op_id: str) -> list[Approval]:
        """The approvals recorded for ``op_id``, oldest first (the table, not the row's copy)."""
        return await self._run(lambda conn: list(_approvals_of(conn, op_id)))

    # --- leases ------------------------------------------------------------------------------

    @shielded
    async def claim_lease(
        self, *, op_id: str, owner: str, until: datetime, now: datetime
    ) -> Operation | None:
        """Take the lease on active ``op_id`` if free, expired or already ours; the claimed op or None."""
        stmt = (
            update(operations)
            .where(
                operations.c.id == op_id,
                operations.c.state.in_(_states(ACTIVE_STATES)),
                or_(self._lease_free(now), operations.c.lease_owner == owner),
            )
            .values(lease_owner=owner, lease_expires_at=until)
            .returning(*operations.c)
        )
        row = await self._run(lambda conn: conn.execute(stmt).first())
        return _row_to_op(row) if row is not None else None

    @shielded
    async def renew_leases(self, *, op_ids: Collection[str], owner: str, until: datetime) -> set[str]:
        """Extend every lease in ``op_ids`` this owner still holds, in one transaction; the ids renewed."""
        ids = list(op_ids)

        def renew(conn: Connection) -> set[str]:
            renewed: set[str] = set()
            for start in range(0, len(ids), _RENEW_CHUNK):
                result = conn.execute(
                    update(operations)
                    .where(
                        operations.c.id.in_(ids[start : start + _RENEW_CHUNK]),
                        operations.c.lease_owner == owner,
                    )
                    .values(lease_expires_at=until)
                    .returning(operations.c.id)
                )
                renewed.update(row[0] for row in result)
            return renewed

        return await self._run(renew)

    @shielded
    async def release_lease(self, *, op_id: str, owner: str) -> None:
        """Give a lease back so another worker may resume the operation at once."""
        stmt = (
            update(operations)
            .where(operations.c.id == op_id, operations.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        await self._run(lambda conn: conn.execute(stmt))

    @staticmethod
    def _lease_free(now: datetime) -> Any:
        return or_(operations.c.lease_owner.is_(None), operations.c.lease_expires_at < now)

    async def _operations(self, stmt: Any) -> list[Operation]:
        """The operations ``stmt`` selects, in its order, read in a transaction of their own."""
        return await self._run(lambda conn: [_row_to_op(r) for r in conn.execute(stmt)])

    @shielded
    async def list_resumable(self, *, now: datetime, limit: int | None = None) -> list[Operation]:
        """Active operations nobody holds a live lease on (crashed or stopped workers, or waiting for
        room), the longest untouched first; at most ``limit`` of them."""
        return await self._operations(
            select(operations)
            .where(operations.c.state.in_(_states(ACTIVE_STATES)), self._lease_free(now))
            .order_by(operations.c.updated_at, operations.c.id)
            .limit(limit)
        )

    @shielded
    async def list_expired_confirmations(self, *, now: datetime) -> list[Operation]:
        """Confirmations still awaiting approval whose ``expires_at`` has passed."""
        return await self._operations(
            select(operations).where(
                operations.c.state == OpState.AWAITING_APPROVAL.value, operations.c.expires_at <= now
            )
        )

    @shielded
    async def list_unanswered(
        self,
        *,
        mark: Literal["reminded_at", "escalated_at"],
        now: datetime,
        created_before: datetime | None = None,
        expiring_before: datetime | None = None,
    ) -> list[Operation]:
        """Confirmations awaiting approval, not expired, without ``mark``, requested before
        ``created_before`` or expiring before ``expiring_before`` (the reminder's and escalation's pass)."""
        column = operations.c[mark]
        stmt = select(operations).where(
            operations.c.state == OpState.AWAITING_APPROVAL.value,
            operations.c.expires_at > now,
            column.is_(None),
        )
        if created_before is not None:
            stmt = stmt.where(operations.c.created_at <= created_before)
        if expiring_before is not None:
            stmt = stmt.where(operations.c.expires_at <= expiring_before)
        return await self._operations(stmt.order_by(operations.c.created_at))

    @shielded
    async def mark_once(
        self,
        op_id: str,
        *,
        mark: Literal["reminded_at", "escalated_at"],
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> Operation | None:
        """Set ``mark`` to ``now`` on a confirmation still awaiting approval without it, with ``effects``.

        A compare-and-set (``mark IS NULL``) in the transaction that writes the effects: of any
        number of replicas and restarts, one writes the reminder (or escalation), once. None: lost.
        """
        stmt = (
            update(operations)
            .where(
                operations.c.id == op_id,
                operations.c.state == OpState.AWAITING_APPROVAL.value,
                operations.c.expires_at > now,
                operations.c[mark].is_(None),
            )
            .values({mark: now, "version": operations.c.version + 1})
            .returning(*operations.c)
        )

        def stamp(conn: Connection) -> Row[Any] | None:
            row = conn.execute(stmt).first()
            if row is not None:
                insert_effects(conn, op_id=op_id, effects=effects, now=now)
            return row

        row = await self._run(stamp)
        return _row_to_op(row) if row is not None else None

    async def list_due_scheduled(self, *, now: datetime) -> list[Operation]:
        """Scheduled deletions whose run time has come, the earliest first."""
        return await self._operations(
            select(operations)
            .where(operations.c.state == OpState.SCHEDULED.value, operations.c.run_at <= now)
            .order_by(operations.c.run_at, operations.c.id)
        )

    @shielded
    async def list_undo_closing(self, *, now: datetime) -> list[Operation]:
        """Deleted operations whose card still offers Recreate… though the window has closed."""
        return await self._operations(
            select(operations).where(operations.c.undo_until.is_not(None), operations.c.undo_until <= now)
        )

    @shielded
    async def recreations_of(self, *, parent_op_id: str) -> list[Operation]:
        """The recreations asked for a deleted operation, oldest first."""
        return await self._operations(
            select(operations)
            .where(operations.c.parent_op_id == parent_op_id)
            .order_by(operations.c.created_at)
        )

    @shielded
    async def list_operations(self, *, states: Collection[OpState] | None = None) -> list[Operation]:
        """Operations, oldest first, optionally only in ``states``."""
        stmt = select(operations).order_by(operations.c.created_at)
        if states is not None:
            stmt = stmt.where(operations.c.state.in_(_states(states)))
        return await self._operations(stmt)

    @shielded
    async def recent_operations(self, *, finished: int = 10, open_limit: int = 100) -> list[Operation]:
        """Open operations (newest first, at most ``open_limit``), then the last ``finished`` finished ones."""
        open_ops = (
            select(operations)
            .where(operations.c.state.not_in(_states(TERMINAL_STATES)))
            .order_by(operations.c.created_at.desc())
            .limit(open_limit)
        )
        done = (
            select(operations)
            .where(operations.c.state.in_(_states(TERMINAL_STATES)))
            .order_by(operations.c.updated_at.desc())
            .limit(finished)
        )
        # One transaction, so the Home tab never shows an operation both open and finished.
        rows = await self._run(lambda conn: [*conn.execute(open_ops), *conn.execute(done)])
        return [_row_to_op(r) for r in rows]

    @shielded
    async def recent_durations(self, *, region: str, gateway_id: str, limit: int = 20) -> list[float]:
        """Seconds from start to end of the latest deletions on this gateway, else in the region."""
        done = select(operations.c.started_at, operations.c.finished_at).where(
            operations.c.state == OpState.DELETED.value,
            operations.c.region == region,
            operations.c.started_at.is_not(None),
            operations.c.finished_at.is_not(None),
        )

        def durations(conn: Connection) -> list[float]:
            for scope in (done.where(operations.c.gateway_id == gateway_id), done):
                rows = conn.execute(scope.order_by(operations.c.finished_at.desc()).limit(limit)).all()
                if len(rows) >= 2:
                    return [(end - start).total_seconds() for start, end in rows]
            return []

        return await self._run(durations)

    # --- batches (site decommission) ---------------------------------------------------------

    @shielded
    async def create_batch(
        self,
        *,
        batch_id: str,
        ops: Sequence[Operation],
        lease: tuple[str, datetime],
        audit_entries: Sequence[AuditEntry],
    ) -> None:
        """Insert a batch and its operations (each leased to its creator) with their audit entries, at once."""
        rows = []
        for op in ops:
            values = _row_values(op)
            values["lease_owner"], values["lease_expires_at"] = lease
            rows.append(values)
        batch_row = {
            "id": batch_id,
            "op_ids": [op.id for op in ops],
            "created_at": ops[0].created_at,
            "opened_at": None,
        }

        def create(conn: Connection) -> None:
            conn.execute(insert(batches), batch_row)
            conn.execute(_INSERT_OPERATION, rows)
            if audit_entries:
                conn.execute(_INSERT_AUDIT, [_audit_row(e) for e in audit_entries])

        await self._run(create)
        for entry in audit_entries:
            _log_audit(entry, OpState.LOOKING_UP)

    @shielded
    async def batch_operations(self, *, batch_id: str) -> list[Operation]:
        """The batch's operations in the order they were asked for (empty: no such batch)."""
        order = select(batches.c.op_ids).where(batches.c.id == batch_id)
        members = select(operations).where(operations.c.batch_id == batch_id)

        def read(conn: Connection) -> list[Operation]:
            ids = _loads(conn.execute(order).scalar()) or []
            found = {row._mapping["id"]: _row_to_op(row) for row in conn.execute(members)}
            return [found[op_id] for op_id in ids if op_id in found]

        return await self._run(read)

    @shielded
    async def open_batch(self, *, batch_id: str, now: datetime) -> str | None:
        """Once no member is still looking up, write the card's post (on the first member), once.

        Returns the member whose outbox carries the post when this call wrote it; None when a
        lookup is still going on, or the post was written before (by this or another replica).
        """
        looking = select(operations.c.id).where(
            operations.c.batch_id == batch_id, operations.c.state == OpState.LOOKING_UP.value
        )
        mark = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.opened_at.is_(None), ~looking.exists())
            .values(opened_at=now)
            .returning(batches.c.op_ids)
        )

        def open_it(conn: Connection) -> str | None:
            row = conn.execute(mark).first()
            if row is None:
                return None
            lead = str((_loads(row[0]) or [""])[0])
            insert_effects(conn, op_id=lead, effects=[Effect(EffectKind.POST_CONFIRMATION)], now=now)
            return lead

        return await self._run(open_it)

    @shielded
    async def transition_batch(
        self,
        moves: Sequence[BatchMove],
        *,
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        unfrozen: bool = False,
    ) -> list[Operation]:
        """Move each of ``moves``' operations as :meth:`transition` would, all in one transaction.

        A member that is no longer in ``from_states`` is left as it is; the moved ones are returned.
        ``unfrozen``: none moves while a freeze covers its account (as :meth:`transition_and_claim`).
        """

        def move_all(conn: Connection) -> list[tuple[BatchMove, Operation]]:
            moved = []
            for m in moves:
                done = _move(
                    conn,
                    m.op_id,
                    from_states=from_states,
                    to=to,
                    now=now,
                    require_owner=None,
                    lease=m.lease,
                    audit_entry=m.audit_entry,
                    effects=m.effects,
                    op_fields=m.fields,
                    unfrozen=unfrozen,
                )
                if done is not None:
                    moved.append((m, done))
            return moved

        result = await self._run(move_all)
        for m, op in result:
            if m.audit_entry is not None:
                _log_audit(m.audit_entry, op.state)
        return [op for _, op in result]

    @shielded
    async def record_batch_approval(
        self,
        moves: Sequence[BatchMove],
        *,
        user_id: str,
        groups: Sequence[str] | None,
        needed: int,
        now: datetime,
        progress_effects: Sequence[Effect],
        to: OpState,
        unfrozen: bool = False,
    ) -> tuple[ApprovalOutcome, list[Operation]]:
        """Record ``user_id``'s approval on every member of ``moves`` awaiting approval, in one transaction.

        A batch's approval is one person's, counted once for all of it: as :meth:`record_approval` on
        each member (the rows locked, in the order given, so replicas count each approval once), the
        members' approvals kept alike. REPEATED or COVERED as the first member still awaiting approval
        says, and then nothing is written; CLOSED when none awaits approval. When this one makes
        ``needed``, every member still awaiting approval moves to ``to`` with its move's fields, lease,
        audit entry and effects (COMPLETE; ``unfrozen`` as for :meth:`transition_batch`: a freeze
        leaves every member as it was, and the approval unrecorded); otherwise each member records
        it with its move's audit entry, and ``progress_effects`` go on the first (COUNTED).
        Returns the outcome and the members as they are after it (those still awaiting approval).
        """

        def record(conn: Connection) -> tuple[ApprovalOutcome, list[Operation]]:
            open_ones = self._locked_awaiting(conn, moves)
            if not open_ones:
                return ApprovalOutcome.CLOSED, []
            mine = tuple(groups) if groups is not None else ()
            counted: list[tuple[BatchMove, tuple[Approval, ...]]] = []
            for m, op in open_ones:
                existing = _approvals_of(conn, m.op_id)
                if any(a.user_id == user_id for a in existing):
                    return ApprovalOutcome.REPEATED, [op for _, op in open_ones]
                if groups is not None:
                    # Matched again with this one: an earlier approver may move to another group of theirs.
                    matched = _rematched(
                        conn, m.op_id, (*existing, Approval(user_id=user_id, at=now, groups=mine))
                    )
                    if matched is None:
                        return ApprovalOutcome.COVERED, [op for _, op in open_ones]
                    counted.append((m, matched))
                else:
                    counted.append((m, (*existing, Approval(user_id=user_id, at=now))))
            met = False
            for index, (m, now_approved) in enumerate(counted):
                group = now_approved[-1].group
                conn.execute(
                    insert(approvals).values(
                        op_id=m.op_id,
                        user_id=user_id,
                        user_group=group,
                        at=now,
                        user_groups=list(mine) or None,
                    )
                )
                met = len(now_approved) >= needed
                detail = f"{len(now_approved)} of {needed}" + (f" ({group})" if group else "")
                assert m.audit_entry is not None  # noqa: S101 - every approval is audited
                entry = replace(m.audit_entry, detail=_joined(detail, m.audit_entry.detail))
                if met:
                    moved = _move(
                        conn,
                        m.op_id,
                        from_states=(OpState.AWAITING_APPROVAL,),
                        to=to,
                        now=now,
                        require_owner=None,
                        lease=m.lease,
                        audit_entry=entry,
                        effects=m.effects,
                        op_fields={**m.fields, "approvals": now_approved},
                        unfrozen=unfrozen,
                    )
                    if moved is None:
                        raise _FrozenBatch  # rolls all of it back: the caller says why
                else:
                    ts = m.fields.get("message_ts")
                    moved = _set_approvals(
                        conn,
                        m.op_id,
                        now_approved,
                        now=now,
                        entry=entry,
                        effects=progress_effects if index == 0 else (),
                        message_ts=ts if isinstance(ts, str) else None,
                    )
                if moved is None:  # pragma: no cover - the rows are locked and were awaiting approval
                    raise RuntimeError(f"operation {m.op_id} changed under its row lock")
            outcome = ApprovalOutcome.COMPLETE if met else ApprovalOutcome.COUNTED
            return outcome, [self._locked_operation(conn, m.op_id) or op for m, op in open_ones]

        try:
            outcome, ops = await self._run(record)
        except _FrozenBatch:
            return ApprovalOutcome.CLOSED, []
        if outcome in (ApprovalOutcome.COUNTED, ApprovalOutcome.COMPLETE):
            entries = {m.op_id: m.audit_entry for m in moves}
            for op in ops:
                if (logged := entries.get(op.id)) is not None:
                    _log_audit(logged, op.state)
        return outcome, ops

    @shielded
    async def withdraw_batch_approval(
        self,
        moves: Sequence[BatchMove],
        *,
        user_id: str,
        needed: int,
        now: datetime,
    ) -> tuple[ApprovalOutcome, list[Operation]]:
        """Remove ``user_id``'s approval from every member of ``moves`` still awaiting approval, at once.

        As :meth:`withdraw_approval` on each (the rows locked in the order given), each with its
        move's audit entry (``k of n left``) and effects: WITHDRAWN; NOT_APPROVED (nothing written)
        when the first member awaiting approval has no approval of this person's; CLOSED when none
        awaits approval (the rule was met, or the batch closed).
        """

        def withdraw(conn: Connection) -> tuple[ApprovalOutcome, list[Operation]]:
            open_ones = self._locked_awaiting(conn, moves)
            if not open_ones:
                return ApprovalOutcome.CLOSED, []
            if not any(a.user_id == user_id for a in _approvals_of(conn, open_ones[0][0].op_id)):
                return ApprovalOutcome.NOT_APPROVED, [op for _, op in open_ones]
            done = []
            for m, op in open_ones:
                conn.execute(
                    delete(approvals).where(approvals.c.op_id == m.op_id, approvals.c.user_id == user_id)
                )
                left = _approvals_of(conn, m.op_id)
                if any(a.groups for a in left):
                    left = _rematched(conn, m.op_id, left) or left
                assert m.audit_entry is not None  # noqa: S101 - every withdrawal is audited
                entry = replace(
                    m.audit_entry, detail=_joined(f"{len(left)} of {needed} left", m.audit_entry.detail)
                )
                moved = _set_approvals(conn, m.op_id, left, now=now, entry=entry, effects=m.effects)
                done.append(moved or op)
            return ApprovalOutcome.WITHDRAWN, done

        outcome, ops = await self._run(withdraw)
        if outcome is ApprovalOutcome.WITHDRAWN:
            entries = {m.op_id: m.audit_entry for m in moves}
            for op in ops:
                if (logged := entries.get(op.id)) is not None:
                    _log_audit(logged, op.state)
        return outcome, ops

    @shielded
    async def deleting_elsewhere(self, *, op: Operation) -> Operation | None:
        """An approved, unfinished deletion of ``op``'s connection by another request, if there is one."""
        busy = (OpState.APPROVED, OpState.DELETING, OpState.WAITING_GATEWAY, OpState.VERIFYING)
        stmt = (
            select(operations)
            .where(
                operations.c.vco_id == op.vco_id,
                operations.c.region == op.region,
                operations.c.account == op.account,
                operations.c.kind == op.kind,
                operations.c.id != op.id,
                operations.c.state.in_(_states(busy)),
            )
            .limit(1)
        )
        row = await self._run(lambda conn: conn.execute(stmt).first())
        return _row_to_op(row) if row is not None else None

    # --- per-gateway serialisation -----------------------------------------------------------

    @shielded
    async def acquire_gateway(self, *, region: str, gateway_id: str, op_id: str, now: datetime) -> str:
        """Take the gateway for ``op_id`` if free or held by a finished operation; return the holder.

        The result equals ``op_id`` when this operation holds the gateway (re-acquiring is a no-op).
        Safe under READ COMMITTED: the takeover UPDATE re-checks its WHERE on the row a racing
        writer left behind, so only one of several racing operations can see it free.
        """
        key = (gateway_locks.c.region == region, gateway_locks.c.gateway_id == gateway_id)
        finished = select(operations.c.id).where(operations.c.state.in_(_states(TERMINAL_STATES)))
        existing = select(operations.c.id)
        ins = self._insert(gateway_locks).values(
            region=region, gateway_id=gateway_id, op_id=op_id, acquired_at=now
        )
        ins = ins.on_conflict_do_nothing(index_elements=["region", "gateway_id"]).returning(
            gateway_locks.c.op_id
        )
        takeover = (
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

        def acquire(conn: Connection) -> str | None:
            if conn.execute(ins).first() is not None:
                return op_id
            if conn.execute(takeover).first() is not None:
                return op_id
            holder = conn.execute(select(gateway_locks.c.op_id).where(*key)).scalar()
            return None if holder is None else str(holder)

        for _ in range(5):
            holder = await self._run(acquire)
            if holder is not None:
                return holder
            # The holder released between our statements; try again.
        raise RuntimeError(f"could not settle the lock on gateway {gateway_id}")  # pragma: no cover

    # --- audit -------------------------------------------------------------------------------

    @shielded
    async def add_audit(self, entry: AuditEntry, *, effects: Sequence[Effect] = ()) -> AuditEntry:
        """Append one audit record that goes with no state change (e.g. a refusal).

        An entry with ``times`` set (a refused click) is counted instead: if that person already has a
        counted row of the same action on the same operation, that row's ``times`` goes up by one and
        it takes this entry's time and detail, in one statement; so repeated clicks cannot push real
        actions out of ``/vpn history``.

        ``effects`` (the audit channel's line, :meth:`bot.workflow.steps.StepBase.announce`) are written
        in the same transaction, under the entry's operation, or for an entry of no operation (a
        freeze, say) under ``audit:<row id>``, which the outbox delivers with no operation.
        """
        values = _audit_row(entry)
        if effects and entry.times is not None:
            raise ValueError("a counted (refused) entry carries no effects")
        if effects:
            insert_one = insert(audit).values(values).returning(audit.c.id)

            def append(conn: Connection) -> None:
                row_id = conn.execute(insert_one).scalar_one()
                insert_effects(
                    conn, op_id=entry.op_id or f"{AUDIT_KEY_PREFIX}{row_id}", effects=effects, now=entry.at
                )

            await self._run(append)
        elif entry.times is None:
            await self._run(lambda conn: conn.execute(_INSERT_AUDIT, values))
        else:
            insert_one = self._insert(audit).values(values)
            upsert = insert_one.on_conflict_do_update(
                index_elements=[audit.c.op_id, audit.c.actor_id, audit.c.action],
                index_where=audit.c.times.isnot(None),
                set_={
                    "times": audit.c.times + 1,
                    "at": insert_one.excluded.at,
                    "detail": insert_one.excluded.detail,
                },
            )
            await self._run(lambda conn: conn.execute(upsert))
        _log_audit(entry, None)
        return entry

    @shielded
    async def recent_audit(
        self,
        *,
        limit: int = 10,
        op_id: str | None = None,
        channel_id: str | None = None,
        accounts: Collection[str] | None = None,
        unbound: Collection[str] = (),
    ) -> list[AuditEntry]:
        """The newest audit records first, optionally for one operation.

        ``channel_id`` keeps the records of operations requested in that channel (records of no
        operation, such as refused requests, are left out, except those whose action is in
        ``unbound``, such as freezes), ``accounts`` those run in one of them (or in none).
        """
        stmt = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        if op_id is not None:
            stmt = stmt.where(audit.c.op_id == op_id)
        if channel_id is not None or accounts is not None:
            ours = select(operations.c.id)
            if channel_id is not None:
                ours = ours.where(operations.c.channel_id == channel_id)
            if accounts is not None:
                ours = ours.where(operations.c.account.in_(list(accounts)))
            kept: Any = audit.c.op_id.in_(ours)
            if unbound:
                shared: list[Any] = [audit.c.op_id.is_(None), audit.c.action.in_(list(unbound))]
                if accounts is not None:
                    shared.append(or_(audit.c.account.is_(None), audit.c.account.in_(list(accounts))))
                kept = or_(kept, and_(*shared))
            stmt = stmt.where(kept)
        return await self._run(lambda conn: [_row_to_audit(r) for r in conn.execute(stmt)])

    @shielded
    async def audit_page(
        self, *, after_id: int = 0, since: datetime | None = None, limit: int = 1000
    ) -> list[tuple[int, AuditEntry]]:
        """Audit records in the order they were written, after row ``after_id``, at or after
        ``since``: at most ``limit``, each with its row id (the next page starts after the last)."""
        stmt = select(audit).where(audit.c.id > after_id).order_by(audit.c.id).limit(limit)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        return await self._run(lambda conn: [(int(r.id), _row_to_audit(r)) for r in conn.execute(stmt)])

    # --- freezes ------------------------------------------------------------------------------

    @shielded
    async def add_freeze(
        self, freeze: Freeze, *, audit_entry: AuditEntry, effects: Sequence[Effect] = ()
    ) -> list[Freeze]:
        """Record ``freeze`` and its audit entry; the active freezes of the same scope end (lifted by
        its author, at its start): it replaces them. Return those it replaced. ``effects`` (the audit
        channel's line) go with the entry, as :meth:`add_audit` writes them."""
        scope = freezes.c.account.is_(None) if freeze.account is None else freezes.c.account == freeze.account
        replace = (
            update(freezes)
            .where(scope, freezes.c.lifted_at.is_(None), freezes.c.until > freeze.starts_at)
            .values(lifted_by=freeze.created_by, lifted_at=freeze.starts_at)
            .returning(*freezes.c)
        )
        row = {name: getattr(freeze, name) for name in _FREEZE_FIELDS}

        def add(conn: Connection) -> list[Freeze]:
            replaced = [_row_to_freeze(r) for r in conn.execute(replace)]
            conn.execute(insert(freezes), row)
            _insert_audit_with(conn, audit_entry, effects)
            return replaced

        replaced = await self._run(add)
        _log_audit(audit_entry, None)
        return replaced

    @shielded
    async def lift_freezes(
        self,
        *,
        account: str | None,
        everything: bool,
        by: str,
        now: datetime,
        audit_entry: Callable[[Freeze], AuditEntry],
        effects: Callable[[AuditEntry], Sequence[Effect]] = lambda entry: (),
    ) -> list[Freeze]:
        """Lift the freezes in force at ``now``: every one (``everything``) or those of ``account``
        (None: the every-account ones), each with its audit entry (and its ``effects``), in one
        transaction; return them lifted."""
        stmt = update(freezes).where(
            freezes.c.lifted_at.is_(None), freezes.c.starts_at <= now, freezes.c.until > now
        )
        if not everything:
            stmt = stmt.where(
                freezes.c.account.is_(None) if account is None else freezes.c.account == account
            )
        stmt = stmt.values(lifted_by=by, lifted_at=now).returning(*freezes.c)

        def lift(conn: Connection) -> tuple[list[Freeze], list[AuditEntry]]:
            lifted = sorted((_row_to_freeze(r) for r in conn.execute(stmt)), key=lambda f: f.until)
            entries = [audit_entry(f) for f in lifted]
            for entry in entries:
                _insert_audit_with(conn, entry, effects(entry))
            return lifted, entries

        lifted, entries = await self._run(lift)
        for entry in entries:
            _log_audit(entry, None)
        return lifted

    @shielded
    async def active_freezes(self, *, now: datetime) -> list[Freeze]:
        """The freezes in force at ``now``, the one ending last first."""
        stmt = (
            select(freezes)
            .where(freezes.c.lifted_at.is_(None), freezes.c.starts_at <= now, freezes.c.until > now)
            .order_by(freezes.c.until.desc(), freezes.c.id)
        )
        return await self._run(lambda conn: [_row_to_freeze(r) for r in conn.execute(stmt)])

    # --- metrics (read when /metrics is scraped) ---------------------------------------------

    @shielded
    async def count_by_state(self) -> dict[str, int]:
        """How many operations are in each state that is not final (states with none are absent)."""
        stmt = (
            select(operations.c.state, func.count())
            .where(operations.c.state.not_in(_states(TERMINAL_STATES)))
            .group_by(operations.c.state)
        )
        return await self._run(lambda conn: {str(state): int(n) for state, n in conn.execute(stmt)})

    @shielded
    async def phase_started_by_state(self) -> dict[str, datetime]:
        """For each unfinished state, when the oldest operation in it entered its phase.

        The phase starts at the request (``created_at``), the approval (``approved_at``) or the
        delete sent (``started_at``), whichever is latest: ``vpnbot_operation_oldest_age_seconds``
        is measured from it, so one stuck operation shows however many finish around it.
        """
        started = func.coalesce(operations.c.started_at, operations.c.approved_at, operations.c.created_at)
        stmt = (
            select(operations.c.state, func.min(started))
            .where(operations.c.state.not_in(_states(TERMINAL_STATES)))
            .group_by(operations.c.state)
        )

        def read(conn: Connection) -> dict[str, datetime]:
            # coalesce() and min() keep UtcDateTime, so the values come back aware in UTC.
            return {str(state): at for state, at in conn.execute(stmt) if at is not None}

        return await self._run(read)

    @shielded
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
                holder.c.state.not_in(_states(TERMINAL_STATES)),
            )
        )
        return await self._run(lambda conn: int(conn.execute(stmt).scalar() or 0))


class _FrozenBatch(Exception):
    """Raised inside a batch approval's transaction to roll it back: a freeze covers its account."""


def _joined(count: str, detail: str) -> str:
    """``1 of 2`` before what the entry said already (the operation's reason)."""
    return f"{count}; {detail}" if detail else count


def _approvals_of(conn: Connection, op_id: str) -> tuple[Approval, ...]:
    rows = conn.execute(
        select(approvals.c.user_id, approvals.c.user_group, approvals.c.at, approvals.c.user_groups)
        .where(approvals.c.op_id == op_id)
        .order_by(approvals.c.at, approvals.c.user_id)
    )
    # A row from before migration 15 knows only the group it was given: that is its one group.
    return tuple(
        Approval(user_id=u, at=at, group=g, groups=tuple(gs) if gs else ((g,) if g else ()))
        for u, g, at, gs in rows
    )


def _rematched(conn: Connection, op_id: str, given: tuple[Approval, ...]) -> tuple[Approval, ...] | None:
    """``given`` with each approver's group from a matching (None: there is none); moves recorded.

    Rows of ``given`` already in the table whose group changes are updated; a new approval (not yet
    inserted) is returned with its group for the caller to insert.
    """
    groups = group_matching.assign([a.groups for a in given])
    if groups is None:
        return None
    for a, group in zip(given, groups, strict=True):
        if a.group is not None and a.group != group:
            conn.execute(
                update(approvals)
                .where(approvals.c.op_id == op_id, approvals.c.user_id == a.user_id)
                .values(user_group=group)
            )
    return tuple(replace(a, group=g) for a, g in zip(given, groups, strict=True))


def _set_approvals(
    conn: Connection,
    op_id: str,
    now_approved: tuple[Approval, ...],
    *,
    now: datetime,
    entry: AuditEntry,
    effects: Sequence[Effect],
    message_ts: str | None = None,
) -> Operation | None:
    """Copy ``now_approved`` onto the awaiting operation's row, with its audit entry and effects."""
    values: dict[str, Any] = {**_values({"approvals": now_approved}), "updated_at": now}
    if message_ts is not None:
        values["message_ts"] = message_ts
    row = conn.execute(*_update_operation(op_id, values, (OpState.AWAITING_APPROVAL,), None)).first()
    if row is None:
        return None
    conn.execute(_INSERT_AUDIT, _audit_row(entry))
    insert_effects(conn, op_id=op_id, effects=effects, now=now)
    return _row_to_op(row)


def clear_approvals(conn: Connection, op_id: str) -> int:
    """Void every approval of ``op_id`` inside the caller's transaction; how many there were.

    For an approval that no longer holds (what was approved changed): the table's rows go, and the
    row's copy with them, so the card counts from zero again.
    """
    removed = conn.execute(delete(approvals).where(approvals.c.op_id == op_id)).rowcount
    conn.execute(update(operations).where(operations.c.id == op_id).values(approvals=None))
    return int(removed or 0)


def _move(
    conn: Connection,
    op_id: str,
    *,
    from_states: Collection[OpState],
    to: OpState,
    now: datetime,
    require_owner: str | None,
    lease: tuple[str, datetime] | None,
    audit_entry: AuditEntry | None,
    effects: Sequence[Effect],
    op_fields: OpFields,
    unfrozen: bool = False,
) -> Operation | None:
    """The compare-and-set of :meth:`Store.transition` inside the caller's transaction."""
    values: dict[str, Any] = {
        **_values(op_fields),
        "state": OpState(to).value,
        "updated_at": now,
    }
    if lease is not None:
        values["lease_owner"], values["lease_expires_at"] = lease
    if to in TERMINAL_STATES:
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    # Back to awaiting approval from a later state (an approval that no longer holds): void them all.
    reopened = to is OpState.AWAITING_APPROVAL and any(
        OpState(s) is not OpState.LOOKING_UP for s in from_states
    )
    if reopened:
        values["approvals"] = None
    unfrozen_at = now if unfrozen else None
    row = conn.execute(*_update_operation(op_id, values, from_states, require_owner, unfrozen_at)).first()
    if row is None:
        return None
    if reopened:
        conn.execute(delete(approvals).where(approvals.c.op_id == op_id))
    moved = _row_to_op(row)
    if to in TERMINAL_STATES:
        _release_gateway(conn, moved)
    if audit_entry is not None:
        conn.execute(_INSERT_AUDIT, _audit_row(audit_entry))
    insert_effects(conn, op_id=op_id, effects=effects, now=now)
    return moved


def _release_gateway(conn: Connection, op: Operation) -> None:
    """Give ``op``'s gateway back if ``op`` holds it, inside the caller's transaction."""
    conn.execute(
        delete(gateway_locks).where(
            gateway_locks.c.region == op.region,
            gateway_locks.c.gateway_id == op.gateway_id,
            gateway_locks.c.op_id == op.id,
        )
    )


def _void_approvals(conn: Connection, op: Operation) -> Operation:
    """Every approval given to ``op`` so far counts no more; ``op`` as it is then.

    The one place approvals are made void (inside the caller's transaction): the one on the row
    (``approver_id``, ``approved_at``, the deadline it started) and a quorum's recorded approvals
    (the ``approvals`` table and the row's copy), so the card counts from zero again.
    """
    clear_approvals(conn, op.id)
    row = conn.execute(
        *_update_operation(op.id, {"approver_id": None, "approved_at": None, "deadline_at": None}, None, None)
    ).first()
    return _row_to_op(row) if row is not None else op
