"""A local HTTP server speaking Alibaba Cloud's VPC OpenAPI (2016-04-28), for tests and the demo.

Wire protocol as the real gateway: ``POST``/``GET /`` with the parameters in the query string (a
form body is accepted too), ``x-acs-action``/``x-acs-version`` headers, ACS3-HMAC-SHA256
signatures checked by rebuilding the canonical request with :mod:`bot.cloud.signer`, only the
parameters the official SDK's model of the action has (:mod:`bot.sandbox.vpc_params`), JSON
answers, and errors as ``{"RequestId","HostId","Code","Message","Recommend"}`` with the status
from :data:`bot.cloud.codes.ERROR_TABLE`.

Operations: DescribeRegions, DescribeVpnGateway, DescribeCustomerGateway, DescribeVpnConnection(s) (paged, filtered by
gateway, customer gateway or connection), DescribeVpnRouteEntries, DescribeVpnPbrRouteEntries
(paged), DeleteVpnConnection, and the changes in :mod:`bot.sandbox.vpc_changes`
(CreateVpnConnection, CreateVpnRouteEntry, CreateVpnPbrRouteEntry).

Customer gateways: one for each a seeded connection (or tunnel) names, in
``SandboxState.customer_gateways``; DescribeCustomerGateway answers
``InvalidCustomerGatewayInstanceId.NotFound`` once a test deletes one. CreateVpnConnection does not
check the customer gateway it names (tests create with made-up ids), unlike Alibaba.

ClientToken, as Alibaba documents it: a reused token with the same parameters gets the *first*
answer replayed verbatim (same RequestId, status and body — errors included) and changes
nothing; the same token with other parameters gets ``IdempotentParameterMismatch``. Not kept: a
5xx (it says nothing about what was done: the documented advice is to retry it with the same
token) and what the API gateway answers before the service runs (signature, date, nonce,
AccessKey, throttling). So after a busy answer only a fresh token goes through.

Several accounts: the configured key opens the home state; keys the STS sandbox
(:mod:`bot.sandbox.sts`) issues open only their account's state, until they expire
(``InvalidSecurityToken.Expired``). Faults, requests and ClientTokens are kept per account.

Control endpoints (no signature, for tests and the demo; bind to loopback only):
``GET /_sandbox/state``, ``POST /_sandbox/reset``, ``POST /_sandbox/settings``,
``GET|POST|DELETE /_sandbox/faults``, ``DELETE /_sandbox/faults/{id}``, ``GET /_sandbox/requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import yaml
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.cloud.codes import lookup
from bot.cloud.signer import (
    ALGORITHM,
    Credentials,
    canonical_headers,
    canonical_query,
    canonical_request,
    sign,
    string_to_sign,
)
from bot.sandbox.sts import IssuedKey, KeyRing
from bot.sandbox.vpc_changes import (
    create_vpn_connection,
    create_vpn_pbr_route_entry,
    create_vpn_route_entry,
    gateway_of,
    int_param,
    invalid,
    missing,
    region_of,
    require,
)
from bot.sandbox.vpc_params import unknown_parameters
from bot.sandbox.vpc_state import (
    Connection,
    CustomerGateway,
    Fault,
    Gateway,
    HealthCheck,
    IkeSettings,
    IpsecSettings,
    RecordedRequest,
    SandboxApiError,
    SandboxState,
    TokenRecord,
    TunnelBgp,
    new_request_id,
)

__all__ = [
    "API_VERSION",
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCESS_KEY_SECRET",
    "STATE_KEY",
    "RunningSandbox",
    "create_vpc_sandbox",
    "serve_forever",
    "start_vpc_sandbox",
]

API_VERSION = "2016-04-28"
# Public, obviously fake keys so the demo runs without an Alibaba Cloud account.
DEMO_ACCESS_KEY_ID = "LTAI5tSandboxDemoKeyId00"
DEMO_ACCESS_KEY_SECRET = "SandboxDemoSecretNotARealKey00"  # noqa: S105 - a published demo key, not a secret

STATE_KEY = web.AppKey("vpc_sandbox_state", SandboxState)

DATE_WINDOW = timedelta(minutes=15)
_REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
_JSON = "application/json;charset=utf-8"

# Gateway codes the bot's error table has no entry for (it never needs to explain them).
_EXTRA_CODES: Mapping[str, tuple[int, str]] = {
    "InvalidAction.NotFound": (404, "Specified api is not found, please check your url and method."),
    "InvalidVersion": (400, "Specified parameter Version is not valid."),
    "InvalidTimeStamp.Format": (400, "Specified time stamp or date value is not well formatted."),
    "InvalidSecurityToken.MismatchWithAccessKey": (
        400,
        "Specified SecurityToken mismatch with the AccessKey.",
    ),
}


class _AccessLogger(AbstractAccessLogger):
    """One line per request: method, path and action, never the query (create calls carry keys)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        action = request.headers.get("x-acs-action", "")
        self.logger.info(
            '%s "%s %s%s" %s %.4fs',
            request.remote,
            request.method,
            request.path,
            f" {action}" if action else "",
            response.status,
            time,
        )


