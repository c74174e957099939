"""The in-memory world behind the VPC sandbox: regions, gateways, connections, routes, faults.

Time is read from an injectable wall clock. A deletion is *lazy*: ``DeleteVpnConnection`` puts
the gateway in ``updating`` with a deadline, and :meth:`SandboxState.settle` (called before every
answer and every snapshot) finishes the deletions whose deadline has passed. No background task
runs, so nothing leaks between tests and a fake clock can step time forward.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_UPDATE_SECONDS",
    "SEED_CGW_HANGZHOU",
    "SEED_REGION",
    "SEED_REGION_OTHER",
    "SEED_VCO_HANGZHOU",
    "SEED_VCO_HANGZHOU_BGP",
    "SEED_VCO_HANGZHOU_GW2",
    "SEED_VCO_HANGZHOU_TUNNELS",
    "SEED_VCO_LOCKED",
    "SEED_VCO_SHANGHAI",
    "SEED_VPN_HANGZHOU",
    "SEED_VPN_HANGZHOU_2",
    "SEED_VPN_LOCKED",
    "SEED_VPN_SHANGHAI",
    "BgpConfig",
    "Connection",
    "CustomerGateway",
    "Fault",
    "FaultSet",
    "Gateway",
    "HealthCheck",
    "IkeSettings",
    "IpsecSettings",
    "PbrRoute",
    "RecordedRequest",
    "Region",
    "Route",
    "SandboxApiError",
    "SandboxState",
    "TokenRecord",
    "Tunnel",
    "TunnelBgp",
    "new_request_id",
    "new_resource_id",
    "region_prefix",
]

DEFAULT_UPDATE_SECONDS = 3.0

SEED_REGION = "cn-hangzhou"
SEED_REGION_OTHER = "cn-shanghai"
# Two healthy gateways in Hangzhou, one locked for overdue payment, one in Shanghai.
SEED_VPN_HANGZHOU = "vpn-bp1q8bgx4xnkm2ogj3pnb"
SEED_VPN_HANGZHOU_2 = "vpn-bp1hz2x7k9dq0w1e5rstu"
SEED_VPN_LOCKED = "vpn-bp1l0ck3d0vkz8f1w2x9a"
SEED_VPN_SHANGHAI = "vpn-uf6tr3e9m1pq5vx0ylk2a"
SEED_VCO_HANGZHOU = "vco-bp1bbi27hojx80nck4u3a"
SEED_VCO_HANGZHOU_BGP = "vco-bp1g2p0x7w3c4r5t6y8ua"
SEED_VCO_HANGZHOU_TUNNELS = "vco-bp1tui07ob10fmuro9xqa"
SEED_VCO_HANGZHOU_GW2 = "vco-bp1k5m8n2b4v6c8x0z1qa"
SEED_VCO_LOCKED = "vco-bp1f1nl0ck9e2d3c4b5a6"
SEED_VCO_SHANGHAI = "vco-uf6c0nn3ct10n5h4ngh4a"
SEED_CGW_HANGZHOU = "cgw-bp1pbw9tq0ibd1jvixz7a"

_NONCE_MEMORY = timedelta(
    minutes=30
)  # twice the date window: a nonce can't come back while its date is valid


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_request_id() -> str:
    """Return a RequestId shaped like Alibaba's (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


