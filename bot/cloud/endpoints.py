"""Where the VPC API (and STS) of a region lives, resolved as the official SDK resolves it.

The official ``alibabacloud-vpc20160428`` client (7.2.2; ``Client.__init__``/``get_endpoint`` and
``alibabacloud_tea_openapi.utils.Utils.get_endpoint_rules``) picks, in order:

1. an explicit endpoint: here ``VPNBOT_VPC_ENDPOINT`` (a full URL such as ``http://127.0.0.1:9000``,
   e.g. the local sandbox) for every region, then ``VPNBOT_VPC_ENDPOINTS`` for one region;
2. its endpoint table for special regions (:data:`SDK_ENDPOINT_MAP`, copied below; finance, gov
   and internal regions, and cn-hangzhou, all mostly ``vpc.aliyuncs.com``). The SDK lets the
   table win whatever the network, so a bot inside a VPC in one of those regions needs a
   ``VPNBOT_VPC_ENDPOINTS`` entry if that host is not reachable from it;
3. the regional rule: ``vpc.<region>.aliyuncs.com`` on the public network,
   ``vpc-vpc.<region>.aliyuncs.com`` on the VPC network (``VPNBOT_ALIBABA_NETWORK=vpc``, for a bot
   that runs inside Alibaba Cloud).

STS: ``VPNBOT_STS_ENDPOINT`` if set; otherwise ``sts.aliyuncs.com`` on the public network (the
credentials library's default) and ``sts-vpc.<region>.aliyuncs.com`` on the VPC network (what the
library itself builds from ``enable_vpc`` and ``sts_region_id``), for the default region.

``tests/cloud/test_endpoints.py`` compares this with the installed SDK's own resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from bot.ids import is_region, region_error

__all__ = [
    "NETWORKS",
    "SDK_ENDPOINT_MAP",
    "EndpointResolver",
    "Network",
    "default_host",
    "sts_endpoint",
    "sts_host",
    "vpc_base_url",
]

Network = Literal["public", "vpc"]
NETWORKS: Final[tuple[Network, ...]] = ("public", "vpc")

# alibabacloud-vpc20160428 7.2.2, Client._endpoint_map (endpoint rule "regional"), copied verbatim.
SDK_ENDPOINT_MAP: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cn-hangzhou": "vpc.aliyuncs.com",
        "cn-shanghai-finance-1": "vpc.aliyuncs.com",
        "cn-shenzhen-finance-1": "vpc.aliyuncs.com",
        "cn-north-2-gov-1": "vpc.aliyuncs.com",
        "ap-northeast-2-pop": "vpc.aliyuncs.com",
        "cn-beijing-finance-pop": "vpc.aliyuncs.com",
        "cn-beijing-gov-1": "vpc.aliyuncs.com",
        "cn-beijing-nu16-b01": "vpc.aliyuncs.com",
        "cn-edge-1": "vpc-nebula.cn-qingdao-nebula.aliyuncs.com",
        "cn-fujian": "vpc.aliyuncs.com",
        "cn-haidian-cm12-c01": "vpc.aliyuncs.com",
        "cn-hangzhou-bj-b01": "vpc.aliyuncs.com",
        "cn-hangzhou-finance": "vpc.aliyuncs.com",
        "cn-hangzhou-internal-prod-1": "vpc.aliyuncs.com",
        "cn-hangzhou-internal-test-1": "vpc-pre.cn-hangzhou.aliyuncs.com",
        "cn-hangzhou-internal-test-2": "vpc-inner-pre.cn-hangzhou.aliyuncs.com",
        "cn-hangzhou-internal-test-3": "vpc-pre.cn-hangzhou.aliyuncs.com",
        "cn-hangzhou-test-306": "vpc-pre.cn-hangzhou.aliyuncs.com",
        "cn-hongkong-finance-pop": "vpc.aliyuncs.com",
        "cn-huhehaote-nebula-1": "vpc-nebula.cn-qingdao-nebula.aliyuncs.com",
        "cn-qingdao-nebula": "vpc-nebula.cn-qingdao-nebula.aliyuncs.com",
        "cn-shanghai-et15-b01": "vpc-pre.cn-hangzhou.aliyuncs.com",
        "cn-shanghai-et2-b01": "vpc.aliyuncs.com",
        "cn-shanghai-inner": "vpc.aliyuncs.com",
        "cn-shanghai-internal-test-1": "vpc-pre.cn-hangzhou.aliyuncs.com",
        "cn-shenzhen-inner": "vpc.aliyuncs.com",
        "cn-shenzhen-st4-d01": "vpc.aliyuncs.com",
        "cn-shenzhen-su18-b01": "vpc.aliyuncs.com",
        "cn-wuhan": "vpc.aliyuncs.com",
        "cn-yushanfang": "vpc.aliyuncs.com",
        "cn-zhangbei": "vpc.aliyuncs.com",
        "cn-zhangbei-na61-b01": "vpc.aliyuncs.com",
        "cn-zhangjiakou-na62-a01": "vpc.cn-zhangjiakou.aliyuncs.com",
        "cn-zhengzhou-nebula-1": "vpc-nebula.cn-qingdao-nebula.aliyuncs.com",
        "eu-west-1-oxs": "vpc-nebula.cn-shenzhen-cloudstone.aliyuncs.com",
        "rus-west-1-pop": "vpc.aliyuncs.com",
    }
)


def _checked(region: str) -> str:
    # Only a well-formed region id may become part of a host name.
    if not is_region(region):
        raise region_error(f"`{region[:40]}`")
    return region


def default_host(region: str, network: Network = "public") -> str:
    """The SDK's host for ``region``: its table, else ``vpc[-vpc].<region>.aliyuncs.com`` (UsageError if no region)."""
    _checked(region)
    mapped = SDK_ENDPOINT_MAP.get(region)
    if mapped is not None:
        return mapped
    return f"vpc-vpc.{region}.aliyuncs.com" if network == "vpc" else f"vpc.{region}.aliyuncs.com"


