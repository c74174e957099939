"""The parameters of CreateVpnConnection, as typed specs that render Alibaba's wire form.

:class:`VpnConnectionSpec` is a single-tunnel connection (customer gateway, ``IkeConfig``,
``IpsecConfig``, ``HealthCheckConfig``, ``BgpConfig`` as JSON text) or a dual-tunnel one
(``TunnelOptionsSpecification.N.*``), reference ``recreate-accounts-modals.md`` §1. Keys (``Psk``,
BGP ``AuthKey``) are ``SecretStr``: hidden in ``repr``/``str``/``model_dump_json``;
:meth:`VpnConnectionSpec.to_params` is the only place they are revealed, to be sent.
:meth:`VpnConnectionSpec.from_detail` maps a described connection to the spec that recreates it
(reference §1.7) with keys given anew, never copied from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_pascal

from bot.cloud.models import (
    IkeConfig,
    IpsecConfig,
    TunnelIkeConfig,
    TunnelIpsecConfig,
    TunnelOptions,
    VcoHealthCheck,
    VpnBgpConfig,
    VpnConnectionDetail,
)

__all__ = [
    "BgpSpec",
    "HealthCheckSpec",
    "IkeSpec",
    "IpsecSpec",
    "TunnelBgpSpec",
    "TunnelSpec",
    "VpnConnectionSpec",
    "route_entry_params",
]


class _Spec(BaseModel):
    # Specs are built by the bot, never parsed from Alibaba: a misspelt field is a bug, not news.
    model_config = ConfigDict(frozen=True, extra="forbid")

    def _wire(self, *, pascal: bool = True) -> dict[str, Any]:
        """The set fields under Alibaba's names, secrets revealed, booleans as ``true``/``false``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[to_pascal(name) if pascal else name] = value
        return out


class IkeSpec(_Spec):
    """Phase 1 (``IkeConfig`` / ``TunnelIkeConfig``); ``psk=None`` lets Alibaba generate a key."""

    psk: SecretStr | None = None
    ike_version: Literal["ikev1", "ikev2"] | None = None
    ike_mode: Literal["main", "aggressive"] | None = None
    ike_enc_alg: str | None = None
    ike_auth_alg: str | None = None
    ike_pfs: str | None = None
    ike_lifetime: int | None = Field(default=None, ge=0, le=86400)
    local_id: str | None = None
    remote_id: str | None = None


class IpsecSpec(_Spec):
    """Phase 2 (``IpsecConfig`` / ``TunnelIpsecConfig``)."""

    ipsec_enc_alg: str | None = None
    ipsec_auth_alg: str | None = None
    ipsec_pfs: str | None = None
    ipsec_lifetime: int | None = Field(default=None, ge=0, le=86400)


class HealthCheckSpec(_Spec):
    """``HealthCheckConfig``: Alibaba spells its keys in lower case."""

    enable: bool = True
    dip: str | None = None
    sip: str | None = None
    interval: int | None = Field(default=None, ge=1)
    retry: int | None = Field(default=None, ge=1)


class BgpSpec(_Spec):
    """Single-tunnel ``BgpConfig``; the peer's ASN and address come from the customer gateway."""

    enable_bgp: bool = True
    local_asn: int | None = Field(default=None, ge=1, le=4_294_967_295)
    tunnel_cidr: str | None = None
    local_bgp_ip: str | None = None
    # No AuthKey: DescribeVpnConnection returns one, but the official SDK's CreateVpnConnection
    # documents none for BgpConfig (tests/cloud/test_oracle.py), so it is not sent.


class TunnelBgpSpec(_Spec):
    local_asn: int | None = Field(default=None, ge=1, le=4_294_967_295)
    tunnel_cidr: str | None = None
    local_bgp_ip: str | None = None


class TunnelSpec(_Spec):
    """One element of ``TunnelOptionsSpecification`` (dual-tunnel gateways)."""

    customer_gateway_id: str
    role: Literal["master", "slave"] | None = None
    enable_dpd: bool | None = None
    enable_nat_traversal: bool | None = None
    remote_ca_certificate: str | None = None
    tunnel_ike_config: IkeSpec | None = None
    tunnel_ipsec_config: IpsecSpec | None = None
    tunnel_bgp_config: TunnelBgpSpec | None = None


def _json_param(spec: _Spec, *, pascal: bool = True) -> str:
    return json.dumps(spec._wire(pascal=pascal), separators=(",", ":"))


