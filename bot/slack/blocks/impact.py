"""The impact preview on the confirmation: is the tunnel up, which routes go through it, BGP."""

from __future__ import annotations

from bot.domain import (
    PART_CONNECTION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    Impact,
    ImpactBgp,
    ImpactRoute,
    ImpactTunnel,
)
from bot.slack.block_ids import BlockId
from bot.slack.blocks.text import ROUTES_SHOWN, Block, cap, code, escape, section_block

# --- the impact preview ---------------------------------------------------------------------------


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _routes_unread(impact: Impact) -> bool:
    return impact.unread_part(PART_ROUTES) is not None or impact.unread_part(PART_POLICY_ROUTES) is not None


def _peer_asns(impact: Impact) -> list[int]:
    peers = [impact.bgp] if impact.bgp is not None else []
    peers += [t.bgp for t in impact.tunnels if t.bgp is not None]
    return list(dict.fromkeys(p.peer_asn for p in peers if p.enabled and p.peer_asn is not None))


def impact_summary(impact: Impact) -> str:
    """The one-line risk summary, e.g. "Tunnel up · 3 routes go through it · BGP peer 65010"."""
    parts: list[str] = []
    if impact.unread_part(PART_CONNECTION) is not None:
        parts.append("Tunnel state unknown")
    elif impact.tunnels:
        up = sum(t.is_up for t in impact.tunnels)
        parts.append(f"{up} of {len(impact.tunnels)} tunnels up")
    else:
        parts.append("Tunnel up" if impact.is_up else "Tunnel down")
    n = impact.route_count
    if _routes_unread(impact):
        parts.append(
            f"at least {_plural(n, 'route', 'routes')} (some could not be read)" if n else "routes unknown"
        )
    else:
        parts.append(f"{_plural(n, 'route goes', 'routes go')} through it" if n else "no routes through it")
    peers = _peer_asns(impact)
    if peers:
        parts.append("BGP peer " + ", ".join(str(p) for p in peers))
    if impact.wider_attachment:
        parts.append(f"attached to {impact.attach_type or 'a transit router'}")
    return " · ".join(parts)


def _bgp_text(bgp: ImpactBgp) -> str:
    if not bgp.enabled:
        return "off"
    parts = ["on"]
    if bgp.local_asn is not None:
        parts.append(f"local ASN {bgp.local_asn}")
    if bgp.peer_asn is not None:
        parts.append(f"peer ASN {bgp.peer_asn}")
    if bgp.peer_ip:
        parts.append(f"peer IP {code(bgp.peer_ip, 64)}")
    if bgp.status:
        parts.append(f"status {code(bgp.status, 40)}")
    return " · ".join(parts)


def _tunnel_text(tunnel: ImpactTunnel) -> str:
    mark = ":large_green_circle:" if tunnel.is_up else ":white_circle:"
    label = f"Tunnel {tunnel.index}" if tunnel.index is not None else "Tunnel"
    parts = [f"{mark} {label}", f"role {code(tunnel.role or 'unknown', 40)}"]
    parts.append(f"state {code(tunnel.state or 'unknown', 40)}")
    parts.append(f"status {code(tunnel.status or 'unknown', 60)}")
    if tunnel.bgp is not None:
        parts.append(f"BGP {_bgp_text(tunnel.bgp)}")
    return " · ".join(parts)


def _unread_text(part: str, impact: Impact) -> str | None:
    unread = impact.unread_part(part)
    if unread is None:
        return None
    why = f"Alibaba Cloud code {code(unread.code, 80)}" if unread.code else escape(cap(unread.reason, 200))
    return f":grey_question: {escape(part[:1].upper() + part[1:])}: could not be read ({why})"


def _traffic_lines(impact: Impact) -> list[str]:
    if impact.is_up:
        lines = [
            ":large_green_circle: *The tunnel is up (IPsec established): traffic may be flowing through it "
            "right now.*"
        ]
    else:
        lines = [f":white_circle: The tunnel is not up ({code(impact.status or 'unknown', 60)})."]
    lines += [_tunnel_text(t) for t in impact.tunnels]
    if impact.bgp is not None:
        lines.append(f"*BGP:* {_bgp_text(impact.bgp)}")
    if impact.health_check is not None:
        target = f", probing {code(impact.health_check_ip, 64)}" if impact.health_check_ip else ""
        lines.append(f"*Health check:* {'on' + target if impact.health_check else 'off'}")
    return lines


def _impact_block(impact: Impact, *, later: bool) -> Block:
    when = " (at request time)" if later else ""
    lines = [f":rotating_light: *{impact_summary(impact)}*{when}"]
    unread = _unread_text(PART_CONNECTION, impact)
    lines += [unread] if unread else _traffic_lines(impact)
    if impact.wider_attachment:
        target = f" {code(impact.attach_instance_id)}" if impact.attach_instance_id else ""
        lines.append(
            f":warning: It is attached to {code(impact.attach_type or 'a transit router', 40)}{target}: "
            "deleting it also cuts what reaches it through that attachment, not just one tunnel."
        )
    return section_block("\n".join(lines), BlockId.IMPACT.value)


def _route_line(route: ImpactRoute) -> str:
    if route.kind == "policy":
        return f"• {code(route.destination, 64)} from {code(route.source, 64)} (policy-based)"
    kind = "BGP-learned" if route.kind == "bgp" else "destination-based"
    return f"• {code(route.destination, 64)} ({kind})"


def _routes_block(impact: Impact, *, later: bool) -> Block:
    when = " at request time" if later else ""
    shown = impact.routes[:ROUTES_SHOWN]
    if impact.route_count:
        lines = [f"*Routes through it{when}* ({impact.route_count}):"]
        lines += [_route_line(r) for r in shown]
        if impact.route_count > len(shown):
            lines.append(f"…and {impact.route_count - len(shown)} more")
    elif not _routes_unread(impact):
        lines = [f"*Routes through it{when}:* none on the gateway"]
    else:
        lines = [f"*Routes through it{when}:*"]
    lines += [t for t in (_unread_text(p, impact) for p in (PART_ROUTES, PART_POLICY_ROUTES)) if t]
    return section_block("\n".join(lines), BlockId.ROUTES.value)


def build_impact_blocks(impact: Impact | None, *, later: bool = False) -> list[Block]:
    """The preview's blocks: risk summary, tunnels, BGP, health check, attachment, then the routes."""
    if impact is None:
        return []
    return [_impact_block(impact, later=later), _routes_block(impact, later=later)]
