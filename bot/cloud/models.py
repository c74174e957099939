"""Pydantic models of the VPC API (2016-04-28) responses the bot reads.

Field names are snake_case; aliases are Alibaba's PascalCase (``to_pascal``). A model declares
only the fields the bot reads; everything else in an answer is ignored (``extra="ignore"``), so a
new API field never breaks the bot. The secrets in an answer (IKE ``Psk``, BGP ``AuthKey``, the
tunnels' ``Psk``) are never read, so they are not declared: a parsed answer does not hold them.
``to_domain()`` gives the records of :mod:`bot.domain`.
The parameters of CreateVpnConnection are in :mod:`bot.cloud.specs`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_pascal

from bot.domain import CustomerGateway, VpnConnection, VpnGateway

__all__ = [
    "CreateVpnConnectionResponse",
    "CreateVpnPbrRouteEntryResponse",
    "CreateVpnRouteEntryResponse",
    "CustomerGatewayDetail",
    "DeleteResponse",
    "DescribeRegionsResponse",
    "DescribeVpnConnectionsPage",
    "IkeConfig",
    "IpsecConfig",
    "Page",
    "Region",
    "Tag",
    "TunnelBgpConfig",
    "TunnelIkeConfig",
    "TunnelIpsecConfig",
    "TunnelOptions",
    "VcoHealthCheck",
    "VpnBgpConfig",
    "VpnConnectionDetail",
    "VpnGatewayDetail",
    "VpnPbrRouteEntriesPage",
    "VpnPbrRouteEntry",
    "VpnRouteEntriesPage",
    "VpnRouteEntry",
    "epoch_ms_to_datetime",
]


def _blank_to_none(value: Any) -> Any:
    # Alibaba sends "" for unset numbers in some places (tunnel options, BGP config).
    return None if value == "" else value


OptInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptBool = Annotated[bool | None, BeforeValidator(_blank_to_none)]


def epoch_ms_to_datetime(ms: int | None) -> datetime | None:
    """Convert Alibaba's epoch milliseconds to an aware UTC datetime."""
    if ms is None or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class Tag(_Model):
    key: str = ""
    value: str = ""


class _Tags(_Model):
    tag: list[Tag] = Field(default_factory=list)


class IkeConfig(_Model):
    ike_version: str | None = None
    ike_mode: str | None = None
    ike_enc_alg: str | None = None
    ike_auth_alg: str | None = None
    ike_pfs: str | None = None
    ike_lifetime: OptInt = None
    local_id: str | None = None
    remote_id: str | None = None


class IpsecConfig(_Model):
    ipsec_enc_alg: str | None = None
    ipsec_auth_alg: str | None = None
    ipsec_pfs: str | None = None
    ipsec_lifetime: OptInt = None


class VpnBgpConfig(_Model):
    enable_bgp: OptBool = None
    status: str | None = None
    local_asn: OptInt = None
    peer_asn: OptInt = None
    local_bgp_ip: str | None = None
    peer_bgp_ip: str | None = None
    tunnel_cidr: str | None = None


class VcoHealthCheck(_Model):
    enable: OptBool = None
    sip: str | None = None
    dip: str | None = None
    interval: OptInt = None
    retry: OptInt = None
    policy: str | None = None


class TunnelIkeConfig(_Model):
    # Inside TunnelOptions Alibaba sends lifetimes as strings; keep them as sent.
    ike_version: str | None = None
    ike_mode: str | None = None
    ike_enc_alg: str | None = None
    ike_auth_alg: str | None = None
    ike_pfs: str | None = None
    ike_lifetime: str | int | None = None
    local_id: str | None = None
    remote_id: str | None = None


class TunnelIpsecConfig(_Model):
    ipsec_enc_alg: str | None = None
    ipsec_auth_alg: str | None = None
    ipsec_pfs: str | None = None
    ipsec_lifetime: str | int | None = None


class TunnelBgpConfig(_Model):
    bgp_status: str | None = None
    local_asn: str | int | None = None
    peer_asn: str | int | None = None
    local_bgp_ip: str | None = None
    peer_bgp_ip: str | None = None
    tunnel_cidr: str | None = None
    # No AuthKey: the official SDK's TunnelBgpConfig has none (unknown fields are ignored anyway).


class TunnelOptions(_Model):
    tunnel_index: OptInt = None
    role: str | None = None
    state: str | None = None
    status: str | None = None
    customer_gateway_id: str | None = None
    enable_dpd: OptBool = None
    enable_nat_traversal: OptBool = None
    remote_ca_certificate: str | None = None
    tunnel_ike_config: TunnelIkeConfig | None = None
    tunnel_ipsec_config: TunnelIpsecConfig | None = None
    tunnel_bgp_config: TunnelBgpConfig | None = None


class _TunnelOptionsSpecification(_Model):
    tunnel_options: list[TunnelOptions] = Field(default_factory=list)