# Answers the API gateway gives before the VPC service runs (authentication, replay guards, flow
# control, routing): the service never saw the ClientToken, so nothing is kept under it.
_GATEWAY_CODES = (
    "Throttling",
    "Rejected.Throttling",
    "SignatureDoesNotMatch",
    "SignatureNonceUsed",
    "IncompleteSignature",
    "InvalidTimeStamp",
    "InvalidAccessKeyId",
    "Forbidden.AccessKeyDisabled",
    "InvalidSecurityToken",
    "InvalidAction",
    "InvalidVersion",
)


def _dumps(body: Mapping[str, Any]) -> str:
    # UTF-8 as the real API answers (LocalName is Chinese by default).
    return json.dumps(body, ensure_ascii=False)


def _resolve(code: str, message: str, status: int | None) -> tuple[int, str]:
    """Return the HTTP status and message for an error code."""
    info = lookup(code)
    extra_status, extra_message = _EXTRA_CODES.get(code, (None, ""))
    server_side = code in ("InternalError", "UnknownError")
    final_status = status or info.http_status or extra_status or (500 if server_side else 400)
    return final_status, message or info.api_message or extra_message or code


def _page(params: Mapping[str, str], items: Sequence[Any]) -> tuple[int, int, Sequence[Any]]:
    number = int_param(params, "PageNumber", 1, low=1, high=1_000_000)
    size = int_param(params, "PageSize", 10, low=1, high=50)
    start = (number - 1) * size
    return number, size, items[start : start + size]


def _tags(tags: Mapping[str, str]) -> dict[str, Any]:
    return {"Tag": [{"Key": k, "Value": v} for k, v in tags.items()]}


# --- JSON shapes (reference §3) -------------------------------------------------------------------


def _gateway_json(gw: Gateway, *, reservation: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "VpnGatewayId": gw.id,
        "VpcId": gw.vpc_id,
        "VSwitchId": gw.vswitch_id,
        "Name": gw.name,
        "Description": gw.description,
        "Status": gw.status,
        "BusinessStatus": gw.business_status,
        "ChargeType": gw.charge_type,
        "Spec": gw.spec,
        "InternetIp": gw.internet_ip,
        "DisasterRecoveryInternetIp": "",
        "DisasterRecoveryVSwitchId": "",
        "SslVpnInternetIp": "",
        "IpsecVpn": "enable",
        "SslVpn": "disable",
        "SslMaxConnections": 5,
        "EnableBgp": gw.enable_bgp,
        "AutoPropagate": False,
        "GatewayType": "Normal",
        "NetworkType": "public",
        "VpnType": "Normal",
        "CreateTime": gw.create_time_ms,
        "EndTime": gw.end_time_ms,
        "ResourceGroupId": "rg-acfmzw2jz2z5sandbox",
        "Tag": f"VpnEnableBgp={str(gw.enable_bgp).lower()};VisuallySsl=true;PbrPriority=true;VpnNewImage=true",
        "Tags": _tags(gw.tags),
        "EniInstanceIds": {"EniInstanceId": [f"eni-{gw.id[4:7]}{gw.id[-18:]}"]},
    }
    if reservation:
        body["ReservationData"] = {
            "Status": "1",
            "ReservationOrderType": "",
            "ReservationEndTime": "",
            "ReservationSpec": "",
            "ReservationIpsec": "",
            "ReservationSsl": "",
            "ReservationMaxConnections": 0,
        }
    return body


def _ike(ike: IkeSettings, psk: str, *, local_id: str, remote_id: str) -> dict[str, Any]:
    return {
        "IkeVersion": ike.version,
        "IkeMode": ike.mode,
        "IkeEncAlg": ike.enc_alg,
        "IkeAuthAlg": ike.auth_alg,
        "IkePfs": ike.pfs,
        "IkeLifetime": ike.lifetime,
        "LocalId": ike.local_id or local_id,
        "RemoteId": ike.remote_id or remote_id,
        "Psk": psk,
    }


def _ipsec(ipsec: IpsecSettings) -> dict[str, Any]:
    return {
        "IpsecEncAlg": ipsec.enc_alg,
        "IpsecAuthAlg": ipsec.auth_alg,
        "IpsecPfs": ipsec.pfs,
        "IpsecLifetime": ipsec.lifetime,
    }


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _tunnel_bgp(bgp: TunnelBgp | None) -> dict[str, str]:
    if bgp is None:
        return dict.fromkeys(("LocalAsn", "LocalBgpIp", "PeerAsn", "PeerBgpIp", "TunnelCidr"), "") | {
            "BgpStatus": "false"
        }
    return {
        "BgpStatus": bgp.status,
        "LocalAsn": str(bgp.local_asn),
        "LocalBgpIp": bgp.local_bgp_ip,
        "PeerAsn": _as_text(bgp.peer_asn),
        "PeerBgpIp": bgp.peer_bgp_ip,
        "TunnelCidr": bgp.tunnel_cidr,
    }


