"""What ``/vpn list`` and ``/vpn status`` read from the cloud, and a short cache of region listings.

The Slack layer never imports the cloud client: :class:`Inventory` is the read-only view it needs,
implemented by a thin adapter in :mod:`bot.app`. Records hold only what people may see (no
pre-shared key, no BGP AuthKey). Errors are :class:`bot.errors.CloudError`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.domain import VpnGateway

__all__ = ["LISTING_TTL_SECONDS", "ConnectionRow", "Inventory", "ListingCache"]

# Long enough to page through a listing without a full scan per click, short enough that a
# connection created or deleted in the console shows up within a minute.
LISTING_TTL_SECONDS = 60.0
_MAX_LISTINGS = 64


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    """One IPsec connection as listed (no secrets)."""

    id: str
    name: str
    gateway_id: str
    status: str
    remote_subnet: str
    local_subnet: str = ""
    # Per-tunnel status of a dual-tunnel connection; empty for a single-tunnel one.
    tunnels: tuple[str, ...] = ()

    def matches(self, words: Sequence[str]) -> bool:
        """Whether every word is part of the name or the id (case-insensitive)."""
        haystack = f"{self.id}\n{self.name}".casefold()
        return all(w.casefold() in haystack for w in words)


class Inventory(Protocol):
    """The read-only cloud calls behind ``/vpn list`` and ``/vpn status``."""

    async def connections(
        self, *, region: str, gateway_id: str | None = None, account: str = ""
    ) -> Sequence[ConnectionRow]:
        """Every IPsec connection in the region (DescribeVpnConnections, all pages), in ``account``."""
        ...

    async def connection(self, *, region: str, vco_id: str, account: str = "") -> ConnectionRow:
        """One connection (DescribeVpnConnection); CloudApiError ``…NotFound`` if it is gone."""
        ...

    async def gateway(self, *, region: str, gateway_id: str, account: str = "") -> VpnGateway:
        """The connection's VPN gateway (DescribeVpnGateway)."""
        ...

    async def route_count(self, *, region: str, gateway_id: str, vco_id: str, account: str = "") -> int:
        """How many of the gateway's destination and policy routes have the connection as next hop."""
        ...


class ListingCache:
    """A region's listing kept for ``ttl`` seconds, so paging does not rescan the region per click.

    Concurrent misses for the same listing share one fetch; at most ``max_entries`` listings are kept.
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        ttl: float = LISTING_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = _MAX_LISTINGS,
    ) -> None:
        self._inventory = inventory
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, tuple[ConnectionRow, ...]]] = (
            OrderedDict()
        )
        # One lock per listing being fetched, with how many callers hold or wait for it; dropped when
        # the last one leaves, whether the fetch succeeded or failed (a failed key kept its lock forever).
        self._locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = {}

    def _fresh(self, key: tuple[str, str, str]) -> tuple[ConnectionRow, ...] | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self._ttl:
            return None
        return entry[1]

    async def rows(
        self, *, region: str, gateway_id: str | None = None, account: str = ""
    ) -> tuple[ConnectionRow, ...]:
        """The listing (of ``account``, with several), from the cache while fresh, else from the cloud."""
        key = (account, region, gateway_id or "")
        cached = self._fresh(key)
        if cached is not None:
            return cached
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                cached = self._fresh(key)
                if cached is not None:
                    return cached
                rows = tuple(
                    await self._inventory.connections(region=region, gateway_id=gateway_id, account=account)
                )
                self._entries[key] = (self._clock(), rows)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        finally:
            _, users = self._locks[key]
            if users > 1:
                self._locks[key] = (lock, users - 1)
            else:
                del self._locks[key]
        return rows

    def forget(self, *, region: str, gateway_id: str | None = None, account: str = "") -> None:
        """Drop a listing (after a deletion request, so the next page is fetched anew)."""
        self._entries.pop((account, region, gateway_id or ""), None)
