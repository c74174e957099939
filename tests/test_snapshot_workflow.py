"""The configuration snapshot in the workflow and the store: taken before the first send, never in the way."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from fakes import FakeVpc, busy_error, make_connection
from test_store import execute_sql
from workflow_harness import Harness

from bot.domain import (
    PART_CONFIGURATION,
    Deleted,
    Operation,
    OpState,
    Snapshot,
    SnapshotRoute,
    SnapshotTaken,
    VpnConnection,
    VpnGateway,
)
from bot.store import SCHEMA_VERSION, Store
from bot.workflow import Workflow

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class _HangingSnapshot(FakeVpc):
    """Its snapshot never answers; records whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = asyncio.Event()

    async def describe_snapshot(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Snapshot:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


class _BrokenSnapshot(FakeVpc):
    async def describe_snapshot(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Snapshot:
        raise RuntimeError("a bug in the adapter")


async def _delete(h: Harness, wf: Workflow | None = None) -> Operation:
    wf = wf or h.workflow()
    op = await h.request(wf)
    assert op.snapshot is None  # not at request time
    approved = await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert approved.snapshot is None  # nor in the approval path, which never waits on the cloud
    return await h.wait_state(op.id, OpState.DELETED, OpState.FAILED, OpState.TIMED_OUT)


async def test_the_snapshot_is_stored_before_the_first_send_and_posted_last(h: Harness) -> None:
    done = await _delete(h)
    assert done.state is OpState.DELETED
    assert h.vpc.snapshot_reads == [0]  # read once, before any DeleteVpnConnection
    assert done.snapshot is not None
    assert done.snapshot.taken
    assert done.snapshot.routes == (SnapshotRoute(kind="custom", destination="192.168.0.0/24"),)
    assert h.notifier.event_types(done.id)[-2:] == ["Deleted", "SnapshotTaken"]
    assert h.notifier.events_for(done.id)[-1] == SnapshotTaken(snapshot=done.snapshot)


async def test_a_busy_resend_does_not_take_the_snapshot_again(h: Harness) -> None:
    h.vpc.delete_script = [busy_error()]
    done = await _delete(h)
    assert done.state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 2
    assert h.vpc.snapshot_reads == [0]


async def test_a_failing_snapshot_read_does_not_block_the_deletion(h: Harness) -> None:
    h.vpc = _BrokenSnapshot()
    h.vpc.add_connection("vco-1", "vpn-gw1")
    done = await _delete(h)
    assert done.state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 1
    assert done.snapshot is not None
    assert not done.snapshot.taken
    missing = done.snapshot.unread_part(PART_CONFIGURATION)
    assert missing is not None
    assert missing.reason == "an unexpected error (see the bot's log)"
    last = h.notifier.events_for(done.id)[-1]
    assert last == SnapshotTaken(snapshot=done.snapshot)  # the thread says it could not be taken


async def test_a_snapshot_that_never_answers_is_given_up_after_its_deadline(h: Harness) -> None:
    h.vpc = vpc = _HangingSnapshot()
    vpc.add_connection("vco-1", "vpn-gw1")
    # Virtual time races ahead while the read hangs in real time: keep the overall deadline far away.
    done = await _delete(h, h.workflow(snapshot_deadline_s=0.05, delete_timeout_s=10**7))
    assert done.state is OpState.DELETED
    assert vpc.cancelled.is_set()
    assert done.snapshot is not None
    missing = done.snapshot.unread_part(PART_CONFIGURATION)
    assert missing is not None
    assert missing.reason == "no answer within 0.05 s"
    assert done.snapshot.gateway_id == "vpn-gw1"  # what the operation knew is still kept


async def test_a_failed_deletion_posts_no_snapshot(h: Harness) -> None:
    h.vpc.delete_script = [busy_error()] * 10
    done = await _delete(h, h.workflow(busy_retry_attempts=1))
    assert done.state is OpState.FAILED
    assert done.snapshot is not None  # taken, kept with the operation
    assert "SnapshotTaken" not in h.notifier.event_types(done.id)


async def test_a_resumed_send_never_reads_a_possibly_deleted_connection(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED)
    assert isinstance(h.notifier.events_for(done.id)[-2], Deleted)
    # An operation from before the snapshot, a send already recorded: the driver must not read it now.
    h.vpc.add_connection("vco-2", "vpn-gw1")
    other = await h.request(wf, vco_id="vco-2")
    await h.store.set_fields(other.id, now=h.clock.now(), attempts=1)
    await wf.approve(op_id=other.id, user_id="U0BOSS")
    finished = await h.wait_state(other.id, OpState.DELETED)
    assert finished.snapshot is None
    assert h.vpc.snapshot_reads == [0]
    assert "SnapshotTaken" not in h.notifier.event_types(other.id)


# --- the store ---------------------------------------------------------------------------------------

SNAPSHOT = Snapshot(
    vco_id="vco-1",
    region="cn-hangzhou",
    name="office",
    gateway_id="vpn-gw1",
    config={"vpn_gateway_id": "vpn-gw1", "ike_config": {"ike_version": "ikev2"}, "tags": {"a": "b"}},
    routes=(SnapshotRoute(kind="policy", destination="192.168.1.0/24", source="10.0.0.0/24", priority=5),),
)


def _op(**fields: object) -> Operation:
    conn = make_connection("vco-1", "vpn-gw1")
    op = Operation(
        id="op-1",
        state=OpState.DELETING,
        region=conn.region,
        connection=conn,
        gateway=VpnGateway(id="vpn-gw1", region=conn.region, name="gw", status="active"),
        requester_id="U0REQ",
        channel_id="C0OPS",
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        client_token="vpnbot-op-1",
    )
    return dataclasses.replace(op, **fields)  # type: ignore[arg-type]


async def test_the_store_keeps_the_snapshot_as_json(store: Store) -> None:
    created = await store.create_operation(op=_op())
    assert created.snapshot is None
    moved = await store.set_fields("op-1", now=T0, snapshot=SNAPSHOT)
    assert moved is not None
    assert moved.snapshot == SNAPSHOT
    assert (await store.get_operation(op_id="op-1")).snapshot == SNAPSHOT  # type: ignore[union-attr]
    await store.create_operation(op=_op(id="op-2", client_token="vpnbot-op-2", snapshot=SNAPSHOT))
    assert (await store.get_operation(op_id="op-2")).snapshot == SNAPSHOT  # type: ignore[union-attr]


async def test_a_version_3_database_gains_the_snapshot_column(empty_db_url: str) -> None:
    store = await Store.open(empty_db_url)
    await store.create_operation(op=_op())
    await execute_sql(
        store, "ALTER TABLE operations DROP COLUMN snapshot", "DELETE FROM schema_version WHERE version > 3"
    )
    await store.close()

    upgraded = await Store.open(empty_db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        old = await upgraded.get_operation(op_id="op-1")
        assert old is not None
        assert old.snapshot is None
        await upgraded.set_fields("op-1", now=T0, snapshot=SNAPSHOT)
        assert (await upgraded.get_operation(op_id="op-1")).snapshot == SNAPSHOT  # type: ignore[union-attr]
    finally:
        await upgraded.close()
