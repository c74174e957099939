"""The store's tables and migrations (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Tables::

    schema_version  applied migrations (taken under an advisory lock on PostgreSQL)
    operations      one row per deletion request, with its lease (lease_owner, lease_expires_at)
    gateway_locks   (region, gateway_id) -> op_id: one DeleteVpnConnection per gateway at a time
    audit           who did what, when, with Alibaba's RequestId
    outbox          Slack effects of state changes, written in the same transaction, delivered after
    outbox_claims   op_id -> the replica delivering that operation's effects, until when
    heartbeats      instance -> last write (``/readyz`` proves the database takes writes)
    freezes         change freezes set by admins (``/vpn freeze``): scope, reason, from, until, lifted
    batches         one row per site decommission: its operations in order, when its card was written
    slack_requests  (timestamp, signature) of each signed Slack request seen in the last minutes:
                    a replayed request is refused by every replica
    approvals       (op_id, user_id) -> the group it satisfied, when: one row per person who approved an
                    operation under VPNBOT_APPROVAL_RULES (copied onto operations.approvals for the card)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

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
    inspect,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "approvals",
    "audit",
    "audit_repeats",
    "batches",
    "freezes",
    "gateway_locks",
    "heartbeats",
    "metadata",
    "operations",
    "outbox",
    "outbox_claims",
    "schema_version",
    "slack_requests",
]


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
    # Added by migration 2.
    Column("token_seq", Integer, nullable=False, default=0, server_default="0"),
    Column("crashes", Integer, nullable=False, default=0, server_default="0"),
    # Added by migration 3: the impact preview shown on the card (bot.domain.Impact, secret-free).
    Column("impact", JSON, nullable=True),
    # Added by migration 4: the configuration taken before the deletion (bot.domain.Snapshot, no keys).
    Column("snapshot", JSON, nullable=True),
    # Added by migration 5 (Recreate): see bot.domain.Operation. No key is ever stored: key_holder
    # names the instance whose memory holds it.
    Column("kind", String(16), nullable=False, default="delete", server_default="delete"),
    Column("parent_op_id", String(64)),
    Column("thread_ts", String(64)),
    Column("key_holder", String(128)),
    Column("new_vco_id", String(128)),
    Column("route_results", JSON, nullable=True),
    Column("undo_until", UtcDateTime),
    # Added by migration 6: the account (VPNBOT_ACCOUNTS name) the operation runs in; "" for one account.
    Column("account", String(64), nullable=False, default="", server_default=""),
    # Why it was requested, the change ticket found in that reason, and why it was denied (person-typed).
    Column("reason", Text),
    Column("ticket", String(128)),
    Column("cancel_reason", Text),
    # Added by migration 10: when the approvers were reminded, and the request escalated (once each).
    Column("reminded_at", UtcDateTime),
    Column("escalated_at", UtcDateTime),
    # Added by migration 11 (scheduled deletions): when it runs, and why then (requested, change window).
    Column("run_at", UtcDateTime),
    Column("schedule_kind", String(16)),
    # Added by migration 12: the approvals table's rows of this operation (bot.domain.Approval), kept
    # in step with it in the same transaction, so a card rendered from the row shows the progress.
    Column("approvals", JSON, nullable=True),
    # Added by migration 13: when a freeze began to hold this approved operation (None: not held).
    Column("held_at", UtcDateTime),
    # Added by migration 14: the fingerprint of the preview the approval is bound to, and what changed
    # since the last approval when it was asked again (bot.workflow.binding).
    Column("preview_fingerprint", String(64)),
    Column("preview_changes", JSON, nullable=True),
    # Added by migration 15: the batch (site decommission) the deletion belongs to; NULL alone.
    Column("batch_id", String(64)),
    Index("ix_operations_state", "state"),
    Index("ix_operations_batch", "batch_id"),
)

# Site decommission: several deletions asked in one request, shown on one card, approved once.
# ``op_ids`` keeps the members in the order asked (the first carries the card's post); ``opened_at``
# is set once every member's lookup is done and the card's post is written (exactly once).
batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("op_ids", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("opened_at", UtcDateTime),
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
    # Added by migration 5.
    Column("account", String(64)),
    # Added by migration 7: set on a refused click's row, which counts that person's refused clicks on
    # that card (one row each, updated) instead of a row per click; NULL on every other row.
    Column("times", Integer),
    Index("ix_audit_at", "at"),
)
# At most one counted row per card, person and action: the refused click's upsert lands on it.
audit_repeats = Index(
    "ux_audit_repeats",
    audit.c.op_id,
    audit.c.actor_id,
    audit.c.action,
    unique=True,
    sqlite_where=audit.c.times.isnot(None),
    postgresql_where=audit.c.times.isnot(None),
)

# One row per person who approved an operation under a quorum rule: the unique key makes a second
# approval by the same person impossible whatever the replicas, and the quorum is counted from here.
approvals = Table(
    "approvals",
    metadata,
    Column("op_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    # The user group this approval counts for (a group rule: the matching's), NULL for a count rule.
    Column("user_group", String(64)),
    Column("at", UtcDateTime, nullable=False),
    # Added by migration 15: the rule's groups the person is in (a JSON list; NULL for a count rule),
    # so that who counts for which group is matched again with each approval (bot.group_matching).
    Column("user_groups", JSON, nullable=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("op_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("event", JSON),
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("done_at", UtcDateTime),
    Column("last_error", String(128)),
    Index("ix_outbox_pending", "done_at", "next_at"),
    Index("ix_outbox_op", "op_id", "id"),
)

outbox_claims = Table(
    "outbox_claims",
    metadata,
    Column("op_id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("until", UtcDateTime, nullable=False),
)

# Added by migration 13. ``account`` NULL freezes every account; a row is never deleted (it is the
# record of who froze what, and who lifted it).
freezes = Table(
    "freezes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account", String(64)),
    Column("reason", Text, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("until", UtcDateTime, nullable=False),
    Column("lifted_by", String(64)),
    Column("lifted_at", UtcDateTime),
    Index("ix_freezes_until", "until"),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("instance", String(128), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
)

# A signed Slack request is accepted once: its (timestamp, signature) is kept while the timestamp is
# inside Slack's 5-minute window (and a little longer), so a captured request cannot be replayed.
slack_requests = Table(
    "slack_requests",
    metadata,
    Column("timestamp", Integer, primary_key=True),
    Column("signature", String(80), primary_key=True),
)


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[operations, gateway_locks, audit], checkfirst=True)


def _migration_2(conn: Connection) -> None:
    # Per-operation ClientToken sequence and crash budget; the Slack outbox; health heartbeats.
    # A database created by migration 1 of this code already has the columns; an older one lacks them.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    for column in ("token_seq", "crashes"):
        if column not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"))
    metadata.create_all(conn, tables=[outbox, outbox_claims, heartbeats], checkfirst=True)


def _migration_3(conn: Connection) -> None:
    # The impact preview stored with the operation, so the outbox can re-render the card any time.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    if "impact" not in present:
        kind = conn.dialect.type_compiler_instance.process(JSON())
        conn.execute(text(f"ALTER TABLE operations ADD COLUMN impact {kind}"))


def _migration_4(conn: Connection) -> None:
    # The configuration snapshot, taken before the first delete and posted in the thread after it.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    if "snapshot" not in present:
        kind = conn.dialect.type_compiler_instance.process(JSON())
        conn.execute(text(f"ALTER TABLE operations ADD COLUMN snapshot {kind}"))


def _migration_5(conn: Connection) -> None:
    # Recreate: the operation's kind, its parent deletion, the instance holding the key in memory,
    # the new connection, the routes put back, and how long a deleted card offers Recreate….
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    json_type = conn.dialect.type_compiler_instance.process(JSON())
    time_type = conn.dialect.type_compiler_instance.process(DateTime(timezone=True))
    columns = {
        "kind": "VARCHAR(16) NOT NULL DEFAULT 'delete'",
        "parent_op_id": "VARCHAR(64)",
        "thread_ts": "VARCHAR(64)",
        "key_holder": "VARCHAR(128)",
        "new_vco_id": "VARCHAR(128)",
        "route_results": json_type,
        "undo_until": time_type,
    }
    for name, kind in columns.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {name} {kind}"))


def _migration_6(conn: Connection) -> None:
    # Several accounts: each operation (and its audit entries) names the account it runs in.
    for table, ddl in (
        ("operations", "account VARCHAR(64) NOT NULL DEFAULT ''"),
        ("audit", "account VARCHAR(64)"),
    ):
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        if "account" not in present:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))


def _migration_7(conn: Connection) -> None:
    # The replay cache of signed Slack requests (see slack_requests).
    metadata.create_all(conn, tables=[slack_requests], checkfirst=True)


def _migration_8(conn: Connection) -> None:
    # Refused clicks are counted on one row per card and person (see audit.times).
    present = {c["name"] for c in inspect(conn).get_columns("audit")}
    if "times" not in present:
        conn.execute(text("ALTER TABLE audit ADD COLUMN times INTEGER"))
    audit_repeats.create(conn, checkfirst=True)


def _migration_9(conn: Connection) -> None:
    # Reasons: why a deletion was requested (and its change ticket), and why it was denied.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    for name, kind in (("reason", "TEXT"), ("ticket", "VARCHAR(128)"), ("cancel_reason", "TEXT")):
        if name not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {name} {kind}"))


def _migration_10(conn: Connection) -> None:
    # Reminders and escalations of unanswered confirmations: each sent once, stamped when written.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    time_type = conn.dialect.type_compiler_instance.process(DateTime(timezone=True))
    for name in ("reminded_at", "escalated_at"):
        if name not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {name} {time_type}"))


def _migration_11(conn: Connection) -> None:
    # Scheduled deletions: the run time (requested, then scheduled) and what set it.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    time_type = conn.dialect.type_compiler_instance.process(DateTime(timezone=True))
    for name, kind in (("run_at", time_type), ("schedule_kind", "VARCHAR(16)")):
        if name not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {name} {kind}"))


def _migration_12(conn: Connection) -> None:
    # Quorums (VPNBOT_APPROVAL_RULES): each approval, and their copy on the operation for its card.
    metadata.create_all(conn, tables=[approvals], checkfirst=True)
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    if "approvals" not in present:
        kind = conn.dialect.type_compiler_instance.process(JSON())
        conn.execute(text(f"ALTER TABLE operations ADD COLUMN approvals {kind}"))


def _migration_13(conn: Connection) -> None:
    # Freezes: the table, and when a freeze began to hold an approved operation.
    metadata.create_all(conn, tables=[freezes], checkfirst=True)
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    if "held_at" not in present:
        kind = conn.dialect.type_compiler_instance.process(DateTime(timezone=True))
        conn.execute(text(f"ALTER TABLE operations ADD COLUMN held_at {kind}"))


def _migration_14(conn: Connection) -> None:
    # Approvals bound to the preview: its fingerprint, and what changed when it was asked again.
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    json_type = conn.dialect.type_compiler_instance.process(JSON())
    for name, kind in (("preview_fingerprint", "VARCHAR(64)"), ("preview_changes", json_type)):
        if name not in present:
            conn.execute(text(f"ALTER TABLE operations ADD COLUMN {name} {kind}"))


def _migration_15(conn: Connection) -> None:
    # Site decommission: each deletion may belong to a batch (one card, one approval).
    present = {c["name"] for c in inspect(conn).get_columns("operations")}
    if "batch_id" not in present:
        conn.execute(text("ALTER TABLE operations ADD COLUMN batch_id VARCHAR(64)"))
    batch_index = next(i for i in operations.indexes if i.name == "ix_operations_batch")
    batch_index.create(conn, checkfirst=True)
    metadata.create_all(conn, tables=[batches], checkfirst=True)


def _migration_16(conn: Connection) -> None:
    # Group quorums matched, not first-come: each approver's groups within the rule.
    present = {c["name"] for c in inspect(conn).get_columns("approvals")}
    if "user_groups" not in present:
        kind = conn.dialect.type_compiler_instance.process(JSON())
        conn.execute(text(f"ALTER TABLE approvals ADD COLUMN user_groups {kind}"))


# Append only: each step runs once, in order, under the migration lock.
MIGRATIONS: Sequence[Callable[[Connection], None]] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
    _migration_10,
    _migration_11,
    _migration_12,
    _migration_13,
    _migration_14,
    _migration_15,
    _migration_16,
)
SCHEMA_VERSION = len(MIGRATIONS)