def sts_host(region: str, network: Network = "public") -> str:
    """STS: ``sts.aliyuncs.com`` on the public network, ``sts-vpc.<region>.aliyuncs.com`` inside a VPC."""
    return f"sts-vpc.{_checked(region)}.aliyuncs.com" if network == "vpc" else "sts.aliyuncs.com"


def sts_endpoint(explicit: str | None, region: str, network: Network = "public") -> str | None:
    """The STS host the RAM-role provider is given: ``explicit``, or ``sts-vpc.<region>`` inside a VPC.

    None on the public network: the credentials library then uses ``sts.aliyuncs.com`` itself.
    """
    if explicit:
        return explicit
    return sts_host(region, network) if network == "vpc" else None


def _normalise(url: str) -> str:
    if "://" not in url:
        url = f"https://{url}"
    return url.rstrip("/")


def vpc_base_url(
    region: str,
    *,
    override: str | None = None,
    per_region: Mapping[str, str] | None = None,
    network: Network = "public",
) -> str:
    """Return the base URL (scheme and host, no trailing slash) to call for ``region``."""
    if override:
        return _normalise(override)
    if per_region and region in per_region:
        return _normalise(per_region[region])
    return f"https://{default_host(region, network)}"


@dataclass(frozen=True, slots=True)
class EndpointResolver:
    """Resolve a region to its base URL: ``override`` for all, then ``per_region``, then the SDK's rule."""

    override: str | None = None
    per_region: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    network: Network = "public"

    def base_url(self, region: str) -> str:
        return vpc_base_url(region, override=self.override, per_region=self.per_region, network=self.network)

    def describe(self, regions: Iterable[str]) -> list[tuple[str, str]]:
        """``(region, base URL)`` for each region (for ``vpn-bot doctor``), in the order given, once each."""
        return [(region, self.base_url(region)) for region in dict.fromkeys(regions)]
