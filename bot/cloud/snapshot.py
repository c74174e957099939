"""Build the configuration snapshot (:class:`bot.domain.Snapshot`) from the VPC API's answers.

The connection's configuration goes through :meth:`bot.cloud.specs.VpnConnectionSpec.from_detail`
with no key given, so the record holds CreateVpnConnection's parameters without any Psk or BGP
AuthKey; the routes are those of the gateway whose next hop is the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from bot.cloud.models import VpnConnectionDetail, VpnPbrRouteEntry, VpnRouteEntry
from bot.cloud.specs import VpnConnectionSpec
from bot.domain import (
    PART_CONFIGURATION,
    PART_ROUTES,
    Snapshot,
    SnapshotRoute,
    Unread,
    VpnConnection,
)

__all__ = ["build_snapshot", "connection_config"]

log = logging.getLogger("bot.cloud")


def connection_config(detail: VpnConnectionDetail) -> dict[str, Any]:
    """CreateVpnConnection's parameters for ``detail`` as JSON values, keys left out, empty parts dropped."""
    spec = VpnConnectionSpec.from_detail(detail)
    dumped = spec.model_dump(mode="json", exclude_none=True)
    return {key: value for key, value in dumped.items() if value not in ({}, [], "")}


def _routes(
    vco_id: str, routes: Sequence[VpnRouteEntry], policy: Sequence[VpnPbrRouteEntry]
) -> tuple[SnapshotRoute, ...]:
    found = [
        SnapshotRoute(
            kind=(r.route_entry_type or "custom").lower(),
            destination=r.route_dest,
            weight=r.weight,
            description=r.description or "",
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
    return Snapshot(
        vco_id=connection.id,
        region=connection.region,
        name=known.name,
        gateway_id=known.gateway_id,
        customer_gateway_id=known.customer_gateway_id,
        local_subnet=known.local_subnet,
        remote_subnet=known.remote_subnet,
        config=None if isinstance(config, Unread) else config,
        routes=_routes(connection.id, routes, [] if isinstance(policy, Unread) else policy),
        unread=tuple(unread),
    )
