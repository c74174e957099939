"""The VPC sandbox's changes: CreateVpnConnection, CreateVpnRouteEntry, CreateVpnPbrRouteEntry.

Parameters are checked as far as the reference documents them (``recreate-accounts-modals.md``
§1-2): required names, CIDR lists, the values each IKE/IPsec key takes, BGP tunnel CIDRs, route
weights and priorities. Booleans are accepted in any case (the official SDK sends ``True``).
Like the real service every change is asynchronous: the gateway goes ``updating`` for
``update_seconds`` and back to ``active``; a second change meanwhile is answered
``VpnGateway.Configuring``. ``DryRun=true`` checks everything and answers ``DryRunOperation``.

Where Alibaba documents no code, the sandbox chooses one and says so: a next hop that is not a
connection of the gateway is ``InvalidVpnConnectionInstanceId.NotFound``. A route that already
exists is refused with ``Sandbox.RouteEntryExists``: a code of the sandbox's own, named so that
nobody mistakes it for Alibaba's (whose code for this is not documented); the bot relies on no
code here and reads the route tables instead.

``AutoConfigRoute`` (default true) is carried out: once the create is done, the gateway has a
published destination route to each remote subnet through the new connection.

Also here: the parameter helpers the describe operations in :mod:`bot.sandbox.vpc` share.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import string
from collections.abc import Mapping
from typing import Any

from bot.sandbox.vpc_state import (
    BgpConfig,
    Connection,
    Gateway,
    HealthCheck,
    IkeSettings,
    IpsecSettings,
    PbrRoute,
    Route,
    SandboxApiError,
    SandboxState,
    Tunnel,
    TunnelBgp,
    new_resource_id,
)

__all__ = [
    "create_vpn_connection",
    "create_vpn_pbr_route_entry",
    "create_vpn_route_entry",
    "gateway_of",
    "int_param",
    "invalid",
    "missing",
    "region_of",
    "require",
]

_BUSY = "VpnGateway.Configuring"
_ENC = frozenset({"aes", "aes192", "aes256", "des", "3des", "sm4"})
_AUTH = frozenset({"md5", "sha1", "sha256", "sha384", "sha512", "sm3"})
_IKE_PFS = frozenset({"group1", "group2", "group5", "group14"})
_IPSEC_PFS = _IKE_PFS | {"disabled"}
_IKE_KEYS = frozenset(
    {
        "Psk",
        "IkeVersion",
        "IkeMode",
        "IkeEncAlg",
        "IkeAuthAlg",
        "IkePfs",
        "IkeLifetime",
        "LocalId",
        "RemoteId",
    }
)
_IPSEC_KEYS = frozenset({"IpsecEncAlg", "IpsecAuthAlg", "IpsecPfs", "IpsecLifetime"})
# CreateVpnConnection's HealthCheckConfig (SDK 7.2.x docstring): no policy key.
_HEALTH_KEYS = frozenset({"enable", "dip", "sip", "interval", "retry"})
# CreateVpnConnection's BgpConfig (SDK 7.2.x docstring): no AuthKey, which is the customer gateway's.
_BGP_KEYS = frozenset({"EnableBgp", "LocalAsn", "TunnelCidr", "LocalBgpIp"})
_TUNNEL_KEYS = frozenset(
    {"CustomerGatewayId", "Role", "EnableDpd", "EnableNatTraversal", "RemoteCaCertificate"}
)
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")
# Alibaba's documented Psk alphabet: letters, digits and these symbols, no spaces.
_PSK_CHARS = frozenset(string.ascii_letters + string.digits + '~!`@#$%^&*()_-+={}[]\\|;:",.<>/?')


# --- parameter helpers ---------------------------------------------------------------------------


def missing(name: str) -> SandboxApiError:
    return SandboxApiError(
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
    )


def invalid(name: str, why: str) -> SandboxApiError:
    return SandboxApiError("InvalidParameter", f'The specified parameter "{name}" is not valid: {why}')


def require(params: Mapping[str, str], *names: str) -> None:
    for name in names:
        if not params.get(name):
            raise missing(name)


def int_param(params: Mapping[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise invalid(name, "not an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid(name, "not an integer") from None
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}")
    return value


def bool_param(params: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text not in ("true", "false"):
        raise invalid(name, "must be true or false")
    return text == "true"


def region_of(state: SandboxState, params: Mapping[str, str]) -> str:
    require(params, "RegionId")
    region = params["RegionId"]
    if region not in state.regions:
        raise SandboxApiError("InvalidRegionId.NotFound")
    return region


def gateway_of(state: SandboxState, params: Mapping[str, str], region: str) -> Gateway:
    require(params, "VpnGatewayId")
    gw = state.gateways.get(params["VpnGatewayId"])
    if gw is None or gw.region != region:
        raise SandboxApiError("InvalidVpnGatewayInstanceId.NotFound")
    return gw


def _json_object(params: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = params.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise invalid(name, "not JSON") from None
    if not isinstance(value, dict):
        raise invalid(name, "must be a JSON object")
    return value


def _group(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise invalid(f"{where}.{key}", "expected its fields as sub-parameters")
    return value


def _only(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise invalid(where, f"unknown key(s) {', '.join(unknown)}")


def _choice(raw: Mapping[str, Any], key: str, allowed: frozenset[str], default: str, where: str) -> str:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if str(value) not in allowed:
        raise invalid(f"{where}.{key}", f"must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _identity(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = str(raw.get(key) or "")
    if len(value) > 100 or " " in value:
        raise invalid(f"{where}.{key}", "at most 100 characters, no spaces")
    return value


def _cidr_list(params: Mapping[str, str], name: str) -> str:
    require(params, name)
    parts = [p.strip() for p in params[name].split(",")]
    try:
        nets = [ipaddress.ip_network(p, strict=False) for p in parts]
    except ValueError:
        raise SandboxApiError(f"IllegalParam.{name}", f"The {name} is not a list of CIDR blocks.") from None
    return ",".join(str(n) for n in nets)


def _route_cidr(params: Mapping[str, str], name: str) -> str:
    require(params, name)
    try:
        net = ipaddress.ip_network(params[name].strip(), strict=False)
    except ValueError:
        raise invalid(name, "not a CIDR block") from None
    if net.prefixlen == 0:
        raise invalid(name, "0.0.0.0/0 is not allowed")
    if net.version == 4 and net.overlaps(_SHARED_SPACE):
        raise invalid(name, "100.64.0.0/10 and the blocks around it are reserved")
    return str(net)


def _description(params: Mapping[str, str]) -> str:
    text = params.get("Description") or ""
    if len(text) > 100 or text.lower().startswith(("http://", "https://")):
        raise invalid("Description", "1 to 100 characters, not starting with http:// or https://")
    return text


def _now_ms(state: SandboxState) -> int:
    return int(state.clock().timestamp() * 1000)


def _dry_run(params: Mapping[str, str]) -> None:
    if bool_param(params, "DryRun", False):
        raise SandboxApiError("DryRunOperation", "Request validation has been passed with DryRun flag set.")


# --- IKE, IPsec, health check, BGP ----------------------------------------------------------------


def _psk(raw: Mapping[str, Any], where: str) -> str:
    value = raw.get("Psk")
    if value is None or value == "":
        # Alibaba generates a 16-character key when none is given.
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(16))
    text = str(value)
    if not 1 <= len(text) <= 100 or not set(text) <= _PSK_CHARS:
        raise invalid(f"{where}.Psk", "1 to 100 letters, digits or symbols, no spaces")
    return text


def _ike(raw: Mapping[str, Any], where: str) -> tuple[IkeSettings, str]:
    """Return the IKE settings and the pre-shared key (generated when none is given)."""
    _only(raw, _IKE_KEYS, where)
    settings = IkeSettings(
        version=_choice(raw, "IkeVersion", frozenset({"ikev1", "ikev2"}), "ikev1", where),
        mode=_choice(raw, "IkeMode", frozenset({"main", "aggressive"}), "main", where),
        enc_alg=_choice(raw, "IkeEncAlg", _ENC, "aes", where),
        auth_alg=_choice(raw, "IkeAuthAlg", _AUTH, "md5", where),
        pfs=_choice(raw, "IkePfs", _IKE_PFS, "group2", where),
        lifetime=int_param(raw, "IkeLifetime", 86400, low=0, high=86400),
        local_id=_identity(raw, "LocalId", where),
        remote_id=_identity(raw, "RemoteId", where),
    )
    return settings, _psk(raw, where)


def _ipsec(raw: Mapping[str, Any], where: str) -> IpsecSettings:
    _only(raw, _IPSEC_KEYS, where)
    return IpsecSettings(
        enc_alg=_choice(raw, "IpsecEncAlg", _ENC, "aes", where),
        auth_alg=_choice(raw, "IpsecAuthAlg", _AUTH, "md5", where),
        pfs=_choice(raw, "IpsecPfs", _IPSEC_PFS, "group2", where),
        lifetime=int_param(raw, "IpsecLifetime", 86400, low=0, high=86400),
    )


def _health_check(raw: Mapping[str, Any]) -> HealthCheck | None:
    if not raw:
        return None
    _only(raw, _HEALTH_KEYS, "HealthCheckConfig")
    enable = bool_param(raw, "enable", False)
    dip, sip = str(raw.get("dip") or ""), str(raw.get("sip") or "")
    for key, value in (("dip", dip), ("sip", sip)):
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise invalid(f"HealthCheckConfig.{key}", "not an IP address") from None
    if enable and not dip:
        raise invalid("HealthCheckConfig.dip", "required when the health check is enabled")
    return HealthCheck(
        enable=enable,
        dip=dip,
        sip=sip,
        interval=int_param(raw, "interval", 3, low=1, high=3600),
        retry=int_param(raw, "retry", 3, low=1, high=100),
        # Not a create key: the sandbox gives what it takes Alibaba's default to be (unverified).
        policy="revoke_route",
        status="success" if enable else "",
    )


def _tunnel_cidr(raw: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    """Return ``(tunnel CIDR, local BGP IP, the peer's IP)`` of a BGP /30 in 169.254.0.0/16."""
    try:
        net = ipaddress.ip_network(str(raw.get("TunnelCidr") or ""), strict=True)
    except ValueError:
        raise invalid(f"{where}.TunnelCidr", "a /30 inside 169.254.0.0/16") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 30 or not net.subnet_of(_LINK_LOCAL):
        raise invalid(f"{where}.TunnelCidr", "a /30 inside 169.254.0.0/16")
    first, second = list(net.hosts())
    local = str(raw.get("LocalBgpIp") or first)
    if local not in (str(first), str(second)):
        raise invalid(f"{where}.LocalBgpIp", "must be an address inside TunnelCidr")
    peer = str(second) if local == str(first) else str(first)
    return str(net), local, peer


def _bgp(raw: Mapping[str, Any]) -> BgpConfig | None:
    _only(raw, _BGP_KEYS, "BgpConfig")
    if not bool_param(raw, "EnableBgp", False):
        return None
    cidr, local, peer = _tunnel_cidr(raw, "BgpConfig")
    return BgpConfig(
        local_asn=int_param(raw, "LocalAsn", 45104, low=1, high=4_294_967_295),
        peer_asn=65001,  # the customer gateway's ASN; the sandbox has no customer gateways
        tunnel_cidr=cidr,
        local_bgp_ip=local,
        peer_bgp_ip=peer,
        auth_key="",  # the customer gateway's; the sandbox has no customer gateways
    )


# --- dual tunnels ---------------------------------------------------------------------------------


def _nested(params: Mapping[str, str], prefix: str) -> dict[int, dict[str, Any]]:
    """Read ``Prefix.N.Key`` and ``Prefix.N.Group.Key`` parameters into ``{N: {Key: v, Group: {...}}}``."""
    found: dict[int, dict[str, Any]] = {}
    for name, value in params.items():
        if not name.startswith(prefix + "."):
            continue
        index, _, rest = name[len(prefix) + 1 :].partition(".")
        if not index.isdigit() or not rest or int(index) < 1:
            raise invalid(name, "expected a 1-based index and a field")
        entry = found.setdefault(int(index), {})
        group, _, key = rest.partition(".")
        if key:
            entry.setdefault(group, {})[key] = value
        else:
            entry[group] = value
    return dict(sorted(found.items()))


def _tunnel(index: int, raw: Mapping[str, Any], *, bgp_on: bool) -> Tunnel:
    where = f"TunnelOptionsSpecification.{index}"
    _only(raw, _TUNNEL_KEYS | {"TunnelIkeConfig", "TunnelIpsecConfig", "TunnelBgpConfig"}, where)
    if not raw.get("CustomerGatewayId"):
        raise missing(f"{where}.CustomerGatewayId")
    ike, psk = _ike(_group(raw, "TunnelIkeConfig", where), f"{where}.TunnelIkeConfig")
    bgp_raw = _group(raw, "TunnelBgpConfig", where)
    _only(bgp_raw, frozenset({"LocalAsn", "LocalBgpIp", "TunnelCidr"}), f"{where}.TunnelBgpConfig")
    bgp = None
    if bgp_on:
        if not bgp_raw.get("LocalAsn"):
            raise missing(f"{where}.TunnelBgpConfig.LocalAsn")
        cidr, local, peer = _tunnel_cidr(bgp_raw, f"{where}.TunnelBgpConfig")
        asn = int_param(bgp_raw, "LocalAsn", 0, low=1, high=4_294_967_295)
        bgp = TunnelBgp(asn, cidr, local, peer_bgp_ip=peer)
    return Tunnel(
        index=index,
        role=_choice(raw, "Role", frozenset({"master", "slave"}), "master" if index == 1 else "slave", where),
        customer_gateway_id=str(raw["CustomerGatewayId"]),
        psk=psk,
        ike=ike,
        ipsec=_ipsec(_group(raw, "TunnelIpsecConfig", where), f"{where}.TunnelIpsecConfig"),
        bgp=bgp,
        enable_dpd=bool_param(raw, "EnableDpd", True),
        enable_nat_traversal=bool_param(raw, "EnableNatTraversal", True),
        status="ike_sa_not_established",
    )


def _tunnels(params: Mapping[str, str], *, bgp_on: bool) -> list[Tunnel]:
    specs = _nested(params, "TunnelOptionsSpecification")
    if len(specs) > 2:
        raise invalid("TunnelOptionsSpecification", "at most two tunnels")
    return [_tunnel(position, raw, bgp_on=bgp_on) for position, raw in enumerate(specs.values(), 1)]


def _tags(params: Mapping[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for index, raw in _nested(params, "Tags").items():
        key = str(raw.get("Key") or "")
        if not key or len(key) > 64 or key.startswith(("aliyun", "acs:")) or "://" in key:
            raise invalid(f"Tags.{index}.Key", "1 to 64 characters, not starting with aliyun or acs:")
        tags[key] = str(raw.get("Value") or "")
    if len(tags) > 20:
        raise invalid("Tags", "at most 20 tags")
    return tags


# --- the operations ------------------------------------------------------------------------------


def create_vpn_connection(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    """CreateVpnConnection: single-tunnel (CustomerGatewayId + JSON configs) or dual-tunnel."""
    region = region_of(state, params)
    require(params, "VpnGatewayId")
    local, remote = _cidr_list(params, "LocalSubnet"), _cidr_list(params, "RemoteSubnet")
    name = params.get("Name") or ""
    if len(name) > 100 or name.lower().startswith(("http://", "https://")):
        raise invalid("Name", "1 to 100 characters, not starting with http:// or https://")
    auto_config_route = bool_param(params, "AutoConfigRoute", True)
    tunnels_bgp = bool_param(params, "EnableTunnelsBgp", False)
    tunnels = _tunnels(params, bgp_on=tunnels_bgp)
    if tunnels:
        ike, psk = IkeSettings(), tunnels[0].psk
        ipsec, health, bgp, customer = IpsecSettings(), None, None, tunnels[0].customer_gateway_id
    else:
        require(params, "CustomerGatewayId")
        ike, psk = _ike(_json_object(params, "IkeConfig"), "IkeConfig")
        ipsec = _ipsec(_json_object(params, "IpsecConfig"), "IpsecConfig")
        health = _health_check(_json_object(params, "HealthCheckConfig"))
        bgp, customer = _bgp(_json_object(params, "BgpConfig")), params["CustomerGatewayId"]
    tags = _tags(params)
    gw = state.writable_gateway(region=region, gateway_id=params["VpnGatewayId"], busy_code=_BUSY)
    _dry_run(params)
    vco_id = new_resource_id("vco", region)
    conn = Connection(
        id=vco_id,
        region=region,
        gateway_id=gw.id,
        customer_gateway_id=customer,
        name=name or vco_id,
        local_subnet=local,
        remote_subnet=remote,
        psk=psk,
        status="ike_sa_not_established",
        create_time_ms=_now_ms(state),
        bgp=bgp,
        ike=ike,
        ipsec=ipsec,
        health_check=health,
        tunnels=tunnels,
        enable_dpd=bool_param(params, "EnableDpd", True),
        enable_nat_traversal=bool_param(params, "EnableNatTraversal", True),
        effect_immediately=bool_param(params, "EffectImmediately", False),
        enable_tunnels_bgp=tunnels_bgp,
        tags=tags,
        auto_config_route=auto_config_route,
    )
    state.create_connection(conn)
    return {"VpnConnectionId": conn.id, "Name": conn.name, "CreateTime": conn.create_time_ms}


def _route_target(state: SandboxState, params: Mapping[str, str]) -> tuple[Gateway, str, int, bool]:
    """Check what both route creations share; return ``(gateway, next hop, weight, publish)``."""
    region = region_of(state, params)
    require(params, "VpnGatewayId", "NextHop", "PublishVpc", "Weight")
    weight = int_param(params, "Weight", 100, low=0, high=100)
    if weight not in (0, 100):
        raise invalid("Weight", "must be 100 (active) or 0 (standby)")
    publish = bool_param(params, "PublishVpc", False)
    gw = state.writable_gateway(region=region, gateway_id=params["VpnGatewayId"], busy_code=_BUSY)
    conn = state.connections.get(params["NextHop"])
    if conn is None or conn.gateway_id != gw.id:
        raise SandboxApiError(
            "InvalidVpnConnectionInstanceId.NotFound", "The next hop is not a connection of this gateway."
        )
    return gw, conn.id, weight, publish


def _route_answer(route: Route | PbrRoute) -> dict[str, Any]:
    return {
        "VpnInstanceId": route.gateway_id,
        "RouteDest": route.dest,
        "NextHop": route.next_hop,
        "Weight": route.weight,
        "OverlayMode": route.overlay_mode,
        "Description": route.description,
        "CreateTime": route.create_time_ms,
        "State": route.state,
    }


def _already(what: str) -> SandboxApiError:
    return SandboxApiError("Sandbox.RouteEntryExists", f"The {what} already exists on this gateway.")


def create_vpn_route_entry(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    """CreateVpnRouteEntry: a destination-based route to a connection of the gateway."""
    dest, description = _route_cidr(params, "RouteDest"), _description(params)
    gw, next_hop, weight, publish = _route_target(state, params)
    if any(r.gateway_id == gw.id and (r.dest, r.next_hop) == (dest, next_hop) for r in state.routes):
        raise _already("destination-based route")
    _dry_run(params)
    route = Route(
        gateway_id=gw.id,
        dest=dest,
        next_hop=next_hop,
        state="published" if publish else "normal",
        weight=weight,
        create_time_ms=_now_ms(state),
        description=description,
        overlay_mode=params.get("OverlayMode") or "Ipsec",
    )
    state.add_route(route)
    return _route_answer(route)


def create_vpn_pbr_route_entry(state: SandboxState, params: Mapping[str, str]) -> dict[str, Any]:
    """CreateVpnPbrRouteEntry: a policy-based route (source and destination) to a connection."""
    source, dest = _route_cidr(params, "RouteSource"), _route_cidr(params, "RouteDest")
    description = _description(params)
    priority = int_param(params, "Priority", 10, low=1, high=100)
    gw, next_hop, weight, publish = _route_target(state, params)
    key = (source, dest, next_hop)
    if any(r.gateway_id == gw.id and (r.source, r.dest, r.next_hop) == key for r in state.pbr_routes):
        raise _already("policy-based route")
    _dry_run(params)
    route = PbrRoute(
        gateway_id=gw.id,
        source=source,
        dest=dest,
        next_hop=next_hop,
        priority=priority,
        weight=weight,
        state="published" if publish else "normal",
        create_time_ms=_now_ms(state),
        description=description,
        overlay_mode=params.get("OverlayMode") or "Ipsec",
    )
    state.add_route(route)
    return _route_answer(route) | {"RouteSource": route.source, "Priority": route.priority}
