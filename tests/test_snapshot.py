"""The configuration snapshot: Alibaba's answers -> Snapshot (no key), JSON round trip, Block Kit within limits."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import yaml
from slack_sdk.models.blocks import Block

from bot.cloud.models import VpnConnectionDetail, VpnPbrRouteEntriesPage, VpnRouteEntriesPage
from bot.cloud.snapshot import build_snapshot
from bot.cloud.specs import VpnConnectionSpec
from bot.domain import (
    PART_CONFIGURATION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    Snapshot,
    SnapshotRoute,
    SnapshotTaken,
    Unread,
    VpnConnection,
    event_from_json,
    event_to_json,
)
from bot.slack.blocks import (
    FILE_KEY,
    MESSAGE_BUDGET,
    SECTION_MAX,
    SnapshotFile,
    blocks_text_length,
    build_progress,
    build_snapshot_reply,
    build_thread_reply,
    snapshot_document,
)

VCO = "vco-bp1abc2def3gh"
PSK = "psk-must-never-show-9f8e"
AUTH_KEY = "bgp-md5-must-never-show-7d6c"
TUNNEL_PSK = "tunnel-psk-must-never-show-5b4a"
SECRETS = (PSK, AUTH_KEY, TUNNEL_PSK)

# DescribeVpnConnection as Alibaba documents it, keys included.
DETAIL: dict[str, Any] = {
    "RequestId": "R-1",
    "VpnConnectionId": VCO,
    "VpnGatewayId": "vpn-bp1gw0001",
    "CustomerGatewayId": "cgw-bp1cg0001",
    "Name": "office",
    "Status": "ipsec_sa_established",
    "LocalSubnet": "10.0.0.0/24,10.0.1.0/24",
    "RemoteSubnet": "192.168.0.0/24",
    "EnableDpd": True,
    "EnableNatTraversal": False,
    "EffectImmediately": True,
    "IkeConfig": {
        "IkeVersion": "ikev2",
        "IkeMode": "main",
        "IkeEncAlg": "aes",
        "IkeAuthAlg": "sha1",
        "IkePfs": "group2",
        "IkeLifetime": 86400,
        "LocalId": "116.62.0.1",
        "RemoteId": "47.0.0.1",
        "Psk": PSK,
    },
    "IpsecConfig": {
        "IpsecEncAlg": "aes",
        "IpsecAuthAlg": "sha1",
        "IpsecPfs": "group2",
        "IpsecLifetime": 3600,
    },
    "VpnBgpConfig": {
        "EnableBgp": "true",
        "Status": "success",
        "LocalAsn": 45104,
        "PeerAsn": 65010,
        "LocalBgpIp": "169.254.1.1",
        "PeerBgpIp": "169.254.1.2",
        "TunnelCidr": "169.254.1.0/30",
        "AuthKey": AUTH_KEY,
    },
    "VcoHealthCheck": {"Enable": "true", "Sip": "169.254.1.1", "Dip": "10.0.0.9", "Interval": 3, "Retry": 3},
    "Tags": {"Tag": [{"Key": "team", "Value": "netops"}]},
}
TUNNELS: dict[str, Any] = {
    **{k: v for k, v in DETAIL.items() if k not in ("CustomerGatewayId", "IkeConfig", "VpnBgpConfig")},
    "EnableTunnelsBgp": True,
    "TunnelOptionsSpecification": {
        "TunnelOptions": [
            {
                "TunnelIndex": 1,
                "CustomerGatewayId": "cgw-bp1cg0001",
                "Role": "master",
                "EnableDpd": True,
                "EnableNatTraversal": True,
                "TunnelIkeConfig": {"Psk": TUNNEL_PSK, "IkeVersion": "ikev2", "IkeLifetime": "86400"},
                "TunnelIpsecConfig": {"IpsecEncAlg": "aes256"},
                "TunnelBgpConfig": {"LocalAsn": "65001", "TunnelCidr": "169.254.2.0/30"},
            },
            {
                "TunnelIndex": 2,
                "CustomerGatewayId": "cgw-bp1cg0002",
                "Role": "slave",
                "TunnelIkeConfig": {"Psk": TUNNEL_PSK},
            },
        ]
    },
}
CONNECTION = VpnConnection(
    id=VCO,
    region="cn-hangzhou",
    name="office (at request)",
    gateway_id="vpn-bp1gw0001",
    customer_gateway_id="cgw-bp1cg0001",
    status="ipsec_sa_established",
    local_subnet="10.0.0.0/24",
    remote_subnet="192.168.0.0/24",
)


def _routes(*items: tuple[str, str, str]) -> VpnRouteEntriesPage:
    entries = [
        {
            "RouteDest": d,
            "NextHop": hop,
            "RouteEntryType": kind,
            "Weight": 100,
            "Description": "dc",
            "State": "published",
        }
        for d, hop, kind in items
    ]
    return VpnRouteEntriesPage.model_validate({"VpnRouteEntries": {"VpnRouteEntry": entries}})


def _pbr(*items: tuple[str, str, str]) -> VpnPbrRouteEntriesPage:
    entries = [
        {"RouteSource": s, "RouteDest": d, "NextHop": hop, "Priority": 5, "Weight": 0, "State": "normal"}
        for s, d, hop in items
    ]
    return VpnPbrRouteEntriesPage.model_validate({"VpnPbrRouteEntries": {"VpnPbrRouteEntry": entries}})


def _snapshot(detail: dict[str, Any] | Unread = DETAIL) -> Snapshot:
    custom = _routes(("192.168.0.0/24", VCO, "custom"), ("192.168.9.0/24", "vco-other", "custom"))
    bgp = _routes(("10.200.0.0/16", VCO, "bgp"), ("10.99.0.0/16", "vco-other", "bgp"))
    pbr = _pbr(("10.0.1.0/24", "192.168.1.0/24", VCO), ("10.0.2.0/24", "192.168.2.0/24", "vco-other"))
    answer = detail if isinstance(detail, Unread) else VpnConnectionDetail.model_validate(detail)
    return build_snapshot(CONNECTION, answer, custom.items, bgp.items, pbr.items)


def _everything(snapshot: Snapshot) -> str:
    message = build_snapshot_reply(snapshot)
    return json.dumps(
        [message, event_to_json(SnapshotTaken(snapshot)), build_progress(SnapshotTaken(snapshot))]
    )


# --- models -> Snapshot ---------------------------------------------------------------------------


def test_snapshot_holds_what_recreating_needs_and_only_this_connections_routes() -> None:
    snap = _snapshot()
    assert (snap.vco_id, snap.name, snap.gateway_id, snap.customer_gateway_id) == (
        VCO,
        "office",  # the described connection, newer than the one recorded at request time
        "vpn-bp1gw0001",
        "cgw-bp1cg0001",
    )
    assert snap.taken
    assert snap.unread == ()
    config = snap.config
    assert config is not None
    assert config["local_subnet"] == "10.0.0.0/24,10.0.1.0/24"
    assert config["remote_subnet"] == "192.168.0.0/24"
    assert (config["enable_dpd"], config["enable_nat_traversal"]) == (True, False)
    assert config["ike_config"] == {
        "ike_version": "ikev2",
        "ike_mode": "main",
        "ike_enc_alg": "aes",
        "ike_auth_alg": "sha1",
        "ike_pfs": "group2",
        "ike_lifetime": 86400,
        "local_id": "116.62.0.1",
        "remote_id": "47.0.0.1",
    }
    assert config["ipsec_config"]["ipsec_lifetime"] == 3600
    assert config["bgp_config"] == {
        "enable_bgp": True,
        "local_asn": 45104,
        "tunnel_cidr": "169.254.1.0/30",
        "local_bgp_ip": "169.254.1.1",
    }
    assert config["health_check_config"]["dip"] == "10.0.0.9"
    assert config["tags"] == {"team": "netops"}
    # Each route with whether it was published to the VPC (State published / normal).
    assert snap.routes == (
        SnapshotRoute(
            kind="custom", destination="192.168.0.0/24", weight=100, description="dc", published=True
        ),
        SnapshotRoute(kind="bgp", destination="10.200.0.0/16", weight=100, description="dc", published=True),
        SnapshotRoute(
            kind="policy",
            destination="192.168.1.0/24",
            source="10.0.1.0/24",
            priority=5,
            weight=0,
            published=False,
        ),
    )


def test_what_create_cannot_carry_is_recorded_and_the_operation_tag_is_not_carried() -> None:
    tags = [
        {"Key": "team", "Value": "netops"},
        {"Key": "acs:rm:rgId", "Value": "rg-1"},
        {"Key": "aliyun-owner", "Value": "x"},
        {"Key": "vpnbot-operation", "Value": "an-earlier-recreation"},
    ]
    check = {**DETAIL["VcoHealthCheck"], "Policy": "reserve_route"}
    detail = {**DETAIL, "Tags": {"Tag": tags}, "ResourceGroupId": "rg-team", "VcoHealthCheck": check}
    snap = _snapshot(detail)
    assert snap.config is not None
    assert snap.config["tags"] == {"team": "netops"}
    assert snap.skipped_tags == ("acs:rm:rgId", "aliyun-owner")
    assert (snap.resource_group_id, snap.health_check_policy) == ("rg-team", "reserve_route")
    assert [n.part for n in snap.not_carried] == [
        "resource_group",
        "health_check_policy",
        "reserved_tags",
        "route_descriptions",
    ]
    # Twenty carried tags leave no place for the operation tag: the last is listed, not dropped silently.
    many = [{"Key": f"k{i:02d}", "Value": str(i)} for i in range(20)]
    snap = _snapshot({**DETAIL, "Tags": {"Tag": many}})
    assert snap.config is not None
    assert len(snap.config["tags"]) == 19
    assert snap.over_limit_tags == ("k19",)


def test_the_config_gives_back_the_create_spec_without_keys() -> None:
    for detail in (DETAIL, TUNNELS):
        snap = _snapshot(detail)
        assert snap.config is not None
        spec = VpnConnectionSpec.model_validate(snap.config)
        expected = VpnConnectionSpec.from_detail(VpnConnectionDetail.model_validate(detail))
        assert spec == expected
        params = spec.to_params()
        assert not [v for v in params.values() if any(s in v for s in SECRETS)]


def test_dual_tunnel_snapshot_keeps_each_tunnel_without_its_key() -> None:
    snap = _snapshot(TUNNELS)
    assert snap.config is not None
    tunnels = snap.config["tunnel_options_specification"]
    assert [(t["customer_gateway_id"], t["role"]) for t in tunnels] == [
        ("cgw-bp1cg0001", "master"),
        ("cgw-bp1cg0002", "slave"),
    ]
    assert tunnels[0]["tunnel_bgp_config"] == {"local_asn": 65001, "tunnel_cidr": "169.254.2.0/30"}
    assert tunnels[0]["tunnel_ike_config"] == {"ike_version": "ikev2", "ike_lifetime": 86400}
    assert snap.customer_gateway_id == "cgw-bp1cg0001,cgw-bp1cg0002"


def test_no_key_reaches_the_record_its_json_or_its_message() -> None:
    for detail in (DETAIL, TUNNELS):
        text = repr(_snapshot(detail)) + _everything(_snapshot(detail))
        for secret in SECRETS:
            assert secret not in text
        assert "**********" not in text  # not even a masked key: the record has no key field


def test_unread_parts_keep_their_reason_and_the_rest() -> None:
    forbidden = Unread(part="tunnel, BGP and health check", reason="not allowed", code="Forbidden")
    snap = _snapshot(forbidden)
    assert not snap.taken
    assert snap.unread_part(PART_CONFIGURATION) == Unread(
        part=PART_CONFIGURATION, reason="not allowed", code="Forbidden"
    )
    assert snap.name == "office (at request)"  # what the operation knew
    assert len(snap.routes) == 3

    custom = Unread(part=PART_ROUTES, reason="no answer within 5 s")
    policy = Unread(part=PART_POLICY_ROUTES, reason="throttled", code="Throttling")
    partial = build_snapshot(CONNECTION, VpnConnectionDetail.model_validate(DETAIL), custom, custom, policy)
    assert partial.taken
    assert [u.part for u in partial.unread] == [PART_ROUTES, PART_POLICY_ROUTES]
    assert partial.routes == ()


def test_a_config_create_would_refuse_is_unread_not_an_error() -> None:
    bad = {**DETAIL, "IkeConfig": {"IkeLifetime": 999999}}
    snap = _snapshot(bad)
    assert not snap.taken
    unread = snap.unread_part(PART_CONFIGURATION)
    assert unread is not None
    assert "CreateVpnConnection refuses" in unread.reason


# --- JSON round trip --------------------------------------------------------------------------------


def test_the_event_round_trips_through_json_text() -> None:
    for snap in (_snapshot(), _snapshot(TUNNELS), Snapshot.unavailable(CONNECTION, "no answer within 5 s")):
        event = SnapshotTaken(snapshot=snap)
        text = json.dumps(event_to_json(event))
        back = event_from_json(json.loads(text))
        assert back == event
        assert isinstance(back, SnapshotTaken)
        assert isinstance(back.snapshot.routes, tuple)
        assert all(isinstance(r, SnapshotRoute) for r in back.snapshot.routes)


# --- Snapshot -> Block Kit ----------------------------------------------------------------------------


def _valid(message: dict[str, Any]) -> None:
    assert message["text"].strip()
    assert len(message["blocks"]) <= 50
    for raw in message["blocks"]:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]
        if raw["type"] == "section":
            assert len(raw["text"]["text"]) <= SECTION_MAX


def _code_text(message: dict[str, Any]) -> str:
    sections = [b["text"]["text"] for b in message["blocks"][1:] if b["type"] == "section"]
    assert all(s.startswith("```\n") and s.endswith("\n```") for s in sections)
    return "\n".join(s[4:-4] for s in sections)


def test_the_reply_is_a_summary_then_the_configuration_as_yaml() -> None:
    message = build_thread_reply(SnapshotTaken(_snapshot()))
    _valid(message)
    summary = message["blocks"][0]["text"]["text"]
    assert summary.startswith(
        ":floppy_disk: *Configuration before the deletion* of `vco-bp1abc2def3gh` (`office`)"
    )
    assert "gateway `vpn-bp1gw0001`, customer gateway `cgw-bp1cg0001`, 3 routes pointed at it" in summary
    assert "Configuration before the deletion" in message["text"]
    document = yaml.safe_load(_code_text(message))
    assert document["connection"]["vpn_connection_id"] == VCO
    assert document["connection"]["ike_config"]["ike_version"] == "ikev2"
    assert document["routes"][2] == {
        "kind": "policy",
        "destination": "192.168.1.0/24",
        "source": "10.0.1.0/24",
        "priority": 5,
        "weight": 0,
    }


def test_a_snapshot_not_taken_says_why_and_shows_what_was_known() -> None:
    snap = Snapshot.unavailable(CONNECTION, "not allowed", code="Forbidden.RAM")
    message = build_snapshot_reply(snap)
    _valid(message)
    summary = message["blocks"][0]["text"]["text"]
    assert (
        "could not be taken before the deletion: not allowed (Alibaba Cloud code `Forbidden.RAM`)" in summary
    )
    assert "The deletion went on" in summary
    document = yaml.safe_load(_code_text(message))
    assert document["connection"]["vpn_gateway_id"] == "vpn-bp1gw0001"


def test_a_configuration_too_long_for_a_message_goes_as_a_yaml_file_with_a_summary() -> None:
    routes = tuple(
        SnapshotRoute(
            kind="policy",
            destination=f"10.{i // 256}.{i % 256}.0/24",
            source="172.16.0.0/12",
            description="<b>&" * 60,
        )
        for i in range(300)
    )
    snap = replace(_snapshot(), routes=routes)
    message = build_snapshot_reply(snap)
    _valid(message)
    # The message is the summary and a note, well within Slack's limit on a message's text.
    assert blocks_text_length(message["blocks"]) <= MESSAGE_BUDGET
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]
    assert "300 routes pointed at it" in message["blocks"][0]["text"]["text"]
    file = message[FILE_KEY]
    assert isinstance(file, SnapshotFile)
    assert file.filename == "vco-bp1abc2def3gh-configuration.yaml"
    assert f"`{file.filename}`" in message["blocks"][1]["elements"][0]["text"]
    # The file is the whole document, as YAML, unescaped (a file is not mrkdwn).
    assert file.content == snapshot_document(snap)
    assert len(yaml.safe_load(file.content)["routes"]) == 300


def test_a_long_line_is_cut_across_sections_never_inside_an_entity() -> None:
    long_value = "<b>&" * 700  # one line far longer than a section, all entities once escaped
    snap = replace(_snapshot(), routes=())
    assert snap.config is not None
    snap = replace(snap, config={**snap.config, "local_subnet": long_value})
    message = build_snapshot_reply(snap)
    _valid(message)
    assert FILE_KEY not in message
    assert len(message["blocks"]) > 4
    text = _code_text(message)
    assert "<" not in text
    assert "&amp;lt;" not in text  # escaped once
    for block in message["blocks"][1:]:
        inner = block["text"]["text"][4:-4]
        # Never cut inside an entity: every & starts a whole one, no piece starts with the rest of one.
        assert re.findall(r"&(?!amp;|lt;|gt;)", inner) == []
        assert re.match(r"(amp|mp|p|lt|gt|t);", inner) is None


def test_a_long_but_fitting_configuration_keeps_every_route() -> None:
    routes = tuple(SnapshotRoute(kind="custom", destination=f"10.1.{i}.0/24") for i in range(120))
    message = build_snapshot_reply(replace(_snapshot(), routes=routes))
    _valid(message)
    assert len(message["blocks"]) > 2
    document = yaml.safe_load(_code_text(message))
    assert len(document["routes"]) == 120
