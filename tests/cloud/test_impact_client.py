"""VpcAdapter.describe_impact against the local sandbox: real signing, real paging, real faults."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

from bot.cloud.adapter import VpcAdapter
from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.domain import PART_CONNECTION, PART_POLICY_ROUTES, PART_ROUTES, Impact, ImpactRoute, VpnConnection
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VPN_HANGZHOU,
    Route,
)


def _client(sandbox: RunningSandbox) -> VpcAdapter:
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
    return VpcAdapter(
        VpcClient(creds, endpoint=sandbox.url, wait_initial=0.01, wait_max=0.05, api_deadline_seconds=5)
    )


async def _impact(sandbox: RunningSandbox, vco_id: str, *, deadline_s: float = 3.0) -> Impact:
    async with _client(sandbox) as client:
        connection: VpnConnection = await client.describe_vpn_connection(region=SEED_REGION, vco_id=vco_id)
        return await client.describe_impact(region=SEED_REGION, connection=connection, deadline_s=deadline_s)


async def test_lists_only_the_routes_through_this_connection(sandbox: RunningSandbox) -> None:
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU)

    assert impact.unread == ()
    assert impact.is_up
    assert set(impact.routes) == {
        ImpactRoute(kind="custom", destination="192.168.10.0/24"),
        ImpactRoute(kind="custom", destination="192.168.11.0/24"),
        ImpactRoute(kind="policy", destination="192.168.10.128/25", source="10.10.1.0/24"),
    }
    assert impact.route_count == 3
    # The gateway's other connections have routes too (172.16.0.0/16, 10.200.0.0/16, ...): not listed.
    assert {r.destination for r in impact.routes}.isdisjoint(
        {"172.16.0.0/16", "10.200.0.0/16", "10.200.8.0/24"}
    )


async def test_bgp_health_check_and_learned_routes(sandbox: RunningSandbox) -> None:
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU_BGP)

    assert impact.bgp is not None
    assert (impact.bgp.enabled, impact.bgp.local_asn, impact.bgp.peer_asn) == (True, 45104, 65001)
    assert impact.bgp.peer_ip == "169.254.11.2"
    assert (impact.health_check, impact.health_check_ip) == (True, "10.200.0.1")
    assert {(r.kind, r.destination) for r in impact.routes} == {
        ("bgp", "10.200.0.0/16"),
        ("bgp", "10.201.0.0/16"),
        ("policy", "10.200.8.0/24"),
    }
    assert impact.attach_type == "VPNGW"
    assert not impact.wider_attachment
    # The record is plain JSON and holds no secret of the connection.
    dumped = json.dumps(asdict(impact))
    for secret in sandbox.state.connections[SEED_VCO_HANGZHOU_BGP].secrets:
        assert secret not in dumped


async def test_dual_tunnels_each_with_role_state_and_status(sandbox: RunningSandbox) -> None:
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU_TUNNELS)

    assert [(t.index, t.role, t.state, t.status) for t in impact.tunnels] == [
        (1, "master", "active", "ipsec_sa_established"),
        (2, "slave", "active", "ipsec_sa_not_established"),
    ]
    # The connection says not established, but the master tunnel is up: traffic may flow.
    assert impact.status == "ipsec_sa_not_established"
    assert impact.is_up
    master_bgp = impact.tunnels[0].bgp
    assert master_bgp is not None
    assert master_bgp.peer_asn == 65020
    dumped = json.dumps(asdict(impact))
    for secret in sandbox.state.connections[SEED_VCO_HANGZHOU_TUNNELS].secrets:
        assert secret not in dumped


async def test_every_page_of_routes_is_read(sandbox: RunningSandbox) -> None:
    sandbox.state.routes += [
        Route(SEED_VPN_HANGZHOU, f"10.{100 + n // 250}.{n % 250}.0/24", SEED_VCO_HANGZHOU) for n in range(120)
    ]
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU)

    assert impact.route_count == 123  # 120 + the 3 seeded; the client asked for 3 pages of 50
    assert len(impact.routes) == 100  # the record keeps the first 100
    # Custom routes, 3 pages; no BGP list: BGP is off on this connection, so no BGP route goes through it.
    route_lists = [r.params.get("RouteEntryType") for r in sandbox.state.calls("DescribeVpnRouteEntries")]
    assert route_lists == ["custom"] * 3


async def test_a_forbidden_part_is_unread_and_the_rest_is_there(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnRouteEntries", code="Forbidden")
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU)

    unread = impact.unread_part(PART_ROUTES)
    assert unread is not None
    assert unread.code == "Forbidden"
    assert impact.unread_part(PART_CONNECTION) is None
    assert impact.unread_part(PART_POLICY_ROUTES) is None
    assert impact.is_up
    assert impact.routes == (
        ImpactRoute(kind="policy", destination="192.168.10.128/25", source="10.10.1.0/24"),
    )


async def test_a_slow_part_is_unread_after_its_deadline(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnPbrRouteEntries", latency=5.0)
    impact = await _impact(sandbox, SEED_VCO_HANGZHOU, deadline_s=0.5)

    unread = impact.unread_part(PART_POLICY_ROUTES)
    assert unread is not None
    assert unread.code is None
    assert "0.5 s" in unread.reason
    assert impact.unread_part(PART_ROUTES) is None
    assert {r.destination for r in impact.routes} == {"192.168.10.0/24", "192.168.11.0/24"}


async def test_the_preview_reuses_a_fresh_read_of_the_connection(sandbox: RunningSandbox) -> None:
    # Lookups of one connection at once (two people asking) each find a read to reuse; a read older
    # than the reuse window is read again.
    now = [1000.0]
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
    async with VpcAdapter(VpcClient(creds, endpoint=sandbox.url), monotonic=lambda: now[0]) as client:
        read = client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        first, second = await asyncio.gather(
            read, client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        )
        for connection in (first, second):
            impact = await client.describe_impact(region=SEED_REGION, connection=connection, deadline_s=3.0)
            assert impact.is_up
            assert impact.unread == ()
        assert len(sandbox.state.calls("DescribeVpnConnection")) == 2

        now[0] += 11.0
        await client.describe_impact(region=SEED_REGION, connection=first, deadline_s=3.0)
        assert len(sandbox.state.calls("DescribeVpnConnection")) == 3


def _route_lists(sandbox: RunningSandbox) -> list[str | None]:
    return [r.params.get("RouteEntryType") for r in sandbox.state.calls("DescribeVpnRouteEntries")]


async def test_the_bgp_route_list_is_read_only_for_a_connection_that_runs_bgp(
    sandbox: RunningSandbox,
) -> None:
    await _impact(sandbox, SEED_VCO_HANGZHOU)
    assert _route_lists(sandbox) == ["custom"]
    await _impact(sandbox, SEED_VCO_HANGZHOU_BGP)
    assert sorted(_route_lists(sandbox), key=str) == ["bgp", "custom", "custom"]


async def test_the_snapshot_reads_bgp_routes_after_its_own_fresh_read_of_the_connection(
    sandbox: RunningSandbox,
) -> None:
    async with _client(sandbox) as client:
        plain = await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        bgp = await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP)
        before = len(sandbox.state.requests)
        without = await client.describe_snapshot(region=SEED_REGION, connection=plain, deadline_s=3.0)
        assert [r.action for r in sandbox.state.requests[before:]].count("DescribeVpnConnection") == 1
        assert _route_lists(sandbox) == ["custom"]
        assert without.unread == ()

        before = len(sandbox.state.requests)
        snapshot = await client.describe_snapshot(region=SEED_REGION, connection=bgp, deadline_s=3.0)
    actions = [(r.action, r.params.get("RouteEntryType")) for r in sandbox.state.requests[before:]]
    # Fresh (never the lookup's read), and the BGP list asked only once the answer said BGP runs.
    assert actions.index(("DescribeVpnConnection", None)) < actions.index(("DescribeVpnRouteEntries", "bgp"))
    assert {r.kind for r in snapshot.routes} >= {"bgp"}


async def test_the_bgp_list_after_a_slow_connection_read_keeps_the_parts_deadline(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.add(action="DescribeVpnConnection", latency=0.3)
    sandbox.state.faults.add(action="DescribeVpnRouteEntries", params={"RouteEntryType": "bgp"}, latency=5.0)
    async with _client(sandbox) as client:
        connection = await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP)
        started = asyncio.get_running_loop().time()
        snapshot = await client.describe_snapshot(region=SEED_REGION, connection=connection, deadline_s=0.6)
        took = asyncio.get_running_loop().time() - started
    # One deadline for every part, the chained one included: not 0.3 s + 0.6 s.
    assert took < 0.6 + 0.25
    unread = next(u for u in snapshot.unread if u.part == PART_ROUTES)
    assert unread.reason == "no answer within 0.6 s"
