"""The official Alibaba Cloud VPC SDK, pointed at the sandbox, works unchanged.

This proves the sandbox accepts what the SDK really sends (an unsorted ``urlencode`` query with
``+`` for spaces, signed ``accept``/``user-agent`` headers, its own nonce) and that its answers
parse into the SDK's own models. The Config carries an explicit AccessKey so the SDK never builds
the default credential chain (which would read the environment and start an APScheduler thread).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Any

import pytest
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client
from darabonba.exceptions import UnretryableException
from vpc_sandbox_support import Caller, eventually

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

TOKEN = "slack-T1 vco+1*~"  # space, '+' and '*' exercise the SDK's own query encoding


def sdk_client(sandbox: RunningSandbox, secret: str = DEMO_ACCESS_KEY_SECRET) -> Client:
    return Client(
        open_api_models.Config(
            access_key_id=DEMO_ACCESS_KEY_ID,
            access_key_secret=secret,
            endpoint=sandbox.endpoint,
            protocol="http",
            region_id=SEED_REGION,
        )
    )


async def gateway_status(client: Client, gateway_id: str = SEED_VPN_HANGZHOU) -> str:
    request = vpc_models.DescribeVpnGatewayRequest(region_id=SEED_REGION, vpn_gateway_id=gateway_id)
    response = await client.describe_vpn_gateway_async(request)
    return str(response.body.status)


async def test_sdk_describe_delete_and_poll_gateway(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)

    described = await client.describe_vpn_connection_async(
        vpc_models.DescribeVpnConnectionRequest(region_id=SEED_REGION, vpn_connection_id=SEED_VCO_HANGZHOU)
    )
    deleted = await client.delete_vpn_connection_async(
        vpc_models.DeleteVpnConnectionRequest(
            region_id=SEED_REGION, vpn_connection_id=SEED_VCO_HANGZHOU, client_token=TOKEN
        )
    )
    replayed = await client.delete_vpn_connection_async(
        vpc_models.DeleteVpnConnectionRequest(
            region_id=SEED_REGION, vpn_connection_id=SEED_VCO_HANGZHOU, client_token=TOKEN
        )
    )
    status_after_delete = await gateway_status(client)

    async def active() -> bool:
        return await gateway_status(client) == "active"

    await eventually(active)
    with pytest.raises(ClientException) as gone:
        await client.describe_vpn_connection_async(
            vpc_models.DescribeVpnConnectionRequest(
                region_id=SEED_REGION, vpn_connection_id=SEED_VCO_HANGZHOU
            )
        )

    assert described.status_code == 200
    assert described.body.vpn_gateway_id == SEED_VPN_HANGZHOU
    assert described.body.name == "office-beijing"
    assert described.body.ike_config.psk
    assert deleted.body.request_id
    assert replayed.body.request_id == deleted.body.request_id
    assert status_after_delete == "updating"
    assert gone.value.code == "InvalidVpnConnectionInstanceId.NotFound"
    assert gone.value.status_code == 404
    # The sandbox decoded the SDK's '+'-for-space query exactly.
    first_delete = sandbox.state.accepted("DeleteVpnConnection")[0]
    assert first_delete.client_token == TOKEN
    assert first_delete.nonce
    assert first_delete.request_id == deleted.body.request_id


async def test_sdk_describe_customer_gateway_found_then_gone(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)
    request = vpc_models.DescribeCustomerGatewayRequest(
        region_id=SEED_REGION, customer_gateway_id=SEED_CGW_HANGZHOU
    )

    found = await client.describe_customer_gateway_async(request)
    del sandbox.state.customer_gateways[SEED_CGW_HANGZHOU]
    with pytest.raises(ClientException) as gone:
        await client.describe_customer_gateway_async(request)

    assert found.status_code == 200
    assert found.body.customer_gateway_id == SEED_CGW_HANGZHOU
    assert found.body.ip_address == sandbox.state.connections[SEED_VCO_HANGZHOU].remote_ip
    assert found.body.request_id
    assert (gone.value.code, gone.value.status_code) == ("InvalidCustomerGatewayInstanceId.NotFound", 404)


async def test_sdk_errors_arrive_as_sdk_exceptions_with_the_code(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)

    with pytest.raises(ClientException) as locked:
        await client.delete_vpn_connection_async(
            vpc_models.DeleteVpnConnectionRequest(region_id=SEED_REGION, vpn_connection_id=SEED_VCO_LOCKED)
        )
    with pytest.raises(ClientException) as bad_secret:
        await sdk_client(sandbox, secret="wrong-secret").describe_regions_async(
            vpc_models.DescribeRegionsRequest()
        )

    assert (locked.value.code, locked.value.status_code) == ("VpnGateway.FinancialLocked", 400)
    assert locked.value.request_id
    assert bad_secret.value.code == "SignatureDoesNotMatch"


async def test_sdk_models_parse_every_operation(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)

    regions = await client.describe_regions_async(vpc_models.DescribeRegionsRequest(accept_language="en-US"))
    listed = await client.describe_vpn_connections_async(
        vpc_models.DescribeVpnConnectionsRequest(region_id=SEED_REGION, page_size=50)
    )
    tunnels = await client.describe_vpn_connection_async(
        vpc_models.DescribeVpnConnectionRequest(
            region_id=SEED_REGION, vpn_connection_id=SEED_VCO_HANGZHOU_TUNNELS
        )
    )
    routes = await client.describe_vpn_route_entries_async(
        vpc_models.DescribeVpnRouteEntriesRequest(region_id=SEED_REGION, vpn_gateway_id=SEED_VPN_HANGZHOU)
    )
    pbr = await client.describe_vpn_pbr_route_entries_async(
        vpc_models.DescribeVpnPbrRouteEntriesRequest(region_id=SEED_REGION, vpn_gateway_id=SEED_VPN_HANGZHOU)
    )

    hangzhou = next(r for r in regions.body.regions.region if r.region_id == SEED_REGION)
    assert (hangzhou.local_name, hangzhou.region_endpoint) == (
        "China (Hangzhou)",
        "vpc.cn-hangzhou.aliyuncs.com",
    )
    connections = {c.vpn_connection_id: c for c in listed.body.vpn_connections.vpn_connection}
    assert listed.body.total_count == len(connections)
    assert connections[SEED_VCO_HANGZHOU_BGP].vpn_bgp_config.auth_key
    assert connections[SEED_VCO_HANGZHOU].tag.tag[0].key == "team"
    [first_tunnel, _] = tunnels.body.tunnel_options_specification.tunnel_options
    assert first_tunnel.tunnel_ike_config.psk
    assert first_tunnel.role == "master"
    assert {e.next_hop for e in routes.body.vpn_route_entries.vpn_route_entry} >= {SEED_VCO_HANGZHOU}
    assert routes.body.vpn_route_counts.vpn_route_count[0].route_count
    assert {e.route_source for e in pbr.body.vpn_pbr_route_entries.vpn_pbr_route_entry} == {
        "10.10.1.0/24",
        "10.20.1.0/24",
        "10.10.2.0/24",
    }


# --- ClientToken by Alibaba's rules, as the SDK sees them ----------------------------------------------


def delete_request(token: str, vco: str = SEED_VCO_HANGZHOU) -> vpc_models.DeleteVpnConnectionRequest:
    return vpc_models.DeleteVpnConnectionRequest(
        region_id=SEED_REGION, vpn_connection_id=vco, client_token=token
    )


async def test_sdk_busy_answer_is_replayed_until_a_fresh_token(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)
    await client.delete_vpn_connection_async(delete_request("sdk-first"))

    with pytest.raises(ClientException) as busy:
        await client.delete_vpn_connection_async(delete_request("sdk-busy", SEED_VCO_HANGZHOU_BGP))

    async def active() -> bool:
        return await gateway_status(client) == "active"

    await eventually(active)
    with pytest.raises(ClientException) as replayed:
        await client.delete_vpn_connection_async(delete_request("sdk-busy", SEED_VCO_HANGZHOU_BGP))
    fresh = await client.delete_vpn_connection_async(delete_request("sdk-busy-2", SEED_VCO_HANGZHOU_BGP))

    assert busy.value.code == replayed.value.code == "VpnTask.CONFLICT"
    # The gateway was free by then, but the token's first answer stands.
    assert replayed.value.request_id == busy.value.request_id
    assert fresh.body.request_id
    assert await gateway_status(client) == "updating"
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU].pending_delete == SEED_VCO_HANGZHOU_BGP


async def test_sdk_answer_lost_then_same_token_gets_the_replayed_success(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)
    sandbox.state.faults.add(action="DeleteVpnConnection", drop_after=True, times=1)

    with pytest.raises(UnretryableException):
        await client.delete_vpn_connection_async(delete_request("sdk-lost"))
    status_after_lost = await gateway_status(client)
    retried = await client.delete_vpn_connection_async(delete_request("sdk-lost"))

    [lost, replay] = sandbox.state.calls("DeleteVpnConnection")
    assert status_after_lost == "updating"  # it was carried out although no answer came
    assert (lost.outcome, lost.status, replay.outcome) == ("ok", 0, "replayed")
    assert retried.body.request_id == lost.request_id


# --- the create operations --------------------------------------------------------------------------


async def test_sdk_creates_a_single_tunnel_connection_and_its_routes(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)
    request = vpc_models.CreateVpnConnectionRequest(
        region_id=SEED_REGION,
        vpn_gateway_id=SEED_VPN_HANGZHOU_2,
        customer_gateway_id="cgw-bp1sdksdksdksdksdksdka",
        name="sdk office",
        local_subnet="10.30.0.0/16",
        remote_subnet="192.168.31.0/24",
        effect_immediately=True,  # the SDK sends "True": accepted like "true"
        ike_config=json.dumps({"Psk": "sdk-key*~", "IkeVersion": "ikev2"}),
        ipsec_config=json.dumps({"IpsecPfs": "group14"}),
        health_check_config=json.dumps({"enable": "true", "dip": "10.30.0.9", "sip": "169.254.9.1"}),
        bgp_config=json.dumps({"EnableBgp": "true", "LocalAsn": 65300, "TunnelCidr": "169.254.9.0/30"}),
        tags=[vpc_models.CreateVpnConnectionRequestTags(key="team", value="sdk")],
        # Else Alibaba adds the route to 192.168.31.0/24 itself, and the one below is refused.
        auto_config_route=False,
        client_token=TOKEN,
    )

    created = await client.create_vpn_connection_async(request)
    replayed = await client.create_vpn_connection_async(request)

    async def active() -> bool:
        return await gateway_status(client, SEED_VPN_HANGZHOU_2) == "active"

    await eventually(active)
    vco = created.body.vpn_connection_id
    described = await client.describe_vpn_connection_async(
        vpc_models.DescribeVpnConnectionRequest(region_id=SEED_REGION, vpn_connection_id=vco)
    )
    route = await client.create_vpn_route_entry_async(
        vpc_models.CreateVpnRouteEntryRequest(
            region_id=SEED_REGION,
            vpn_gateway_id=SEED_VPN_HANGZHOU_2,
            route_dest="192.168.31.0/24",
            next_hop=vco,
            publish_vpc=True,
            weight=100,
            description="sdk route",
            client_token="sdk-route-1",
        )
    )
    await eventually(active)
    pbr = await client.create_vpn_pbr_route_entry_async(
        vpc_models.CreateVpnPbrRouteEntryRequest(
            region_id=SEED_REGION,
            vpn_gateway_id=SEED_VPN_HANGZHOU_2,
            route_source="10.30.1.0/24",
            route_dest="192.168.31.0/25",
            next_hop=vco,
            publish_vpc=False,
            weight=0,
            priority=5,
            client_token="sdk-route-2",
        )
    )
    await eventually(active)
    routes = await client.describe_vpn_route_entries_async(
        vpc_models.DescribeVpnRouteEntriesRequest(region_id=SEED_REGION, vpn_gateway_id=SEED_VPN_HANGZHOU_2)
    )
    pbr_routes = await client.describe_vpn_pbr_route_entries_async(
        vpc_models.DescribeVpnPbrRouteEntriesRequest(
            region_id=SEED_REGION, vpn_gateway_id=SEED_VPN_HANGZHOU_2
        )
    )

    assert replayed.body.vpn_connection_id == vco
    assert created.body.name == "sdk office"
    assert created.body.create_time
    body = described.body
    assert (body.ike_config.psk, body.ike_config.ike_version) == ("sdk-key*~", "ikev2")
    assert body.ipsec_config.ipsec_pfs == "group14"
    assert (body.vco_health_check.enable, body.vco_health_check.dip) == ("true", "10.30.0.9")
    assert (body.vpn_bgp_config.local_asn, body.vpn_bgp_config.local_bgp_ip) == (65300, "169.254.9.1")
    assert body.effect_immediately is True
    assert body.tags.tag[0].value == "sdk"
    assert (route.body.next_hop, route.body.state, route.body.description) == (vco, "published", "sdk route")
    assert (pbr.body.route_source, pbr.body.priority, pbr.body.weight, pbr.body.state) == (
        "10.30.1.0/24",
        5,
        0,
        "normal",
    )
    assert ("192.168.31.0/24", vco) in {
        (e.route_dest, e.next_hop) for e in routes.body.vpn_route_entries.vpn_route_entry
    }
    assert [e.route_source for e in pbr_routes.body.vpn_pbr_route_entries.vpn_pbr_route_entry] == [
        "10.30.1.0/24"
    ]
    assert len(sandbox.state.accepted("CreateVpnConnection")) == 1
    # The Tag filter as the SDK sends it (Tag.N.Key/Value) finds the connection by its tag alone.
    tagged = await client.describe_vpn_connections_async(
        vpc_models.DescribeVpnConnectionsRequest(
            region_id=SEED_REGION,
            vpn_gateway_id=SEED_VPN_HANGZHOU_2,
            tag=[vpc_models.DescribeVpnConnectionsRequestTag(key="team", value="sdk")],
        )
    )
    assert [c.vpn_connection_id for c in tagged.body.vpn_connections.vpn_connection] == [vco]


async def test_sdk_creates_a_dual_tunnel_connection_through_its_form_body(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)
    tunnels = [
        vpc_models.CreateVpnConnectionRequestTunnelOptionsSpecification(
            customer_gateway_id=f"cgw-bp1sdkdua1{index}xxxxxxxxa",
            role=role,
            enable_dpd=True,
            enable_nat_traversal=False,
            tunnel_ike_config=vpc_models.CreateVpnConnectionRequestTunnelOptionsSpecificationTunnelIkeConfig(
                psk=f"sdk-tunnel-key-{index}", ike_version="ikev2", ike_lifetime=3600
            ),
            tunnel_ipsec_config=vpc_models.CreateVpnConnectionRequestTunnelOptionsSpecificationTunnelIpsecConfig(
                ipsec_enc_alg="aes256"
            ),
            tunnel_bgp_config=vpc_models.CreateVpnConnectionRequestTunnelOptionsSpecificationTunnelBgpConfig(
                local_asn=65400, tunnel_cidr=f"169.254.5{index}.0/30", local_bgp_ip=f"169.254.5{index}.2"
            ),
        )
        for index, role in ((1, "master"), (2, "slave"))
    ]

    created = await client.create_vpn_connection_async(
        vpc_models.CreateVpnConnectionRequest(
            region_id=SEED_REGION,
            vpn_gateway_id=SEED_VPN_HANGZHOU_2,
            local_subnet="0.0.0.0/0",
            remote_subnet="0.0.0.0/0",
            enable_tunnels_bgp=True,
            tunnel_options_specification=tunnels,
            client_token="sdk-dual",
        )
    )
    described = await client.describe_vpn_connection_async(
        vpc_models.DescribeVpnConnectionRequest(
            region_id=SEED_REGION, vpn_connection_id=created.body.vpn_connection_id
        )
    )

    first, second = described.body.tunnel_options_specification.tunnel_options
    assert (first.role, second.role) == ("master", "slave")
    assert (first.tunnel_ike_config.psk, first.tunnel_ike_config.ike_lifetime) == ("sdk-tunnel-key-1", "3600")
    assert first.enable_nat_traversal == "false"
    assert (second.tunnel_bgp_config.local_bgp_ip, second.tunnel_bgp_config.peer_bgp_ip) == (
        "169.254.52.2",
        "169.254.52.1",
    )
    [recorded] = sandbox.state.accepted("CreateVpnConnection")
    assert recorded.params["TunnelOptionsSpecification.2.TunnelIkeConfig.Psk"] == "sdk-tunnel-key-2"


async def test_sdk_route_refusal_arrives_with_its_code(sandbox: RunningSandbox) -> None:
    client = sdk_client(sandbox)

    with pytest.raises(ClientException) as refused:
        await client.create_vpn_route_entry_async(
            vpc_models.CreateVpnRouteEntryRequest(
                region_id=SEED_REGION,
                vpn_gateway_id=SEED_VPN_HANGZHOU,
                route_dest="0.0.0.0/0",
                next_hop=SEED_VCO_HANGZHOU,
                publish_vpc=True,
                weight=100,
            )
        )

    assert (refused.value.code, refused.value.status_code) == ("InvalidParameter", 400)


# --- every field the SDK knows ------------------------------------------------------------------------


def sdk_fields(model_module: str) -> set[str]:
    """Every key an official SDK response model reads (its ``to_map`` writes them all)."""
    source = inspect.getsource(importlib.import_module(f"alibabacloud_vpc20160428.models.{model_module}"))
    return set(re.findall(r"result\['([A-Za-z]+)'\]", source))


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


async def test_answers_carry_every_field_the_sdk_models_know(caller: Caller) -> None:
    hz = {"RegionId": SEED_REGION}
    gateway = {**hz, "VpnGatewayId": SEED_VPN_HANGZHOU}
    # Single-tunnel, BGP with health check, and dual-tunnel connections together use every field.
    described = [
        await caller.ok("DescribeVpnConnection", {**hz, "VpnConnectionId": vco})
        for vco in (SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VCO_HANGZHOU_TUNNELS)
    ]
    answers = {
        "_describe_vpn_connection_response_body": described,
        "_describe_vpn_connections_response_body": await caller.ok("DescribeVpnConnections", hz),
        "_describe_vpn_gateway_response_body": await caller.ok(
            "DescribeVpnGateway", {**gateway, "IncludeReservationData": "true"}
        ),
        "_describe_customer_gateway_response_body": await caller.ok(
            "DescribeCustomerGateway", {**hz, "CustomerGatewayId": SEED_CGW_HANGZHOU}
        ),
        "_describe_vpn_route_entries_response_body": [
            await caller.ok("DescribeVpnRouteEntries", {**gateway, "RouteEntryType": kind})
            for kind in ("custom", "bgp")
        ],
        "_describe_vpn_pbr_route_entries_response_body": await caller.ok(
            "DescribeVpnPbrRouteEntries", gateway
        ),
        "_create_vpn_route_entry_response_body": await caller.ok(
            "CreateVpnRouteEntry",
            {
                **gateway,
                "RouteDest": "192.168.98.0/24",
                "NextHop": SEED_VCO_HANGZHOU,
                "PublishVpc": "true",
                "Weight": "100",
            },
        ),
    }

    missing = {module: sdk_fields(module) - keys_in(answer) for module, answer in answers.items()}

    assert missing == {module: set() for module in answers}
