"""Where the VPC API of a region lives.

Every region uses the regional public endpoint ``vpc.<region>.aliyuncs.com`` (the official
endpoint page lists it for every region, cn-hangzhou included). ``VPNBOT_VPC_ENDPOINT`` (a full
URL such as ``http://127.0.0.1:9000``, e.g. the local sandbox) wins for every region; a per-region
map covers special regions such as finance or gov clouds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.ids import is_region, region_error

__all__ = ["EndpointResolver", "default_host", "vpc_base_url"]


def default_host(region: str) -> str:
    """Return ``vpc.<region>.aliyuncs.com``; refuse a region id that is not one (UsageError)."""
    # Only a well-formed region id may become part of a host name.
    if not is_region(region):
        raise region_error(f"`{region[:40]}`")
    return f"vpc.{region}.aliyuncs.com"


def _normalise(url: str) -> str:
    if "://" not in url:
        url = f"https://{url}"
    return url.rstrip("/")


def vpc_base_url(
    region: str, *, override: str | None = None, per_region: Mapping[str, str] | None = None
) -> str:
    """Return the base URL (scheme and host, no trailing slash) to call for ``region``."""
    if override:
        return _normalise(override)
    if per_region and region in per_region:
        return _normalise(per_region[region])
    return f"https://{default_host(region)}"


@dataclass(frozen=True, slots=True)
class EndpointResolver:
    """Resolve a region to its base URL: ``override`` for all, then ``per_region``, then the default."""

    override: str | None = None
    per_region: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def base_url(self, region: str) -> str:
        return vpc_base_url(region, override=self.override, per_region=self.per_region)
