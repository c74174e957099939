"""The impact preview: Alibaba's answers -> Impact (no secrets), and Impact -> Block Kit within Slack's limits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import api_error
from slack_sdk.models.blocks import Block

from bot.cloud.impact import ROUTES_KEPT, build_impact, may_learn_bgp_routes, within
from bot.cloud.models import VpnConnectionDetail, VpnPbrRouteEntriesPage, VpnRouteEntriesPage
from bot.domain import (
    PART_POLICY_ROUTES,
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
from bot.slack.block_ids import BlockId
from bot.slack.blocks import ROUTES_SHOWN, build_confirmation, build_parent, impact_summary

VCO = "vco-bp1abc2def3gh"
PSK = "psk-must-never-show-9f8e"
AUTH_KEY = "bgp-md5-must-never-show-7d6c"
TUNNEL_PSK = "tunnel-psk-must-never-show-5b4a"
T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)

# DescribeVpnConnection as Alibaba documents it, secrets included (reference §3.2).
DETAIL: dict[str, Any] = {
    "RequestId": "R-1",
    "VpnConnectionId": VCO,
    "VpnGatewayId": "vpn-bp1gw0001",
    "Name": "office",
    "Status": "ipsec_sa_established",
    "AttachType": "CEN",
    "AttachInstanceId": "cen-bp1xyz",
    "IkeConfig": {"IkeVersion": "ikev2", "Psk": PSK},
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
}
TUNNELS: dict[str, Any] = {
    **DETAIL,
    "Status": "ipsec_sa_not_established",
    "VpnBgpConfig": {"EnableBgp": "false", "Status": "false"},
    "TunnelOptionsSpecification": {
        "TunnelOptions": [
            {
                "TunnelIndex": 2,
                "Role": "slave",
                "State": "active",
                "Status": "ipsec_sa_not_established",
                "TunnelIkeConfig": {"Psk": TUNNEL_PSK, "IkeLifetime": "86400"},
                "TunnelBgpConfig": {"BgpStatus": "", "LocalAsn": "", "PeerAsn": ""},
            },
            {
                "TunnelIndex": 1,
                "Role": "master",
                "State": "active",
                "Status": "ipsec_sa_established",
                "TunnelIkeConfig": {"Psk": TUNNEL_PSK},
                "TunnelBgpConfig": {
                    "BgpStatus": "success",
                    "LocalAsn": "65001",
                    "PeerAsn": "65020",
                    "PeerBgpIp": "169.254.2.2",
                },
            },
        ]
    },
}


def _routes(*items: tuple[str, str, str]) -> VpnRouteEntriesPage:
    entries = [{"RouteDest": d, "NextHop": hop, "RouteEntryType": kind} for d, hop, kind in items]
    return VpnRouteEntriesPage.model_validate({"VpnRouteEntries": {"VpnRouteEntry": entries}})


def _pbr(*items: tuple[str, str, str]) -> VpnPbrRouteEntriesPage:
    entries = [{"RouteSource": s, "RouteDest": d, "NextHop": hop} for s, d, hop in items]
    return VpnPbrRouteEntriesPage.model_validate({"VpnPbrRouteEntries": {"VpnPbrRouteEntry": entries}})


def _impact(detail: dict[str, Any] = DETAIL) -> Impact:
    custom = _routes(("192.168.0.0/24", VCO, "custom"), ("192.168.9.0/24", "vco-other", "custom"))
    bgp = _routes(("10.200.0.0/16", VCO, "bgp"), ("10.99.0.0/16", "vco-other", "bgp"))
    pbr = _pbr(("10.0.1.0/24", "192.168.1.0/24", VCO), ("10.0.2.0/24", "192.168.2.0/24", "vco-other"))
    return build_impact(VCO, VpnConnectionDetail.model_validate(detail), custom.items, bgp.items, pbr.items)


# --- models -> Impact ----------------------------------------------------------------------------------


def test_impact_from_the_answers_keeps_only_this_connections_routes() -> None:
    impact = _impact()

    assert impact.routes == (
        ImpactRoute(kind="custom", destination="192.168.0.0/24"),
        ImpactRoute(kind="bgp", destination="10.200.0.0/16"),
        ImpactRoute(kind="policy", destination="192.168.1.0/24", source="10.0.1.0/24"),
    )
    assert impact.route_count == 3
    assert impact.bgp == ImpactBgp(
        enabled=True, local_asn=45104, peer_asn=65010, peer_ip="169.254.1.2", status="success"
    )
    assert (impact.health_check, impact.health_check_ip) == (True, "10.0.0.9")
    assert impact.is_up
    assert impact.wider_attachment
    assert impact.unread == ()


def test_dual_tunnels_are_ordered_with_their_own_bgp() -> None:
    impact = _impact(TUNNELS)

    assert [(t.index, t.role, t.status) for t in impact.tunnels] == [
        (1, "master", "ipsec_sa_established"),
        (2, "slave", "ipsec_sa_not_established"),
    ]
    assert impact.tunnels[0].bgp == ImpactBgp(
        enabled=True, local_asn=65001, peer_asn=65020, peer_ip="169.254.2.2", status="success"
    )
    assert impact.tunnels[1].bgp is None
    assert impact.bgp == ImpactBgp(enabled=False)
    assert impact.is_up  # the master tunnel is up although the connection's own status is not


def test_no_secret_reaches_the_record_or_its_json() -> None:
    for detail in (DETAIL, TUNNELS):
        impact = _impact(detail)
        for text in (repr(impact), str(impact), json.dumps(asdict(impact))):
            for secret in (PSK, AUTH_KEY, TUNNEL_PSK):
                assert secret not in text


def test_unread_parts_carry_their_reason_and_the_rest_still_shows() -> None:
    forbidden = Unread(part=PART_ROUTES, reason="not allowed", code="Forbidden")
    late = Unread(part=PART_POLICY_ROUTES, reason="no answer within 3 s")
    detail = VpnConnectionDetail.model_validate(DETAIL)
    impact = build_impact(VCO, detail, forbidden, _routes(("10.200.0.0/16", VCO, "bgp")).items, late)

    assert impact.unread == (forbidden, late)
    assert impact.routes == (ImpactRoute(kind="bgp", destination="10.200.0.0/16"),)
    assert impact.bgp is not None
    assert impact.bgp.peer_asn == 65010


def test_the_record_keeps_a_bounded_number_of_routes_and_the_total() -> None:
    many = _routes(*((f"10.{n // 250}.{n % 250}.0/24", VCO, "custom") for n in range(300)))
    impact = build_impact(VCO, VpnConnectionDetail.model_validate(DETAIL), many.items, [], [])
    assert impact.route_count == 300
    assert len(impact.routes) == ROUTES_KEPT


async def test_within_turns_errors_and_deadlines_into_unread() -> None:
    async def refused() -> int:
        raise api_error("Forbidden.RAM", http_status=403)

    async def answers() -> int:
        return 7

    assert await within("routes", 1.0, answers()) == 7
    unread = await within("routes", 1.0, refused())
    assert isinstance(unread, Unread)
    assert unread.code == "Forbidden.RAM"
    never = await within("routes", 0.01, asyncio.Event().wait())
    assert never == Unread(part="routes", reason="no answer within 0.01 s")


# --- Impact -> Block Kit -----------------------------------------------------------------------------


def _op(impact: Impact | None, **overrides: Any) -> Operation:
    conn = VpnConnection(
        id=VCO,
        region="cn-hangzhou",
        name="office",
        gateway_id="vpn-bp1gw0001",
        customer_gateway_id="cgw-1",
        status="ipsec_sa_established",
        local_subnet="10.0.0.0/24",
        remote_subnet="192.168.0.0/16",
    )
    base = Operation(
        id="op-1",
        state=OpState.AWAITING_APPROVAL,
        region="cn-hangzhou",
        connection=conn,
        gateway=VpnGateway(id="vpn-bp1gw0001", region="cn-hangzhou", name="gw", status="active"),
        requester_id="U0REQUEST",
        channel_id="C0CHANNEL",
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        client_token="tok-1",
        impact=impact,
    )
    return replace(base, **overrides)


def _valid(message: dict[str, Any]) -> dict[str, Any]:
    """Check every block with slack_sdk's models (lengths, counts) and return the message."""
    assert message["text"].strip()
    assert len(message["blocks"]) <= 50
    for raw in message["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
        assert block.to_dict() == raw
    return message


def _block(message: dict[str, Any], block_id: BlockId) -> str:
    found = [b for b in message["blocks"] if b.get("block_id") == block_id.value]
    assert len(found) == 1
    return str(found[0]["text"]["text"])


def test_confirmation_shows_risk_summary_tunnel_bgp_health_check_attachment_and_routes() -> None:
    message = _valid(build_confirmation(_op(_impact())))
    impact_text = _block(message, BlockId.IMPACT)
    routes_text = _block(message, BlockId.ROUTES)

    assert (
        impact_summary(_impact()) == "Tunnel up · 3 routes go through it · BGP peer 65010 · attached to CEN"
    )
    assert impact_text.startswith(":rotating_light: *Tunnel up · 3 routes go through it · BGP peer 65010")
    assert "traffic may be flowing through it right now" in impact_text
    assert "local ASN 45104" in impact_text
    assert "peer IP `169.254.1.2`" in impact_text
    assert "*Health check:* on, probing `10.0.0.9`" in impact_text
    assert ":warning: It is attached to `CEN` `cen-bp1xyz`" in impact_text
    assert "`192.168.0.0/24` (destination-based)" in routes_text
    assert "`10.200.0.0/16` (BGP-learned)" in routes_text
    assert "`192.168.1.0/24` from `10.0.1.0/24` (policy-based)" in routes_text
    assert "192.168.9.0/24" not in json.dumps(message)  # another connection's route
    assert "Tunnel up · 3 routes go through it" in message["text"]
    assert "at request time" not in json.dumps(message)


def test_dual_tunnel_card_lists_each_tunnel() -> None:
    message = _valid(build_confirmation(_op(_impact(TUNNELS))))
    impact_text = _block(message, BlockId.IMPACT)
    assert "1 of 2 tunnels up" in impact_text
    assert (
        ":large_green_circle: Tunnel 1 · role `master` · state `active` · status `ipsec_sa_established`"
        in impact_text
    )
    assert (
        ":white_circle: Tunnel 2 · role `slave` · state `active` · status `ipsec_sa_not_established`"
        in impact_text
    )
    assert "BGP peer 65020" in impact_text


def test_unread_parts_say_could_not_be_read_with_the_code() -> None:
    impact = Impact(
        status="ipsec_sa_established",
        unread=(
            Unread(part=PART_ROUTES, reason="x", code="Forbidden"),
            Unread(part=PART_POLICY_ROUTES, reason="no answer within 3 s"),
        ),
    )
    message = _valid(build_confirmation(_op(impact)))
    routes_text = _block(message, BlockId.ROUTES)
    assert "Routes: could not be read (Alibaba Cloud code `Forbidden`)" in routes_text
    assert "Policy-based routes: could not be read (no answer within 3 s)" in routes_text
    assert "routes unknown" in _block(message, BlockId.IMPACT)

    nothing = _valid(build_confirmation(_op(Impact.unavailable("no answer within 4 s"))))
    assert "Tunnel, BGP and health check: could not be read" in _block(nothing, BlockId.IMPACT)
    assert "Tunnel state unknown" in nothing["text"]


def test_a_quiet_connection_says_so() -> None:
    impact = Impact(status="ike_sa_not_established", bgp=ImpactBgp(enabled=False), health_check=False)
    message = _valid(build_confirmation(_op(impact)))
    assert impact_summary(impact) == "Tunnel down · no routes through it"
    text = _block(message, BlockId.IMPACT)
    assert "The tunnel is not up (`ike_sa_not_established`)" in text
    assert "*BGP:* off" in text
    assert "*Health check:* off" in text
    assert "none on the gateway" in _block(message, BlockId.ROUTES)


@pytest.mark.parametrize("state", [OpState.APPROVED, OpState.DELETED, OpState.FAILED, OpState.CANCELLED])
def test_later_cards_keep_the_preview_labelled_at_request_time(state: OpState) -> None:
    op = _op(_impact(), state=state, approver_id="U0APPROVER", approved_at=T0, finished_at=T0)
    message = _valid(build_parent(op))
    assert "(at request time)" in _block(message, BlockId.IMPACT)
    assert "*Routes through it at request time* (3)" in _block(message, BlockId.ROUTES)


def test_an_operation_without_a_preview_renders_as_before() -> None:
    message = _valid(build_confirmation(_op(None)))
    ids = [b.get("block_id") for b in message["blocks"]]
    assert BlockId.IMPACT.value not in ids
    assert BlockId.ROUTES.value not in ids


def test_limits_200_routes_at_alibabas_longest_cidrs_and_names() -> None:
    cidr6 = "2001:0db8:85a3:0000:0000:8a2e:0370:{:04x}/128"  # 43 characters, the longest CIDR
    routes = tuple(
        ImpactRoute(
            kind="policy" if n % 2 else "custom", destination=cidr6.format(n), source=cidr6.format(n + 1)
        )
        for n in range(ROUTES_KEPT)
    )
    tunnels = tuple(
        ImpactTunnel(
            index=i,
            role="r" * 100,
            state="s" * 100,
            status="t" * 100,
            bgp=ImpactBgp(True, 4294967295, 4294967294, "f" * 45, "u" * 100),
        )
        for i in (1, 2)
    )
    impact = Impact(
        status="ipsec_sa_established",
        tunnels=tunnels,
        bgp=ImpactBgp(True, 4294967295, 4294967294, "f" * 45, "u" * 100),
        health_check=True,
        health_check_ip="f" * 45,
        attach_type="CEN",
        attach_instance_id="cen-" + "x" * 200,
        routes=routes,
        route_count=200,
        unread=(Unread(part=PART_ROUTES, reason="r" * 5000, code="C" * 300),),
    )
    long_name = "n" * 128  # Alibaba's connection and gateway names are at most 128 characters
    op = _op(
        impact,
        connection=replace(_op(None).connection, name=long_name),
        gateway=VpnGateway(id="vpn-bp1gw0001", region="cn-hangzhou", name=long_name, status="active"),
    )
    for message in (build_confirmation(op), build_parent(replace(op, state=OpState.DELETED, finished_at=T0))):
        _valid(message)
        routes_text = _block(message, BlockId.ROUTES)
        assert routes_text.count("• ") == ROUTES_SHOWN
        assert f"…and {200 - ROUTES_SHOWN} more" in routes_text
        assert len(routes_text) <= 3000


def test_names_and_values_from_the_api_are_escaped() -> None:
    evil = "<!channel> & <@U1>"
    impact = Impact(
        status=evil,
        tunnels=(ImpactTunnel(index=1, role=evil, state=evil, status=evil),),
        attach_type="CEN",
        attach_instance_id=evil,
        routes=(ImpactRoute(kind="policy", destination=evil, source=evil),),
        route_count=1,
        unread=(Unread(part=PART_POLICY_ROUTES, reason=evil),),
    )
    message = _valid(build_confirmation(_op(impact)))
    assert "<!channel>" not in json.dumps(message)
    assert "&lt;!channel&gt;" in _block(message, BlockId.ROUTES)
    assert "role `&lt;!channel&gt; &amp; &lt;@U1&gt;`" in _block(message, BlockId.IMPACT)


# --- which connections can have BGP routes through them ----------------------------------------------


@pytest.mark.parametrize(
    ("answer", "may"),
    [
        ({"VpnBgpConfig": {"EnableBgp": "false", "Status": "false"}}, False),
        ({"EnableTunnelsBgp": False}, False),
        ({"VpnBgpConfig": {"Status": "false"}}, False),  # the list answer's shape
        ({"VpnBgpConfig": {"EnableBgp": "true", "Status": "success"}}, True),
        ({"EnableTunnelsBgp": True}, True),
        (
            {
                "EnableTunnelsBgp": False,
                "TunnelOptionsSpecification": {
                    "TunnelOptions": [{"TunnelIndex": 1, "TunnelBgpConfig": {"BgpStatus": "success"}}]
                },
            },
            True,
        ),
        ({}, True),  # says nothing either way: may
        ({"VpnBgpConfig": {}}, True),
    ],
)
def test_only_a_connection_that_says_bgp_is_off_has_no_bgp_routes(answer: dict[str, Any], may: bool) -> None:
    detail = VpnConnectionDetail.model_validate({"VpnConnectionId": VCO, **answer})
    assert may_learn_bgp_routes(detail) is may
