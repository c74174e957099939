"""The impact preview in the workflow and the store: looked up with the gateway, never in the way, kept."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from fakes import FakeVpc, api_error, make_connection
from test_store import execute_sql
from workflow_harness import Harness

from bot.domain import (
    PART_ROUTES,
    Impact,
    ImpactBgp,
    ImpactRoute,
    ImpactTunnel,
    Operation,
    OpState,
    Unread,
    VpnConnection,
    VpnGateway,
)
from bot.errors import CloudApiError
from bot.store import SCHEMA_VERSION, Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
IMPACT = Impact(
    status="ipsec_sa_established",
    tunnels=(ImpactTunnel(index=1, role="master", state="active", status="ipsec_sa_established"),),
    bgp=ImpactBgp(enabled=True, local_asn=45104, peer_asn=65010, peer_ip="169.254.1.2", status="success"),
    health_check=True,
    health_check_ip="10.0.0.9",
    attach_type="CEN",
    attach_instance_id="cen-1",
    routes=(ImpactRoute(kind="policy", destination="192.168.1.0/24", source="10.0.1.0/24"),),
    route_count=1,
    unread=(Unread(part=PART_ROUTES, reason="not allowed", code="Forbidden"),),
)


class _HangingPreview(FakeVpc):
    """Its preview never answers; records whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.preview_cancelled = asyncio.Event()

    async def describe_impact(self, *, region: str, connection: VpnConnection, deadline_s: float) -> Impact:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.preview_cancelled.set()
            raise
        raise AssertionError("unreachable")


class _BrokenPreview(FakeVpc):
    async def describe_impact(self, *, region: str, connection: VpnConnection, deadline_s: float) -> Impact:
        raise RuntimeError("a bug in the adapter")


class _GatewayForbidden(_HangingPreview):
    async def describe_vpn_gateway(self, *, region: str, gateway_id: str, shared: bool = False) -> VpnGateway:
        await asyncio.sleep(0)
        raise api_error("Forbidden.RAM", http_status=403)


async def test_the_preview_is_stored_and_posted_with_the_confirmation(h: Harness) -> None:
    op = await h.request(h.workflow())
    assert op.state is OpState.AWAITING_APPROVAL
    assert op.impact == Impact(
        status="ike_sa_established",
        routes=(ImpactRoute(kind="custom", destination="192.168.0.0/24"),),
        route_count=1,
    )
    assert (await h.op(op.id)).impact == op.impact
    assert h.notifier.posted[-1].impact == op.impact


async def test_a_preview_that_never_answers_does_not_hold_the_confirmation(h: Harness) -> None:
    h.vpc = vpc = _HangingPreview()
    vpc.add_connection("vco-1", "vpn-gw1")
    op = await h.request(h.workflow(impact_deadline_s=0.05))

    assert op.state is OpState.AWAITING_APPROVAL
    assert op.impact == Impact.unavailable("no answer within 0.05 s")
    assert vpc.preview_cancelled.is_set()
    assert h.notifier.posted[-1].id == op.id


async def test_a_broken_preview_is_shown_as_unread(h: Harness) -> None:
    h.vpc = _BrokenPreview()
    h.vpc.add_connection("vco-1", "vpn-gw1")
    op = await h.request(h.workflow())
    assert op.state is OpState.AWAITING_APPROVAL
    assert op.impact is not None
    assert {u.reason for u in op.impact.unread} == {"an unexpected error (see the bot's log)"}


async def test_a_failed_gateway_lookup_cancels_the_preview(h: Harness) -> None:
    h.vpc = vpc = _GatewayForbidden()
    vpc.add_connection("vco-1", "vpn-gw1")
    with pytest.raises(CloudApiError):
        await h.request(h.workflow())
    await asyncio.wait_for(vpc.preview_cancelled.wait(), timeout=5)
    ops = await h.store.list_operations()
    assert [o.state for o in ops] == [OpState.FAILED]


# --- the store ---------------------------------------------------------------------------------------


def _op(**fields: object) -> Operation:
    conn = make_connection("vco-1", "vpn-gw1")
    op = Operation(
        id="op-1",
        state=OpState.LOOKING_UP,
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


async def test_the_store_keeps_the_preview_as_json(store: Store) -> None:
    created = await store.create_operation(op=_op())
    assert created.impact is None
    moved = await store.transition(
        "op-1", from_states={OpState.LOOKING_UP}, to=OpState.AWAITING_APPROVAL, now=T0, impact=IMPACT
    )
    assert moved is not None
    assert moved.impact == IMPACT
    again = await store.get_operation(op_id="op-1")
    assert again is not None
    assert again.impact == IMPACT
    await store.create_operation(op=_op(id="op-2", client_token="vpnbot-op-2", impact=IMPACT))
    assert (await store.get_operation(op_id="op-2")).impact == IMPACT  # type: ignore[union-attr]


async def test_a_version_2_database_gains_the_impact_column(empty_db_url: str) -> None:
    store = await Store.open(empty_db_url)
    await store.create_operation(op=_op())
    await execute_sql(
        store, "ALTER TABLE operations DROP COLUMN impact", "DELETE FROM schema_version WHERE version > 2"
    )
    await store.close()

    upgraded = await Store.open(empty_db_url)
    try:
        assert await upgraded.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        old = await upgraded.get_operation(op_id="op-1")
        assert old is not None
        assert old.impact is None
        await upgraded.set_fields("op-1", now=T0, impact=IMPACT)
        assert (await upgraded.get_operation(op_id="op-1")).impact == IMPACT  # type: ignore[union-attr]
    finally:
        await upgraded.close()
