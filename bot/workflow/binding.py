"""An approval bound to what was previewed: the preview's fingerprint, and what changed since.

A click on *Delete* approves the card: the connection's configuration, the routes through it, its
tunnels and BGP, its gateway. :func:`fingerprint` reduces that to a stable hash of a canonical JSON
(:func:`canonical`) of only what matters; it is stored with the request and shown on the card in
short form (:func:`short`). Just before DeleteVpnConnection the workflow reads it all again, afresh,
and compares (:func:`unverified` first: a part that cannot be read now is never "unchanged");
:func:`diff` says what changed in short plain-text lines, which the Slack layer renders inert.

What matters: the connection's id, name, gateway, customer gateway, local and remote subnets; each
tunnel up or down (and the connection's, without tunnels); BGP (on or off, ASNs, peer IP, status) on
the connection and each tunnel; the health check (on or off, what it probes); the attachment (CEN,
transit router); the routes through the connection (kind, destination, source of a policy route)
and how many there are; the gateway's id and name; which parts could not be read.

What does not: traffic counters and timestamps (not in the preview at all), the order routes come
in, the status words that do not change up or down (``ike_sa_not_established`` and
``ipsec_sa_not_established`` are both down), a tunnel's role and state, the gateway's status (it is
``updating`` whenever anything changes on it; a busy gateway is waited for, see
:mod:`bot.workflow.delete`), its specification and billing.

Pure: records in, values out; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bot.domain import (
    IPSEC_UP,
    PART_CONNECTION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    Impact,
    ImpactBgp,
    VpnConnection,
    VpnGateway,
)

__all__ = ["canonical", "diff", "fingerprint", "short", "unverified"]

# Bumped if what counts changes: a fingerprint of another version never equals this one's.
_VERSION = 1
# The card and the thread show this many hex digits of the fingerprint.
SHORT = 8
_MINUS = "\N{MINUS SIGN}"
# Routes named in one diff line; past it, "and N more".
_ROUTES_NAMED = 6
# Canonical route kinds by the preview part that reads them.
_ROUTE_PART = {"custom": PART_ROUTES, "bgp": PART_ROUTES, "policy": PART_POLICY_ROUTES}


def _subnets(value: str) -> list[str]:
    # "10.0.0.0/24,10.1.0.0/24": a set; the order Alibaba lists them in does not matter.
    return sorted({part.strip() for part in value.split(",") if part.strip()})


def _bgp(bgp: ImpactBgp | None) -> dict[str, Any] | None:
    if bgp is None:
        return None
    if not bgp.enabled:
        return {"on": False}
    return {
        "on": True,
        "local_asn": bgp.local_asn,
        "peer_asn": bgp.peer_asn,
        "peer_ip": bgp.peer_ip,
        "status": bgp.status,
    }


def _impact(impact: Impact) -> dict[str, Any]:
    unread = sorted({u.part for u in impact.unread})
    # The routes of a part that could not be read are at best some of them: the part is "unread".
    read = {
        (r.kind, r.destination, r.source)
        for r in impact.routes
        if _ROUTE_PART.get(r.kind, PART_ROUTES) not in unread
    }
    values: dict[str, Any] = {
        "unread": unread,
        "routes": [list(r) for r in sorted(read)],
        "route_count": None if {PART_ROUTES, PART_POLICY_ROUTES} & set(unread) else impact.route_count,
    }
    if PART_CONNECTION in unread:
        # Not read: its defaults (a tunnel "down", no BGP) must not pass for what was read.
        return values
    tunnels = sorted(impact.tunnels, key=lambda t: (t.index is None, t.index or 0))
    values.update(
        {
            "up": impact.status == IPSEC_UP if not tunnels else None,
            "tunnels": [{"index": t.index, "up": t.is_up, "bgp": _bgp(t.bgp)} for t in tunnels],
            "bgp": _bgp(impact.bgp),
            "health_check": {"on": impact.health_check, "ip": impact.health_check_ip},
            "attachment": {"type": impact.attach_type.upper(), "instance": impact.attach_instance_id},
        }
    )
    return values


def canonical(
    impact: Impact | None, gateway: VpnGateway | None, connection: VpnConnection | None
) -> dict[str, Any]:
    """The preview as plain JSON values, only what matters, in one order (None: could not be read).

    ``impact`` None is a request from before the preview existed: its approval covers the rest.
    """
    values: dict[str, Any] = {"v": _VERSION}
    values["connection"] = (
        None
        if connection is None
        else {
            "id": connection.id,
            "name": connection.name,
            "gateway_id": connection.gateway_id,
            "customer_gateway_id": connection.customer_gateway_id,
            "local_subnets": _subnets(connection.local_subnet),
            "remote_subnets": _subnets(connection.remote_subnet),
        }
    )
    values["gateway"] = None if gateway is None else {"id": gateway.id, "name": gateway.name}
    values["impact"] = None if impact is None else _impact(impact)
    return values


def fingerprint(impact: Impact | None, gateway: VpnGateway | None, connection: VpnConnection | None) -> str:
    """The SHA-256 (hex) of the canonical JSON of the preview: equal exactly when nothing that matters differs."""
    text = json.dumps(canonical(impact, gateway, connection), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def short(value: str) -> str:
    """The fingerprint as the card shows it: its first eight hex digits."""
    return value[:SHORT]


def unverified(approved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The parts that could not be read now although they were read for the approval.

    Such a part is never taken as unchanged: the workflow reads again, then asks again. A part that
    could not be read for the approval either (the card said so, and it was approved that way) and
    still cannot is not listed: nothing the approver saw has changed.
    """
    missing: list[str] = []
    for key, label in (("connection", "connection"), ("gateway", "gateway")):
        if now.get(key) is None and approved.get(key) is not None:
            missing.append(label)
    before, after = approved.get("impact"), now.get("impact")
    if isinstance(after, dict):
        was_unread = set(before["unread"]) if isinstance(before, dict) else set()
        missing += [part for part in after["unread"] if part not in was_unread]
    return missing