class VpnConnectionDetail(_Model):
    """One IPsec-VPN connection (DescribeVpnConnection, or an item of DescribeVpnConnections)."""

    vpn_connection_id: str
    vpn_gateway_id: str = ""
    customer_gateway_id: str = ""
    name: str = ""
    status: str = ""
    local_subnet: str = ""
    remote_subnet: str = ""
    create_time: OptInt = None
    effect_immediately: OptBool = None
    enable_dpd: OptBool = None
    enable_nat_traversal: OptBool = None
    enable_tunnels_bgp: OptBool = None
    remote_ca_certificate: str | None = None
    resource_group_id: str | None = None
    attach_type: str | None = None
    attach_instance_id: str | None = None
    transit_router_id: str | None = None
    ike_config: IkeConfig | None = None
    ipsec_config: IpsecConfig | None = None
    vpn_bgp_config: VpnBgpConfig | None = None
    vco_health_check: VcoHealthCheck | None = None
    tunnel_options_specification: _TunnelOptionsSpecification | None = None
    # The single-item answer says "Tags", the list answer "Tag"; both hold {"Tag": [...]}.
    tags: _Tags | None = Field(default=None, validation_alias=AliasChoices("Tags", "Tag", "tags"))

    @property
    def tunnels(self) -> list[TunnelOptions]:
        spec = self.tunnel_options_specification
        return list(spec.tunnel_options) if spec else []

    @property
    def tag_list(self) -> list[Tag]:
        return list(self.tags.tag) if self.tags else []

    def to_domain(self, region: str) -> VpnConnection:
        """Return the secret-free record (``region`` is not in the answer: pass the one asked)."""
        customer = self.customer_gateway_id
        if not customer:
            # Dual-tunnel connections carry their customer gateways per tunnel.
            ids = dict.fromkeys(t.customer_gateway_id for t in self.tunnels if t.customer_gateway_id)
            customer = ",".join(ids)
        return VpnConnection(
            id=self.vpn_connection_id,
            region=region,
            name=self.name,
            gateway_id=self.vpn_gateway_id,
            customer_gateway_id=customer,
            status=self.status,
            local_subnet=self.local_subnet,
            remote_subnet=self.remote_subnet,
            created_at=epoch_ms_to_datetime(self.create_time),
            resource_group_id=self.resource_group_id or "",
        )


class Page(_Model):
    """The paging fields common to Describe* list answers."""

    total_count: int = 0
    page_number: int = 1
    page_size: int = 10

    @property
    def has_more(self) -> bool:
        return self.page_number * self.page_size < self.total_count


class _VpnConnectionList(_Model):
    vpn_connection: list[VpnConnectionDetail] = Field(default_factory=list)


class DescribeVpnConnectionsPage(Page):
    vpn_connections: _VpnConnectionList = Field(default_factory=_VpnConnectionList)

    @property
    def items(self) -> list[VpnConnectionDetail]:
        return list(self.vpn_connections.vpn_connection)


class VpnGatewayDetail(_Model):
    """One VPN gateway (DescribeVpnGateway)."""

    vpn_gateway_id: str
    name: str = ""
    status: str = ""
    business_status: str = "Normal"

    def to_domain(self, region: str) -> VpnGateway:
        """Return the record the workflow polls."""
        return VpnGateway(
            id=self.vpn_gateway_id,
            region=region,
            name=self.name,
            status=self.status,
            business_status=self.business_status or "Normal",
        )


class CustomerGatewayDetail(_Model):
    """One customer gateway (DescribeCustomerGateway); its BGP ``AuthKey`` is never read."""

    customer_gateway_id: str
    name: str = ""
    ip_address: str = ""

    def to_domain(self, region: str) -> CustomerGateway:
        return CustomerGateway(
            id=self.customer_gateway_id, region=region, name=self.name, ip_address=self.ip_address
        )


class VpnRouteEntry(_Model):
    """A destination-based (``custom``) or BGP route of a VPN gateway."""

    route_dest: str = ""
    next_hop: str = ""
    route_entry_type: str | None = None
    state: str | None = None
    weight: OptInt = None
    # Not in the official SDK's model of this list (tests/cloud/test_oracle.py says so): a
    # snapshot keeps a route's description only if Alibaba sends one, unverified against the live API.
    description: str | None = None


class _VpnRouteEntryList(_Model):
    vpn_route_entry: list[VpnRouteEntry] = Field(default_factory=list)


class VpnRouteEntriesPage(Page):
    vpn_route_entries: _VpnRouteEntryList = Field(default_factory=_VpnRouteEntryList)

    @property
    def items(self) -> list[VpnRouteEntry]:
        return list(self.vpn_route_entries.vpn_route_entry)


class VpnPbrRouteEntry(_Model):
    """A policy-based route of a VPN gateway."""

    route_source: str = ""
    route_dest: str = ""
    next_hop: str = ""
    priority: OptInt = None
    weight: OptInt = None
    state: str | None = None
    # As for VpnRouteEntry.description: not in the official SDK's model of this list.
    description: str | None = None


class _VpnPbrRouteEntryList(_Model):
    vpn_pbr_route_entry: list[VpnPbrRouteEntry] = Field(default_factory=list)


class VpnPbrRouteEntriesPage(Page):
    vpn_pbr_route_entries: _VpnPbrRouteEntryList = Field(default_factory=_VpnPbrRouteEntryList)

    @property
    def items(self) -> list[VpnPbrRouteEntry]:
        return list(self.vpn_pbr_route_entries.vpn_pbr_route_entry)


class Region(_Model):
    region_id: str
    local_name: str = ""
    region_endpoint: str | None = None


class _RegionList(_Model):
    region: list[Region] = Field(default_factory=list)


class DescribeRegionsResponse(_Model):
    request_id: str | None = None
    regions: _RegionList = Field(default_factory=_RegionList)

    @property
    def items(self) -> list[Region]:
        return list(self.regions.region)


class DeleteResponse(_Model):
    request_id: str


# --- the create answers -------------------------------------------------------------------------------


class CreateVpnConnectionResponse(_Model):
    """CreateVpnConnection's answer: the new connection's id (the gateway is now ``updating``)."""

    request_id: str
    vpn_connection_id: str


class CreateVpnRouteEntryResponse(_Model):
    """CreateVpnRouteEntry's answer: its request id (the route's fields echo what was sent)."""

    request_id: str


class CreateVpnPbrRouteEntryResponse(CreateVpnRouteEntryResponse):
    """CreateVpnPbrRouteEntry's answer: its request id, as for CreateVpnRouteEntry."""
