"""RAM permission probes: every VPC action the bot uses, called with ids no account can have.

Alibaba Cloud authorises a call before it looks the resource up: a NotFound answer for the
missing VPN resource proves the action is allowed, a ``Forbidden`` answer proves it is not. Both
sets name rows of the bot's error table (:data:`bot.cloud.codes.ERROR_TABLE`; a test keeps them
in step); any other answer is read through that table's retry class and who must act.

**DeleteVpnConnection is probed without deleting anything**: it is called for
:data:`PROBE_VCO_ID` (with a fresh ClientToken), which no account can have. Likewise the create
actions Recreate uses are called on :data:`PROBE_GATEWAY_ID`, a gateway no account can have, so
nothing is ever created; its read of the customer gateway asks for :data:`PROBE_CGW_ID`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from bot.cloud.models import Region
from bot.cloud.specs import VpnConnectionSpec
from bot.doctor.model import CLOUD, Check, Status, unexpected
from bot.errors import CloudApiError, CloudError, RetryClass

__all__ = [
    "ALLOWED_ANSWERS",
    "DENIED_ANSWERS",
    "PROBES",
    "PROBE_CGW_ID",
    "PROBE_GATEWAY_ID",
    "PROBE_VCO_ID",
    "RAM_ACTIONS",
    "DoctorVpc",
    "is_denied",
    "permission_fix",
    "probe",
    "ram_policy",
]

log = logging.getLogger("bot.doctor")

PROBE_VCO_ID: Final = "vco-vpnbotdoctorprobe00000000"
PROBE_GATEWAY_ID: Final = "vpn-vpnbotdoctorprobe00000000"
PROBE_CGW_ID: Final = "cgw-vpnbotdoctorprobe00000000"
RAM_ACTIONS: Final = (
    "vpc:DescribeVpnConnection",
    "vpc:DescribeVpnConnections",
    "vpc:DescribeVpnGateway",
    "vpc:DeleteVpnConnection",
    "vpc:DescribeRegions",
    "vpc:DescribeVpnRouteEntries",
    "vpc:DescribeVpnPbrRouteEntries",
    # Recreate… (its customer gateway read again first, the connection, then the routes that pointed at it).
    "vpc:DescribeCustomerGateway",
    "vpc:CreateVpnConnection",
    "vpc:CreateVpnRouteEntry",
    "vpc:CreateVpnPbrRouteEntry",
)
# Error-table rows (bot/cloud/codes.py) that answer a probe of a missing resource: authorised.
ALLOWED_ANSWERS: Final = frozenset(
    {
        "InvalidVpnConnectionInstanceId.NotFound",
        "InvalidVpnGatewayInstanceId.NotFound",
        "InvalidCustomerGatewayInstanceId.NotFound",
    }
)
# Error-table rows that say the bot's RAM identity lacks the permission (both sub-user spellings).
DENIED_ANSWERS: Final = frozenset({"Forbidden", "Forbidden.RAM", "Forbidden.SubUser", "Forbbiden.SubUser"})


class DoctorVpc(Protocol):
    """The VPC calls the doctor makes; :class:`bot.cloud.client.VpcClient` implements it."""

    async def describe_regions(self) -> Sequence[Region]: ...

    async def describe_vpn_connections(
        self, *, region: str, vpn_connection_id: str | None = None
    ) -> Sequence[object]: ...

    async def describe_vpn_connection_detail(self, *, region: str, vco_id: str) -> object: ...

    async def describe_vpn_gateway_detail(self, *, region: str, gateway_id: str) -> object: ...

    async def describe_customer_gateway_detail(self, *, region: str, customer_gateway_id: str) -> object: ...

    async def describe_vpn_route_entries(self, *, region: str, gateway_id: str) -> Sequence[object]: ...

    async def describe_vpn_pbr_route_entries(self, *, region: str, gateway_id: str) -> Sequence[object]: ...

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str: ...

    async def create_vpn_connection(
        self, *, region: str, spec: VpnConnectionSpec, client_token: str
    ) -> object: ...

    async def create_vpn_route_entry(
        self, *, region: str, gateway_id: str, route_dest: str, next_hop: str, client_token: str
    ) -> object: ...

    async def create_vpn_pbr_route_entry(
        self,
        *,
        region: str,
        gateway_id: str,
        route_source: str,
        route_dest: str,
        next_hop: str,
        client_token: str,
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class Probe:
    """One permission probe: the action, what it reads, and the call."""

    action: str
    what: str
    call: Callable[[DoctorVpc, str], Awaitable[object]]


def _delete_probe(vpc: DoctorVpc, region: str) -> Awaitable[object]:
    # A fresh token, so the answer is never a replay of an earlier probe's.
    return vpc.delete_vpn_connection(region=region, vco_id=PROBE_VCO_ID, client_token=_token())


def _token() -> str:
    return f"vpnbot-doctor-{uuid.uuid4().hex}"


# Documentation ranges (RFC 5737), on a gateway that cannot exist: nothing is created.
_PROBE_SPEC = VpnConnectionSpec(
    vpn_gateway_id=PROBE_GATEWAY_ID,
    local_subnet="192.0.2.0/24",
    remote_subnet="198.51.100.0/24",
    customer_gateway_id=PROBE_CGW_ID,
)


PROBES: Final = (
    Probe(
        "DescribeVpnConnections",
        f"listing filtered to {PROBE_VCO_ID}",
        lambda vpc, region: vpc.describe_vpn_connections(region=region, vpn_connection_id=PROBE_VCO_ID),
    ),
    Probe(
        "DescribeVpnConnection",
        f"read of {PROBE_VCO_ID}",
        lambda vpc, region: vpc.describe_vpn_connection_detail(region=region, vco_id=PROBE_VCO_ID),
    ),
    Probe(
        "DescribeVpnGateway",
        f"read of {PROBE_GATEWAY_ID}",
        lambda vpc, region: vpc.describe_vpn_gateway_detail(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    Probe(
        "DescribeVpnRouteEntries",
        f"read of {PROBE_GATEWAY_ID}'s routes",
        lambda vpc, region: vpc.describe_vpn_route_entries(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    Probe(
        "DescribeVpnPbrRouteEntries",
        f"read of {PROBE_GATEWAY_ID}'s policy-based routes",
        lambda vpc, region: vpc.describe_vpn_pbr_route_entries(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    Probe(
        "DeleteVpnConnection",
        f"DeleteVpnConnection for {PROBE_VCO_ID}, an id that cannot exist",
        _delete_probe,
    ),
    Probe(
        "DescribeCustomerGateway",
        f"read of {PROBE_CGW_ID}",
        lambda vpc, region: vpc.describe_customer_gateway_detail(
            region=region, customer_gateway_id=PROBE_CGW_ID
        ),
    ),
    Probe(
        "CreateVpnConnection",
        f"CreateVpnConnection on {PROBE_GATEWAY_ID}, a gateway that cannot exist",
        lambda vpc, region: vpc.create_vpn_connection(region=region, spec=_PROBE_SPEC, client_token=_token()),
    ),
    Probe(
        "CreateVpnRouteEntry",
        f"CreateVpnRouteEntry on {PROBE_GATEWAY_ID}",
        lambda vpc, region: vpc.create_vpn_route_entry(
            region=region,
            gateway_id=PROBE_GATEWAY_ID,
            route_dest="198.51.100.0/24",
            next_hop=PROBE_VCO_ID,
            client_token=_token(),
        ),
    ),
    Probe(
        "CreateVpnPbrRouteEntry",
        f"CreateVpnPbrRouteEntry on {PROBE_GATEWAY_ID}",
        lambda vpc, region: vpc.create_vpn_pbr_route_entry(
            region=region,
            gateway_id=PROBE_GATEWAY_ID,
            route_source="192.0.2.0/24",
            route_dest="198.51.100.0/24",
            next_hop=PROBE_VCO_ID,
            client_token=_token(),
        ),
    ),
)


def is_denied(err: CloudError) -> bool:
    """Whether Alibaba Cloud answered that the bot's RAM identity lacks the permission."""
    return isinstance(err, CloudApiError) and err.code in DENIED_ANSWERS