def _route_text(route: list[str]) -> str:
    kind, destination, source = route
    if kind == "policy":
        return f"{destination} from {source}"
    return f"{destination} (BGP)" if kind == "bgp" else destination


def _named(prefix: str, routes: list[list[str]]) -> list[str]:
    named = [prefix + _route_text(r) for r in routes[:_ROUTES_NAMED]]
    if len(routes) > _ROUTES_NAMED:
        named.append(f"{prefix}{len(routes) - _ROUTES_NAMED} more")
    return named


def _routes_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    # Only the kinds read both times are compared; a part unread on one side is said on its own.
    unread = set(before["unread"]) | set(after["unread"])

    def read(routes: list[list[str]]) -> list[tuple[str, ...]]:
        return [tuple(r) for r in routes if _ROUTE_PART.get(r[0], PART_ROUTES) not in unread]

    old, new = set(read(before["routes"])), set(read(after["routes"]))
    added = sorted(new - old)
    removed = sorted(old - new)
    lines: list[str] = []
    if added or removed:
        parts = _named("+", [list(r) for r in added]) + _named(_MINUS, [list(r) for r in removed])
        lines.append("routes: " + ", ".join(parts))
    counts = (before["route_count"], after["route_count"])
    # None when a route part was unread: that part's own line says so.
    if counts[0] != counts[1] and None not in counts and not lines:  # beyond the routes kept
        lines.append(f"routes through it: {before['route_count']} → {after['route_count']}")
    return lines


def _updown(up: bool | None) -> str:
    return "unknown" if up is None else ("up" if up else "down")


def _bgp_text(bgp: dict[str, Any] | None) -> str:
    if bgp is None:
        return "none"
    if not bgp["on"]:
        return "off"
    parts = ["on"]
    for key, label in (("local_asn", "local ASN"), ("peer_asn", "peer ASN"), ("peer_ip", "peer IP")):
        if bgp.get(key):
            parts.append(f"{label} {bgp[key]}")
    if bgp.get("status"):
        parts.append(f"status {bgp['status']}")
    return " ".join(parts)


