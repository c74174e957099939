"""The parameters each VPC action takes, as the official SDK (alibabacloud-vpc20160428 7.2.2) has them.

The sandbox refuses a request carrying any other parameter (:func:`unknown_parameters`), so a
name the bot misspells or invents fails in every test instead of being ignored by a lenient
stand-in. Copied from the SDK's ``<Action>Request`` models and ``Client.<action>_with_options``;
``tests/cloud/test_oracle.py`` compares this table with the installed SDK and fails when they
differ (an SDK upgrade that adds a parameter shows up there).

Names are as sent: list elements numbered from 1 (``Tags.1.Key``, written ``Tags.N.Key`` here).
The JSON-text parameters (``BgpConfig``, ``IkeConfig`` ...) are ``str`` in the SDK; their keys are
those the SDK documents for the field (``- **BgpConfig.EnableBgp**: ...``).

What Alibaba answers for a parameter its API does not have is not verified against the live API
(the reference does not say; the gateway may well ignore it). The sandbox answers as for any
bad parameter, ``InvalidParameter`` (400), naming it: stricter than the real API, on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

__all__ = ["JSON_PARAMETERS", "PARAMETERS", "STS_PARAMETERS", "unknown_parameters"]

# Every VPC request model has these (the RAM owner fields the SDK passes through).
_OWNER: Final = frozenset({"OwnerAccount", "OwnerId", "ResourceOwnerAccount", "ResourceOwnerId"})
_PAGED: Final = frozenset({"PageNumber", "PageSize"})
_ROUTE: Final = frozenset(
    {
        "ClientToken",
        "Description",
        "DryRun",
        "NextHop",
        "OverlayMode",
        "PublishVpc",
        "RegionId",
        "RouteDest",
        "VpnGatewayId",
        "Weight",
    }
)
_TUNNEL: Final = "TunnelOptionsSpecification.N."

PARAMETERS: Final[Mapping[str, frozenset[str]]] = {
    "DescribeRegions": _OWNER | {"AcceptLanguage", "ProductType"},
    "DescribeVpnConnection": _OWNER | {"RegionId", "VpnConnectionId"},
    "DescribeVpnConnections": _OWNER
    | _PAGED
    | {
        "CustomerGatewayId",
        "RegionId",
        "ResourceGroupId",
        "Tag.N.Key",
        "Tag.N.Value",
        "VpnConnectionId",
        "VpnGatewayId",
    },
    "DescribeVpnGateway": _OWNER | {"IncludeReservationData", "RegionId", "VpnGatewayId"},
    "DescribeCustomerGateway": _OWNER | {"CustomerGatewayId", "RegionId"},
    "DeleteVpnConnection": _OWNER | {"ClientToken", "RegionId", "VpnConnectionId"},
    "DescribeVpnRouteEntries": _OWNER | _PAGED | {"RegionId", "RouteEntryType", "VpnGatewayId"},
    "DescribeVpnPbrRouteEntries": _OWNER | _PAGED | {"RegionId", "VpnGatewayId"},
    "CreateVpnConnection": _OWNER
    | {
        "AutoConfigRoute",
        "BgpConfig",
        "ClientToken",
        "CustomerGatewayId",
        "DryRun",
        "EffectImmediately",
        "EnableDpd",
        "EnableNatTraversal",
        "EnableTunnelsBgp",
        "HealthCheckConfig",
        "IkeConfig",
        "IpsecConfig",
        "LocalSubnet",
        "Name",
        "RegionId",
        "RemoteCaCertificate",
        "RemoteSubnet",
        "Tags.N.Key",
        "Tags.N.Value",
        "VpnGatewayId",
    }
    | {
        # The SDK sends these in the form body, the rest in the query.
        f"{_TUNNEL}{name}"
        for name in (
            "CustomerGatewayId",
            "EnableDpd",
            "EnableNatTraversal",
            "RemoteCaCertificate",
            "Role",
            "TunnelBgpConfig.LocalAsn",
            "TunnelBgpConfig.LocalBgpIp",
            "TunnelBgpConfig.TunnelCidr",
            "TunnelIkeConfig.IkeAuthAlg",
            "TunnelIkeConfig.IkeEncAlg",
            "TunnelIkeConfig.IkeLifetime",
            "TunnelIkeConfig.IkeMode",
            "TunnelIkeConfig.IkePfs",
            "TunnelIkeConfig.IkeVersion",
            "TunnelIkeConfig.LocalId",
            "TunnelIkeConfig.Psk",
            "TunnelIkeConfig.RemoteId",
            "TunnelIpsecConfig.IpsecAuthAlg",
            "TunnelIpsecConfig.IpsecEncAlg",
            "TunnelIpsecConfig.IpsecLifetime",
            "TunnelIpsecConfig.IpsecPfs",
        )
    },
    "CreateVpnRouteEntry": _OWNER | _ROUTE,
    "CreateVpnPbrRouteEntry": _OWNER | _ROUTE | {"Priority", "RouteSource"},
}

# The keys of the JSON-text parameters (no AuthKey in BgpConfig, no policy in HealthCheckConfig).
JSON_PARAMETERS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "CreateVpnConnection": {
        "BgpConfig": frozenset({"EnableBgp", "LocalAsn", "LocalBgpIp", "TunnelCidr"}),
        "HealthCheckConfig": frozenset({"dip", "enable", "interval", "retry", "sip"}),
        "IkeConfig": frozenset(
            {
                "IkeAuthAlg",
                "IkeEncAlg",
                "IkeLifetime",
                "IkeMode",
                "IkePfs",
                "IkeVersion",
                "LocalId",
                "Psk",
                "RemoteId",
            }
        ),
        "IpsecConfig": frozenset({"IpsecAuthAlg", "IpsecEncAlg", "IpsecLifetime", "IpsecPfs"}),
    },
}

# STS AssumeRole (alibabacloud-sts20150401 1.2.0's AssumeRoleRequest), besides the RPC
# signature's own parameters (AccessKeyId, Signature*, Timestamp, Format, Version, Action ...).
STS_PARAMETERS: Final[Mapping[str, frozenset[str]]] = {
    "AssumeRole": frozenset(
        {"DurationSeconds", "ExternalId", "Policy", "RoleArn", "RoleSessionName", "SourceIdentity"}
    ),
}

_INDEX = re.compile(r"\.[1-9][0-9]*(?=\.|$)")


def unknown_parameters(action: str, params: Mapping[str, str]) -> list[str]:
    """The names in ``params`` that ``action`` does not take, JSON keys as ``Param.key``, sorted."""
    known = PARAMETERS.get(action)
    if known is None:
        return []
    unknown = [name for name in params if _INDEX.sub(".N", name) not in known]
    for name, keys in JSON_PARAMETERS.get(action, {}).items():
        if name not in params:
            continue
        try:
            value = json.loads(params[name])
        except ValueError:
            continue  # not JSON: the operation says how it is wrong
        if isinstance(value, dict):
            unknown += [f"{name}.{key}" for key in value if key not in keys]
    return sorted(unknown)
