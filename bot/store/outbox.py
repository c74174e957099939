"""The Slack outbox: effects written with the state change that causes them, delivered after.

A replica delivers one operation's effects at a time, in order, under a claim (a small lease in
``outbox_claims``), so two replicas never post the same reply twice in a race. An effect is done
once delivered, superseded (a newer card update) or given up; until then it is retried.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from bot.domain import Effect, EffectKind, Operation, PendingEffect, event_from_json, event_to_json
from bot.store.shield import shielded
from bot.store.tables import operations, outbox, outbox_claims

__all__ = ["AUDIT_KEY_PREFIX", "OutboxMixin", "insert_effects"]

T = TypeVar("T")

# The outbox key of effects that belong to an audit entry of no operation (``audit:<row id>``).
AUDIT_KEY_PREFIX = "audit:"

# The statements of the request path, built once: their values come as execute() parameters, so
# SQLAlchemy neither rebuilds nor re-keys them on every call.
_INSERT_EFFECTS = insert(outbox)
_PENDING = (
    select(outbox)
    .where(outbox.c.op_id == bindparam("b_op"), outbox.c.done_at.is_(None))
    .order_by(outbox.c.id)
)
_COMPLETE = update(outbox).where(outbox.c.id == bindparam("b_id"))
_RECORD_TS = (
    update(operations).where(operations.c.id == bindparam("b_op")).values(version=operations.c.version + 1)
)
_BATCH_OF = select(operations.c.batch_id).where(operations.c.id == bindparam("b_op")).scalar_subquery()
_RECORD_BATCH_TS = (
    update(operations)
    .where(
        operations.c.batch_id.is_not(None),
        operations.c.batch_id == _BATCH_OF,
        operations.c.message_ts.is_(None),
    )
    .values(message_ts=bindparam("b_ts"), version=operations.c.version + 1)
)

# The claimant gives its delivery claim back.
_RELEASE = delete(outbox_claims).where(
    outbox_claims.c.op_id == bindparam("b_op"), outbox_claims.c.owner == bindparam("b_owner")
)
# ... only when nothing of the operation is left to deliver: one statement that checks and deletes
# (and says whether it did), not a read and then a delete.
_RELEASE_IF_DONE = _RELEASE.where(
    ~exists().where(outbox.c.op_id == bindparam("b_op"), outbox.c.done_at.is_(None))
).returning(outbox_claims.c.op_id)


def insert_effects(conn: Connection, *, op_id: str, effects: Sequence[Effect], now: datetime) -> None:
    """Add ``effects`` for ``op_id`` inside the caller's transaction."""
    if not effects:
        return
    conn.execute(
        _INSERT_EFFECTS,
        [
            {
                "op_id": op_id,
                "kind": e.kind.value,
                "event": event_to_json(e.event) if e.event is not None else None,
                "created_at": now,
                "next_at": now,
                "attempts": 0,
            }
            for e in effects
        ],
    )


def _row_to_effect(row: Any) -> PendingEffect:
    m = row._mapping
    raw = m["event"]
    return PendingEffect(
        id=m["id"],
        op_id=m["op_id"],
        kind=EffectKind(m["kind"]),
        event=event_from_json(raw) if raw else None,
        attempts=m["attempts"],
        created_at=m["created_at"],
        next_at=m["next_at"],
        last_error=m["last_error"],
    )


def _release_if_done(conn: Connection, release: tuple[str, str] | None) -> bool:
    """Give the claim back if nothing is left to deliver; False if it went back (True: maybe more)."""
    if release is None:
        return True
    op_id, owner = release
    released = conn.execute(_RELEASE_IF_DONE, {"b_op": op_id, "b_owner": owner})
    # Not released: something is left, or the claim is no longer ours (the next read says which).
    return released.first() is None