def code_of(err: CloudError) -> str:
    """``code X, RequestId Y`` for a row's detail."""
    rid = f", RequestId {err.request_id}" if err.request_id else ""
    return f"code {err.code}{rid}"


def permission_fix(action: str) -> str:
    """How to grant one VPC action."""
    return (
        f"Grant vpc:{action} to the bot's RAM user or role (RAM console → Users/Roles → Grant Permission), "
        "e.g. with the least-privilege policy printed below."
    )


async def probe(vpc: DoctorVpc, region: str, p: Probe) -> Check:
    """Call one probe and read its answer into a row."""
    name = f"vpc:{p.action}"
    how = f"probe: {p.what}"
    if p.action == "DeleteVpnConnection":
        how += "; Alibaba Cloud checks the permission before it looks the id up, so nothing is deleted"
    try:
        await p.call(vpc, region)
    except CloudError as err:
        log.debug("doctor: %s probe answered %s", p.action, err.code, exc_info=True)
        return _answer_row(name, how, p.action, err)
    # The doctor's contract is a table, never a traceback: any crash becomes a row.
    except Exception as exc:
        log.debug("doctor: %s probe failed", p.action, exc_info=True)
        return unexpected(CLOUD, name, exc)
    if p.action == "DeleteVpnConnection":
        return Check(
            CLOUD,
            name,
            Status.WARN,
            f"Alibaba Cloud accepted the probe ({how}) instead of answering NotFound, so the permission "
            "could not be told apart.",
            "Check in the RAM console that the bot's identity has vpc:DeleteVpnConnection.",
        )
    return Check(CLOUD, name, Status.PASS, f"allowed ({how}; answered with an empty result).")


def _answer_row(name: str, how: str, action: str, err: CloudError) -> Check:
    info = err.info  # the client looked the code up in bot/cloud/codes.py
    if isinstance(err, CloudApiError) and err.code in ALLOWED_ANSWERS:
        return Check(CLOUD, name, Status.PASS, f"allowed ({how}; answered {err.code}).")
    if is_denied(err):
        fix = permission_fix(action)
        if action == "DeleteVpnConnection":
            fix += (
                " If your policy deliberately limits the bot to some connections (a Resource or Condition), "
                "the probe id is outside it: make sure it covers the connections you mean to delete."
            )
        return Check(
            CLOUD, name, Status.FAIL, f"missing ({how}; answered {code_of(err)}).", fix, needs_ram=True
        )
    if info.retry is not RetryClass.NEVER:
        detail = f"could not tell whether it is allowed ({how}; {code_of(err)}): {err.info.friendly}"
        return Check(
            CLOUD, name, Status.WARN, detail, "It passes by itself: run the doctor again in a minute."
        )
    detail = f"could not tell whether it is allowed ({how}; answered {code_of(err)}): {err.info.friendly}"
    return Check(CLOUD, name, Status.WARN, detail, f"{err.info.action} (who acts: {err.info.who.value})")


def ram_policy() -> str:
    """The least-privilege RAM policy document for the bot, as JSON."""
    document = {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": list(RAM_ACTIONS), "Resource": "*"}],
    }
    return json.dumps(document, indent=2)
