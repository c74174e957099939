"""The VPC client against the local sandbox over loopback: real signing, real wire format."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from pydantic import SecretStr

from bot.cloud.adapter import VpcAdapter
from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.models import VpnConnectionDetail
from bot.cloud.signer import Credentials
from bot.cloud.specs import BgpSpec, HealthCheckSpec, IkeSpec, VpnConnectionSpec
from bot.errors import CloudApiError, RetryClass
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox
from bot.sandbox.vpc_state import (
    SEED_CGW_HANGZHOU,
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VCO_LOCKED,
    SEED_VPN_HANGZHOU,
    SEED_VPN_HANGZHOU_2,
)


def _client(sandbox: RunningSandbox, *, secret: str = DEMO_ACCESS_KEY_SECRET) -> VpcClient:
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, secret))
    return VpcClient(creds, endpoint=sandbox.url, wait_initial=0.01, wait_max=0.05, api_deadline_seconds=5)


async def test_reads_connection_gateway_and_regions(sandbox: RunningSandbox) -> None:
    async with VpcAdapter(_client(sandbox)) as api:
        connection = await api.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        gateway = await api.describe_vpn_gateway(region=SEED_REGION, gateway_id=connection.gateway_id)
        regions = await api.list_regions()
        pages = await api.wire.describe_vpn_connections(region=SEED_REGION)
    assert connection.gateway_id == SEED_VPN_HANGZHOU
    assert gateway.status == "active"
    assert SEED_REGION in regions
    assert SEED_VCO_HANGZHOU in {c.vpn_connection_id for c in pages}


async def test_delete_then_gateway_updates_and_connection_is_gone(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        request_id = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="vpnbot-test-1"
        )
        gateway = await client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU)
        assert request_id
        assert gateway.status == "updating"
        # A replay of the same token answers like the first call and deletes nothing more.
        again = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="vpnbot-test-1"
        )
        assert again == request_id


async def test_wrong_secret_is_signature_does_not_match(sandbox: RunningSandbox) -> None:
    async with _client(sandbox, secret="not-the-secret") as client:
        with pytest.raises(CloudApiError) as caught:
            await client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.retry is RetryClass.NEVER


async def test_business_errors_are_not_retried(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        with pytest.raises(CloudApiError) as caught:
            await client.delete_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_LOCKED, client_token="t-2")
    assert caught.value.code == "VpnGateway.FinancialLocked"
    assert len(sandbox.state.calls("DeleteVpnConnection")) == 1


async def test_transient_errors_are_retried_with_fresh_signatures(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnGateway", code="ServiceUnavailable", times=2)
    async with _client(sandbox) as client:
        gateway = await client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU)
    assert gateway.status == "active"
    calls = sandbox.state.calls("DescribeVpnGateway")
    assert len(calls) == 3
    assert len({c.nonce for c in calls}) == 3


async def test_reads_a_customer_gateway_and_says_when_it_is_gone(sandbox: RunningSandbox) -> None:
    peer = sandbox.state.customer_gateways[SEED_CGW_HANGZHOU]
    peer.auth_key = "cgw-bgp-secret-1"  # in the answer, never read
    async with VpcAdapter(_client(sandbox)) as api:
        found = await api.describe_customer_gateway(region=SEED_REGION, customer_gateway_id=SEED_CGW_HANGZHOU)
        del sandbox.state.customer_gateways[SEED_CGW_HANGZHOU]
        with pytest.raises(CloudApiError) as gone:
            await api.describe_customer_gateway(region=SEED_REGION, customer_gateway_id=SEED_CGW_HANGZHOU)
    assert (found.id, found.region, found.ip_address) == (SEED_CGW_HANGZHOU, SEED_REGION, peer.ip_address)
    assert found.name == peer.name
    assert "cgw-bgp-secret-1" not in repr(found)
    assert gone.value.code == "InvalidCustomerGatewayInstanceId.NotFound"
    assert gone.value.http_status == 404
    assert gone.value.retry is RetryClass.NEVER
    # Signed and checked like every call: the read, then the refusal.
    calls = sandbox.state.calls("DescribeCustomerGateway")
    assert [c.outcome for c in calls] == ["ok", "error"]
    assert calls[0].params == {"RegionId": SEED_REGION, "CustomerGatewayId": SEED_CGW_HANGZHOU}


# --- the create actions ----------------------------------------------------------------------------


async def _wait_active(client: VpcClient, gateway_id: str, *, within: float = 5.0) -> None:
    """Poll the gateway until it is ``active`` again (creates are asynchronous)."""
    deadline = time.monotonic() + within
    while (
        await client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=gateway_id)
    ).status != "active":
        assert time.monotonic() < deadline, f"{gateway_id} still updating"
        await asyncio.sleep(0.02)


def _single_spec(psk: str) -> VpnConnectionSpec:
    return VpnConnectionSpec(
        vpn_gateway_id=SEED_VPN_HANGZHOU_2,
        customer_gateway_id="cgw-bp1c1ientc1ientc1ienta",
        name="client-created",
        local_subnet="10.30.0.0/16",
        remote_subnet="192.168.32.0/24",
        ike_config=IkeSpec(psk=SecretStr(psk), ike_version="ikev2"),
        health_check_config=HealthCheckSpec(dip="10.30.0.1", sip="169.254.32.1"),
        bgp_config=BgpSpec(local_asn=65100, tunnel_cidr="169.254.32.0/30"),
        # Else Alibaba adds the route to 192.168.32.0/24 itself, and the test's own is refused.
        auto_config_route=False,
        tags={"team": "netops"},
    )


async def test_create_connection_and_routes_through_the_client(
    sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    # The bot's own loggers at DEBUG; httpx stays at WARNING as bot.logs sets it (its INFO line
    # would print the request URL, and CreateVpnConnection's parameters travel in the query).
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.WARNING, logger="httpx")
    psk = "client-psk-VERY-secret"
    async with _client(sandbox) as client:
        created = await client.create_vpn_connection(
            region=SEED_REGION, spec=_single_spec(psk), client_token="vpnbot-create-1"
        )
        with pytest.raises(CloudApiError) as busy:
            await client.create_vpn_route_entry(
                region=SEED_REGION,
                gateway_id=SEED_VPN_HANGZHOU_2,
                route_dest="192.168.32.0/24",
                next_hop=created.vpn_connection_id,
                client_token="vpnbot-route-busy",
            )
        await _wait_active(client, SEED_VPN_HANGZHOU_2)
        detail = await client.describe_vpn_connection_detail(
            region=SEED_REGION, vco_id=created.vpn_connection_id
        )
        route = await client.create_vpn_route_entry(
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU_2,
            route_dest="192.168.32.0/24",
            next_hop=created.vpn_connection_id,
            description="recreated",
            client_token="vpnbot-route-1",
        )
        await _wait_active(client, SEED_VPN_HANGZHOU_2)
        pbr = await client.create_vpn_pbr_route_entry(
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU_2,
            route_source="10.30.1.0/24",
            route_dest="192.168.32.0/25",
            next_hop=created.vpn_connection_id,
            priority=5,
            weight=0,
            publish_vpc=False,
            client_token="vpnbot-route-2",
        )
        await _wait_active(client, SEED_VPN_HANGZHOU_2)
        routes = await client.describe_vpn_route_entries(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU_2)
        pbr_routes = await client.describe_vpn_pbr_route_entries(
            region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU_2
        )

    assert created.vpn_connection_id.startswith("vco-bp1")
    assert detail.name == "client-created"
    assert (busy.value.code, busy.value.retry) == ("VpnGateway.Configuring", RetryClass.BUSY)
    # The key reached Alibaba (the bot's models do not read keys back).
    assert sandbox.state.connections[created.vpn_connection_id].psk == psk
    assert detail.ike_config is not None
    assert detail.vco_health_check is not None
    assert (detail.vco_health_check.enable, detail.vco_health_check.dip) == (True, "10.30.0.1")
    assert detail.vpn_bgp_config is not None
    assert detail.vpn_bgp_config.local_asn == 65100
    assert [(t.key, t.value) for t in detail.tag_list] == [("team", "netops")]
    assert route.request_id
    assert pbr.request_id
    (made,) = [r for r in routes if r.route_dest == "192.168.32.0/24"]
    assert (made.next_hop, made.state) == (created.vpn_connection_id, "published")
    # Describe*RouteEntries do not return a description (nor does the SDK's model); Alibaba keeps it.
    assert [r.description for r in sandbox.state.routes if r.dest == "192.168.32.0/24"] == ["recreated"]
    assert [
        (r.route_source, r.route_dest, r.next_hop, r.priority, r.weight, r.state) for r in pbr_routes
    ] == [("10.30.1.0/24", "192.168.32.0/25", created.vpn_connection_id, 5, 0, "normal")]
    # The keys went out in the parameters but never into a log line.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "vpc call" in logged
    assert psk not in logged


async def test_create_answer_lost_is_retried_with_the_same_token_and_replayed(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.add(action="CreateVpnConnection", drop_after=True, times=1)
    async with _client(sandbox) as client:
        created = await client.create_vpn_connection(
            region=SEED_REGION, spec=_single_spec("lost-answer-psk"), client_token="vpnbot-create-lost"
        )

    lost, replayed = sandbox.state.calls("CreateVpnConnection")
    assert (lost.outcome, lost.status, replayed.outcome) == ("ok", 0, "replayed")
    assert lost.client_token == replayed.client_token == "vpnbot-create-lost"
    assert created.request_id == lost.request_id
    assert created.vpn_connection_id in sandbox.state.connections
    assert len([c for c in sandbox.state.connections.values() if c.name == "client-created"]) == 1


async def test_busy_answer_is_replayed_to_the_same_token_and_a_new_token_succeeds(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.add(action="CreateVpnRouteEntry", code="VpnGateway.Configuring", times=1)
    async with _client(sandbox) as client:

        async def create(token: str) -> str:
            route = await client.create_vpn_route_entry(
                region=SEED_REGION,
                gateway_id=SEED_VPN_HANGZHOU,
                route_dest="192.168.77.0/24",
                next_hop=SEED_VCO_HANGZHOU,
                client_token=token,
            )
            return route.request_id

        with pytest.raises(CloudApiError) as first:
            await create("vpnbot-route-a")
        with pytest.raises(CloudApiError) as again:
            await create("vpnbot-route-a")
        assert await create("vpnbot-route-b")
        await _wait_active(client, SEED_VPN_HANGZHOU)
        routes = await client.describe_vpn_route_entries(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU)

    assert first.value.code == again.value.code == "VpnGateway.Configuring"
    assert again.value.request_id == first.value.request_id
    assert [r.next_hop for r in routes if r.route_dest == "192.168.77.0/24"] == [SEED_VCO_HANGZHOU]
    assert [c.outcome for c in sandbox.state.calls("CreateVpnRouteEntry")] == ["fault", "replayed", "ok"]


async def test_recreate_a_dual_tunnel_connection_from_its_description(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        old = await client.describe_vpn_connection_detail(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_TUNNELS
        )
        spec = VpnConnectionSpec.from_detail(
            old,
            vpn_gateway_id=SEED_VPN_HANGZHOU_2,
            tunnel_psks=[SecretStr("new-key-1"), SecretStr("new-key-2")],
        )
        created = await client.create_vpn_connection(
            region=SEED_REGION, spec=spec, client_token="vpnbot-recreate"
        )
        new = await client.describe_vpn_connection_detail(
            region=SEED_REGION, vco_id=created.vpn_connection_id
        )

    def shape(detail: VpnConnectionDetail) -> list[tuple[object, ...]]:
        return [
            (
                t.role,
                t.customer_gateway_id,
                t.tunnel_ike_config.ike_version if t.tunnel_ike_config else None,
                t.tunnel_ike_config.ike_enc_alg if t.tunnel_ike_config else None,
                t.tunnel_bgp_config.tunnel_cidr if t.tunnel_bgp_config else None,
                t.tunnel_bgp_config.local_asn if t.tunnel_bgp_config else None,
            )
            for t in detail.tunnels
        ]

    assert shape(new) == shape(old)
    assert (new.local_subnet, new.remote_subnet, new.name) == (old.local_subnet, old.remote_subnet, old.name)
    assert [(t.key, t.value) for t in new.tag_list] == [(t.key, t.value) for t in old.tag_list]
    assert [t.psk for t in sandbox.state.connections[created.vpn_connection_id].tunnels] == [
        "new-key-1",
        "new-key-2",
    ]


async def test_delete_busy_answer_stays_with_its_token_and_a_new_token_deletes_once_free(
    sandbox: RunningSandbox,
) -> None:
    async with _client(sandbox) as client:
        await client.delete_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="del-1")
        with pytest.raises(CloudApiError) as busy:
            await client.delete_vpn_connection(
                region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP, client_token="del-2"
            )
        await _wait_active(client, SEED_VPN_HANGZHOU)
        with pytest.raises(CloudApiError) as replayed:
            await client.delete_vpn_connection(
                region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP, client_token="del-2"
            )
        deleted = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP, client_token="del-3"
        )

    assert (busy.value.code, busy.value.retry) == ("VpnTask.CONFLICT", RetryClass.BUSY)
    assert replayed.value.request_id == busy.value.request_id
    assert deleted
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU].pending_delete == SEED_VCO_HANGZHOU_BGP


async def test_delete_answer_lost_is_retried_with_the_same_token_and_replayed(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", drop_after=True, times=1)
    async with _client(sandbox) as client:
        request_id = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="del-lost"
        )
        await _wait_active(client, SEED_VPN_HANGZHOU)

    lost, replayed = sandbox.state.calls("DeleteVpnConnection")
    assert (lost.outcome, lost.status, replayed.outcome) == ("ok", 0, "replayed")
    assert lost.client_token == replayed.client_token == "del-lost"
    assert request_id == lost.request_id
    assert SEED_VCO_HANGZHOU not in sandbox.state.connections  # carried out by the first, lost call


async def test_listing_500_connections_pages_fifty_at_a_time(sandbox: RunningSandbox) -> None:
    added = sandbox.state.seed_connections(SEED_REGION, 500)
    async with _client(sandbox) as client:
        listed = await client.describe_vpn_connections(region=SEED_REGION)
        one_gateway = await client.describe_vpn_connections(
            region=SEED_REGION, vpn_gateway_id=sandbox.state.connections[added[0]].gateway_id
        )

    ids = [c.vpn_connection_id for c in listed]
    assert len(ids) == len(set(ids)) == 505
    assert set(added) <= set(ids)
    pages = [c.params for c in sandbox.state.calls("DescribeVpnConnections")]
    assert [(p["PageNumber"], p["PageSize"]) for p in pages[:11]] == [(str(n), "50") for n in range(1, 12)]
    assert len(one_gateway) == 50
