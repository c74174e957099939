"""The domain adapter over the VPC OpenAPI client: :class:`VpcAdapter` implements :class:`bot.ports.VpcApi`.

:class:`bot.cloud.client.VpcClient` speaks the wire (signing, retries, errors, one method per
action returning the parsed models); this module turns its answers into the domain's
(:mod:`bot.domain`): connections and gateways, the impact preview and the snapshot that
recreates a connection, the routes through a connection, and recreation from a snapshot. It keeps
the connection just read for a confirmation, so that the preview that follows does not read it
again, and decides when the BGP route list is worth reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import SecretStr

from bot.cloud.client import VpcClient
from bot.cloud.impact import build_impact, may_learn_bgp_routes, within
from bot.cloud.models import VpnConnectionDetail, VpnPbrRouteEntry, VpnRouteEntry
from bot.cloud.snapshot import build_snapshot, routes_through
from bot.cloud.specs import VpnConnectionSpec
from bot.domain import (
    PART_CONNECTION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    CustomerGateway,
    Impact,
    Reread,
    Snapshot,
    SnapshotRoute,
    Unread,
    VpnConnection,
    VpnGateway,
)

if TYPE_CHECKING:
    from bot.ports import VpcApi

__all__ = ["VpcAdapter"]

# A connection read for a confirmation serves its impact preview for this long (and so many at most).
_JUST_READ_TTL_S: Final = 10.0
_JUST_READ_MAX: Final = 1024

_ItemT = TypeVar("_ItemT")
# What the impact preview and the snapshot read: the connection, its gateway's custom, BGP and policy routes.
_Parts = tuple[
    VpnConnectionDetail | Unread,
    list[VpnRouteEntry] | Unread,
    list[VpnRouteEntry] | Unread,
    list[VpnPbrRouteEntry] | Unread,
]


class VpcAdapter:
    """:class:`bot.ports.VpcApi` over one :class:`VpcClient` (one account and role session).

    ``monotonic`` times the connection kept for the preview; closing the adapter closes the client.
    """

    def __init__(self, wire: VpcClient, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wire = wire
        self._monotonic = monotonic
        # Connections just read for a confirmation, kept for its impact preview (see _fresh_detail).
        self._just_read: dict[tuple[str, str], tuple[float, VpnConnectionDetail]] = {}

    @property
    def wire(self) -> VpcClient:
        """The OpenAPI client underneath, for the calls beyond :class:`bot.ports.VpcApi` (listings)."""
        return self._wire

    async def aclose(self) -> None:
        """Close the client (which closes its HTTP pool if it built it)."""
        await self._wire.aclose()

    async def __aenter__(self) -> VpcAdapter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"VpcAdapter({self._wire!r})"

    async def describe_vpn_connection(
        self, *, region: str, vco_id: str, shared: bool = False
    ) -> VpnConnection:
        detail = await self._wire.describe_vpn_connection_detail(region=region, vco_id=vco_id, shared=shared)
        self._remember(region, vco_id, detail)
        return detail.to_domain(region)

    def _remember(self, region: str, vco_id: str, detail: VpnConnectionDetail) -> None:
        """Keep ``detail`` for the impact preview that follows the lookup (milliseconds later)."""
        now = self._monotonic()
        self._just_read.pop((region, vco_id), None)
        self._just_read[(region, vco_id)] = (now, detail)
        # Oldest first: drop what is stale, and never keep more than a burst's worth.
        for key, (at, _) in list(self._just_read.items()):
            if now - at <= _JUST_READ_TTL_S and len(self._just_read) <= _JUST_READ_MAX:
                break
            del self._just_read[key]

    def _fresh_detail(self, region: str, vco_id: str) -> VpnConnectionDetail | None:
        """The detail ``describe_vpn_connection`` read at most ``_JUST_READ_TTL_S`` ago, or None.

        The confirmation reads the connection, then its preview needs the same answer: reading it
        twice would double both the time to the confirmation and the API calls. Not taken on use:
        several requests for the same connection at once each find one.
        """
        kept = self._just_read.get((region, vco_id))
        if kept is None or self._monotonic() - kept[0] > _JUST_READ_TTL_S:
            return None
        return kept[1]

    async def describe_vpn_gateway(self, *, region: str, gateway_id: str, shared: bool = False) -> VpnGateway:
        detail = await self._wire.describe_vpn_gateway_detail(
            region=region, gateway_id=gateway_id, shared=shared
        )
        return detail.to_domain(region)

    async def describe_customer_gateway(self, *, region: str, customer_gateway_id: str) -> CustomerGateway:
        detail = await self._wire.describe_customer_gateway_detail(
            region=region, customer_gateway_id=customer_gateway_id
        )
        return detail.to_domain(region)

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str:
        return await self._wire.delete_vpn_connection(region=region, vco_id=vco_id, client_token=client_token)

    async def list_regions(self) -> list[str]:
        return [r.region_id for r in await self._wire.describe_regions()]

    async def recreate_connection(
        self,
        *,
        region: str,
        config: dict[str, Any],
        psk: SecretStr,
        operation_id: str,
        client_token: str,
    ) -> tuple[str, str]:
        spec = VpnConnectionSpec.model_validate(config).for_recreation(psk=psk, operation_id=operation_id)
        answer = await self._wire.create_vpn_connection(region=region, spec=spec, client_token=client_token)
        return answer.vpn_connection_id, answer.request_id

    async def create_route(
        self, *, region: str, gateway_id: str, route: SnapshotRoute, next_hop: str, client_token: str
    ) -> str:
        common: dict[str, Any] = {
            "region": region,
            "gateway_id": gateway_id,
            "route_dest": route.destination,
            "next_hop": next_hop,
            "client_token": client_token,
            "weight": route.weight if route.weight is not None else 100,
            # A snapshot from before publish states were recorded: published, as it always was.
            "publish_vpc": route.published is not False,
            "description": route.description or None,
        }
        if route.kind == "policy":
            pbr = await self._wire.create_vpn_pbr_route_entry(
                route_source=route.source, priority=route.priority or 10, **common
            )
            return pbr.request_id
        entry = await self._wire.create_vpn_route_entry(**common)
        return entry.request_id

    async def routes_to(self, *, region: str, gateway_id: str, vco_id: str) -> tuple[SnapshotRoute, ...]:
        """The gateway's destination-based and policy-based routes whose next hop is ``vco_id``."""
        custom, policy = await asyncio.gather(
            self._wire.describe_vpn_route_entries(region=region, gateway_id=gateway_id),
            self._wire.describe_vpn_pbr_route_entries(region=region, gateway_id=gateway_id),
        )
        return routes_through(vco_id, custom, policy)

    async def tagged_connections(
        self, *, region: str, gateway_id: str, key: str, value: str
    ) -> list[VpnConnection]:
        found = await self._wire.describe_vpn_connections(
            region=region, vpn_gateway_id=gateway_id, tags={key: value}
        )
        # Filtered by Alibaba; checked again here, so a filter it ignored cannot pick a stranger.
        return [
            c.to_domain(region) for c in found if any(t.key == key and t.value == value for t in c.tag_list)
        ]

    async def _read_parts(
        self, region: str, connection: VpnConnection, deadline_s: float, *, reuse: bool = False
    ) -> _Parts:
        """The connection's detail and the routes through its gateway, in parallel, all within ``deadline_s``.

        The BGP route list follows the detail, and only if BGP may run on the connection
        (:func:`bot.cloud.impact.may_learn_bgp_routes`).

        With ``reuse`` (the preview), a detail that :meth:`describe_vpn_connection` has just read is
        used instead of reading it again, and the reads are shared with the same reads already on
        the way (a burst of confirmations on one gateway reads its routes once). The snapshot that
        recreates a connection reads everything afresh.
        """
        vco_id, gateway_id = connection.id, connection.gateway_id
        fresh = self._fresh_detail(region, vco_id) if reuse else None
        started = asyncio.get_running_loop().time()
        detail = asyncio.ensure_future(
            within(
                PART_CONNECTION,
                deadline_s,
                _ready(fresh)
                if fresh is not None
                else self._wire.describe_vpn_connection_detail(region=region, vco_id=vco_id, shared=reuse),
            )
        )
        return await asyncio.gather(
            detail,
            within(
                PART_ROUTES,
                deadline_s,
                self._wire.describe_vpn_route_entries(region=region, gateway_id=gateway_id, shared=reuse),
            ),
            self._learned_routes(
                region, gateway_id, detail, deadline_s=deadline_s, started=started, shared=reuse
            ),
            within(
                PART_POLICY_ROUTES,
                deadline_s,
                self._wire.describe_vpn_pbr_route_entries(region=region, gateway_id=gateway_id, shared=reuse),
            ),
        )

    async def _learned_routes(
        self,
        region: str,
        gateway_id: str,
        detail: asyncio.Future[VpnConnectionDetail | Unread],
        *,
        deadline_s: float,
        started: float,
        shared: bool,
    ) -> list[VpnRouteEntry] | Unread:
        """The gateway's BGP routes, read once ``detail`` says BGP may run on the connection.

        BGP routes go through a connection only over its BGP session: without one, the list is
        not read (one call fewer per preview and per snapshot). The preview has the detail at
        hand; the snapshot waits for its own fresh read, within the same deadline (from ``started``).
        """
        read = await detail
        if isinstance(read, VpnConnectionDetail) and not may_learn_bgp_routes(read):
            return []
        left = deadline_s - (asyncio.get_running_loop().time() - started)
        found = await within(
            PART_ROUTES,
            max(left, 0.0),
            self._wire.describe_vpn_route_entries(
                region=region, gateway_id=gateway_id, route_entry_type="bgp", shared=shared
            ),
        )
        if isinstance(found, Unread) and found.code is None:  # the deadline, which people know whole
            return Unread(part=PART_ROUTES, reason=f"no answer within {deadline_s:g} s")
        return found

    async def describe_impact(self, *, region: str, connection: VpnConnection, deadline_s: float) -> Impact:
        """What deleting ``connection`` takes down; each sub-lookup has ``deadline_s`` and may come back unread."""
        detail, custom, bgp, policy = await self._read_parts(region, connection, deadline_s, reuse=True)
        return build_impact(connection.id, detail, custom, bgp, policy)

    async def describe_snapshot(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Snapshot:
        """The configuration that recreates ``connection`` and the routes through it, without any key."""
        detail, custom, bgp, policy = await self._read_parts(region, connection, deadline_s)
        return build_snapshot(connection, detail, custom, bgp, policy)

    async def describe_before_delete(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Reread:
        """The snapshot and, from the same fresh answers, the preview as it is now, and the gateway.

        One read of each part serves both (the snapshot's reads were there before; the gateway,
        read alongside, is the one call more): the approval is checked against what is deleted.
        """
        gateway = asyncio.ensure_future(
            within(
                "gateway",
                deadline_s,
                self._wire.describe_vpn_gateway_detail(region=region, gateway_id=connection.gateway_id),
            )
        )
        try:
            detail, custom, bgp, policy = await self._read_parts(region, connection, deadline_s)
        except BaseException:
            gateway.cancel()
            raise
        gateway_read = await gateway
        return Reread(
            snapshot=build_snapshot(connection, detail, custom, bgp, policy),
            impact=build_impact(connection.id, detail, custom, bgp, policy),
            connection=None if isinstance(detail, Unread) else detail.to_domain(region),
            gateway=None if isinstance(gateway_read, Unread) else gateway_read.to_domain(region),
        )


async def _ready(value: _ItemT) -> _ItemT:
    return value


if TYPE_CHECKING:

    def _implements_vpc_api(adapter: VpcAdapter) -> VpcApi:
        return adapter