class OutboxMixin:
    """The outbox half of :class:`bot.store.Store` (shares its engine and transactions)."""

    async def _run(self, body: Callable[[Connection], T]) -> T:
        raise NotImplementedError  # pragma: no cover - provided by Store

    def _insert(self, table: Any) -> Any:
        raise NotImplementedError  # pragma: no cover - provided by Store

    @staticmethod
    def _op_from_row(row: Any) -> Operation:
        raise NotImplementedError  # pragma: no cover - provided by Store

    @shielded
    async def take_next(
        self, *, op_id: str, owner: str, until: datetime, now: datetime
    ) -> tuple[list[PendingEffect], Operation | None] | None:
        """Claim (or renew the claim on) ``op_id``'s delivery and read its pending effects, in one go.

        None: another replica holds the claim. With nothing pending the claim is given back in the
        same transaction and ``([], None)`` returned.
        """

        def take(conn: Connection) -> tuple[list[PendingEffect], Operation | None] | None:
            effects = self._take(conn, op_id=op_id, owner=owner, until=until, now=now)
            if not effects:
                return None if effects is None else ([], None)
            row = conn.execute(select(operations).where(operations.c.id == op_id)).first()
            return effects, self._op_from_row(row) if row is not None else None

        return await self._run(take)

    def _take(
        self, conn: Connection, *, op_id: str, owner: str, until: datetime, now: datetime
    ) -> list[PendingEffect] | None:
        """Claim ``op_id``'s delivery and read its pending effects in the caller's transaction.

        None: another replica holds the claim. With nothing pending the claim is given back at once.
        """
        if not self._claim(conn, op_id=op_id, owner=owner, until=until, now=now):
            return None
        effects = [_row_to_effect(r) for r in conn.execute(_PENDING, {"b_op": op_id})]
        if not effects:
            conn.execute(_RELEASE, {"b_op": op_id, "b_owner": owner})
        return effects

    def _claim(self, conn: Connection, *, op_id: str, owner: str, until: datetime, now: datetime) -> bool:
        params = {"op_id": op_id, "owner": owner, "until": until, "b_now": now}
        return conn.execute(self._claim_statement, params).first() is not None

    @functools.cached_property
    def _claim_statement(self) -> Any:
        """Take the claim if there is none, it ran out (before ``b_now``) or it is the claimant's own."""
        ins = self._insert(outbox_claims)
        return ins.on_conflict_do_update(
            index_elements=["op_id"],
            set_={"owner": ins.excluded.owner, "until": ins.excluded.until},
            where=or_(
                outbox_claims.c.until < bindparam("b_now"), outbox_claims.c.owner == ins.excluded.owner
            ),
        ).returning(outbox_claims.c.op_id)

    @shielded
    async def enqueue(self, *, op_id: str, effects: Sequence[Effect], now: datetime) -> None:
        """Add effects that go with no state change (progress notes such as "queued")."""
        await self._run(lambda conn: insert_effects(conn, op_id=op_id, effects=effects, now=now))

    @shielded
    async def release_outbox(self, *, op_id: str, owner: str) -> None:
        """Give the delivery claim back."""
        await self._run(lambda conn: conn.execute(_RELEASE, {"b_op": op_id, "b_owner": owner}))

    @shielded
    async def ops_with_due_effects(self, *, now: datetime, limit: int = 100) -> list[str]:
        """Operations with an effect due now and no live delivery claim (any replica may take them)."""
        claimed = select(outbox_claims.c.op_id).where(outbox_claims.c.until >= now)
        stmt = (
            select(outbox.c.op_id)
            .where(outbox.c.done_at.is_(None), outbox.c.next_at <= now, outbox.c.op_id.not_in(claimed))
            .group_by(outbox.c.op_id)
            .order_by(func.min(outbox.c.id))
            .limit(limit)
        )
        return await self._run(lambda conn: [r[0] for r in conn.execute(stmt)])

    @shielded
    async def complete_effects(
        self,
        *,
        ids: Sequence[int],
        now: datetime,
        error: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool:
        """Mark effects done: delivered, superseded, or (with ``error``) given up.

        With ``release`` (op_id, owner), the delivery claim goes back in the same transaction when
        nothing of the operation is left to deliver. Returns whether something is left (True
        without ``release``), which saves the deliverer a transaction to find out.
        """
        stmt = update(outbox).where(outbox.c.id.in_(list(ids))).values(done_at=now, last_error=error)

        def complete(conn: Connection) -> bool:
            conn.execute(stmt)
            return _release_if_done(conn, release)

        return await self._run(complete)

    @shielded
    async def reschedule_effect(self, *, effect_id: int, next_at: datetime, error: str) -> None:
        """Try an effect again at ``next_at`` (a transient Slack failure)."""
        stmt = (
            update(outbox)
            .where(outbox.c.id == effect_id)
            .values(next_at=next_at, attempts=outbox.c.attempts + 1, last_error=error)
        )
        await self._run(lambda conn: conn.execute(stmt))

    @shielded
    async def confirmation_posted(
        self, *, effect_id: int, op_id: str, ts: str, now: datetime, owner: str | None = None
    ) -> bool:
        """Record the posted confirmation's ts and complete its effect, in one transaction.

        With ``owner``, the delivery claim goes back as in :meth:`complete_effects`; returns
        whether something of the operation is left to deliver.
        """

        def record(conn: Connection) -> bool:
            conn.execute(_RECORD_TS, {"b_op": op_id, "message_ts": ts, "updated_at": now})
            # A batch's card is every member's: their thread replies and card updates go to it.
            conn.execute(_RECORD_BATCH_TS, {"b_op": op_id, "b_ts": ts})
            conn.execute(_COMPLETE, {"b_id": effect_id, "done_at": now})
            return _release_if_done(conn, None if owner is None else (op_id, owner))

        return await self._run(record)
