"""Response models: Alibaba's JSON shapes, tolerance of unknown fields, secrets never shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from bot.cloud.models import (
    CreateVpnConnectionResponse,
    CreateVpnPbrRouteEntryResponse,
    CreateVpnRouteEntryResponse,
    DeleteResponse,
    DescribeRegionsResponse,
    DescribeVpnConnectionsPage,
    VpnConnectionDetail,
    VpnGatewayDetail,
    VpnPbrRouteEntriesPage,
    VpnRouteEntriesPage,
    epoch_ms_to_datetime,
)
from bot.domain import VpnConnection, VpnGateway

PSK = "ike-psk-VERY-secret-1"
AUTH_KEY = "bgp-auth-VERY-secret-2"
TUNNEL_PSK = "tunnel-psk-VERY-secret-3"
TUNNEL_AUTH = "tunnel-auth-VERY-secret-4"
SECRETS = (PSK, AUTH_KEY, TUNNEL_PSK, TUNNEL_AUTH)


def connection_json(**overrides: Any) -> dict[str, Any]:
    """A DescribeVpnConnection answer shaped like reference §3.2, plus a field we do not know."""
    body: dict[str, Any] = {
        "RequestId": "REQ-1",
        "VpnConnectionId": "vco-bp1abc",
        "VpnGatewayId": "vpn-bp1gw",
        "CustomerGatewayId": "cgw-bp1cg",
        "Name": "office-hq",
        "Status": "ipsec_sa_established",
        "State": "attached",
        "LocalSubnet": "10.0.0.0/8",
        "RemoteSubnet": "192.168.0.0/16",
        "CreateTime": 1492753580000,
        "EffectImmediately": True,
        "EnableDpd": True,
        "EnableNatTraversal": True,
        "EnableTunnelsBgp": False,
        "NetworkType": "public",
        "AttachType": "VPNGW",
        "IkeConfig": {
            "IkeVersion": "ikev2",
            "IkeMode": "main",
            "IkeEncAlg": "aes",
            "IkeAuthAlg": "sha1",
            "IkePfs": "group2",
            "IkeLifetime": 86400,
            "LocalId": "1.2.3.4",
            "RemoteId": "5.6.7.8",
            "Psk": PSK,
        },
        "IpsecConfig": {
            "IpsecEncAlg": "aes",
            "IpsecAuthAlg": "sha1",
            "IpsecPfs": "group2",
            "IpsecLifetime": 86400,
        },
        "VpnBgpConfig": {
            "EnableBgp": "true",
            "Status": "success",
            "LocalAsn": 65530,
            "PeerAsn": "65531",
            "LocalBgpIp": "169.254.10.1",
            "PeerBgpIp": "169.254.10.2",
            "TunnelCidr": "169.254.10.0/30",
            "AuthKey": AUTH_KEY,
        },
        "VcoHealthCheck": {"Enable": "false", "Interval": 3, "Retry": 3},
        "TunnelOptionsSpecification": {
            "TunnelOptions": [
                {
                    "TunnelId": "tun-1",
                    "TunnelIndex": 1,
                    "Role": "master",
                    "CustomerGatewayId": "cgw-t1",
                    "EnableDpd": "true",
                    "TunnelIkeConfig": {"IkeLifetime": "86400", "Psk": TUNNEL_PSK},
                    "TunnelIpsecConfig": {"IpsecLifetime": "86400"},
                    "TunnelBgpConfig": {"LocalAsn": "", "PeerAsn": "65531", "AuthKey": TUNNEL_AUTH},
                }
            ]
        },
        "Tags": {"Tag": [{"Key": "team", "Value": "net"}]},
        "SomeFieldAddedIn2030": {"x": 1},
    }
    body.update(overrides)
    return body


def test_connection_detail_parses_and_ignores_unknown_fields() -> None:
    detail = VpnConnectionDetail.model_validate(connection_json())
    assert detail.vpn_connection_id == "vco-bp1abc"
    assert detail.ike_config is not None
    assert detail.ike_config.ike_lifetime == 86400
    assert detail.vpn_bgp_config is not None
    assert detail.vpn_bgp_config.enable_bgp is True
    assert detail.vpn_bgp_config.peer_asn == 65531
    assert detail.tunnels[0].tunnel_bgp_config is not None
    assert detail.tunnels[0].tunnel_bgp_config.local_asn == ""  # tunnel options are kept as sent
    blank = VpnConnectionDetail.model_validate(
        connection_json(VpnBgpConfig={"LocalAsn": "", "PeerAsn": "65531"})
    )
    assert blank.vpn_bgp_config is not None
    assert blank.vpn_bgp_config.local_asn is None
    assert blank.vpn_bgp_config.peer_asn == 65531
    assert [(t.key, t.value) for t in detail.tag_list] == [("team", "net")]


def test_connection_to_domain() -> None:
    domain = VpnConnectionDetail.model_validate(connection_json()).to_domain("cn-shanghai")
    assert domain == VpnConnection(
        id="vco-bp1abc",
        region="cn-shanghai",
        name="office-hq",
        gateway_id="vpn-bp1gw",
        customer_gateway_id="cgw-bp1cg",
        status="ipsec_sa_established",
        local_subnet="10.0.0.0/8",
        remote_subnet="192.168.0.0/16",
        created_at=datetime(2017, 4, 21, 5, 46, 20, tzinfo=UTC),
    )
    assert domain.created_at is not None
    assert domain.created_at.tzinfo is not None


def test_dual_tunnel_connection_takes_customer_gateways_from_tunnels() -> None:
    body = connection_json(CustomerGatewayId="")
    body["TunnelOptionsSpecification"]["TunnelOptions"].append(
        {"TunnelId": "tun-2", "CustomerGatewayId": "cgw-t2"}
    )
    assert (
        VpnConnectionDetail.model_validate(body).to_domain("cn-shanghai").customer_gateway_id
        == "cgw-t1,cgw-t2"
    )


def test_secrets_in_the_answer_are_not_kept() -> None:
    """The bot never reads a key back, so the models declare none: a parsed answer holds no secret."""
    detail = VpnConnectionDetail.model_validate(connection_json())
    assert detail.ike_config is not None
    assert detail.vpn_bgp_config is not None
    tunnel = detail.tunnels[0]
    assert tunnel.tunnel_ike_config is not None
    assert tunnel.tunnel_bgp_config is not None
    held = [detail.ike_config, detail.vpn_bgp_config, tunnel.tunnel_ike_config, tunnel.tunnel_bgp_config]
    assert all(name not in type(m).model_fields for m in held for name in ("psk", "auth_key"))
    # No way of showing the model to a person reveals them.
    shown = [
        repr(detail),
        str(detail),
        detail.model_dump_json(),
        detail.model_dump_json(by_alias=True),
        json.dumps(detail.model_dump(mode="json")),
        repr(detail.to_domain("cn-shanghai")),
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text


def test_list_page_uses_tag_tag_and_pages() -> None:
    item = connection_json()
    del item["Tags"]
    item["Tag"] = {"Tag": [{"Key": "env", "Value": "prod"}]}
    page = DescribeVpnConnectionsPage.model_validate(
        {
            "RequestId": "R",
            "TotalCount": 120,
            "PageNumber": 2,
            "PageSize": 50,
            "VpnConnections": {"VpnConnection": [item]},
        }
    )
    assert [c.vpn_connection_id for c in page.items] == ["vco-bp1abc"]
    assert page.items[0].tag_list[0].key == "env"
    assert page.has_more
    assert not page.model_copy(update={"page_number": 3}).has_more
    assert PSK not in repr(page)
    assert PSK not in page.model_dump_json()


def test_empty_list_page() -> None:
    page = DescribeVpnConnectionsPage.model_validate(
        {"RequestId": "R", "TotalCount": 0, "PageNumber": 1, "PageSize": 50}
    )
    assert page.items == []
    assert not page.has_more


def test_gateway_detail_to_domain() -> None:
    gateway = VpnGatewayDetail.model_validate(
        {
            "RequestId": "R",
            "VpnGatewayId": "vpn-bp1gw",
            "VpcId": "vpc-1",
            "VSwitchId": "vsw-1",
            "Name": "gw",
            "Status": "updating",
            "BusinessStatus": "FinancialLocked",
            "EnableBgp": False,
            "CreateTime": 1492753580000,
            "Tag": "VpnEnableBgp=true;VisuallySsl=true",
            "Tags": {"Tag": [{"Key": "k", "Value": "v"}]},
            "EniInstanceIds": {"EniInstanceId": ["eni-1"]},
            "ReservationData": {"Status": "1"},
        }
    )
    assert gateway.to_domain("cn-hangzhou") == VpnGateway(
        id="vpn-bp1gw", region="cn-hangzhou", name="gw", status="updating", business_status="FinancialLocked"
    )


def test_route_entry_pages() -> None:
    routes = VpnRouteEntriesPage.model_validate(
        {
            "RequestId": "R",
            "TotalCount": 1,
            "PageNumber": 1,
            "PageSize": 50,
            "VpnRouteEntries": {
                "VpnRouteEntry": [
                    {
                        "RouteDest": "10.0.0.0/24",
                        "NextHop": "vco-bp1abc",
                        "State": "normal",
                        "Weight": 100,
                        "CreateTime": 1563874074000,
                    }
                ]
            },
            "VpnRouteCounts": {"VpnRouteCount": [{"RouteCount": 1}]},
        }
    )
    assert [(r.route_dest, r.next_hop, r.weight) for r in routes.items] == [
        ("10.0.0.0/24", "vco-bp1abc", 100)
    ]
    pbr = VpnPbrRouteEntriesPage.model_validate(
        {
            "TotalCount": 1,
            "PageNumber": 1,
            "PageSize": 50,
            "VpnPbrRouteEntries": {
                "VpnPbrRouteEntry": [
                    {
                        "RouteSource": "10.0.0.0/24",
                        "RouteDest": "192.168.0.0/24",
                        "NextHop": "vco-bp1abc",
                        "Priority": 10,
                        "Weight": "0",
                    }
                ]
            },
        }
    )
    assert [(r.route_source, r.next_hop, r.priority, r.weight) for r in pbr.items] == [
        ("10.0.0.0/24", "vco-bp1abc", 10, 0)
    ]


def test_regions_and_delete() -> None:
    regions = DescribeRegionsResponse.model_validate(
        {
            "RequestId": "R",
            "Regions": {
                "Region": [
                    {"RegionId": "cn-hangzhou", "LocalName": "Hangzhou", "RegionEndpoint": "vpc.aliyuncs.com"}
                ]
            },
        }
    )
    assert [r.region_id for r in regions.items] == ["cn-hangzhou"]
    assert DeleteResponse.model_validate({"RequestId": "606998F0"}).request_id == "606998F0"


@pytest.mark.parametrize(
    ("ms", "expected"), [(None, None), (0, None), (1000, datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))]
)
def test_epoch_ms_to_datetime(ms: int | None, expected: datetime | None) -> None:
    assert epoch_ms_to_datetime(ms) == expected


def test_create_answers_give_their_request_and_connection_ids() -> None:
    created = CreateVpnRouteEntryResponse.model_validate(
        {
            "RequestId": "R1",
            "VpnInstanceId": "vpn-bp1gw",
            "RouteDest": "192.168.1.0/24",
            "NextHop": "vco-bp1new",
            "Weight": 100,
            "OverlayMode": "Ipsec",
            "Description": "back",
            "CreateTime": 1700000000000,
            "State": "published",
        }
    )
    pbr = CreateVpnPbrRouteEntryResponse.model_validate(
        {
            "RequestId": "R2",
            "RouteSource": "10.0.0.0/24",
            "RouteDest": "10.1.0.0/24",
            "Priority": 5,
            "Weight": 0,
        }
    )
    connection = CreateVpnConnectionResponse.model_validate(
        {"RequestId": "R3", "VpnConnectionId": "vco-bp1new", "Name": "office", "CreateTime": 1700000000000}
    )

    assert (created.request_id, pbr.request_id) == ("R1", "R2")
    assert (connection.request_id, connection.vpn_connection_id) == ("R3", "vco-bp1new")
    with pytest.raises(ValidationError):
        CreateVpnConnectionResponse.model_validate({"RequestId": "R4"})  # no id: not a create answer


def test_connection_detail_reads_what_the_bot_uses_from_a_full_answer() -> None:
    detail = VpnConnectionDetail.model_validate(
        connection_json(
            RemoteCaCertificate="-----BEGIN CERTIFICATE-----",
            TunnelBandwidth="M1",
            ZoneNo="cn-hangzhou-h",
            CrossAccountAuthorized=False,
            TransitRouterId="tr-1",
            TransitRouterName="tr-name",
            AttachInstanceId="cen-1",
            VcoHealthCheck={
                "Enable": "true",
                "Dip": "10.0.0.1",
                "Sip": "169.254.1.1",
                "Interval": 3,
                "Retry": 3,
                "Policy": "revoke_route",
                "Status": "success",
            },
        )
    )

    assert (detail.remote_ca_certificate, detail.transit_router_id, detail.attach_instance_id) == (
        "-----BEGIN CERTIFICATE-----",
        "tr-1",
        "cen-1",
    )
    assert detail.vco_health_check is not None
    assert (detail.vco_health_check.enable, detail.vco_health_check.dip, detail.vco_health_check.policy) == (
        True,
        "10.0.0.1",
        "revoke_route",
    )
