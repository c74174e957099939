"""CreateVpnConnection's specs: Alibaba's wire form, keys hidden everywhere but the parameters."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr, ValidationError
from pydantic.alias_generators import to_pascal

from bot.cloud.models import VpnConnectionDetail
from bot.cloud.specs import (
    BgpSpec,
    HealthCheckSpec,
    IkeSpec,
    IpsecSpec,
    TunnelBgpSpec,
    TunnelSpec,
    VpnConnectionSpec,
    route_entry_params,
)

from .test_models import AUTH_KEY, PSK, TUNNEL_PSK, connection_json

NEW_PSK = "new-psk-VERY-secret-5"


def single() -> VpnConnectionSpec:
    return VpnConnectionSpec(
        vpn_gateway_id="vpn-bp1gw",
        local_subnet="10.0.0.0/8",
        remote_subnet="192.168.0.0/16",
        name="office",
        customer_gateway_id="cgw-bp1cg",
        effect_immediately=True,
        enable_dpd=False,
        ike_config=IkeSpec(psk=SecretStr(NEW_PSK), ike_version="ikev2", ike_lifetime=28800),
        ipsec_config=IpsecSpec(ipsec_pfs="disabled"),
        health_check_config=HealthCheckSpec(dip="10.0.0.1", retry=5),
        bgp_config=BgpSpec(local_asn=65100, tunnel_cidr="169.254.1.0/30"),
        tags={"team": "net", "env": "prod"},
    )


def test_single_tunnel_spec_renders_json_configs_and_flat_tags() -> None:
    params = single().to_params()

    assert json.loads(params["IkeConfig"]) == {"Psk": NEW_PSK, "IkeVersion": "ikev2", "IkeLifetime": 28800}
    assert params["IkeConfig"] == json.dumps(json.loads(params["IkeConfig"]), separators=(",", ":"))
    assert json.loads(params["IpsecConfig"]) == {"IpsecPfs": "disabled"}
    # HealthCheckConfig keys are lower case; booleans are "true"/"false", never Python's True.
    assert json.loads(params["HealthCheckConfig"]) == {"enable": "true", "dip": "10.0.0.1", "retry": 5}
    assert json.loads(params["BgpConfig"]) == {
        "EnableBgp": "true",
        "LocalAsn": 65100,
        "TunnelCidr": "169.254.1.0/30",
    }
    assert (params["EffectImmediately"], params["EnableDpd"]) == ("true", "false")
    assert params["Tags.2.Key"] == "env"
    assert params["Tags.2.Value"] == "prod"
    assert "EnableNatTraversal" not in params  # unset fields are left to Alibaba's defaults
    assert all(isinstance(v, str) for v in params.values())


def test_dual_tunnel_spec_flattens_tunnel_options() -> None:
    spec = VpnConnectionSpec(
        vpn_gateway_id="vpn-bp1gw",
        local_subnet="0.0.0.0/0",
        remote_subnet="0.0.0.0/0",
        enable_tunnels_bgp=True,
        tunnel_options_specification=(
            TunnelSpec(
                customer_gateway_id="cgw-1",
                role="master",
                enable_nat_traversal=False,
                tunnel_ike_config=IkeSpec(psk=SecretStr(NEW_PSK), ike_lifetime=3600),
                tunnel_bgp_config=TunnelBgpSpec(local_asn=65010, tunnel_cidr="169.254.20.0/30"),
            ),
            TunnelSpec(customer_gateway_id="cgw-2", role="slave"),
        ),
    )

    params = spec.to_params()

    assert params == {
        "VpnGatewayId": "vpn-bp1gw",
        "LocalSubnet": "0.0.0.0/0",
        "RemoteSubnet": "0.0.0.0/0",
        "EnableTunnelsBgp": "true",
        "TunnelOptionsSpecification.1.CustomerGatewayId": "cgw-1",
        "TunnelOptionsSpecification.1.Role": "master",
        "TunnelOptionsSpecification.1.EnableNatTraversal": "false",
        "TunnelOptionsSpecification.1.TunnelIkeConfig.Psk": NEW_PSK,
        "TunnelOptionsSpecification.1.TunnelIkeConfig.IkeLifetime": "3600",
        "TunnelOptionsSpecification.1.TunnelBgpConfig.LocalAsn": "65010",
        "TunnelOptionsSpecification.1.TunnelBgpConfig.TunnelCidr": "169.254.20.0/30",
        "TunnelOptionsSpecification.2.CustomerGatewayId": "cgw-2",
        "TunnelOptionsSpecification.2.Role": "slave",
    }


def test_keys_are_hidden_everywhere_but_the_parameters() -> None:
    spec = single()

    shown = repr(spec) + str(spec) + spec.model_dump_json() + repr(spec.ike_config) + repr(spec.bgp_config)

    assert NEW_PSK not in shown
    assert NEW_PSK in spec.to_params()["IkeConfig"]


@pytest.mark.parametrize(
    "bad",
    [
        {"ike_config": {"ike_version": "ikev3"}},
        {"ike_config": {"ike_lifetime": 90000}},
        {"bgp_config": {"local_asn": 0}},
        {"vpn_gateway_idd": "typo"},
    ],
)
def test_specs_refuse_what_alibaba_would_refuse(bad: dict[str, object]) -> None:
    base = {"vpn_gateway_id": "vpn-1", "local_subnet": "10.0.0.0/8", "remote_subnet": "10.1.0.0/16"}
    with pytest.raises(ValidationError):
        VpnConnectionSpec.model_validate(base | bad)


def test_from_detail_recreates_a_single_tunnel_connection_with_new_keys() -> None:
    detail = VpnConnectionDetail.model_validate(
        connection_json(
            TunnelOptionsSpecification={"TunnelOptions": []},
            VcoHealthCheck={"Enable": "true", "Dip": "10.0.0.9", "Sip": "", "Interval": 3, "Retry": 4},
        )
    )

    spec = VpnConnectionSpec.from_detail(detail, psk=SecretStr(NEW_PSK))
    params = spec.to_params()

    assert (spec.vpn_gateway_id, spec.customer_gateway_id, spec.name) == (
        "vpn-bp1gw",
        "cgw-bp1cg",
        "office-hq",
    )
    assert json.loads(params["IkeConfig"]) == {
        "Psk": NEW_PSK,
        "IkeVersion": "ikev2",
        "IkeMode": "main",
        "IkeEncAlg": "aes",
        "IkeAuthAlg": "sha1",
        "IkePfs": "group2",
        "IkeLifetime": 86400,
        "LocalId": "1.2.3.4",
        "RemoteId": "5.6.7.8",
    }
    # Status and the peer's side are not create parameters; nor is an AuthKey, which the official
    # SDK's CreateVpnConnection does not document for BgpConfig (tests/cloud/test_oracle.py).
    assert json.loads(params["BgpConfig"]) == {
        "EnableBgp": "true",
        "LocalAsn": 65530,
        "TunnelCidr": "169.254.10.0/30",
        "LocalBgpIp": "169.254.10.1",
    }
    assert json.loads(params["HealthCheckConfig"]) == {
        "enable": "true",
        "dip": "10.0.0.9",
        "interval": 3,
        "retry": 4,
    }
    assert params["Tags.1.Key"] == "team"
    rendered = json.dumps(params)
    assert PSK not in rendered  # the old keys are never copied
    assert AUTH_KEY not in rendered
    assert "AutoConfigRoute" not in params  # the recreation sets it (for_recreation)


def test_bgp_spec_has_no_auth_key_as_the_sdk_create_model_has_none() -> None:
    # CreateVpnConnection's BgpConfig (SDK 7.2.x): EnableBgp, LocalAsn, TunnelCidr, LocalBgpIp.
    assert {to_pascal(n) for n in BgpSpec.model_fields} == {
        "EnableBgp",
        "LocalAsn",
        "TunnelCidr",
        "LocalBgpIp",
    }
    with pytest.raises(ValidationError):
        BgpSpec.model_validate({"local_asn": 65100, "auth_key": "k"})


def test_a_recreation_sends_auto_config_route_false_and_its_operation_tag() -> None:
    tags = (
        {"acs:rm:rgId": "rg-1"} | {f"k{i:02d}": str(i) for i in range(20)} | {"vpnbot-operation": "older-op"}
    )
    spec = single().model_copy(update={"tags": tags})

    params = spec.for_recreation(psk=SecretStr(NEW_PSK), operation_id="op-123").to_params()

    assert params["AutoConfigRoute"] == "false"
    sent = {params[f"Tags.{i}.Key"]: params[f"Tags.{i}.Value"] for i in range(1, 21)}
    assert "Tags.21.Key" not in params  # Create takes 20
    assert sent["vpnbot-operation"] == "op-123"
    assert "acs:rm:rgId" not in sent
    assert json.loads(params["IkeConfig"])["Psk"] == NEW_PSK


def test_from_detail_recreates_dual_tunnels_without_keys_unless_given() -> None:
    detail = VpnConnectionDetail.model_validate(
        connection_json(
            CustomerGatewayId="",
            EnableTunnelsBgp=True,
            TunnelOptionsSpecification={
                "TunnelOptions": [
                    {
                        "Role": "master",
                        "CustomerGatewayId": "cgw-t1",
                        "EnableDpd": "true",
                        "EnableNatTraversal": "false",
                        "Status": "ipsec_sa_established",
                        "TunnelIkeConfig": {"IkeVersion": "ikev2", "IkeLifetime": "3600", "Psk": TUNNEL_PSK},
                        "TunnelIpsecConfig": {"IpsecLifetime": "86400", "IpsecPfs": "group14"},
                        "TunnelBgpConfig": {
                            "LocalAsn": "65010",
                            "TunnelCidr": "169.254.20.0/30",
                            "PeerAsn": "1",
                        },
                    },
                    {"Role": "slave", "CustomerGatewayId": "cgw-t2", "TunnelBgpConfig": {"LocalAsn": ""}},
                ]
            },
        )
    )

    spec = VpnConnectionSpec.from_detail(detail, tunnel_psks=[SecretStr(NEW_PSK)], vpn_gateway_id="vpn-other")
    params = spec.to_params()

    assert spec.vpn_gateway_id == "vpn-other"
    assert "IkeConfig" not in params
    assert "CustomerGatewayId" not in params
    assert params["EnableTunnelsBgp"] == "true"
    assert params["TunnelOptionsSpecification.1.TunnelIkeConfig.Psk"] == NEW_PSK
    assert params["TunnelOptionsSpecification.1.TunnelIkeConfig.IkeLifetime"] == "3600"
    assert params["TunnelOptionsSpecification.1.EnableNatTraversal"] == "false"
    assert params["TunnelOptionsSpecification.1.TunnelBgpConfig.LocalAsn"] == "65010"
    assert params["TunnelOptionsSpecification.1.TunnelIpsecConfig.IpsecPfs"] == "group14"
    assert "TunnelOptionsSpecification.2.TunnelIkeConfig.Psk" not in params  # Alibaba generates one
    assert "TunnelOptionsSpecification.2.TunnelBgpConfig.LocalAsn" not in params
    assert TUNNEL_PSK not in json.dumps(params)


def test_route_entry_params() -> None:
    params = route_entry_params(
        region="cn-hangzhou",
        gateway_id="vpn-1",
        route_dest="10.0.0.0/24",
        next_hop="vco-1",
        weight=0,
        publish_vpc=False,
        description=None,
        client_token="tok",
    )

    assert params == {
        "RegionId": "cn-hangzhou",
        "VpnGatewayId": "vpn-1",
        "RouteDest": "10.0.0.0/24",
        "NextHop": "vco-1",
        "Weight": "0",
        "PublishVpc": "false",
        "OverlayMode": "Ipsec",
        "ClientToken": "tok",
    }


def test_from_a_list_item_bgp_is_on_when_a_tunnel_cidr_is_there() -> None:
    # DescribeVpnConnections' VpnBgpConfig has no EnableBgp (reference §3.3).
    listed = {"LocalAsn": 65530, "TunnelCidr": "169.254.10.0/30", "LocalBgpIp": "169.254.10.1"}
    with_bgp = VpnConnectionDetail.model_validate(
        connection_json(VpnBgpConfig=listed, TunnelOptionsSpecification={"TunnelOptions": []})
    )
    without = VpnConnectionDetail.model_validate(
        connection_json(VpnBgpConfig={"Status": "false"}, TunnelOptionsSpecification={"TunnelOptions": []})
    )

    assert VpnConnectionSpec.from_detail(with_bgp).bgp_config == BgpSpec(
        local_asn=65530, tunnel_cidr="169.254.10.0/30", local_bgp_ip="169.254.10.1"
    )
    assert VpnConnectionSpec.from_detail(without).bgp_config is None
