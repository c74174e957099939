"""The official Alibaba Cloud VPC SDK, pointed at the sandbox, works unchanged.

This proves the sandbox accepts what the SDK really sends (an unsorted ``urlencode`` query with
``+`` for spaces, signed ``accept``/``user-agent`` headers, its own nonce) and that its answers
parse into the SDK's own models. The Config carries an explicit AccessKey so the SDK never builds
the default credential chain (which would read the environment and start an APScheduler thread).
"""

from __future__ import annotations

import pytest
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client
from vpc_sandbox_support import eventually

from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VCO_LOCKED,
    SEED_VPN_HANGZHOU,
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


async def gateway_status(client: Client) -> str:
    request = vpc_models.DescribeVpnGatewayRequest(region_id=SEED_REGION, vpn_gateway_id=SEED_VPN_HANGZHOU)
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
    }