class VpnConnectionSpec(_Spec):
    """What CreateVpnConnection creates: single-tunnel (customer gateway + configs) or dual-tunnel (tunnels)."""

    vpn_gateway_id: str
    local_subnet: str
    remote_subnet: str
    name: str | None = None
    customer_gateway_id: str | None = None
    effect_immediately: bool | None = None
    enable_dpd: bool | None = None
    enable_nat_traversal: bool | None = None
    auto_config_route: bool | None = None
    enable_tunnels_bgp: bool | None = None
    remote_ca_certificate: str | None = None
    ike_config: IkeSpec | None = None
    ipsec_config: IpsecSpec | None = None
    health_check_config: HealthCheckSpec | None = None
    bgp_config: BgpSpec | None = None
    tunnel_options_specification: tuple[TunnelSpec, ...] = ()
    tags: Mapping[str, str] = Field(default_factory=dict)

    def to_params(self) -> dict[str, str]:
        """The request parameters, keys revealed: send them, never log them."""
        params: dict[str, str] = {}
        for key, value in self._wire().items():
            if isinstance(value, HealthCheckSpec):
                params[key] = _json_param(value, pascal=False)
            elif isinstance(value, _Spec):
                params[key] = _json_param(value)
            elif key not in ("TunnelOptionsSpecification", "Tags"):
                params[key] = str(value)
        for index, tunnel in enumerate(self.tunnel_options_specification, 1):
            params |= _flatten(f"TunnelOptionsSpecification.{index}", tunnel._wire())
        for index, (key, value) in enumerate(self.tags.items(), 1):
            params |= {f"Tags.{index}.Key": key, f"Tags.{index}.Value": value}
        return params

    def with_keys(self, psk: SecretStr, auth_key: SecretStr | None = None) -> VpnConnectionSpec:
        """This spec with the keys given anew: ``psk`` for the connection (or every tunnel), BGP ``auth_key``.

        A snapshot's spec has no key (none is ever kept); the recreation adds the ones typed in the
        modal here, just before the create is sent.
        """
        update: dict[str, Any] = {}
        if self.tunnel_options_specification:
            update["tunnel_options_specification"] = tuple(
                t.model_copy(
                    update={
                        "tunnel_ike_config": (t.tunnel_ike_config or IkeSpec()).model_copy(
                            update={"psk": psk}
                        )
                    }
                )
                for t in self.tunnel_options_specification
            )
        else:
            update["ike_config"] = (self.ike_config or IkeSpec()).model_copy(update={"psk": psk})
        # ``auth_key`` is not sent: CreateVpnConnection's BgpConfig has no AuthKey (see BgpSpec).
        return self.model_copy(update=update)

    @classmethod
    def from_detail(
        cls,
        detail: VpnConnectionDetail,
        *,
        vpn_gateway_id: str | None = None,
        psk: SecretStr | None = None,
        auth_key: SecretStr | None = None,
        tunnel_psks: Sequence[SecretStr | None] = (),
    ) -> VpnConnectionSpec:
        """The spec that recreates ``detail`` (reference §1.7), with keys given anew, never copied."""
        tunnels = tuple(
            _tunnel_spec(t, tunnel_psks[i] if i < len(tunnel_psks) else psk)
            for i, t in enumerate(detail.tunnels)
        )
        return cls(
            vpn_gateway_id=vpn_gateway_id or detail.vpn_gateway_id,
            local_subnet=detail.local_subnet,
            remote_subnet=detail.remote_subnet,
            name=detail.name or None,
            customer_gateway_id=None if tunnels else detail.customer_gateway_id or None,
            effect_immediately=detail.effect_immediately,
            enable_dpd=None if tunnels else detail.enable_dpd,
            enable_nat_traversal=None if tunnels else detail.enable_nat_traversal,
            enable_tunnels_bgp=detail.enable_tunnels_bgp if tunnels else None,
            remote_ca_certificate=detail.remote_ca_certificate or None,
            ike_config=None if tunnels else _ike_spec(detail.ike_config, psk),
            ipsec_config=None if tunnels else _ipsec_spec(detail.ipsec_config),
            health_check_config=None if tunnels else _health_spec(detail.vco_health_check),
            bgp_config=None if tunnels else _bgp_spec(detail.vpn_bgp_config, auth_key),
            tunnel_options_specification=tunnels,
            tags={t.key: t.value for t in detail.tag_list if t.key},
        )


