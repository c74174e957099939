"""Build the configuration snapshot (:class:`bot.domain.Snapshot`) from the VPC API's answers.

The connection's configuration goes through :meth:`bot.cloud.specs.VpnConnectionSpec.from_detail`
with no key given, so the record holds CreateVpnConnection's parameters without any Psk or BGP
AuthKey; the routes are those of the gateway whose next hop is the connection, each with whether
it was published to the VPC. What the connection had that no create parameter carries (its
resource group, its health check's policy, reserved tags) is recorded beside the parameters, so
that the Recreate modal can say so before anyone types a key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from bot.cloud.models import VpnConnectionDetail, VpnPbrRouteEntry, VpnRouteEntry
from bot.cloud.specs import VpnConnectionSpec, carried_tags
from bot.domain import (
    PART_CONFIGURATION,
    PART_ROUTES,
    Snapshot,
    SnapshotRoute,
    Unread,
    VpnConnection,
)

__all__ = ["build_snapshot", "connection_config", "routes_through"]

log = logging.getLogger("bot.cloud")


def connection_config(detail: VpnConnectionDetail) -> dict[str, Any]:
    """CreateVpnConnection's parameters for ``detail`` as JSON values, keys left out, empty parts dropped."""
    spec = VpnConnectionSpec.from_detail(detail)
    dumped = spec.model_dump(mode="json", exclude_none=True)
    return {key: value for key, value in dumped.items() if value not in ({}, [], "")}


def _published(state: str | None) -> bool:
    # DescribeVpn(Pbr)RouteEntries' State: ``published`` (in the VPC's system route table) or ``normal``.
    return (state or "").lower() == "published"


def routes_through(
    vco_id: str, routes: Sequence[VpnRouteEntry], policy: Sequence[VpnPbrRouteEntry]
) -> tuple[SnapshotRoute, ...]:
    """The gateway's routes whose next hop is ``vco_id`` (destination-based, BGP, policy-based)."""
    found = [
        SnapshotRoute(
            kind=(r.route_entry_type or "custom").lower(),
            destination=r.route_dest,
            weight=r.weight,
            description=r.description or "",
            published=_published(r.state),
        )
        for r in routes
        if r.next_hop == vco_id
    ]
    found += [
        SnapshotRoute(
            kind="policy",
            destination=r.route_dest,
            source=r.route_source,
            priority=r.priority,
            weight=r.weight,
            description=r.description or "",
            published=_published(r.state),
        )
        for r in policy
        if r.next_hop == vco_id
    ]
    return tuple(found)


def _config(detail: VpnConnectionDetail | Unread) -> dict[str, Any] | Unread:
    if isinstance(detail, Unread):
        return Unread(part=PART_CONFIGURATION, reason=detail.reason, code=detail.code)
    try:
        return connection_config(detail)
    except ValidationError as err:
        # A value CreateVpnConnection would refuse (say a lifetime out of range): say so, keep the rest.
        log.warning("connection configuration not representable: %s", err.errors(include_input=False))
        return Unread(part=PART_CONFIGURATION, reason="the answer holds values CreateVpnConnection refuses")


def build_snapshot(
    connection: VpnConnection,
    detail: VpnConnectionDetail | Unread,
    custom: list[VpnRouteEntry] | Unread,
    bgp: list[VpnRouteEntry] | Unread,
    policy: list[VpnPbrRouteEntry] | Unread,
) -> Snapshot:
    """The snapshot of ``connection`` from what each sub-lookup gave (an answer or an Unread)."""
    # The described connection is newer than the one recorded at request time.
    known = detail.to_domain(connection.region) if isinstance(detail, VpnConnectionDetail) else connection
    unread: list[Unread] = []
    config = _config(detail)
    if isinstance(config, Unread):
        unread.append(config)
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
    lost = _not_carried(detail) if isinstance(detail, VpnConnectionDetail) and config is not None else {}
    return Snapshot(
        vco_id=connection.id,
        region=connection.region,
        name=known.name,
        gateway_id=known.gateway_id,
        customer_gateway_id=known.customer_gateway_id,
        local_subnet=known.local_subnet,
        remote_subnet=known.remote_subnet,
        config=None if isinstance(config, Unread) else config,
        routes=routes_through(connection.id, routes, [] if isinstance(policy, Unread) else policy),
        unread=tuple(unread),
        **lost,
    )


def _not_carried(detail: VpnConnectionDetail) -> dict[str, Any]:
    """What ``detail`` has that CreateVpnConnection's parameters (SDK 7.2.x) cannot carry."""
    _, reserved, over = carried_tags(detail)
    check = detail.vco_health_check
    # A dual-tunnel connection has no HealthCheckConfig on create, so nothing of it to lose here.
    policy = (
        check.policy or ""
        if check is not None and check.enable and not detail.tunnels and check.policy
        else ""
    )
    return {
        "resource_group_id": detail.resource_group_id or "",
        "health_check_policy": policy,
        "skipped_tags": reserved,
        "over_limit_tags": over,
    }
