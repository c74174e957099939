"""Domain records shared by the workflow, the store, the cloud adapter and the Slack layer.

They are frozen dataclasses holding only what people may see: no pre-shared key, no BGP
AuthKey, no token. The cloud client's own pydantic models keep the secrets and convert to
these records with ``to_domain()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "Accepted",
    "AuditEntry",
    "Deleted",
    "Failed",
    "GatewayUpdating",
    "OpState",
    "Operation",
    "Progress",
    "Queued",
    "Resumed",
    "Retrying",
    "TimedOut",
    "VpnConnection",
    "VpnGateway",
]


@dataclass(frozen=True, slots=True)
class VpnConnection:
    """An IPsec-VPN connection as shown to people (no secrets)."""

    id: str
    region: str
    name: str
    gateway_id: str
    customer_gateway_id: str
    status: str
    local_subnet: str
    remote_subnet: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VpnGateway:
    """A VPN gateway's identity and state; ``status`` is init|provisioning|active|updating|deleting."""

    id: str
    region: str
    name: str
    status: str
    business_status: str = "Normal"


class OpState(StrEnum):
    """The states of one deletion operation.

    ::

        awaiting_approval ──approve──> approved ──gateway free──> deleting ──accepted──> waiting_gateway
              │  │                     (queued behind another        │                      │
              │  └─expire─> expired     delete on the same gateway)  └─error─> failed       └─active─> verifying
              └─cancel─> cancelled                                                                 │
                                                                              NotFound ─> deleted ─┤
        approved/deleting/waiting_gateway/verifying ──deadline passed──> timed_out     still there ─> failed

    Approval is the point of no return: only ``awaiting_approval`` can be cancelled or expire.
    """

    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DELETING = "deleting"
    WAITING_GATEWAY = "waiting_gateway"
    VERIFYING = "verifying"
    DELETED = "deleted"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"


TERMINAL_STATES: frozenset[OpState] = frozenset(
    {OpState.DELETED, OpState.FAILED, OpState.CANCELLED, OpState.EXPIRED, OpState.TIMED_OUT}
)
# States in which the bot owes work: a worker holding the lease drives them forward.
ACTIVE_STATES: frozenset[OpState] = frozenset(
    {OpState.APPROVED, OpState.DELETING, OpState.WAITING_GATEWAY, OpState.VERIFYING}
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One request to delete one connection, from the slash command to its final state."""

    id: str
    state: OpState
    region: str
    connection: VpnConnection
    gateway: VpnGateway
    requester_id: str
    channel_id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    client_token: str
    team_id: str = ""
    message_ts: str | None = None
    response_url: str | None = None
    approver_id: str | None = None
    approved_at: datetime | None = None
    cancelled_by: str | None = None
    delete_request_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    error_code: str | None = None
    error_text: str | None = None
    attempts: int = 0
    version: int = 0

    @property
    def vco_id(self) -> str:
        return self.connection.id

    @property
    def gateway_id(self) -> str:
        return self.connection.gateway_id

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One durable audit record: who did what, when, to which operation, with Alibaba's RequestId."""

    at: datetime
    action: str
    actor_id: str
    op_id: str | None = None
    vco_id: str | None = None
    region: str | None = None
    detail: str = ""
    request_id: str | None = None


# --- progress events: what the workflow tells the thread; the Slack layer renders them ---------


@dataclass(frozen=True, slots=True)
class Accepted:
    """Alibaba Cloud accepted DeleteVpnConnection."""

    request_id: str


@dataclass(frozen=True, slots=True)
class GatewayUpdating:
    """The gateway went to ``updating``: the deletion is in progress."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class Retrying:
    """A retryable error; the bot tries again after ``delay_s``."""

    reason: str
    delay_s: float
    attempt: int
    max_attempts: int
    code: str = ""


@dataclass(frozen=True, slots=True)
class Queued:
    """Another deletion on the same gateway runs first; this one waits for it."""

    blocking_vco_id: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """A (re)started bot instance picked the operation up again."""

    instance: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """The connection is gone."""

    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The deletion failed; ``text`` is the friendly reason and what to do."""

    code: str
    text: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The overall deadline passed; ``text`` says what to check."""

    text: str
    waited_s: float = 0.0
    details: dict[str, str] = field(default_factory=dict)


Progress = Accepted | GatewayUpdating | Retrying | Queued | Resumed | Deleted | Failed | TimedOut
