"""The store's half of reminders, escalations and audit lines, on SQLite and PostgreSQL.

``mark_once`` is the compare-and-set that makes a reminder (or an escalation) exactly-once:
however many callers race, one writes its thread reply. An audit entry of no operation (a freeze,
say) takes its audit line with it, and the outbox delivers that line with no operation.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fakes import FakeClock, FakeNotifier
from storetools import pending_effects
from test_outbox import Posted, dispatcher
from test_store import T0, execute_sql, make_op

from bot.domain import Announced, AuditEntry, Effect, EffectKind, Escalated, OpState, Reminded
from bot.store import SCHEMA_VERSION, Store
from bot.workflow.steps import thread


async def test_one_of_many_racing_reminders_wins(store: Store) -> None:
    op = await store.create_operation(op=make_op(message_ts="1700000000.000001"))
    now = T0 + timedelta(minutes=5)
    due = await store.list_unanswered(mark="reminded_at", now=now, created_before=now - timedelta(minutes=2))
    assert [o.id for o in due] == [op.id]
    effect = thread(Reminded(waited_s=300, approvers=("U0BOB", "S0NETADM")))
    won = await asyncio.gather(
        *(store.mark_once(op.id, mark="reminded_at", now=now, effects=[effect]) for _ in range(8))
    )
    winners = [w for w in won if w is not None]
    assert len(winners) == 1
    assert winners[0].reminded_at == now
    assert [e.event for e in await pending_effects(store, op_id=op.id)] == [effect.event]
    assert await store.list_unanswered(mark="reminded_at", now=now, created_before=now) == []
    # The escalation is a stamp of its own.
    soon = now + timedelta(minutes=11)
    [escalating] = await store.list_unanswered(mark="escalated_at", now=now, expiring_before=soon)
    assert escalating.reminded_at == now
    call = thread(Escalated(group="S0ONCALL", left_s=600))
    assert await store.mark_once(op.id, mark="escalated_at", now=now, effects=[call]) is not None
    assert await store.mark_once(op.id, mark="escalated_at", now=now, effects=[call]) is None
    assert len(await pending_effects(store, op_id=op.id)) == 2


async def test_answered_expired_and_early_requests_are_left_alone(store: Store) -> None:
    now = T0 + timedelta(minutes=10)
    await store.create_operation(op=make_op("approved", state=OpState.APPROVED))
    await store.create_operation(op=make_op("expired", expires_at=now - timedelta(seconds=1)))
    await store.create_operation(op=make_op("early", created_at=now))
    assert (
        await store.list_unanswered(mark="reminded_at", now=now, created_before=now - timedelta(minutes=1))
        == []
    )
    for op_id in ("approved", "expired"):
        assert await store.mark_once(op_id, mark="reminded_at", now=now) is None


async def test_an_audit_entry_of_no_operation_takes_its_line_along(store: Store, clock: FakeClock) -> None:
    """What a freeze would do: its entry and its audit line in one transaction, delivered with no card."""
    entry = AuditEntry(at=clock.now(), action="freeze", actor_id="U0ADMIN", detail="until Monday")

    line = Effect(
        EffectKind.AUDIT_LINE, Announced(action="freeze", actor_id="U0ADMIN", at=entry.at, note="x")
    )
    await store.add_audit(entry, effects=[line])
    [row] = await store.recent_audit(limit=5)
    assert row == entry
    [key] = await store.ops_with_due_effects(now=clock.now())
    assert key.startswith("audit:")

    notifier = FakeNotifier()
    outbox = dispatcher(store, clock, notifier, Posted())
    await outbox.pass_once()
    await outbox.wait_idle()
    assert notifier.audit_lines == [(None, line.event)]
    delivered = notifier.deliveries[-1]
    assert delivered is not None
    assert delivered.key.startswith(f"{key}/")
    assert await pending_effects(store, op_id=key) == []


async def test_a_version_9_database_gains_the_reminder_stamps(db_url: str) -> None:
    """Migration 10 adds reminded_at and escalated_at (None for older rows)."""
    store = await Store.open(db_url)
    await store.create_operation(op=make_op())
    await execute_sql(
        store,
        *(f"ALTER TABLE operations DROP COLUMN {name}" for name in ("reminded_at", "escalated_at")),
        "DELETE FROM schema_version WHERE version > 9",
    )
    await store.close()

    upgraded = await Store.open(db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        old = await upgraded.get_operation(op_id="op-1")
        assert old is not None
        assert (old.reminded_at, old.escalated_at) == (None, None)
        stamped = await upgraded.mark_once("op-1", mark="escalated_at", now=T0 + timedelta(minutes=1))
        assert stamped is not None
        assert stamped.escalated_at == T0 + timedelta(minutes=1)
    finally:
        await upgraded.close()
