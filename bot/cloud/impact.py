"""Build the impact preview (:class:`bot.domain.Impact`) from the VPC API's answers.

Each part is looked up on its own with a short deadline: a part that fails or is slow becomes an
:class:`bot.domain.Unread` with the reason, and never holds up the others. Only plain fields are
copied out of the pydantic models, so no Psk or BGP AuthKey can reach the record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from typing import Final, TypeVar

from bot.cloud.models import (
    TunnelBgpConfig,
    TunnelOptions,
    VpnBgpConfig,
    VpnConnectionDetail,
    VpnPbrRouteEntry,
    VpnRouteEntry,
)
from bot.domain import (
    PART_ROUTES,
    Impact,
    ImpactBgp,
    ImpactRoute,
    ImpactTunnel,
    Unread,
)
from bot.errors import CloudError

__all__ = [
    "ROUTES_KEPT",
    "build_impact",
    "may_learn_bgp_routes",
    "within",
]

log = logging.getLogger("bot.cloud")

# The card shows about 20; the record keeps a few more so a later design can show more.
ROUTES_KEPT: Final = 100

_T = TypeVar("_T")


async def within(part: str, deadline_s: float, lookup: Awaitable[_T]) -> _T | Unread:
    """Await ``lookup`` for at most ``deadline_s``; a CloudError or the deadline gives an Unread."""
    try:
        async with asyncio.timeout(deadline_s):
            return await lookup
    except TimeoutError:
        log.warning("impact part timed out", extra={"part": part, "deadline_s": deadline_s})
        return Unread(part=part, reason=f"no answer within {deadline_s:g} s")
    except CloudError as err:
        return Unread(part=part, reason=err.friendly, code=err.code)


def _asn(value: str | int | None) -> int | None:
    if isinstance(value, int):
        return value
    text = (value or "").strip()
    return int(text) if text.isdigit() else None


def _bgp(config: VpnBgpConfig | None) -> ImpactBgp | None:
    if config is None:
        return None
    # The list answer has no EnableBgp; a Status of "false" means BGP is off.
    enabled = config.enable_bgp if config.enable_bgp is not None else config.status not in (None, "", "false")
    if not enabled and config.peer_asn is None:
        return ImpactBgp(enabled=False)
    return ImpactBgp(
        enabled=bool(enabled),
        local_asn=config.local_asn,
        peer_asn=config.peer_asn,
        peer_ip=config.peer_bgp_ip or "",
        status=config.status or "",
    )


def _tunnel_bgp(config: TunnelBgpConfig | None) -> ImpactBgp | None:
    if config is None or (not config.local_asn and not config.peer_asn):
        return None
    return ImpactBgp(
        enabled=(config.bgp_status or "") not in ("", "false"),
        local_asn=_asn(config.local_asn),
        peer_asn=_asn(config.peer_asn),
        peer_ip=config.peer_bgp_ip or "",
        status=config.bgp_status or "",
    )


def _tunnel(tunnel: TunnelOptions) -> ImpactTunnel:
    return ImpactTunnel(
        index=tunnel.tunnel_index,
        role=tunnel.role or "",
        state=tunnel.state or "",
        status=tunnel.status or "",
        bgp=_tunnel_bgp(tunnel.tunnel_bgp_config),
    )


_OFF = ("", "false")


def may_learn_bgp_routes(detail: VpnConnectionDetail) -> bool:
    """Whether BGP may run on the connection, so that BGP routes may have it as next hop.

    Only a connection whose answer says BGP is off, and no tunnel of it says otherwise, has none:
    a route is learned by BGP through a connection only over its BGP session. An answer that
    says nothing either way counts as "may".
    """
    config = detail.vpn_bgp_config
    tunnels_on = any(
        t.tunnel_bgp_config is not None and (t.tunnel_bgp_config.bgp_status or "").lower() not in _OFF
        for t in detail.tunnels
    )
    if detail.enable_tunnels_bgp or tunnels_on or (config is not None and config.enable_bgp):
        return True
    single_off = config is not None and (
        config.enable_bgp is False or (config.enable_bgp is None and (config.status or "").lower() == "false")
    )
    return not (single_off or detail.enable_tunnels_bgp is False)


def _from_detail(detail: VpnConnectionDetail) -> Impact:
    check = detail.vco_health_check
    return Impact(
        status=detail.status,
        tunnels=tuple(_tunnel(t) for t in sorted(detail.tunnels, key=lambda t: t.tunnel_index or 0)),
        bgp=_bgp(detail.vpn_bgp_config),
        health_check=check.enable if check is not None else None,
        health_check_ip=(check.dip or "") if check is not None else "",
        attach_type=detail.attach_type or "",
        attach_instance_id=detail.attach_instance_id or detail.transit_router_id or "",
    )


def _routes_through(
    vco_id: str, routes: Sequence[VpnRouteEntry], policy: Sequence[VpnPbrRouteEntry]
) -> list[ImpactRoute]:
    found = [
        ImpactRoute(kind=(r.route_entry_type or "custom").lower(), destination=r.route_dest)
        for r in routes
        if r.next_hop == vco_id
    ]
    found += [
        ImpactRoute(kind="policy", destination=r.route_dest, source=r.route_source)
        for r in policy
        if r.next_hop == vco_id
    ]
    return found


def build_impact(
    vco_id: str,
    detail: VpnConnectionDetail | Unread,
    custom: list[VpnRouteEntry] | Unread,
    bgp: list[VpnRouteEntry] | Unread,
    policy: list[VpnPbrRouteEntry] | Unread,
) -> Impact:
    """The preview of deleting ``vco_id`` from what each sub-lookup gave (an answer or an Unread)."""
    unread: list[Unread] = []
    if isinstance(detail, Unread):
        unread.append(detail)
        base = Impact()
    else:
        base = _from_detail(detail)
    routes: list[VpnRouteEntry] = []
    for part in (custom, bgp):
        if isinstance(part, Unread):
            # Destination routes are one part to people, whichever of the two lists failed.
            if all(u.part != PART_ROUTES for u in unread):
                unread.append(Unread(part=PART_ROUTES, reason=part.reason, code=part.code))
        else:
            routes.extend(part)
    if isinstance(policy, Unread):
        unread.append(policy)
    through = _routes_through(vco_id, routes, [] if isinstance(policy, Unread) else policy)
    return dataclasses.replace(
        base,
        routes=tuple(through[:ROUTES_KEPT]),
        route_count=len(through),
        unread=tuple(unread),
    )