class SandboxApiError(Exception):
    """An Alibaba error answer: the server renders it as ``{"RequestId","HostId","Code",...}``."""

    def __init__(self, code: str, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(slots=True)
class Region:
    region_id: str
    local_name_zh: str
    local_name_en: str

    @property
    def endpoint(self) -> str:
        return f"vpc.{self.region_id}.aliyuncs.com"


@dataclass(slots=True)
class Gateway:
    id: str
    region: str
    name: str
    vpc_id: str
    vswitch_id: str
    internet_ip: str
    status: str = "active"
    business_status: str = "Normal"
    spec: str = "10M"
    charge_type: str = "POSTPAY"
    description: str = ""
    enable_bgp: bool = False
    create_time_ms: int = 1_700_000_000_000
    end_time_ms: int = 32_503_651_200_000
    tags: dict[str, str] = field(default_factory=dict)
    # The change in flight while ``status == "updating"``: its action, and the connection it
    # deletes or creates.
    task: str | None = None
    pending_delete: str | None = None
    pending_create: str | None = None
    updating_until: datetime | None = None


@dataclass(slots=True)
class CustomerGateway:
    """A customer gateway (the peer's device); a connection's ``customer_gateway_id`` names one."""

    id: str
    region: str
    name: str = ""
    ip_address: str = "203.0.113.10"
    description: str = ""
    asn: int = 65000
    auth_key: str = field(default="", repr=False)
    create_time_ms: int = 1_690_000_000_000
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class IkeSettings:
    """Phase-1 settings (``IkeConfig`` / a tunnel's ``TunnelIkeConfig``, without the key)."""

    version: str = "ikev2"
    mode: str = "main"
    enc_alg: str = "aes"
    auth_alg: str = "sha1"
    pfs: str = "group2"
    lifetime: int = 86400
    local_id: str = ""
    remote_id: str = ""


@dataclass(slots=True)
class IpsecSettings:
    """Phase-2 settings (``IpsecConfig`` / a tunnel's ``TunnelIpsecConfig``)."""

    enc_alg: str = "aes"
    auth_alg: str = "sha1"
    pfs: str = "group2"
    lifetime: int = 86400


@dataclass(slots=True)
class HealthCheck:
    """The connection's health check (``VcoHealthCheck``; created from ``HealthCheckConfig``)."""

    enable: bool = True
    dip: str = ""
    sip: str = ""
    interval: int = 3
    retry: int = 3
    policy: str = "revoke_route"
    status: str = "success"


@dataclass(slots=True)
class TunnelBgp:
    """One tunnel's BGP settings (``TunnelBgpConfig``; Alibaba sends no AuthKey for tunnels)."""

    local_asn: int
    tunnel_cidr: str
    local_bgp_ip: str
    peer_asn: int | None = None
    peer_bgp_ip: str = ""
    status: str = "success"


@dataclass(slots=True)
class Tunnel:
    """One tunnel of a dual-tunnel connection (``TunnelOptionsSpecification.TunnelOptions[]``)."""

    index: int
    role: str
    customer_gateway_id: str
    psk: str = field(repr=False)
    ike: IkeSettings = field(default_factory=IkeSettings)
    ipsec: IpsecSettings = field(default_factory=IpsecSettings)
    bgp: TunnelBgp | None = None
    enable_dpd: bool = True
    enable_nat_traversal: bool = True
    status: str = "ipsec_sa_established"
    state: str = "active"


@dataclass(slots=True)
class BgpConfig:
    local_asn: int
    peer_asn: int
    tunnel_cidr: str
    local_bgp_ip: str
    peer_bgp_ip: str
    auth_key: str = field(repr=False)
    status: str = "success"


@dataclass(slots=True)
class Connection:
    id: str
    region: str
    gateway_id: str
    customer_gateway_id: str
    name: str
    local_subnet: str
    remote_subnet: str
    psk: str = field(repr=False)
    status: str = "ipsec_sa_established"
    remote_ip: str = "203.0.113.10"
    create_time_ms: int = 1_700_000_000_000
    bgp: BgpConfig | None = None
    ike: IkeSettings = field(default_factory=IkeSettings)
    ipsec: IpsecSettings = field(default_factory=IpsecSettings)
    health_check: HealthCheck | None = None
    # Dual-tunnel connections describe each tunnel in TunnelOptionsSpecification instead of IkeConfig.
    tunnels: list[Tunnel] = field(default_factory=list)
    enable_dpd: bool = True
    enable_nat_traversal: bool = True
    effect_immediately: bool = False
    enable_tunnels_bgp: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    resource_group_id: str = "rg-acfmzw2jz2z5sandbox"
    # Created with AutoConfigRoute=true (the default): once set up, the gateway gets a published
    # destination route to each remote subnet through it (done by _finish).
    auto_config_route: bool = False

    @property
    def secrets(self) -> list[str]:
        """Every secret this connection answers with (Psk, BGP AuthKey, the tunnels' Psk)."""
        found = [self.psk, *(t.psk for t in self.tunnels)]
        if self.bgp is not None:
            found.append(self.bgp.auth_key)
        return list(dict.fromkeys(s for s in found if s))


@dataclass(slots=True)
class Route:
    """A destination-based (``custom``) or learned (``bgp``) route on a gateway."""

    gateway_id: str
    dest: str
    next_hop: str
    kind: str = "custom"
    state: str = "published"
    weight: int = 100
    create_time_ms: int = 1_700_000_000_000
    description: str = ""
    overlay_mode: str = "Ipsec"


@dataclass(slots=True)
class PbrRoute:
    """A policy-based route: traffic from ``source`` to ``dest`` goes to ``next_hop``."""

    gateway_id: str
    source: str
    dest: str
    next_hop: str
    priority: int = 10
    weight: int = 100
    state: str = "published"
    create_time_ms: int = 1_700_000_000_000
    description: str = ""
    overlay_mode: str = "Ipsec"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """The first answer for a ClientToken (success or error), replayed verbatim on reuse."""

    fingerprint: tuple[tuple[str, str], ...]
    body: Mapping[str, Any]
    status: int = 200


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as the sandbox saw it.

    ``outcome`` is ``ok`` (the operation ran), ``replayed`` (a ClientToken replay answered from
    the cache, nothing done), ``error`` (an Alibaba error answer) or ``fault`` (an injected fault).
    """

    at: datetime
    method: str
    action: str
    params: Mapping[str, str]
    client_token: str | None
    nonce: str | None
    access_key_id: str | None
    status: int
    outcome: str
    code: str | None = None
    request_id: str | None = None
    fault_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view for the control API, with the keys a create call carries masked."""
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat()
        data["params"] = {k: _mask_param(k, v) for k, v in self.params.items()}
        return data


_SECRET_NAMES = ("Psk", "AuthKey")
_MASK = "***"


def _mask_param(name: str, value: str) -> str:
    """Mask a secret parameter, or the secrets inside a JSON one (IkeConfig, BgpConfig)."""
    if name.rsplit(".", 1)[-1] in _SECRET_NAMES:
        return _MASK
    if not any(secret in value for secret in _SECRET_NAMES):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return _MASK
    if not isinstance(parsed, dict):
        return _MASK
    return json.dumps({k: _MASK if k in _SECRET_NAMES else v for k, v in parsed.items()})


_FAULT_FIELDS = frozenset(
    {
        "action",
        "code",
        "message",
        "http_status",
        "latency",
        "drop",
        "non_json",
        "times",
        "after",
        "params",
        "retry_after_ms",
        "after_processing",
        "drop_after",
    }
)


@dataclass(slots=True)
class Fault:
    """One injected fault.

    It matches requests for ``action`` (``None``: every action) whose parameters include
    ``params``; the first ``after`` matches pass untouched, then it fires ``times`` times
    (``None``: until removed). Effects: wait ``latency`` seconds, then either close the
    connection (``drop``), answer a non-JSON body (``non_json``, status ``http_status`` or 200),
    answer Alibaba's error JSON for ``code`` (status from the error table unless
    ``http_status``), answer a bare ``http_status`` with a plain-text body, or, with latency
    only, answer normally. With ``after_processing`` the operation runs first and the fault
    spoils only the answer (the "deleted, but the reply was lost" case); ``drop_after`` is the
    short form of ``drop`` + ``after_processing``: carry out the call, then close the connection
    without an answer. A ClientToken sent with such a call is remembered with the real answer,
    so a retry with the same token gets that answer replayed.
    """

    id: int
    action: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None
    latency: float = 0.0
    drop: bool = False
    non_json: bool = False
    times: int | None = None
    after: int = 0
    params: dict[str, str] = field(default_factory=dict)
    retry_after_ms: int | None = None
    after_processing: bool = False
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    @property
    def answers(self) -> bool:
        """Whether the fault replaces the real answer (rather than only delaying it)."""
        return self.drop or self.non_json or self.code is not None or self.http_status is not None

    def matches(self, action: str, params: Mapping[str, str]) -> bool:
        if self.exhausted or (self.action is not None and self.action != action):
            return False
        return all(params.get(k) == v for k, v in self.params.items())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultSet:
    """The faults injected into a sandbox, checked in the order they were added."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._next_id = 1

    @property
    def rules(self) -> list[Fault]:
        return list(self._rules)

    def add(
        self,
        *,
        action: str | None = None,
        code: str | None = None,
        message: str | None = None,
        http_status: int | None = None,
        latency: float = 0.0,
        drop: bool = False,
        non_json: bool = False,
        times: int | None = None,
        after: int = 0,
        params: Mapping[str, str] | None = None,
        retry_after_ms: int | None = None,
        after_processing: bool = False,
        drop_after: bool = False,
    ) -> Fault:
        """Inject a fault; see :class:`Fault` for the meaning of each field."""
        if drop_after:
            drop, after_processing = True, True
        # Our client's own transport codes have no wire form: map them to the fault that causes them.
        if code == "Transport.ConnectError":
            code, drop = None, True
        elif code == "Transport.BadResponse":
            code, non_json = None, True
        elif code == "Transport.Timeout":
            code, latency = None, latency or 60.0
        if sum((drop, non_json, code is not None)) > 1:
            raise ValueError("a fault answers one way: choose one of drop, non_json, code")
        if latency < 0 or (times is not None and times < 0) or after < 0:
            raise ValueError("latency, times and after must not be negative")
        if http_status is not None and not 100 <= http_status <= 599:
            raise ValueError(f"http_status {http_status} is not an HTTP status")
        fault = Fault(
            id=self._next_id,
            action=action,
            code=code,
            message=message,
            http_status=http_status,
            latency=float(latency),
            drop=drop,
            non_json=non_json,
            times=times,
            after=after,
            params={str(k): str(v) for k, v in (params or {}).items()},
            retry_after_ms=retry_after_ms,
            after_processing=after_processing,
        )
        if not fault.answers and not fault.latency:
            raise ValueError("a fault needs an effect: latency, drop, non_json, code or http_status")
        self._next_id += 1
        self._rules.append(fault)
        return fault

    def add_from_mapping(self, spec: Mapping[str, Any]) -> Fault:
        """Add a fault described by a JSON/YAML mapping with the same keys as :meth:`add`."""
        unknown = set(spec) - _FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return self.add(**spec)

    def load(self, data: Any) -> list[Fault]:
        """Add faults from parsed JSON/YAML: a list of mappings, one mapping, or ``{"faults": [...]}``."""
        if isinstance(data, Mapping) and "faults" in data:
            data = data["faults"]
        specs: Iterable[Any] = [data] if isinstance(data, Mapping) else (data or [])
        if not isinstance(specs, list) or not all(isinstance(s, Mapping) for s in specs):
            raise ValueError("faults must be a mapping or a list of mappings")
        added: list[Fault] = []
        try:
            for spec in specs:
                added.append(self.add_from_mapping(spec))
        except (ValueError, TypeError):
            # All or nothing: a file or request with one bad fault adds none.
            for fault in added:
                self.remove(fault.id)
            raise
        return added

    def take(self, action: str, params: Mapping[str, str]) -> Fault | None:
        """Return the fault that fires for this request, counting it, or ``None``."""
        for fault in self._rules:
            if not fault.matches(action, params):
                continue
            fault.seen += 1
            if fault.seen <= fault.after:
                continue
            fault.fired += 1
            return fault
        return None

    def remove(self, fault_id: int) -> bool:
        before = len(self._rules)
        self._rules = [f for f in self._rules if f.id != fault_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()


def _seed_regions() -> list[Region]:
    return [
        Region("cn-hangzhou", "华东1（杭州）", "China (Hangzhou)"),
        Region("cn-shanghai", "华东2（上海）", "China (Shanghai)"),
        Region("cn-beijing", "华北2（北京）", "China (Beijing)"),
        Region("cn-shenzhen", "华南1（深圳）", "China (Shenzhen)"),
        Region("ap-southeast-1", "新加坡", "Singapore"),
        Region("eu-central-1", "德国（法兰克福）", "Germany (Frankfurt)"),
    ]


def _seed_gateways() -> list[Gateway]:
    return [
        Gateway(
            id=SEED_VPN_HANGZHOU,
            region=SEED_REGION,
            name="hz-prod-vpn",
            vpc_id="vpc-bp1d9yv0x3ko1zt7q2wca",
            vswitch_id="vsw-bp1n5gm2y8zj7x9k4c1va",
            internet_ip="47.96.12.34",
            spec="20M",
            enable_bgp=True,
            description="Production site-to-site",
            create_time_ms=1_690_000_000_000,
            tags={"env": "prod"},
        ),
        Gateway(
            id=SEED_VPN_HANGZHOU_2,
            region=SEED_REGION,
            name="hz-staging-vpn",
            vpc_id="vpc-bp1s7t4g1n9q2w3e5r6ta",
            vswitch_id="vsw-bp1x2c3v4b5n6m7l8k9ja",
            internet_ip="47.96.56.78",
            create_time_ms=1_695_000_000_000,
            tags={"env": "staging"},
        ),
        Gateway(
            id=SEED_VPN_LOCKED,
            region=SEED_REGION,
            name="hz-overdue-vpn",
            vpc_id="vpc-bp1o3v4e5r6d7u8e9a0sa",
            vswitch_id="vsw-bp1q9w8e7r6t5y4u3i2oa",
            internet_ip="47.96.90.12",
            business_status="FinancialLocked",
            charge_type="Prepay",
            create_time_ms=1_680_000_000_000,
            end_time_ms=1_700_000_000_000,
        ),
        Gateway(
            id=SEED_VPN_SHANGHAI,
            region=SEED_REGION_OTHER,
            name="sh-prod-vpn",
            vpc_id="vpc-uf6p1r2o3d4s5h6a7n8ga",
            vswitch_id="vsw-uf6a1b2c3d4e5f6g7h8ia",
            internet_ip="106.14.23.45",
            create_time_ms=1_698_000_000_000,
            tags={"env": "prod"},
        ),
    ]


def _seed_tunnels() -> list[Tunnel]:
    # The master tunnel is up, the standby is not: the preview shows each tunnel's role and state.
    ike = IkeSettings(version="ikev2", enc_alg="aes256", auth_alg="sha256", pfs="group14")
    return [
        Tunnel(
            index=1,
            role="master",
            customer_gateway_id="cgw-bp1t2u3n4n5e6l7s8a9ba",
            psk="sandbox-psk-partner-c0de",
            ike=ike,
            bgp=TunnelBgp(65010, "169.254.20.0/30", "169.254.20.1", 65020, "169.254.20.2"),
        ),
        Tunnel(
            index=2,
            role="slave",
            customer_gateway_id="cgw-bp1t2u3n4n5e6l7s8a9bb",
            psk="sandbox-psk-partner-standby-d1e2",
            ike=dataclasses.replace(ike),
            bgp=TunnelBgp(65010, "169.254.21.0/30", "169.254.21.1", 65020, "169.254.21.2", "false"),
            status="ipsec_sa_not_established",
        ),
    ]


def _seed_connections() -> list[Connection]:
    return [
        Connection(
            id=SEED_VCO_HANGZHOU,
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU,
            customer_gateway_id=SEED_CGW_HANGZHOU,
            name="office-beijing",
            local_subnet="10.10.0.0/16",
            remote_subnet="192.168.10.0/24",
            psk="sandbox-psk-office-beijing-7f3a",
            remote_ip="203.0.113.10",
            create_time_ms=1_700_100_000_000,
            tags={"team": "netops"},
        ),
        Connection(
            id=SEED_VCO_HANGZHOU_BGP,
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU,
            customer_gateway_id="cgw-bp1d2c3b4a5z6y7x8w9va",
            name="idc-shenzhen-bgp",
            local_subnet="0.0.0.0/0",
            remote_subnet="0.0.0.0/0",
            psk="sandbox-psk-idc-shenzhen-91bc",
            remote_ip="203.0.113.20",
            create_time_ms=1_700_200_000_000,
            bgp=BgpConfig(
                local_asn=45104,
                peer_asn=65001,
                tunnel_cidr="169.254.11.0/30",
                local_bgp_ip="169.254.11.1",
                peer_bgp_ip="169.254.11.2",
                auth_key="sandbox-bgp-md5-4d2e",
            ),
            ike=IkeSettings(enc_alg="aes256", auth_alg="sha256", pfs="group14", lifetime=28800),
            ipsec=IpsecSettings(enc_alg="aes256", auth_alg="sha256", pfs="group14", lifetime=3600),
            health_check=HealthCheck(dip="10.200.0.1", sip="169.254.11.1", interval=5, retry=4),
            effect_immediately=True,
        ),
        Connection(
            id=SEED_VCO_HANGZHOU_TUNNELS,
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU,
            customer_gateway_id="cgw-bp1t2u3n4n5e6l7s8a9ba",
            name="partner-dual-tunnel",
            local_subnet="10.20.0.0/16",
            remote_subnet="172.16.0.0/16",
            psk="sandbox-psk-partner-c0de",
            remote_ip="198.51.100.30",
            status="ipsec_sa_not_established",
            create_time_ms=1_700_300_000_000,
            tunnels=_seed_tunnels(),
            enable_tunnels_bgp=True,
            tags={"team": "partners", "site": "dual"},
        ),
        Connection(
            id=SEED_VCO_HANGZHOU_GW2,
            region=SEED_REGION,
            gateway_id=SEED_VPN_HANGZHOU_2,
            customer_gateway_id="cgw-bp1s3t4a5g6i7n8g9c0ca",
            name="staging-lab",
            local_subnet="10.30.0.0/16",
            remote_subnet="192.168.30.0/24",
            psk="sandbox-psk-staging-lab-5e6f",
            remote_ip="203.0.113.40",
            create_time_ms=1_700_400_000_000,
        ),
        Connection(
            id=SEED_VCO_LOCKED,
            region=SEED_REGION,
            gateway_id=SEED_VPN_LOCKED,
            customer_gateway_id="cgw-bp1l0c4k5e6d7c8g9w0da",
            name="legacy-branch",
            local_subnet="10.40.0.0/16",
            remote_subnet="192.168.40.0/24",
            psk="sandbox-psk-legacy-branch-aa11",
            remote_ip="203.0.113.50",
            status="ike_sa_not_established",
            create_time_ms=1_690_500_000_000,
        ),
        Connection(
            id=SEED_VCO_SHANGHAI,
            region=SEED_REGION_OTHER,
            gateway_id=SEED_VPN_SHANGHAI,
            customer_gateway_id="cgw-uf6s1h2a3n4g5h6a7i8ea",
            name="office-shanghai",
            local_subnet="10.50.0.0/16",
            remote_subnet="192.168.50.0/24",
            psk="sandbox-psk-office-shanghai-bb22",
            remote_ip="203.0.113.60",
            create_time_ms=1_700_600_000_000,
        ),
        Connection(
            id="vco-uf6b4c5k6u7p8l9i0n1ka",
            region=SEED_REGION_OTHER,
            gateway_id=SEED_VPN_SHANGHAI,
            customer_gateway_id="cgw-uf6b1a2c3k4u5p6d7c8fa",
            name="backup-dc",
            local_subnet="10.60.0.0/16",
            remote_subnet="192.168.60.0/24",
            psk="sandbox-psk-backup-dc-cc33",
            remote_ip="203.0.113.70",
            create_time_ms=1_700_700_000_000,
        ),
    ]


def _customer_gateways_of(connections: Iterable[Connection]) -> dict[str, CustomerGateway]:
    """A customer gateway for each one the connections (and their tunnels) name, at the peer's address."""
    found: dict[str, CustomerGateway] = {}
    for conn in connections:
        for cgw_id in (conn.customer_gateway_id, *(t.customer_gateway_id for t in conn.tunnels)):
            if cgw_id and cgw_id not in found:
                found[cgw_id] = CustomerGateway(
                    id=cgw_id,
                    region=conn.region,
                    name=f"peer-{conn.name}",
                    ip_address=conn.remote_ip,
                    tags={"site": conn.name},
                )
    return found


def _seed_routes() -> tuple[list[Route], list[PbrRoute]]:
    routes = [
        Route(SEED_VPN_HANGZHOU, "192.168.10.0/24", SEED_VCO_HANGZHOU),
        Route(SEED_VPN_HANGZHOU, "192.168.11.0/24", SEED_VCO_HANGZHOU, weight=0),
        Route(SEED_VPN_HANGZHOU, "172.16.0.0/16", SEED_VCO_HANGZHOU_TUNNELS),
        Route(SEED_VPN_HANGZHOU, "10.200.0.0/16", SEED_VCO_HANGZHOU_BGP, kind="bgp", state="normal"),
        Route(SEED_VPN_HANGZHOU, "10.201.0.0/16", SEED_VCO_HANGZHOU_BGP, kind="bgp", state="normal"),
        Route(SEED_VPN_HANGZHOU_2, "192.168.30.0/24", SEED_VCO_HANGZHOU_GW2),
        Route(SEED_VPN_LOCKED, "192.168.40.0/24", SEED_VCO_LOCKED),
        Route(SEED_VPN_SHANGHAI, "192.168.50.0/24", SEED_VCO_SHANGHAI),
    ]
    pbr = [
        PbrRoute(SEED_VPN_HANGZHOU, "10.10.1.0/24", "192.168.10.128/25", SEED_VCO_HANGZHOU, priority=5),
        PbrRoute(SEED_VPN_HANGZHOU, "10.20.1.0/24", "172.16.1.0/24", SEED_VCO_HANGZHOU_TUNNELS),
        PbrRoute(SEED_VPN_HANGZHOU, "10.10.2.0/24", "10.200.8.0/24", SEED_VCO_HANGZHOU_BGP, priority=20),
        PbrRoute(SEED_VPN_SHANGHAI, "10.50.1.0/24", "192.168.50.0/25", SEED_VCO_SHANGHAI),
    ]
    return routes, pbr


_MAX_SEEDED = 10_000
# The id prefix Alibaba gives resources in a region (vco-bp1… in Hangzhou, vco-uf6… in Shanghai).
_REGION_PREFIX: Mapping[str, str] = {
    "cn-hangzhou": "bp1",
    "cn-shanghai": "uf6",
    "cn-beijing": "2ze",
    "cn-shenzhen": "wz9",
    "ap-southeast-1": "t4n",
    "eu-central-1": "gw8",
}
_BULK_KINDS = ("office", "branch", "store", "dc", "partner", "lab")
_BULK_CITIES = ("beijing", "shanghai", "shenzhen", "chengdu", "wuhan", "xian", "nanjing", "singapore")


def region_prefix(region: str) -> str:
    """The three characters after ``vco-``/``vpn-`` in the region's resource ids."""
    return _REGION_PREFIX.get(region, "0jl")


def new_resource_id(kind: str, region: str) -> str:
    """Return a fresh id shaped like Alibaba's, e.g. ``vco-bp1`` + 18 lower-case characters."""
    return f"{kind}-{region_prefix(region)}{uuid.uuid4().hex[:18]}"


def _bulk_gateway(gw_id: str, region: str, number: int) -> Gateway:
    return Gateway(
        id=gw_id,
        region=region,
        name=f"bulk-gw-{number:03d}",
        vpc_id=f"vpc-{gw_id[4:]}",
        vswitch_id=f"vsw-{gw_id[4:]}",
        internet_ip=f"198.18.{number // 250 % 250}.{number % 250 + 1}",
        create_time_ms=1_690_000_000_000 + number,
    )


def _bulk_connection(vco_id: str, region: str, gw_id: str, n: int) -> Connection:
    # Names mix a few words so that filtering by part of a name ("office") has something to find.
    name = f"{_BULK_KINDS[n % len(_BULK_KINDS)]}-{_BULK_CITIES[n // len(_BULK_KINDS) % len(_BULK_CITIES)]}-{n:04d}"
    return Connection(
        id=vco_id,
        region=region,
        gateway_id=gw_id,
        customer_gateway_id=f"cgw-{vco_id[4:]}",
        name=name,
        local_subnet=f"10.{100 + n // 250 % 100}.{n % 250}.0/24",
        remote_subnet=f"192.168.{n % 250}.0/24",
        psk=f"bulk-psk-{n:04d}-{uuid.uuid4().hex[:8]}",
        remote_ip=f"198.19.{n // 250 % 250}.{n % 250 + 1}",
        status=("ipsec_sa_established", "ipsec_sa_not_established", "ike_sa_not_established")[n % 3],
        create_time_ms=1_700_000_000_000 + n * 1000,
    )


def _seed_counts(value: Any, regions: Mapping[str, Region]) -> dict[str, int]:
    """Read ``seed_connections``: a count for the seed region, or a mapping of region to count."""
    counts = value if isinstance(value, Mapping) else {SEED_REGION: value}
    for region, count in counts.items():
        if region not in regions:
            raise ValueError(f"seed_connections: unknown region {region!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_SEEDED:
            raise ValueError(f"seed_connections: the count must be a whole number from 0 to {_MAX_SEEDED}")
    return {str(k): int(v) for k, v in counts.items()}


class SandboxState:
    """Everything the VPC sandbox knows; tests read and change it directly.

    ``update_seconds`` is how long a gateway stays ``updating`` after a delete; ``clock`` is the
    wall clock used for that and for the ``x-acs-date`` window. Deletions finish lazily: read
    ``gateways``/``connections`` after :meth:`settle` (every API answer and :meth:`snapshot` call it).
    """

    def __init__(
        self,
        *,
        update_seconds: float = DEFAULT_UPDATE_SECONDS,
        clock: Callable[[], datetime] = _utcnow,
        seed: bool = True,
    ) -> None:
        self.update_seconds = update_seconds
        self.clock = clock
        self.faults = FaultSet()
        self.regions: dict[str, Region] = {}
        self.gateways: dict[str, Gateway] = {}
        self.connections: dict[str, Connection] = {}
        # The customer gateways DescribeCustomerGateway finds (a test deletes one to make it gone).
        self.customer_gateways: dict[str, CustomerGateway] = {}
        self.routes: list[Route] = []
        self.pbr_routes: list[PbrRoute] = []
        self.requests: list[RecordedRequest] = []
        self.tokens: dict[tuple[str, str], TokenRecord] = {}
        self._nonces: OrderedDict[str, datetime] = OrderedDict()
        self.reset(seed=seed)

    def reset(self, *, seed: bool = True) -> None:
        """Forget everything (faults, requests, tokens, nonces) and reseed the default world."""
        self.faults.clear()
        self.requests.clear()
        self.tokens.clear()
        self._nonces.clear()
        self.regions = {r.region_id: r for r in _seed_regions()}
        self.gateways = {g.id: g for g in _seed_gateways()} if seed else {}
        self.connections = {c.id: c for c in _seed_connections()} if seed else {}
        self.customer_gateways = _customer_gateways_of(self.connections.values())
        self.routes, self.pbr_routes = _seed_routes() if seed else ([], [])

    # --- time-driven transitions ---------------------------------------------------------------

    def settle(self) -> None:
        """Finish every gateway change whose ``updating`` time is over."""
        now = self.clock()
        for gw in self.gateways.values():
            if gw.updating_until is not None and gw.updating_until <= now:
                self._finish(gw)

    def _finish(self, gw: Gateway) -> None:
        vco_id = gw.pending_delete
        if vco_id is not None:
            self.connections.pop(vco_id, None)
            # Routes pointing at the connection go with it: a next hop that no longer exists.
            self.routes = [r for r in self.routes if r.next_hop != vco_id]
            self.pbr_routes = [r for r in self.pbr_routes if r.next_hop != vco_id]
        created = self.connections.get(gw.pending_create or "")
        if created is not None:
            # The sandbox's peers always answer: a new connection comes up once it is set up.
            created.status = "ipsec_sa_established"
            for tunnel in created.tunnels:
                tunnel.status = "ipsec_sa_established"
            if created.auto_config_route:
                self._auto_routes(gw, created)
        gw.status, gw.updating_until = "active", None
        gw.task = gw.pending_delete = gw.pending_create = None

    def _auto_routes(self, gw: Gateway, conn: Connection) -> None:
        """AutoConfigRoute: a published route to each remote subnet (none for 0.0.0.0/0), made by Alibaba."""
        now_ms = int(self.clock().timestamp() * 1000)
        for cidr in conn.remote_subnet.split(","):
            cidr = cidr.strip()
            if not cidr or cidr == "0.0.0.0/0":
                continue
            if any((r.gateway_id, r.dest, r.next_hop) == (gw.id, cidr, conn.id) for r in self.routes):
                continue
            self.routes.append(Route(gw.id, cidr, conn.id, create_time_ms=now_ms))
        conn.auto_config_route = False

    def _begin_update(
        self, gw: Gateway, task: str, *, delete: str | None = None, create: str | None = None
    ) -> None:
        gw.status, gw.task = "updating", task
        gw.pending_delete, gw.pending_create = delete, create
        gw.updating_until = self.clock() + timedelta(seconds=self.update_seconds)

    def writable_gateway(self, *, region: str, gateway_id: str, busy_code: str) -> Gateway:
        """Return the gateway a change may start on, or raise what Alibaba would answer."""
        self.settle()
        gw = self.gateways.get(gateway_id)
        if gw is None or gw.region != region:
            raise SandboxApiError("InvalidVpnGatewayInstanceId.NotFound")
        if gw.business_status == "FinancialLocked":
            raise SandboxApiError("VpnGateway.FinancialLocked")
        if gw.status != "active":
            raise SandboxApiError(busy_code)
        return gw

    def delete_connection(self, *, region: str, vco_id: str) -> None:
        """Start the asynchronous deletion, or raise the error Alibaba would answer."""
        self.settle()
        conn = self.connections.get(vco_id)
        if conn is None or conn.region != region:
            raise SandboxApiError("InvalidVpnConnectionInstanceId.NotFound")
        gw = self.writable_gateway(region=region, gateway_id=conn.gateway_id, busy_code="VpnTask.CONFLICT")
        self._begin_update(gw, "DeleteVpnConnection", delete=vco_id)

    def create_connection(self, conn: Connection) -> None:
        """Add ``conn`` and start the gateway's asynchronous update (the caller checked the gateway)."""
        self.connections[conn.id] = conn
        self._begin_update(self.gateways[conn.gateway_id], "CreateVpnConnection", create=conn.id)

    def add_route(self, route: Route | PbrRoute) -> None:
        """Add a route and start the gateway's asynchronous update (the caller checked the gateway)."""
        if isinstance(route, PbrRoute):
            self.pbr_routes.append(route)
            task = "CreateVpnPbrRouteEntry"
        else:
            self.routes.append(route)
            task = "CreateVpnRouteEntry"
        self._begin_update(self.gateways[route.gateway_id], task)

    # --- bulk seeding (paging tests) -----------------------------------------------------------

    def seed_connections(self, region: str, count: int, *, per_gateway: int = 50) -> list[str]:
        """Add ``count`` connections in ``region``, ``per_gateway`` on each new gateway; return their ids."""
        if region not in self.regions:
            raise ValueError(f"seed_connections: unknown region {region!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_SEEDED:
            raise ValueError(f"seed_connections: the count must be a whole number from 0 to {_MAX_SEEDED}")
        prefix = region_prefix(region)
        start = sum(1 for c in self.connections.values() if c.id.startswith(f"vco-{prefix}bk"))
        ids: list[str] = []
        for n in range(start, start + count):
            gw_id = f"vpn-{prefix}bk{n // per_gateway:016d}"
            if gw_id not in self.gateways:
                self.gateways[gw_id] = _bulk_gateway(gw_id, region, n // per_gateway)
            conn = _bulk_connection(f"vco-{prefix}bk{n:016d}", region, gw_id, n)
            self.connections[conn.id] = conn
            self.customer_gateways.update(_customer_gateways_of([conn]))
            ids.append(conn.id)
        return ids

    def load_config(self, data: Any) -> None:
        """Apply a sandbox file or control body: faults, optionally with ``seed_connections``.

        ``seed_connections`` is a count (for the seed region) or ``{region: count}``. All or
        nothing: a bad entry adds no fault and seeds nothing.
        """
        counts: dict[str, int] = {}
        faults = data
        if isinstance(data, Mapping) and "seed_connections" in data:
            unknown = set(data) - {"seed_connections", "faults"}
            if unknown:
                raise ValueError(f"unknown sandbox file key(s): {', '.join(sorted(unknown))}")
            counts = _seed_counts(data["seed_connections"], self.regions)
            faults = data.get("faults") or []
        self.faults.load(faults)
        for region, count in counts.items():
            self.seed_connections(region, count)

    # --- replay protection ---------------------------------------------------------------------

    def use_nonce(self, nonce: str) -> bool:
        """Remember ``nonce``; return ``False`` if it was seen within the replay window."""
        now = self.clock()
        # Oldest first: forgetting the expired ones costs only what expired (a burst stays linear).
        while self._nonces:
            oldest, at = next(iter(self._nonces.items()))
            if now - at < _NONCE_MEMORY:
                break
            del self._nonces[oldest]
        seen = self._nonces.get(nonce)
        if seen is not None and now - seen < _NONCE_MEMORY:
            return False
        self._nonces[nonce] = now
        self._nonces.move_to_end(nonce)
        return True

    # --- assertions and the control API ---------------------------------------------------------

    def calls(self, action: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally for one action."""
        return [r for r in self.requests if action is None or r.action == action]

    def accepted(self, action: str) -> list[RecordedRequest]:
        """Requests for ``action`` that ran the operation (not replays, errors or faults)."""
        return [r for r in self.requests if r.action == action and r.outcome == "ok"]

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for ``GET /_sandbox/state``; secrets (Psk, BGP AuthKey) are left out."""
        self.settle()
        return {
            "update_seconds": self.update_seconds,
            "now": self.clock().isoformat(),
            "regions": [r.region_id for r in self.regions.values()],
            "gateways": [
                {
                    "id": g.id,
                    "region": g.region,
                    "name": g.name,
                    "status": g.status,
                    "business_status": g.business_status,
                    "task": g.task,
                    "pending_delete": g.pending_delete,
                    "pending_create": g.pending_create,
                    "updating_until": g.updating_until.isoformat() if g.updating_until else None,
                    "connections": [c.id for c in self.connections.values() if c.gateway_id == g.id],
                }
                for g in self.gateways.values()
            ],
            "connections": [
                {
                    "id": c.id,
                    "region": c.region,
                    "gateway_id": c.gateway_id,
                    "name": c.name,
                    "status": c.status,
                }
                for c in self.connections.values()
            ],
            "routes": [dataclasses.asdict(r) for r in self.routes],
            "pbr_routes": [dataclasses.asdict(r) for r in self.pbr_routes],
            "faults": [f.to_json() for f in self.faults.rules],
            "requests": [r.to_json() for r in self.requests],
        }