def _flatten(prefix: str, wire: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in wire.items():
        if isinstance(value, _Spec):
            out |= _flatten(f"{prefix}.{key}", value._wire())
        else:
            out[f"{prefix}.{key}"] = str(value)
    return out


def _one_of(value: str | None, *allowed: str) -> Any:
    # Any: pydantic checks the Literal when the spec is built; an unknown value is left out.
    return value if value in allowed else None


def _int_or_none(value: str | int | None) -> int | None:
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def _ike_spec(ike: IkeConfig | TunnelIkeConfig | None, psk: SecretStr | None) -> IkeSpec:
    if ike is None:
        return IkeSpec(psk=psk)
    return IkeSpec(
        psk=psk,
        ike_version=_one_of(ike.ike_version, "ikev1", "ikev2"),
        ike_mode=_one_of(ike.ike_mode, "main", "aggressive"),
        ike_enc_alg=ike.ike_enc_alg or None,
        ike_auth_alg=ike.ike_auth_alg or None,
        ike_pfs=ike.ike_pfs or None,
        ike_lifetime=_int_or_none(ike.ike_lifetime),
        local_id=ike.local_id or None,
        remote_id=ike.remote_id or None,
    )


def _ipsec_spec(ipsec: IpsecConfig | TunnelIpsecConfig | None) -> IpsecSpec | None:
    if ipsec is None:
        return None
    return IpsecSpec(
        ipsec_enc_alg=ipsec.ipsec_enc_alg or None,
        ipsec_auth_alg=ipsec.ipsec_auth_alg or None,
        ipsec_pfs=ipsec.ipsec_pfs or None,
        ipsec_lifetime=_int_or_none(ipsec.ipsec_lifetime),
    )


def _health_spec(check: VcoHealthCheck | None) -> HealthCheckSpec | None:
    if check is None or not check.enable:
        return None
    return HealthCheckSpec(
        dip=check.dip or None, sip=check.sip or None, interval=check.interval, retry=check.retry
    )


def _bgp_spec(bgp: VpnBgpConfig | None, auth_key: SecretStr | None) -> BgpSpec | None:
    # The list answer's VpnBgpConfig has no EnableBgp: a tunnel CIDR then says BGP is on.
    enabled = (
        bgp.enable_bgp if bgp is not None and bgp.enable_bgp is not None else bool(bgp and bgp.tunnel_cidr)
    )
    if bgp is None or not enabled:
        return None
    return BgpSpec(
        local_asn=bgp.local_asn,
        tunnel_cidr=bgp.tunnel_cidr or None,
        local_bgp_ip=bgp.local_bgp_ip or None,
    )


def _tunnel_spec(tunnel: TunnelOptions, psk: SecretStr | None) -> TunnelSpec:
    bgp = tunnel.tunnel_bgp_config
    bgp_spec = None
    if bgp is not None and _int_or_none(bgp.local_asn) is not None:
        bgp_spec = TunnelBgpSpec(
            local_asn=_int_or_none(bgp.local_asn),
            tunnel_cidr=bgp.tunnel_cidr or None,
            local_bgp_ip=bgp.local_bgp_ip or None,
        )
    return TunnelSpec(
        customer_gateway_id=tunnel.customer_gateway_id or "",
        role=_one_of(tunnel.role, "master", "slave"),
        enable_dpd=tunnel.enable_dpd,
        enable_nat_traversal=tunnel.enable_nat_traversal,
        remote_ca_certificate=tunnel.remote_ca_certificate or None,
        tunnel_ike_config=_ike_spec(tunnel.tunnel_ike_config, psk),
        tunnel_ipsec_config=_ipsec_spec(tunnel.tunnel_ipsec_config),
        tunnel_bgp_config=bgp_spec,
    )


def route_entry_params(
    *,
    region: str,
    gateway_id: str,
    route_dest: str,
    next_hop: str,
    weight: int,
    publish_vpc: bool,
    description: str | None,
    client_token: str,
) -> dict[str, str]:
    """Return the parameters CreateVpnRouteEntry and CreateVpnPbrRouteEntry share (OverlayMode ``Ipsec``)."""
    params = {
        "RegionId": region,
        "VpnGatewayId": gateway_id,
        "RouteDest": route_dest,
        "NextHop": next_hop,
        "Weight": str(weight),
        "PublishVpc": "true" if publish_vpc else "false",
        "OverlayMode": "Ipsec",
        "ClientToken": client_token,
    }
    if description:
        params["Description"] = description
    return params
