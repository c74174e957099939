"""The approval's binding to the preview (bot.workflow.binding): what counts as a change, and how it is said."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from bot.domain import (
    IPSEC_UP,
    PART_CONNECTION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    Impact,
    ImpactBgp,
    ImpactRoute,
    ImpactTunnel,
    Unread,
    VpnConnection,
    VpnGateway,
)
from bot.workflow.binding import canonical, diff, fingerprint, short, unverified

MINUS = "\N{MINUS SIGN}"
GATEWAY = VpnGateway(id="vpn-1", region="cn-hangzhou", name="hz-edge", status="active")
CONNECTION = VpnConnection(
    id="vco-1",
    region="cn-hangzhou",
    name="office",
    gateway_id="vpn-1",
    customer_gateway_id="cgw-1",
    status=IPSEC_UP,
    local_subnet="10.0.0.0/24,10.0.1.0/24",
    remote_subnet="192.168.0.0/24",
)
ROUTES = (
    ImpactRoute(kind="custom", destination="10.3.0.0/16"),
    ImpactRoute(kind="bgp", destination="10.4.0.0/16"),
    ImpactRoute(kind="policy", destination="10.5.0.0/16", source="10.6.0.0/16"),
)
IMPACT = Impact(
    status=IPSEC_UP,
    bgp=ImpactBgp(enabled=True, local_asn=45104, peer_asn=65001, peer_ip="169.254.1.2", status="success"),
    health_check=True,
    health_check_ip="10.0.0.9",
    routes=ROUTES,
    route_count=3,
)


def _print(
    impact: Impact = IMPACT,
    gateway: VpnGateway | None = GATEWAY,
    connection: VpnConnection | None = CONNECTION,
) -> str:
    return fingerprint(impact, gateway, connection)


def _diff(
    now: Impact = IMPACT, gateway: VpnGateway | None = GATEWAY, connection: VpnConnection | None = CONNECTION
) -> list[str]:
    return diff(canonical(IMPACT, GATEWAY, CONNECTION), canonical(now, gateway, connection))


def test_the_fingerprint_is_a_stable_sha256_shown_in_eight_digits() -> None:
    value = _print()
    assert len(value) == 64
    assert int(value, 16) >= 0
    assert value == _print()
    assert short(value) == value[:8]


def test_what_does_not_matter_keeps_the_fingerprint() -> None:
    same = [
        # The routes in another order, the subnets too.
        dataclasses.replace(IMPACT, routes=tuple(reversed(ROUTES))),
        # Another word for up-ness unchanged: the tunnel stays up.
        dataclasses.replace(IMPACT, tunnels=()),
    ]
    for impact in same:
        assert _print(impact) == _print()
    assert (
        _print(connection=dataclasses.replace(CONNECTION, local_subnet="10.0.1.0/24, 10.0.0.0/24"))
        == _print()
    )
    # The connection's status words and the gateway's state are not what was approved.
    assert _print(connection=dataclasses.replace(CONNECTION, status="ipsec_sa_not_established")) == _print()
    assert (
        _print(gateway=dataclasses.replace(GATEWAY, status="updating", business_status="FinancialLocked"))
        == _print()
    )
    down = dataclasses.replace(IMPACT, status="ike_sa_not_established")
    assert _print(down) == _print(dataclasses.replace(IMPACT, status="ipsec_sa_not_established"))
    # A tunnel's role and state words.
    tunnel = ImpactTunnel(index=1, role="master", state="active", status=IPSEC_UP)
    dual = dataclasses.replace(IMPACT, tunnels=(tunnel,))
    swapped = dataclasses.replace(IMPACT, tunnels=(dataclasses.replace(tunnel, role="slave", state="init"),))
    assert _print(dual) == _print(swapped)


def test_each_change_that_matters_changes_the_fingerprint_and_says_what() -> None:
    added = dataclasses.replace(IMPACT, routes=(*ROUTES[1:], ImpactRoute("custom", "10.2.0.0/16")))
    assert _print(added) != _print()
    assert _diff(added) == [f"routes: +10.2.0.0/16, {MINUS}10.3.0.0/16"]

    down = dataclasses.replace(IMPACT, status="ike_sa_not_established")
    assert _diff(down) == ["tunnel: up → down"]

    tunnel = ImpactTunnel(index=1, role="master", state="active", status="ipsec_sa_not_established")
    before = dataclasses.replace(IMPACT, tunnels=(tunnel,))
    after = dataclasses.replace(IMPACT, tunnels=(dataclasses.replace(tunnel, status=IPSEC_UP),))
    assert diff(canonical(before, GATEWAY, CONNECTION), canonical(after, GATEWAY, CONNECTION)) == [
        "tunnel 1: down → up"
    ]

    assert _diff(dataclasses.replace(IMPACT, bgp=ImpactBgp(enabled=False))) == [
        "BGP: on local ASN 45104 peer ASN 65001 peer IP 169.254.1.2 status success → off"
    ]
    assert _diff(dataclasses.replace(IMPACT, health_check=False)) == [
        "health check: on, probing 10.0.0.9 → off"
    ]
    assert _diff(dataclasses.replace(IMPACT, attach_type="CEN", attach_instance_id="cen-1")) == [
        "attachment: none → CEN cen-1"
    ]
    assert _diff(connection=dataclasses.replace(CONNECTION, customer_gateway_id="cgw-2")) == [
        "connection customer gateway id: cgw-1 → cgw-2"
    ]
    assert _diff(
        connection=dataclasses.replace(CONNECTION, remote_subnet="192.168.0.0/24,192.168.9.0/24")
    ) == ["connection remote subnets: +192.168.9.0/24"]
    assert _diff(gateway=dataclasses.replace(GATEWAY, name="decommissioned")) == [
        "gateway name: hz-edge → decommissioned"
    ]
    more = dataclasses.replace(IMPACT, route_count=140)
    assert _diff(more) == ["routes through it: 3 → 140"]


def test_many_routes_are_named_up_to_six() -> None:
    many = tuple(ImpactRoute("custom", f"10.{n}.0.0/16") for n in range(10, 20))
    lines = _diff(dataclasses.replace(IMPACT, routes=(*ROUTES, *many), route_count=13))
    assert lines[0].startswith("routes: +10.10.0.0/16, +10.11.0.0/16")
    assert lines[0].endswith("+4 more")


def test_a_part_unread_now_is_unverified_never_unchanged() -> None:
    approved = canonical(IMPACT, GATEWAY, CONNECTION)
    routes_unread = dataclasses.replace(
        IMPACT, routes=ROUTES[2:], route_count=1, unread=(Unread(PART_ROUTES, "no answer within 5 s"),)
    )
    now = canonical(routes_unread, GATEWAY, CONNECTION)
    assert unverified(approved, now) == [PART_ROUTES]
    assert _print(routes_unread) != _print()
    # The policy routes, read both times, are still compared; the unread kinds are said as such.
    assert diff(approved, now) == [f"{PART_ROUTES}: could not be read now"]

    nothing = canonical(Impact.unavailable("no answer"), None, None)
    assert unverified(approved, nothing) == [
        "connection",
        "gateway",
        PART_POLICY_ROUTES,
        PART_ROUTES,
        PART_CONNECTION,
    ]
    lines = diff(approved, nothing)
    assert "connection: could not be read now" in lines
    assert f"{PART_CONNECTION}: could not be read now" in lines
    assert not any("→" in line for line in lines)  # no made-up "up → down" from unread defaults


def test_a_part_unread_for_the_approval_too_was_approved_unread() -> None:
    unread = (Unread(PART_POLICY_ROUTES, "not allowed", "Forbidden"),)
    shown = dataclasses.replace(IMPACT, routes=ROUTES[:2], route_count=2, unread=unread)
    approved = canonical(shown, GATEWAY, CONNECTION)
    # Another reason, the same part: nothing the approver saw has changed.
    again = dataclasses.replace(shown, unread=(Unread(PART_POLICY_ROUTES, "no answer within 5 s"),))
    assert unverified(approved, canonical(again, GATEWAY, CONNECTION)) == []
    assert _print(shown) == _print(again)
    # Read now: the approver did not see these routes, so it is a change.
    assert diff(approved, canonical(IMPACT, GATEWAY, CONNECTION)) == [
        f"{PART_POLICY_ROUTES}: could not be read before, read now"
    ]


def test_a_request_from_before_the_preview_is_bound_to_the_rest() -> None:
    assert fingerprint(None, GATEWAY, CONNECTION) == fingerprint(None, GATEWAY, CONNECTION)
    assert diff(canonical(None, GATEWAY, CONNECTION), canonical(None, GATEWAY, CONNECTION)) == []


_cidr = st.builds("10.{}.{}.0/24".format, st.integers(0, 255), st.integers(0, 255))
_route = st.builds(
    ImpactRoute,
    kind=st.sampled_from(["custom", "bgp", "policy"]),
    destination=_cidr,
    source=_cidr,
)
_tunnel = st.builds(
    ImpactTunnel,
    index=st.integers(1, 2),
    role=st.sampled_from(["master", "slave"]),
    state=st.sampled_from(["active", "init"]),
    status=st.sampled_from([IPSEC_UP, "ipsec_sa_not_established"]),
)
_impact = st.builds(
    Impact,
    status=st.sampled_from([IPSEC_UP, "ike_sa_not_established"]),
    tunnels=st.lists(_tunnel, max_size=2, unique_by=lambda t: t.index).map(tuple),
    health_check=st.sampled_from([None, True, False]),
    routes=st.lists(_route, max_size=8).map(tuple),
    route_count=st.integers(0, 8),
    unread=st.lists(
        st.sampled_from([PART_ROUTES, PART_POLICY_ROUTES, PART_CONNECTION]).map(lambda p: Unread(p, "x")),
        max_size=3,
        unique_by=lambda u: u.part,
    ).map(tuple),
)


@given(_impact, st.randoms(use_true_random=False))
def test_order_never_matters(impact: Impact, rnd: object) -> None:
    routes = list(impact.routes)
    rnd.shuffle(routes)  # type: ignore[attr-defined]
    unread = list(impact.unread)
    rnd.shuffle(unread)  # type: ignore[attr-defined]
    shuffled = dataclasses.replace(impact, routes=tuple(routes), unread=tuple(unread))
    assert fingerprint(impact, GATEWAY, CONNECTION) == fingerprint(shuffled, GATEWAY, CONNECTION)


@given(_impact, _impact)
def test_the_fingerprints_differ_exactly_when_there_is_something_to_say(a: Impact, b: Impact) -> None:
    before, after = canonical(a, GATEWAY, CONNECTION), canonical(b, GATEWAY, CONNECTION)
    same = fingerprint(a, GATEWAY, CONNECTION) == fingerprint(b, GATEWAY, CONNECTION)
    assert same == (before == after)
    lines = diff(before, after)
    assert (lines == []) == same
    assert all(line and "\n" not in line for line in lines)
    assert "the preview changed" not in lines  # every difference has a line of its own