def _tunnels_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if before.get("up") != after.get("up"):
        lines.append(f"tunnel: {_updown(before.get('up'))} → {_updown(after.get('up'))}")
    old = {t["index"]: t for t in before.get("tunnels", [])}
    new = {t["index"]: t for t in after.get("tunnels", [])}
    for index in sorted(set(old) | set(new), key=lambda i: (i is None, i or 0)):
        label = f"tunnel {index}" if index is not None else "tunnel"
        was, now = old.get(index), new.get(index)
        if was is None or now is None:
            lines.append(f"{label}: {'added' if was is None else 'removed'}")
            continue
        if was["up"] != now["up"]:
            lines.append(f"{label}: {_updown(was['up'])} → {_updown(now['up'])}")
        if was["bgp"] != now["bgp"]:
            lines.append(f"{label} BGP: {_bgp_text(was['bgp'])} → {_bgp_text(now['bgp'])}")
    return lines


def _onoff(check: dict[str, Any]) -> str:
    if check["on"] is None:
        return "none"
    return f"on, probing {check['ip']}" if check["on"] and check["ip"] else ("on" if check["on"] else "off")


def _attachment(attachment: dict[str, Any]) -> str:
    text = " ".join(v for v in (attachment["type"], attachment["instance"]) if v)
    return text or "none"


def _impact_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if before is None or after is None:
        return [] if before is after else ["the impact preview: not shown before"]
    lines: list[str] = []
    for part in sorted(set(after["unread"]) - set(before["unread"])):
        lines.append(f"{part}: could not be read now")
    for part in sorted(set(before["unread"]) - set(after["unread"])):
        lines.append(f"{part}: could not be read before, read now")
    lines += _routes_diff(before, after)
    if PART_CONNECTION in before["unread"] or PART_CONNECTION in after["unread"]:
        return lines
    lines += _tunnels_diff(before, after)
    if before["bgp"] != after["bgp"]:
        lines.append(f"BGP: {_bgp_text(before['bgp'])} → {_bgp_text(after['bgp'])}")
    if before["health_check"] != after["health_check"]:
        lines.append(f"health check: {_onoff(before['health_check'])} → {_onoff(after['health_check'])}")
    if before["attachment"] != after["attachment"]:
        lines.append(f"attachment: {_attachment(before['attachment'])} → {_attachment(after['attachment'])}")
    return lines


def _record_diff(what: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if after is None:
        return [] if before is None else [f"{what}: could not be read now"]
    if before is None:
        return [f"{what}: read now"]
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, list) or isinstance(new, list):
            old_set, new_set = set(old or []), set(new or [])
            changes = [f"+{s}" for s in sorted(new_set - old_set)] + [
                f"{_MINUS}{s}" for s in sorted(old_set - new_set)
            ]
            lines.append(f"{what} {key.replace('_', ' ')}: {', '.join(changes)}")
        else:
            lines.append(f"{what} {key.replace('_', ' ')}: {old or 'none'} → {new or 'none'}")
    return lines


def diff(approved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed from the approved preview to the one read now, as short plain-text lines.

    Both are :func:`canonical` forms. For instance ``routes: +10.2.0.0/16, \N{MINUS SIGN}10.3.0.0/16``
    (a minus sign before what was removed) or ``tunnel 1: down → up``. Empty when nothing that matters
    changed.
    """
    lines = _record_diff("connection", approved.get("connection"), now.get("connection"))
    lines += _record_diff("gateway", approved.get("gateway"), now.get("gateway"))
    lines += _impact_diff(approved.get("impact"), now.get("impact"))
    if not lines and approved != now:  # pragma: no cover - every difference above has its line
        lines.append("the preview changed")
    return lines