def _tunnels(conn: Connection, gw: Gateway | None) -> dict[str, Any]:
    # Inside TunnelOptions every value is a string, lifetimes and ASNs included (reference §3.2).
    tunnels = []
    for tunnel in conn.tunnels:
        ike = _ike(tunnel.ike, tunnel.psk, local_id=gw.internet_ip if gw else "", remote_id=conn.remote_ip)
        tunnels.append(
            {
                "TunnelId": f"tun-{conn.id[4:7]}{conn.id[-17:-1]}{tunnel.index}",
                "TunnelIndex": tunnel.index,
                "Role": tunnel.role,
                "State": tunnel.state,
                "Status": tunnel.status,
                "CustomerGatewayId": tunnel.customer_gateway_id,
                "InternetIp": gw.internet_ip if gw else "",
                "ZoneNo": f"{conn.region}-{'h' if tunnel.index == 1 else 'i'}",
                "EnableDpd": _as_text(tunnel.enable_dpd),
                "EnableNatTraversal": _as_text(tunnel.enable_nat_traversal),
                "RemoteCaCertificate": "",
                "TunnelIkeConfig": {k: _as_text(v) for k, v in ike.items()},
                "TunnelIpsecConfig": {k: _as_text(v) for k, v in _ipsec(tunnel.ipsec).items()},
                "TunnelBgpConfig": _tunnel_bgp(tunnel.bgp),
            }
        )
    return {"TunnelOptions": tunnels}


def _health_check(check: HealthCheck | None) -> dict[str, Any]:
    if check is None:
        return {
            "Enable": "false",
            "Sip": "",
            "Dip": "",
            "Interval": 3,
            "Retry": 3,
            "Status": "",
            "Policy": "",
        }
    return {
        "Enable": _as_text(check.enable),
        "Sip": check.sip,
        "Dip": check.dip,
        "Interval": check.interval,
        "Retry": check.retry,
        "Status": check.status,
        "Policy": check.policy,
    }


def _bgp(conn: Connection, *, listing: bool) -> dict[str, Any]:
    bgp = conn.bgp
    if bgp is None:
        return {"Status": "false"} if listing else {"EnableBgp": "false", "Status": "false"}
    body: dict[str, Any] = {} if listing else {"EnableBgp": "true"}
    body.update(
        {
            "Status": bgp.status,
            "LocalAsn": bgp.local_asn,
            "PeerAsn": bgp.peer_asn,
            "LocalBgpIp": bgp.local_bgp_ip,
            "PeerBgpIp": bgp.peer_bgp_ip,
            "TunnelCidr": bgp.tunnel_cidr,
            "AuthKey": bgp.auth_key,
        }
    )
    return body


def _connection_json(conn: Connection, gw: Gateway | None, *, listing: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "VpnConnectionId": conn.id,
        "VpnGatewayId": conn.gateway_id,
        "CustomerGatewayId": conn.customer_gateway_id,
        "Name": conn.name,
        "Status": conn.status,
        "State": "active",
        "LocalSubnet": conn.local_subnet,
        "RemoteSubnet": conn.remote_subnet,
        "CreateTime": conn.create_time_ms,
        "EffectImmediately": conn.effect_immediately,
        "EnableDpd": conn.enable_dpd,
        "EnableNatTraversal": conn.enable_nat_traversal,
        "EnableTunnelsBgp": conn.enable_tunnels_bgp,
        "InternetIp": gw.internet_ip if gw else "",
        "NetworkType": "public",
        "RemoteCaCertificate": "",
        "ResourceGroupId": conn.resource_group_id,
        "Spec": "",
        "TunnelBandwidth": "",
        "ZoneNo": "",
        "AttachType": "VPNGW",
        "AttachInstanceId": conn.gateway_id,
        "CrossAccountAuthorized": False,
        "TransitRouterId": "",
        "TransitRouterName": "",
        "VpnBgpConfig": _bgp(conn, listing=listing),
        "VcoHealthCheck": _health_check(conn.health_check),
    }
    if conn.tunnels:
        body["TunnelOptionsSpecification"] = _tunnels(conn, gw)
    else:
        local_id = gw.internet_ip if gw else ""
        body["IkeConfig"] = _ike(conn.ike, conn.psk, local_id=local_id, remote_id=conn.remote_ip)
        body["IpsecConfig"] = _ipsec(conn.ipsec)
    body["Tag" if listing else "Tags"] = _tags(conn.tags)
    if listing:
        # The official SDK's model of a list item has no ZoneNo (tests/cloud/test_oracle.py).
        del body["ZoneNo"]
    return body


# --- operations -------------------------------------------------------------------------------------

Operation = Callable[[SandboxState, Mapping[str, str]], dict[str, Any]]


