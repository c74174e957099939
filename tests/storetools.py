"""Reads and writes tests make on the store that the bot itself never needs.

The bot's store exposes only what the bot calls; these run their SQL in one of the store's own
transactions, on the same tables, so what they see is what the store sees.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bot.domain import PendingEffect
from bot.store import Store
from bot.store.outbox import _row_to_effect
from bot.store.tables import gateway_locks, operations, outbox

__all__ = ["claim_outbox", "gateway_holder", "lease_of", "pending_effects"]

T = TypeVar("T")


async def _transaction(store: Store, body: Callable[[Connection], T]) -> T:
    # The store's one transaction runner (on SQLite, its own thread): the only way into the
    # store tests take, so a read here waits for writes under way as the bot's own would.
    return await store._run(body)


async def pending_effects(store: Store, *, op_id: str) -> list[PendingEffect]:
    """The operation's undelivered effects, oldest first."""
    stmt = select(outbox).where(outbox.c.op_id == op_id, outbox.c.done_at.is_(None)).order_by(outbox.c.id)
    return await _transaction(store, lambda conn: [_row_to_effect(r) for r in conn.execute(stmt)])


async def claim_outbox(store: Store, *, op_id: str, owner: str, until: datetime, now: datetime) -> bool:
    """Take the delivery claim on ``op_id`` as a replica would, without reading or releasing anything.

    True if it was free, ran out before ``now`` or was ``owner``'s already. The store's own claim
    statement, the one ``take_next`` and ``transition_and_claim`` run first.
    """
    return await _transaction(
        store, lambda conn: store._claim(conn, op_id=op_id, owner=owner, until=until, now=now)
    )


async def lease_of(store: Store, *, op_id: str) -> tuple[str | None, datetime | None]:
    """``(owner, expires_at)`` of the lease on ``op_id``; ``(None, None)`` for none or no such operation."""
    stmt = select(operations.c.lease_owner, operations.c.lease_expires_at).where(operations.c.id == op_id)
    row = await _transaction(store, lambda conn: conn.execute(stmt).first())
    return (row[0], row[1]) if row else (None, None)


async def gateway_holder(store: Store, *, region: str, gateway_id: str) -> str | None:
    """The op id holding the gateway lock, if any."""
    stmt = select(gateway_locks.c.op_id).where(
        gateway_locks.c.region == region, gateway_locks.c.gateway_id == gateway_id
    )
    holder: str | None = await _transaction(store, lambda conn: conn.execute(stmt).scalar())
    return holder