def _describe_regions(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    english = params.get("AcceptLanguage", "zh-CN") == "en-US"
    regions = [
        {
            "RegionId": r.region_id,
            "LocalName": r.local_name_en if english else r.local_name_zh,
            "RegionEndpoint": r.endpoint,
        }
        for r in state.regions.values()
    ]
    return {"Regions": {"Region": regions}}


def _describe_vpn_connection(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    region = region_of(state, params)
    require(params, "VpnConnectionId")
    conn = state.connections.get(params["VpnConnectionId"])
    if conn is None or conn.region != region:
        raise SandboxApiError("InvalidVpnConnectionInstanceId.NotFound")
    return _connection_json(conn, state.gateways.get(conn.gateway_id), listing=False)


def _describe_vpn_connections(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    region = region_of(state, params)
    filters = {
        "VpnGatewayId": "gateway_id",
        "VpnConnectionId": "id",
        "CustomerGatewayId": "customer_gateway_id",
    }
    # Tag.N.Key / Tag.N.Value: a connection must carry every tag asked for.
    tags = {
        params[f"Tag.{n}.Key"]: params.get(f"Tag.{n}.Value", "")
        for n in range(1, 21)
        if params.get(f"Tag.{n}.Key")
    }
    found = [
        c
        for c in state.connections.values()
        if c.region == region
        and all(getattr(c, attr) == params[name] for name, attr in filters.items() if params.get(name))
        and all(c.tags.get(k) == v for k, v in tags.items())
    ]
    number, size, page = _page(params, found)
    return {
        "TotalCount": len(found),
        "PageNumber": number,
        "PageSize": size,
        "VpnConnections": {
            "VpnConnection": [
                _connection_json(c, state.gateways.get(c.gateway_id), listing=True) for c in page
            ]
        },
    }


def _describe_vpn_gateway(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    gw = gateway_of(state, params, region_of(state, params))
    reservation = params.get("IncludeReservationData", "false").lower() == "true"
    return _gateway_json(gw, reservation=reservation)


def _customer_gateway_json(cgw: CustomerGateway) -> dict[str, Any]:
    # As DescribeCustomerGatewayResponseBody has it (AuthKey too: the bot never reads it).
    return {
        "CustomerGatewayId": cgw.id,
        "Name": cgw.name,
        "Description": cgw.description,
        "IpAddress": cgw.ip_address,
        "Asn": cgw.asn,
        "AuthKey": cgw.auth_key,
        "CreateTime": cgw.create_time_ms,
        "ResourceGroupId": "rg-acfmzw2jz2z5sandbox",
        "Tags": _tags(cgw.tags),
    }


def _describe_customer_gateway(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    region = region_of(state, params)
    require(params, "CustomerGatewayId")
    cgw = state.customer_gateways.get(params["CustomerGatewayId"])
    if cgw is None or cgw.region != region:
        raise SandboxApiError("InvalidCustomerGatewayInstanceId.NotFound")
    return _customer_gateway_json(cgw)


def _delete_vpn_connection(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    region = region_of(state, params)
    require(params, "VpnConnectionId")
    state.delete_connection(region=region, vco_id=params["VpnConnectionId"])
    return {}


def _describe_vpn_route_entries(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    gw = gateway_of(state, params, region_of(state, params))
    kind = params.get("RouteEntryType") or "custom"
    if kind not in ("custom", "bgp"):
        raise invalid("RouteEntryType", "must be custom or bgp")
    on_gateway = [r for r in state.routes if r.gateway_id == gw.id]
    found = [r for r in on_gateway if r.kind == kind]
    number, size, page = _page(params, found)
    counts: dict[str, int] = {}
    for r in on_gateway:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return {
        "TotalCount": len(found),
        "PageNumber": number,
        "PageSize": size,
        "VpnRouteEntries": {
            "VpnRouteEntry": [
                {
                    "RouteDest": r.dest,
                    "NextHop": r.next_hop,
                    "NextHopTunnelId": "",
                    "RouteEntryType": r.kind,
                    "State": r.state,
                    "Weight": r.weight,
                    "Source": "CUSTOM" if r.kind == "custom" else "VPN_BGP",
                    "AsPath": "" if r.kind == "custom" else "65001",
                    "Community": "",
                    "CreateTime": r.create_time_ms,
                    "VpnInstanceId": r.gateway_id,
                }
                for r in page
            ]
        },
        "VpnRouteCounts": {
            "VpnRouteCount": [
                {"RouteCount": n, "RouteEntryType": k, "Source": "CUSTOM" if k == "custom" else "VPN_BGP"}
                for k, n in sorted(counts.items())
            ]
        },
    }


def _describe_vpn_pbr_route_entries(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    gw = gateway_of(state, params, region_of(state, params))
    found = [r for r in state.pbr_routes if r.gateway_id == gw.id]
    number, size, page = _page(params, found)
    return {
        "TotalCount": len(found),
        "PageNumber": number,
        "PageSize": size,
        "VpnPbrRouteEntries": {
            "VpnPbrRouteEntry": [
                {
                    "RouteSource": r.source,
                    "RouteDest": r.dest,
                    "NextHop": r.next_hop,
                    "NextHopTunnelId": "",
                    "Priority": r.priority,
                    "Weight": r.weight,
                    "State": r.state,
                    "CreateTime": r.create_time_ms,
                    "VpnInstanceId": r.gateway_id,
                }
                for r in page
            ]
        },
    }


OPERATIONS: Mapping[str, Operation] = {
    "DescribeRegions": _describe_regions,
    "DescribeVpnConnection": _describe_vpn_connection,
    "DescribeVpnConnections": _describe_vpn_connections,
    "DescribeVpnGateway": _describe_vpn_gateway,
    "DescribeCustomerGateway": _describe_customer_gateway,
    "DeleteVpnConnection": _delete_vpn_connection,
    "DescribeVpnRouteEntries": _describe_vpn_route_entries,
    "DescribeVpnPbrRouteEntries": _describe_vpn_pbr_route_entries,
    "CreateVpnConnection": create_vpn_connection,
    "CreateVpnRouteEntry": create_vpn_route_entry,
    "CreateVpnPbrRouteEntry": create_vpn_pbr_route_entry,
}


# --- signature verification ------------------------------------------------------------------------


def _parse_authorization(value: str | None) -> tuple[str, list[str], str]:
    """Return ``(access_key_id, signed_header_names, signature)`` or raise IncompleteSignature."""
    if not value:
        raise SandboxApiError("IncompleteSignature", "The Authorization header is missing.")
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SandboxApiError("IncompleteSignature", f"Only {ALGORITHM} is supported, got {algorithm!r}.")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            parts[name] = val
    try:
        credential, signed, signature = parts["Credential"], parts["SignedHeaders"], parts["Signature"]
    except KeyError:
        raise SandboxApiError(
            "IncompleteSignature", "Authorization must carry Credential, SignedHeaders and Signature."
        ) from None
    if not credential or not signed or not signature:
        raise SandboxApiError("IncompleteSignature", "Authorization has an empty part.")
    return credential, [n.strip().lower() for n in signed.split(";")], signature


def _token_key(ex: _Exchange) -> tuple[tuple[str, str], tuple[tuple[str, str], ...]] | None:
    """Return ``((action, token), parameter fingerprint)`` for a request with a ClientToken."""
    token = ex.params.get("ClientToken") or None
    if token is None:
        return None
    if len(token) > 64 or not token.isascii():
        raise invalid("ClientToken", "at most 64 ASCII characters")
    fingerprint = tuple(sorted((k, v) for k, v in ex.params.items() if k != "ClientToken"))
    return (ex.action, token), fingerprint


def _same(a: str, b: str) -> bool:
    # Bytes, because compare_digest raises TypeError on non-ASCII str (a garbled header is a 4xx, not a 500).
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def _parse_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SandboxApiError("InvalidTimeStamp.Format") from None


@dataclass(slots=True)
class _Exchange:
    """What is known about one API request, for the recording."""

    method: str
    action: str
    version: str
    params: dict[str, str]
    nonce: str | None
    request_id: str
    host: str = ""
    access_key_id: str | None = None
    fault: Fault | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    # The account's resources the request acts on (the key's account); None before authentication.
    state: SandboxState | None = None


class _VpcSandbox:
    """The request handlers, bound to the key ring and each account's state.

    ``state`` is the home account's (the configured key's); an STS key opens only its account's
    state in ``accounts``. Faults, requests and ClientTokens are kept per account; nonces and the
    clock are the home state's.
    """

    def __init__(
        self, state: SandboxState, keys: KeyRing, accounts: Mapping[str, SandboxState] | None = None
    ) -> None:
        self.state = state
        self._keys = keys
        self._accounts = dict(accounts or {})
        # Set on shutdown so injected latency does not hold the server open.
        self.closing = asyncio.Event()

    # --- the API --------------------------------------------------------------------------------

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query_pairs = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
        params = dict(query_pairs)
        if body and request.content_type == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        ex = _Exchange(
            method=request.method,
            action=request.headers.get("x-acs-action", ""),
            version=request.headers.get("x-acs-version", ""),
            params=params,
            nonce=request.headers.get("x-acs-signature-nonce"),
            request_id=new_request_id(),
            host=request.host,
        )
        try:
            ex.access_key_id, ex.state = self._authenticate(request, query_pairs, body)
        except SandboxApiError as err:
            return self._respond(ex, *self._error_answer(ex, err), outcome="error")

        fault = ex.fault = ex.state.faults.take(ex.action, params)
        if fault is not None and not fault.after_processing:
            await self._pause(fault.latency)
            if fault.answers:
                return self._fault_answer(request, ex, fault, outcome="fault")
        status, answer, outcome = self._run(ex)
        if fault is not None and fault.after_processing:
            await self._pause(fault.latency)
            if fault.answers:
                # The operation ran (or failed) and its answer is remembered; only delivery is spoilt.
                return self._fault_answer(request, ex, fault, outcome=outcome)
        return self._respond(ex, status, answer, outcome=outcome)

    def _authenticate(
        self, request: web.Request, query_pairs: list[tuple[str, str]], body: bytes
    ) -> tuple[str, SandboxState]:
        """Verify the ACS3 signature and replay guards; return the AccessKey id and its account's state."""
        ak, signed, signature = _parse_authorization(request.headers.get("Authorization"))
        key = self._keys.get(ak)
        if key is None:
            raise SandboxApiError("InvalidAccessKeyId.NotFound")
        creds = key.credentials
        headers = request.headers
        missing = [n for n in _REQUIRED_SIGNED if n not in headers]
        if missing:
            raise SandboxApiError("IncompleteSignature", f"Missing required header(s): {', '.join(missing)}.")
        unsigned = [n for n in _REQUIRED_SIGNED if n not in signed]
        unsigned += sorted({n.lower() for n in headers if n.lower().startswith("x-acs-")} - set(signed))
        if unsigned:
            raise SandboxApiError("IncompleteSignature", f"Header(s) must be signed: {', '.join(unsigned)}.")
        sent = _parse_date(headers["x-acs-date"])
        if abs(self.state.clock() - sent) > DATE_WINDOW:
            raise SandboxApiError("InvalidTimeStamp.Expired")
        payload_hash = hashlib.sha256(body).hexdigest()
        if not _same(headers["x-acs-content-sha256"], payload_hash):
            raise SandboxApiError(
                "SignatureDoesNotMatch", "x-acs-content-sha256 does not match the SHA-256 of the body."
            )
        canon_headers, signed_headers = canonical_headers(headers, signed=signed)
        canonical = canonical_request(
            method=request.method,
            path=request.raw_path.split("?", 1)[0] or "/",
            query=canonical_query(query_pairs),
            headers=canon_headers,
            signed_headers=signed_headers,
            payload_hash=payload_hash,
        )
        if not _same(sign(creds.access_key_secret, canonical), signature):
            # Like the real gateway, show the server's string to sign: it helps find the mismatch.
            shown = string_to_sign(canonical).replace("\n", "\\n")
            message = (
                f"Specified signature is not matched with our calculation. Server string to sign is: {shown}"
            )
            raise SandboxApiError("SignatureDoesNotMatch", message)
        token, expected = headers.get("x-acs-security-token"), creds.security_token
        if (expected is None) != (token is None) or (
            token is not None and expected is not None and not _same(token, expected)
        ):
            raise SandboxApiError("InvalidSecurityToken.MismatchWithAccessKey")
        if key.expires_at is not None and self.state.clock() >= key.expires_at:
            raise SandboxApiError("InvalidSecurityToken.Expired")
        if not self.state.use_nonce(headers["x-acs-signature-nonce"]):
            raise SandboxApiError("SignatureNonceUsed")
        state = self._accounts.get(key.account, self.state) if key.account else self.state
        if key.account and key.account not in self._accounts:
            raise SandboxApiError("InvalidAccessKeyId.NotFound")
        return ak, state

    def _run(self, ex: _Exchange) -> tuple[int, dict[str, Any], str]:
        """Run the operation, or replay the first answer to its ClientToken.

        Return ``(status, body, outcome)``. Every answer the service gives under a ClientToken
        (success or error; not a 5xx, nor the API gateway's own refusals) is kept and replayed
        verbatim for the same token and parameters, as Alibaba documents.
        """
        state = ex.state or self.state
        try:
            operation = self._operation(ex)
            state.settle()
            key = _token_key(ex)
            if key is not None:
                seen = state.tokens.get(key[0])
                if seen is not None:
                    if seen.fingerprint != key[1]:
                        raise SandboxApiError("IdempotentParameterMismatch")
                    return seen.status, dict(seen.body), "replayed"
        except SandboxApiError as err:
            return *self._error_answer(ex, err), "error"
        try:
            status, answer, outcome = (
                200,
                {"RequestId": ex.request_id} | operation(state, ex.params),
                "ok",
            )
        except SandboxApiError as err:
            (status, answer), outcome = self._error_answer(ex, err), "error"
        self._remember(ex, status, answer)
        return status, answer, outcome

    def _operation(self, ex: _Exchange) -> Operation:
        if not ex.action:
            raise missing("Action")
        if ex.version != API_VERSION:
            raise SandboxApiError(
                "InvalidVersion", f"Specified parameter Version is not valid: {ex.version}."
            )
        operation = OPERATIONS.get(ex.action)
        if operation is None:
            raise SandboxApiError("InvalidAction.NotFound", f"Specified api is not found: {ex.action}.")
        # A name the official SDK's model of the action does not have (see bot.sandbox.vpc_params).
        unknown = unknown_parameters(ex.action, ex.params)
        if unknown:
            raise invalid(unknown[0], f"{ex.action} has no such parameter")
        return operation

    def _remember(self, ex: _Exchange, status: int, answer: Mapping[str, Any]) -> None:
        """Keep the first answer given under the request's ClientToken (see :meth:`_run`)."""
        code = str(answer.get("Code") or "")
        if status >= 500 or code == "DryRunOperation" or code.startswith(_GATEWAY_CODES):
            return
        if ex.action not in OPERATIONS:
            return
        try:
            key = _token_key(ex)
        except SandboxApiError:
            return
        if key is not None:
            record = TokenRecord(fingerprint=key[1], body=dict(answer), status=status)
            (ex.state or self.state).tokens.setdefault(key[0], record)

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), seconds)

    def _record(self, ex: _Exchange, *, status: int, outcome: str, code: str | None = None) -> None:
        (ex.state or self.state).requests.append(
            RecordedRequest(
                at=self.state.clock(),
                method=ex.method,
                action=ex.action,
                params=dict(ex.params),
                client_token=ex.params.get("ClientToken"),
                nonce=ex.nonce,
                access_key_id=ex.access_key_id,
                status=status,
                outcome=outcome,
                code=code,
                request_id=ex.request_id,
                fault_id=ex.fault.id if ex.fault else None,
            )
        )

    def _error_answer(self, ex: _Exchange, err: SandboxApiError) -> tuple[int, dict[str, Any]]:
        status, message = _resolve(err.code, err.message, err.http_status)
        body = {
            "RequestId": ex.request_id,
            "HostId": ex.host,
            "Code": err.code,
            "Message": message,
            "Recommend": f"https://api.alibabacloud.com/troubleshoot?q={err.code}&product=Vpc&requestId={ex.request_id}",
        }
        return status, body

    def _respond(
        self, ex: _Exchange, status: int, answer: Mapping[str, Any], *, outcome: str
    ) -> web.Response:
        code = answer.get("Code")
        self._record(ex, status=status, outcome=outcome, code=str(code) if code else None)
        headers = {"x-acs-request-id": str(answer["RequestId"])}
        if status >= 400:
            headers |= ex.extra_headers
        return web.Response(
            status=status, text=_dumps(answer), content_type="application/json", headers=headers
        )

    def _fault_answer(
        self, request: web.Request, ex: _Exchange, fault: Fault, *, outcome: str
    ) -> web.Response:
        if fault.retry_after_ms is not None:
            ex.extra_headers["x-acs-retry-after"] = str(fault.retry_after_ms)
        if fault.drop:
            self._record(ex, status=0, outcome=outcome)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)  # never delivered: the connection is gone
        if fault.non_json:
            status = fault.http_status or 200
            self._record(ex, status=status, outcome=outcome)
            page = "<html><head><title>502 Bad Gateway</title></head><body>sandbox fault</body></html>"
            return web.Response(status=status, text=page, content_type="text/html", headers=ex.extra_headers)
        if fault.code is not None:
            err = SandboxApiError(fault.code, fault.message or "", http_status=fault.http_status)
            status, answer = self._error_answer(ex, err)
            if outcome == "fault":
                # The service itself gave this answer: remembered under the token like any other.
                self._remember(ex, status, answer)
            # After processing, ``outcome`` still says whether the operation ran; only the answer is replaced.
            return self._respond(ex, status, answer, outcome=outcome)
        status = fault.http_status or 500
        self._record(ex, status=status, outcome=outcome)
        text = fault.message or f"{status} sandbox fault"
        return web.Response(status=status, text=text, content_type="text/plain", headers=ex.extra_headers)

    # --- the control API ------------------------------------------------------------------------

    async def get_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def get_requests(self, request: web.Request) -> web.Response:
        action = request.query.get("action")
        return web.json_response([r.to_json() for r in self.state.calls(action)])

    async def post_reset(self, request: web.Request) -> web.Response:
        options = await _json_body(request, default={})
        seconds = _update_seconds(options)
        seed = {"seed_connections": options["seed_connections"]} if "seed_connections" in options else []
        fresh = SandboxState(update_seconds=self.state.update_seconds, clock=self.state.clock)
        try:
            fresh.load_config(seed)  # checked on a scratch state first: a bad body changes nothing
        except (ValueError, TypeError) as exc:
            raise _bad_request(str(exc)) from exc
        self.state.reset()
        self.state.load_config(seed)
        if seconds is not None:
            self.state.update_seconds = seconds
        return web.json_response({"ok": True, "connections": len(self.state.connections)})

    async def post_settings(self, request: web.Request) -> web.Response:
        seconds = _update_seconds(await _json_body(request, default={}))
        if seconds is not None:
            self.state.update_seconds = seconds
        return web.json_response({"update_seconds": self.state.update_seconds})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response([f.to_json() for f in self.state.faults.rules])

    async def post_faults(self, request: web.Request) -> web.Response:
        data = await _json_body(request, default=None)
        try:
            added = self.state.faults.load(data)
        except (ValueError, TypeError) as exc:
            raise _bad_request(str(exc)) from exc
        return web.json_response([f.to_json() for f in added], status=201)

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.state.faults.clear()
        return web.json_response({"ok": True})

    async def delete_fault(self, request: web.Request) -> web.Response:
        try:
            fault_id = int(request.match_info["fault_id"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not self.state.faults.remove(fault_id):
            raise web.HTTPNotFound()
        return web.json_response({"ok": True})


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _update_seconds(options: Any) -> float | None:
    """Read the optional ``update_seconds`` of a control request (a non-negative number)."""
    if not isinstance(options, dict):
        raise _bad_request("body must be a JSON object")
    value = options.get("update_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _bad_request("update_seconds must be a non-negative number")
    return float(value)


async def _json_body(request: web.Request, *, default: Any) -> Any:
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"body is not JSON: {exc}") from exc


def create_vpc_sandbox(
    state: SandboxState,
    *,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    clock: Callable[[], datetime] | None = None,
    keys: KeyRing | None = None,
    accounts: Mapping[str, SandboxState] | None = None,
) -> web.Application:
    """Build the sandbox app over ``state``, accepting requests signed with the given key.

    ``keys`` (shared with the STS sandbox) adds the keys STS issues; each opens its account's
    state in ``accounts`` only.

    ``clock`` (wall clock, UTC) replaces ``state.clock``: it drives both the ``x-acs-date``
    window and the ``updating`` time of gateways. With ``security_token`` the key is an STS key
    and every request must carry that token in ``x-acs-security-token``.
    """
    if clock is not None:
        state.clock = clock
    creds = Credentials(access_key_id, access_key_secret, security_token)
    keys = keys if keys is not None else KeyRing()
    keys.add(IssuedKey(credentials=creds, may_assume=True))
    sandbox = _VpcSandbox(state, keys, accounts)
    app = web.Application()
    app[STATE_KEY] = state

    async def _on_shutdown(_app: web.Application) -> None:
        sandbox.closing.set()

    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/", sandbox.handle_api, allow_head=False)
    app.router.add_post("/", sandbox.handle_api)
    app.router.add_get("/_sandbox/state", sandbox.get_state, allow_head=False)
    app.router.add_get("/_sandbox/requests", sandbox.get_requests, allow_head=False)
    app.router.add_post("/_sandbox/reset", sandbox.post_reset)
    app.router.add_post("/_sandbox/settings", sandbox.post_settings)
    app.router.add_get("/_sandbox/faults", sandbox.get_faults, allow_head=False)
    app.router.add_post("/_sandbox/faults", sandbox.post_faults)
    app.router.add_delete("/_sandbox/faults", sandbox.delete_faults)
    app.router.add_delete("/_sandbox/faults/{fault_id}", sandbox.delete_fault)
    return app


@dataclass(slots=True)
class RunningSandbox:
    """A sandbox listening on a local port. ``url`` is ``http://HOST:PORT``."""

    url: str
    state: SandboxState
    credentials: Credentials
    app: web.Application
    _runner: web.AppRunner = field(repr=False)

    @property
    def endpoint(self) -> str:
        """``HOST:PORT``, as the official SDK's ``Config.endpoint`` wants it."""
        return self.url.split("://", 1)[1]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_vpc_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    state: SandboxState | None = None,
    access_key_id: str = DEMO_ACCESS_KEY_ID,
    access_key_secret: str = DEMO_ACCESS_KEY_SECRET,
    security_token: str | None = None,
    clock: Callable[[], datetime] | None = None,
    access_log: bool = False,
    keys: KeyRing | None = None,
    accounts: Mapping[str, SandboxState] | None = None,
) -> RunningSandbox:
    """Start a sandbox on ``host:port`` (0 picks a free port) and return it running."""
    state = state if state is not None else SandboxState()
    app = create_vpc_sandbox(
        state,
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        security_token=security_token,
        clock=clock,
        keys=keys,
        accounts=accounts,
    )
    # A short shutdown grace: a handler still sleeping in injected latency is woken by on_shutdown.
    log = logging.getLogger("aiohttp.access") if access_log else None
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=log, access_log_class=_AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    url_host = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return RunningSandbox(
        url=f"http://{url_host}:{bound[1]}",
        state=state,
        credentials=Credentials(access_key_id, access_key_secret, security_token),
        app=app,
        _runner=runner,
    )


def load_faults_file(path: str) -> Any:
    """Read a faults file (JSON or YAML; YAML is a superset of JSON).

    It holds a list of faults, or a mapping with ``faults`` and/or ``seed_connections`` (a count
    for cn-hangzhou, or ``{region: count}``: that many extra connections, for paging).
    """
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


async def serve_forever(host: str, port: int, faults_file: str | None, update_seconds: float) -> None:
    """Run the sandbox for ``vpn-bot sandbox`` until cancelled (Ctrl-C)."""
    env_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    env_secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    demo = not (env_id and env_secret)
    key_id = DEMO_ACCESS_KEY_ID if demo else str(env_id)
    key_secret = DEMO_ACCESS_KEY_SECRET if demo else str(env_secret)
    token = None if demo else os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    state = SandboxState(update_seconds=update_seconds)
    if faults_file:
        state.load_config(await asyncio.to_thread(load_faults_file, faults_file))
    sandbox = await start_vpc_sandbox(
        host,
        port,
        state=state,
        access_key_id=key_id,
        access_key_secret=key_secret,
        security_token=token,
        access_log=True,
    )
    lines = [
        f"VPC sandbox (API {API_VERSION}) listening on {sandbox.url}",
        f"  point the bot at it:  VPNBOT_VPC_ENDPOINT={sandbox.url}",
        f"  control API:          {sandbox.url}/_sandbox/state (also /_sandbox/faults, /_sandbox/reset)",
    ]
    if demo:
        # The demo key pair is public and only opens this sandbox, so printing it is safe.
        lines += [
            f"  demo AccessKey:       ALIBABA_CLOUD_ACCESS_KEY_ID={key_id}",
            f"                        ALIBABA_CLOUD_ACCESS_KEY_SECRET={key_secret}",
        ]
    else:
        lines.append(f"  accepting AccessKey id {key_id} from the environment (secret not shown)")
    if faults_file:
        lines.append(
            f"  loaded from {faults_file}: {len(state.faults.rules)} fault(s), "
            f"{len(state.connections)} connection(s) in all"
        )
    print("\n".join(lines), flush=True)  # noqa: T201 - the CLI's startup banner tells the user where to connect
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.close()
