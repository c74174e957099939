"""Domain records shared by the workflow, the store, the cloud adapter and the Slack layer.

They are frozen dataclasses holding only what people may see: no pre-shared key, no BGP
AuthKey, no token. The cloud client's own pydantic models keep the secrets and convert to
these records with ``to_domain()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, TypedDict

from pydantic import TypeAdapter

__all__ = [
    "ACTIVE_STATES",
    "ALREADY_DELETING",
    "ANNOUNCED_ACTIONS",
    "CUSTOMER_GATEWAY_GONE",
    "FREEZE_MAX",
    "GATEWAY_GONE",
    "IPSEC_UP",
    "KIND_DELETE",
    "KIND_RECREATE",
    "MAX_TAGS",
    "OPERATION_TAG",
    "PART_CONFIGURATION",
    "PART_CONNECTION",
    "PART_POLICY_ROUTES",
    "PART_ROUTES",
    "REASON_MAX",
    "RESERVED_TAG_PREFIXES",
    "SCHEDULED_GONE",
    "SCHEDULED_MOVED",
    "SCHEDULE_AT",
    "SCHEDULE_WINDOW",
    "TERMINAL_STATES",
    "Accepted",
    "Announced",
    "Approval",
    "ApprovalOutcome",
    "ApprovalResult",
    "ApprovalRule",
    "AuditEntry",
    "BatchMove",
    "ChangedSinceApproval",
    "ConnectionReady",
    "Crashed",
    "Created",
    "CustomerGateway",
    "Deferred",
    "Deleted",
    "Delivery",
    "Denied",
    "Effect",
    "EffectKind",
    "Escalated",
    "Expired",
    "Failed",
    "Freeze",
    "GatewayActive",
    "GatewayUpdating",
    "Held",
    "Impact",
    "ImpactBgp",
    "ImpactRoute",
    "ImpactTunnel",
    "KeyLost",
    "LookupFailed",
    "NotCarried",
    "OpFields",
    "OpState",
    "Operation",
    "Outcome",
    "PendingEffect",
    "PostFailed",
    "Progress",
    "Queued",
    "Recreated",
    "Reminded",
    "Reread",
    "Resumed",
    "Retrying",
    "RouteResult",
    "Scheduled",
    "Snapshot",
    "SnapshotRoute",
    "SnapshotTaken",
    "Starting",
    "StillExists",
    "TimedOut",
    "Unanswered",
    "Unread",
    "VpnConnection",
    "VpnGateway",
    "client_token_for",
    "event_from_json",
    "event_to_json",
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
    resource_group_id: str = ""


@dataclass(frozen=True, slots=True)
class VpnGateway:
    """A VPN gateway's identity and state; ``status`` is init|provisioning|active|updating|deleting."""

    id: str
    region: str
    name: str
    status: str
    business_status: str = "Normal"


@dataclass(frozen=True, slots=True)
class CustomerGateway:
    """A customer gateway (the peer's side of a connection) as DescribeCustomerGateway answers it."""

    id: str
    region: str
    name: str = ""
    ip_address: str = ""


# --- the impact preview: what deleting a connection takes down ---------------------------------------
#
# Built by the cloud adapter at request time from DescribeVpnConnection, DescribeVpnRouteEntries
# and DescribeVpnPbrRouteEntries, stored with the operation as JSON and rendered on its card.
# Only plain, secret-free values: no Psk, no BGP AuthKey, no raw answer.

IPSEC_UP = "ipsec_sa_established"
# The parts of the preview, each looked up on its own; these names are shown as "<part>: could not be read".
PART_CONNECTION = "tunnel, BGP and health check"
PART_ROUTES = "routes"
PART_POLICY_ROUTES = "policy-based routes"


@dataclass(frozen=True, slots=True)
class ImpactBgp:
    """BGP on a connection or one of its tunnels (the AuthKey is never kept)."""

    enabled: bool
    local_asn: int | None = None
    peer_asn: int | None = None
    peer_ip: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class ImpactTunnel:
    """One tunnel of a dual-tunnel connection: its role (master/slave), state and IPsec status."""

    index: int | None
    role: str
    state: str
    status: str
    bgp: ImpactBgp | None = None

    @property
    def is_up(self) -> bool:
        return self.status == IPSEC_UP


@dataclass(frozen=True, slots=True)
class ImpactRoute:
    """A gateway route whose next hop is the connection: ``kind`` is custom, bgp or policy."""

    kind: str
    destination: str
    # Policy-based routes only: the traffic's source CIDR.
    source: str = ""


@dataclass(frozen=True, slots=True)
class Unread:
    """A part of the preview that could not be read: Alibaba's ``code``, or none for a missed deadline."""

    part: str
    reason: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Impact:
    """What deleting one connection takes down, as looked up when the deletion was requested."""

    status: str = ""
    tunnels: tuple[ImpactTunnel, ...] = ()
    bgp: ImpactBgp | None = None
    health_check: bool | None = None
    health_check_ip: str = ""
    # AttachType (CEN, VPNGW, NO_ASSOCIATED) and the instance it is attached to.
    attach_type: str = ""
    attach_instance_id: str = ""
    # The routes through the connection (the first 100 kept) and how many there are in all.
    routes: tuple[ImpactRoute, ...] = ()
    route_count: int = 0
    unread: tuple[Unread, ...] = ()

    @property
    def is_up(self) -> bool:
        """Whether a tunnel has IPsec up: traffic may be flowing through it right now."""
        return self.status == IPSEC_UP or any(t.is_up for t in self.tunnels)

    @property
    def wider_attachment(self) -> bool:
        """Whether the connection is attached to a CEN or transit router (the blast radius is wider)."""
        return self.attach_type.upper() == "CEN" or self.attach_instance_id.startswith(("cen-", "tr-"))

    def unread_part(self, part: str) -> Unread | None:
        return next((u for u in self.unread if u.part == part), None)

    @classmethod
    def unavailable(cls, reason: str) -> Impact:
        """A preview of which nothing could be read, for ``reason``."""
        parts = (PART_CONNECTION, PART_ROUTES, PART_POLICY_ROUTES)
        return cls(unread=tuple(Unread(part=p, reason=reason) for p in parts))


# --- the configuration snapshot: what recreating a deleted connection needs ----------------------------
#
# Taken by the workflow just before DeleteVpnConnection is first sent, stored with the operation as
# JSON and posted in the thread after the deletion. Built from DescribeVpnConnection and the gateway's
# routes with the keys left out: no Psk, no BGP AuthKey, no tunnel key.

PART_CONFIGURATION = "configuration"


@dataclass(frozen=True, slots=True)
class SnapshotRoute:
    """A gateway route whose next hop was the connection: ``kind`` is custom, bgp or policy."""

    kind: str
    destination: str
    # Policy-based routes only: the traffic's source CIDR and the route's priority.
    source: str = ""
    priority: int | None = None
    weight: int | None = None
    description: str = ""
    # Whether it was published to the VPC's system route table (State ``published``); None in a
    # snapshot taken before this was recorded, which is recreated published as it always was.
    published: bool | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What tells two routes of one next hop apart: kind, destination and (policy) source."""
        return (self.kind, self.destination, self.source)


# The tag a recreation puts on the connection it creates (value: the operation's id), so that after
# a crash the connection is found by it and by nothing else (CreateTime, name and subnets can lie).
OPERATION_TAG = "vpnbot-operation"
# Tag keys CreateVpnConnection refuses (SDK CreateVpnConnectionRequestTags): Alibaba's own tags.
RESERVED_TAG_PREFIXES = ("aliyun", "acs:")
# CreateVpnConnection takes at most 20 tags (SDK CreateVpnConnectionRequestTags).
MAX_TAGS = 20


@dataclass(frozen=True, slots=True)
class NotCarried:
    """Something of the deleted connection that Recreate cannot put back, and what it was.

    ``part`` is one of ``resource_group`` (CreateVpnConnection takes no ResourceGroupId),
    ``health_check_policy`` (its HealthCheckConfig documents no policy), ``reserved_tags`` (keys
    starting with aliyun or acs:, which Create refuses), ``tags_over_limit`` (past the 20 Create
    takes, one place going to the bot's operation tag) and ``route_descriptions`` (not in
    DescribeVpnRouteEntries' answers at all). ``values`` are what was lost (names, not secrets).
    """

    part: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A connection's configuration as it was just before its deletion, without any key."""

    vco_id: str
    region: str
    name: str = ""
    gateway_id: str = ""
    customer_gateway_id: str = ""
    local_subnet: str = ""
    remote_subnet: str = ""
    # CreateVpnConnection's parameters as bot.cloud.specs.VpnConnectionSpec dumps them (keys left
    # out: VpnConnectionSpec.model_validate(config) gives the spec back); None when it was not read.
    config: dict[str, Any] | None = None
    routes: tuple[SnapshotRoute, ...] = ()
    unread: tuple[Unread, ...] = ()
    # What the described connection had that no create parameter carries (see NotCarried).
    resource_group_id: str = ""
    health_check_policy: str = ""
    # Tags left out of ``config``: reserved keys, and those past Create's limit.
    skipped_tags: tuple[str, ...] = ()
    over_limit_tags: tuple[str, ...] = ()

    @property
    def not_carried(self) -> tuple[NotCarried, ...]:
        """What Recreate will not put back, each with what it was (shown before the key is typed)."""
        lost: list[NotCarried] = []
        if self.resource_group_id:
            lost.append(NotCarried("resource_group", (self.resource_group_id,)))
        if self.health_check_policy:
            lost.append(NotCarried("health_check_policy", (self.health_check_policy,)))
        if self.skipped_tags:
            lost.append(NotCarried("reserved_tags", self.skipped_tags))
        if self.over_limit_tags:
            lost.append(NotCarried("tags_over_limit", self.over_limit_tags))
        if any(r.kind != "bgp" for r in self.routes):
            lost.append(NotCarried("route_descriptions"))
        return tuple(lost)

    @property
    def customer_gateway_ids(self) -> tuple[str, ...]:
        """The customer gateways a recreation from ``config`` uses: the connection's, or each tunnel's."""
        config = self.config or {}
        found = [str(config.get("customer_gateway_id") or "")]
        for tunnel in config.get("tunnel_options_specification") or ():
            if isinstance(tunnel, dict):
                found.append(str(tunnel.get("customer_gateway_id") or ""))
        return tuple(dict.fromkeys(c for c in found if c))

    @property
    def taken(self) -> bool:
        """Whether the connection's configuration itself was read (the routes may still be missing)."""
        return self.config is not None

    def unread_part(self, part: str) -> Unread | None:
        return next((u for u in self.unread if u.part == part), None)

    @classmethod
    def unavailable(cls, connection: VpnConnection, reason: str, code: str | None = None) -> Snapshot:
        """A snapshot of which nothing could be read, for ``reason``: only what the operation knew."""
        return cls(
            vco_id=connection.id,
            region=connection.region,
            name=connection.name,
            gateway_id=connection.gateway_id,
            customer_gateway_id=connection.customer_gateway_id,
            local_subnet=connection.local_subnet,
            remote_subnet=connection.remote_subnet,
            unread=(Unread(part=PART_CONFIGURATION, reason=reason, code=code),),
        )


@dataclass(frozen=True, slots=True)
class Reread:
    """A connection read afresh just before DeleteVpnConnection: its snapshot and, from the same
    answers, the impact preview as it is now, with the connection and its gateway.

    Never from the preview's short-lived cache. ``connection`` or ``gateway`` is None when it could
    not be read (the impact's ``unread`` says which of its own parts could not).
    """

    snapshot: Snapshot
    impact: Impact
    connection: VpnConnection | None
    gateway: VpnGateway | None


class OpState(StrEnum):
    """The states of one deletion operation.

    ::

        looking_up ──found──> awaiting_approval   (the request is recorded before the lookup, so a
              └─not found / error─> failed          crash during it is resumed by another worker)

        awaiting_approval ──approve──> approved ──gateway free──> deleting ──accepted──> waiting_gateway
              │  │                     (queued behind another        │                      │
              │  └─expire─> expired     delete on the same gateway)  └─error─> failed       └─active─> verifying
              └─cancel─> cancelled                                                                 │
                                                                              NotFound ─> deleted ─┤
        approved/deleting/waiting_gateway/verifying ──deadline passed──> timed_out     still there ─> failed

        awaiting_approval ──approve (a later run time, or outside the change window)──> scheduled
        scheduled ──run time due (or Override window)──> approved      (nothing held while it waits:
              ├─cancel─> cancelled                                      no lease, no gateway, no driver)
              └─connection gone or moved at the run time─> failed
        deleting ──changed since approval──> awaiting_approval   (nothing sent yet: attempts == 0)

    Approval is the point of no return once DeleteVpnConnection may have been sent: only
    ``awaiting_approval`` and ``scheduled`` can be cancelled; only ``awaiting_approval`` expires.
    Before the first send the bot reads the connection afresh and compares it with the preview that
    was approved (bot.workflow.binding): if something that matters changed, the approval is void and
    the request awaits approval again (a fresh expiry, the gateway's turn given back, no approver,
    no recorded quorum approvals), never with a send behind it.
    """

    LOOKING_UP = "looking_up"
    AWAITING_APPROVAL = "awaiting_approval"
    # Approved to run later (``run_at``): a requested time, or the next change window's opening.
    SCHEDULED = "scheduled"
    APPROVED = "approved"
    DELETING = "deleting"
    WAITING_GATEWAY = "waiting_gateway"
    VERIFYING = "verifying"
    DELETED = "deleted"
    # Recreations only (kind ``recreate``): CreateVpnConnection, then the routes, then done.
    CREATING = "creating"
    ROUTING = "routing"
    RECREATED = "recreated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"


TERMINAL_STATES: frozenset[OpState] = frozenset(
    {
        OpState.DELETED,
        OpState.RECREATED,
        OpState.FAILED,
        OpState.CANCELLED,
        OpState.EXPIRED,
        OpState.TIMED_OUT,
    }
)
# States in which the bot owes work: a worker holding the lease drives them forward.
ACTIVE_STATES: frozenset[OpState] = frozenset(
    {
        OpState.LOOKING_UP,
        OpState.APPROVED,
        OpState.DELETING,
        OpState.WAITING_GATEWAY,
        OpState.VERIFYING,
        OpState.CREATING,
        OpState.ROUTING,
    }
)
# The audit actions (AuditEntry.action, recreations' prefixed) that VPNBOT_AUDIT_CHANNEL gets one line
# about: the decisions. To announce another action, add it here: an entry written by a step's move
# (StepBase._move's audit_action) or its end (finish) is then announced in the same transaction;
# anywhere else, put ``*steps.announce(entry)`` into the effects written with the entry (for an entry
# of no operation, ``store.add_audit(entry, effects=steps.announce(entry))``).
ANNOUNCED_ACTIONS: frozenset[str] = frozenset(
    {
        "requested",
        "approved",
        "window_override",
        "started",
        "changed_since_approval",
        "frozen",
        "unfrozen",
        "cancelled",
        "expired",
        "deleted",
        "failed",
        "timed_out",
        "recreate_requested",
        "recreate_approved",
        "recreate_cancelled",
        "recreate_expired",
        "recreated",
        "recreate_failed",
        "recreate_timed_out",
    }
)
# The longest reason a person may give for a request or a denial (a sentence and a ticket number).
REASON_MAX = 500
# A recreation's error_code when its gateway, checked again just before CreateVpnConnection, was gone
# (or being deleted): nothing was sent.
GATEWAY_GONE = "gateway_gone"
# The same for a customer gateway the create would use (InvalidCustomerGatewayInstanceId.NotFound).
CUSTOMER_GATEWAY_GONE = "customer_gateway_gone"
# The error_code of a batch's member left out because another request is deleting its connection.
ALREADY_DELETING = "already_deleting"
# Operation.kind: a deletion, or the recreation of a deleted connection from its snapshot.
KIND_DELETE = "delete"
KIND_RECREATE = "recreate"
# Operation.schedule_kind: run at the requested time, or moved to the next change window's opening.
SCHEDULE_AT = "at"
SCHEDULE_WINDOW = "window"
# Error codes of a scheduled deletion that did not run: at its time the connection was gone, or on
# another gateway than the one approved.
SCHEDULED_GONE = "scheduled_connection_gone"
SCHEDULED_MOVED = "scheduled_connection_moved"


@dataclass(frozen=True, slots=True)
class RouteResult:
    """One route of a recreation: put back on the new connection (``ok``), or why not."""

    kind: str
    destination: str
    source: str = ""
    ok: bool = True
    # Alibaba's code and the friendly reason when it failed; "bgp" routes are skipped (learned again).
    code: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """How many people must approve an operation (VPNBOT_APPROVAL_RULES, for its account and region).

    ``groups`` empty: ``count`` distinct approvers. Otherwise one approver from each user group in
    ``groups`` (``count`` is their number). ``scope`` is the rule's key (``*``, ``prod``,
    ``cn-hangzhou``, ``prod/cn-hangzhou``) as the card and the audit name it. The requester never
    counts toward a rule.
    """

    count: int
    groups: tuple[str, ...] = ()
    scope: str = "*"

    @classmethod
    def of_groups(cls, groups: tuple[str, ...], scope: str = "*") -> ApprovalRule:
        return cls(count=len(groups), groups=groups, scope=scope)


@dataclass(frozen=True, slots=True)
class Approval:
    """One person's approval of an operation under an :class:`ApprovalRule`.

    ``groups``: the rule's user groups the person is in (a group rule), so the matching of approvers
    to groups can be worked out again; ``group``: the one it counts for in that matching.
    """

    user_id: str
    at: datetime
    group: str | None = None
    groups: tuple[str, ...] = ()


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
    # The Alibaba Cloud account (a VPNBOT_ACCOUNTS name) it runs in; "" for the single-account bot.
    account: str = ""
    # The impact preview looked up with the connection (None: requested before the preview existed).
    impact: Impact | None = None
    # The configuration taken just before the first DeleteVpnConnection (None: not taken yet).
    snapshot: Snapshot | None = None
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
    # DeleteVpnConnection sends recorded before sending (> 0: one may have reached Alibaba Cloud).
    attempts: int = 0
    # Which ClientToken is current: it changes only after a definite rejection (see client_token_for).
    token_seq: int = 0
    # Unexpected failures while driving the operation; past a few it fails (the crash budget).
    crashes: int = 0
    version: int = 0
    # ``delete`` or ``recreate`` (KIND_*). A recreation carries its deleted parent's snapshot.
    kind: str = KIND_DELETE
    # Recreations: the deletion it undoes, whose card's thread it lives in (``thread_ts``).
    parent_op_id: str | None = None
    thread_ts: str | None = None
    # Recreations: the instance whose memory holds the keys from the modal (never the keys).
    key_holder: str | None = None
    # Recreations: the connection CreateVpnConnection made; deletions: what they were recreated as.
    new_vco_id: str | None = None
    # Recreations: each route of the snapshot once it was tried, in order.
    route_results: tuple[RouteResult, ...] = ()
    # Deletions: until when the deleted card offers Recreate… (None: not offered, or closed).
    undo_until: datetime | None = None
    # Why it was requested (``reason=…`` or the picker's field; person-typed, shown escaped) and the
    # change ticket VPNBOT_TICKET_PATTERN found in it; None when not given.
    reason: str | None = None
    ticket: str | None = None
    # Why it was denied (the Cancel modal's optional field); None when none was given.
    cancel_reason: str | None = None
    # When the approvers were reminded (VPNBOT_REMIND_AFTER_SECONDS) and the request escalated
    # (VPNBOT_ESCALATE_TO) in the thread: set once, by the compare-and-set that writes the reply.
    reminded_at: datetime | None = None
    escalated_at: datetime | None = None
    # Deletions: when it runs. Requested (``at …``; None: at once) until approved; then, in
    # ``scheduled``, the time it was scheduled for (``schedule_kind``: SCHEDULE_AT for the requested
    # time, SCHEDULE_WINDOW when moved to the next change window's opening).
    run_at: datetime | None = None
    schedule_kind: str | None = None
    # Approvals recorded so far under an ApprovalRule, oldest first (the store's ``approvals`` table,
    # copied onto the row in the same transaction so every card shows them); () without a rule.
    approvals: tuple[Approval, ...] = ()
    # Approved but held by a freeze since then (nothing sent yet); None when not held. Stored so the
    # hold is told once and its time is given back to the deadline when it ends, across restarts.
    held_at: datetime | None = None
    # The fingerprint of the preview the approval is bound to (bot.workflow.binding; None: requested
    # before approvals were bound), and what changed since the last approval when it was asked again.
    preview_fingerprint: str | None = None
    preview_changes: tuple[str, ...] = ()
    # Site decommission: the batch (one card, one approval) this deletion belongs to; None alone.
    batch_id: str | None = None

    @property
    def is_recreate(self) -> bool:
        return self.kind == KIND_RECREATE

    @property
    def vco_id(self) -> str:
        return self.connection.id

    @property
    def gateway_id(self) -> str:
        return self.connection.gateway_id

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def client_token_for(op_id: str, seq: int = 0) -> str:
    """The ClientToken of an operation's ``seq``-th send chain: deterministic, ASCII, at most 64 characters.

    Alibaba Cloud replays the first answer to a reused token, errors included, so a token is
    kept across ambiguous outcomes (no answer: the call may have been carried out) and replaced
    after a definite rejection (busy, throttled), as its idempotence rules advise.
    """
    return f"vpnbot-{op_id}-{seq}"[:64]


class OpFields(TypedDict, total=False):
    """The operation fields a caller may set through the store (transition, set_fields)."""

    connection: VpnConnection
    gateway: VpnGateway
    impact: Impact | None
    snapshot: Snapshot | None
    message_ts: str | None
    approver_id: str | None
    approved_at: datetime | None
    cancelled_by: str | None
    delete_request_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    error_code: str | None
    error_text: str | None
    attempts: int
    token_seq: int
    client_token: str
    crashes: int
    key_holder: str | None
    new_vco_id: str | None
    route_results: tuple[RouteResult, ...]
    undo_until: datetime | None
    cancel_reason: str | None
    reminded_at: datetime | None
    escalated_at: datetime | None
    run_at: datetime | None
    schedule_kind: str | None
    approvals: tuple[Approval, ...]
    held_at: datetime | None
    expires_at: datetime
    preview_fingerprint: str | None
    preview_changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchMove:
    """One member of a batch's state change (approve or cancel all): its own fields, audit and effects."""

    op_id: str
    fields: OpFields
    audit_entry: AuditEntry | None = None
    effects: tuple[Effect, ...] = ()
    lease: tuple[str, datetime] | None = None


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
    # The operation's account (VPNBOT_ACCOUNTS name), when the bot serves several.
    account: str | None = None
    # A refused click: how many times this person's clicks on this card were refused (one row, counted);
    # None on every other entry.
    times: int | None = None


# The longest freeze an admin may set (``/vpn freeze 30d``).
FREEZE_MAX = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Freeze:
    """A change freeze set by an admin: no approval, and nothing approved is sent, in ``account`` until ``until``.

    ``account`` None freezes every account (and the single-account bot). Lifted early by
    ``/vpn unfreeze`` (``lifted_by``/``lifted_at``), or by a newer freeze of the same scope.
    """

    id: str
    account: str | None
    reason: str
    created_by: str
    starts_at: datetime
    until: datetime
    lifted_by: str | None = None
    lifted_at: datetime | None = None

    def applies_to(self, account: str) -> bool:
        """Whether the freeze covers an operation in ``account`` ("" for the single-account bot)."""
        return self.account is None or self.account == account

    def active_at(self, now: datetime) -> bool:
        """Whether it is in force at ``now``: started, not ended, not lifted."""
        return self.lifted_at is None and self.starts_at <= now < self.until


# --- events: what the workflow tells people; the Slack layer words them ---------------------------
#
# Each is a fact with the data needed to say it. They travel through the outbox as JSON
# (:func:`event_to_json` / :func:`event_from_json`), so their fields are plain values.


@dataclass(frozen=True, slots=True)
class Accepted:
    """Alibaba Cloud accepted DeleteVpnConnection (in ``account``, when the bot serves several)."""

    request_id: str
    account: str = ""


@dataclass(frozen=True, slots=True)
class GatewayUpdating:
    """The gateway went to ``updating``: the deletion is in progress."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class GatewayActive:
    """The gateway is ``active`` again; the bot now checks that the connection is gone."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class Retrying:
    """The gateway is busy; the bot sends again after ``delay_s`` (one counter per operation)."""

    reason: str
    delay_s: float
    attempt: int
    max_attempts: int
    code: str = ""


@dataclass(frozen=True, slots=True)
class Unanswered:
    """DeleteVpnConnection got no usable answer; the bot checks whether the connection is gone."""

    code: str


@dataclass(frozen=True, slots=True)
class Queued:
    """Another deletion on the same gateway runs first; this one waits for it."""

    blocking_vco_id: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """A bot instance picked the operation up: again after a restart, or (``fresh``) for the first time.

    ``fresh``: approved and nothing sent to Alibaba Cloud yet (it waited for room, see :class:`Deferred`,
    or its first driver stopped before doing anything), so there is nothing to continue.
    """

    instance: str
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """Approved, but a freeze (set by ``by``) holds it until ``until``; nothing was sent. Told once."""

    until: datetime
    reason: str
    by: str
    # The freeze's account; None: every account.
    account: str | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """Approved while the approving instance drives as many operations as it may: it waits for room."""

    driving: int


@dataclass(frozen=True, slots=True)
class Scheduled:
    """Approved to run at ``run_at``; ``window`` (the account's change windows, as written) when moved there."""

    run_at: datetime
    window: str = ""


@dataclass(frozen=True, slots=True)
class Starting:
    """A scheduled deletion's time came (``run_at``), or ``override_by`` overrode the change window."""

    run_at: datetime
    override_by: str = ""


@dataclass(frozen=True, slots=True)
class Deleted:
    """The connection is gone: the gateway is active again and DescribeVpnConnection says NotFound."""

    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The deletion failed; ``reason`` is the error table's friendly text for ``code``."""

    code: str
    reason: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class StillExists:
    """The gateway is active again but the connection is still there after the delete."""

    status: str
    request_id: str | None = None
    # True when DeleteVpnConnection never got a usable answer: it was then never carried out.
    unanswered: bool = False


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The overall deadline passed in ``phase``; ``sent`` tells whether the delete was ever sent."""

    phase: str
    waited_s: float
    sent: bool
    request_id: str | None = None
    # What was under way: a deletion, or a recreation (KIND_*; not "kind", which names the event in JSON).
    change: str = "delete"


@dataclass(frozen=True, slots=True)
class Crashed:
    """Driving the operation failed unexpectedly too often; ``error_id`` is in the logs."""

    error_id: str


@dataclass(frozen=True, slots=True)
class LookupFailed:
    """The connection could not be looked up after a restart; ``reason`` is the friendly text."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class PostFailed:
    """The confirmation could not be posted in the channel; ``error`` is Slack's code."""

    error: str
    reason: str


@dataclass(frozen=True, slots=True)
class Created:
    """Alibaba Cloud accepted CreateVpnConnection (or the bot found what it created before a restart)."""

    new_vco_id: str
    request_id: str | None = None
    # True when found on the gateway after a restart rather than from the create's answer.
    found: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionReady:
    """The gateway is active again after the create; ``routes`` routes are put back next."""

    gateway_id: str
    new_vco_id: str
    routes: int


@dataclass(frozen=True, slots=True)
class Recreated:
    """The recreation is done: the new connection and what became of each route."""

    new_vco_id: str
    elapsed_s: float
    routes: tuple[RouteResult, ...] = ()
    # What the deleted connection had that was not put back (the modal listed it before).
    not_carried: tuple[NotCarried, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyLost:
    """The bot restarted before CreateVpnConnection went out with the key: nothing was created.

    ``sent``: a create may have been sent, but no connection it made was found on the gateway.
    """

    sent: bool = False


@dataclass(frozen=True, slots=True)
class Denied:
    """Someone clicked Cancel: the request is closed unapproved, with their ``reason`` (may be "")."""

    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChangedSinceApproval:
    """Just before the delete, the connection was not what was approved: nothing was sent, and the
    request awaits approval again. ``changes`` are plain-text lines (bot.workflow.binding.diff);
    ``approver_id`` approved what is void now; ``fingerprint`` is the new preview's."""

    changes: tuple[str, ...]
    approver_id: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Expired:
    """Nobody approved the request before it expired; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Reminded:
    """Nobody approved or cancelled the request for ``waited_s``: the approvers are reminded, once."""

    waited_s: float
    # Who may approve (VPNBOT_APPROVERS: user and user-group ids; empty for ``*``), mentioned. Under a
    # quorum rule (VPNBOT_APPROVAL_RULES) only who is still needed: not those who approved already
    # (nor the requester); the user groups not covered yet, for a group rule.
    approvers: tuple[str, ...] = ()
    # Under a quorum rule: the approvals given so far and how many it needs (0: no rule).
    approvals: int = 0
    needed: int = 0


@dataclass(frozen=True, slots=True)
class Escalated:
    """The request is still unanswered ``left_s`` before it expires: ``group`` (VPNBOT_ESCALATE_TO) is called, once."""

    group: str
    left_s: float


@dataclass(frozen=True, slots=True)
class Announced:
    """A decision for the audit channel (VPNBOT_AUDIT_CHANNEL): the audit entry's action, by whom, when.

    ``note`` is what the line adds to it: a denial's reason, a failure's friendly reason. The rest
    (the connection, the card's link) is read from the operation when the line is posted.
    """

    action: str
    actor_id: str
    at: datetime
    note: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """After the deletion: the configuration taken before it (or why it could not be taken)."""

    snapshot: Snapshot


Progress = (
    Accepted
    | GatewayUpdating
    | GatewayActive
    | Retrying
    | Unanswered
    | Queued
    | Held
    | Deferred
    | Resumed
    | Deleted
    | Failed
    | StillExists
    | TimedOut
    | Crashed
    | LookupFailed
    | PostFailed
    | SnapshotTaken
    | Created
    | ConnectionReady
    | Recreated
    | KeyLost
    | Denied
    | Expired
    | Reminded
    | Escalated
    | Announced
    | Scheduled
    | Starting
    | ChangedSinceApproval
)
Outcome = Deleted | Failed | StillExists | TimedOut | Crashed | Recreated | KeyLost

_EVENT_TYPES: dict[str, type[Progress]] = {
    cls.__name__: cls
    for cls in (
        Accepted,
        GatewayUpdating,
        GatewayActive,
        Retrying,
        Unanswered,
        Queued,
        Held,
        Deferred,
        Resumed,
        Deleted,
        Failed,
        StillExists,
        TimedOut,
        Crashed,
        LookupFailed,
        PostFailed,
        SnapshotTaken,
        Created,
        ConnectionReady,
        Recreated,
        KeyLost,
        Denied,
        Expired,
        Reminded,
        Escalated,
        Announced,
        Scheduled,
        Starting,
        ChangedSinceApproval,
    )
}


@cache
def _adapter(kind: str) -> TypeAdapter[Any]:
    # pydantic turns nested records (a Snapshot's routes) into JSON values and back.
    return TypeAdapter(_EVENT_TYPES[kind])


def event_to_json(event: Progress) -> dict[str, Any]:
    """The event as a JSON object with its type under ``kind``."""
    kind = type(event).__name__
    return {"kind": kind, **_adapter(kind).dump_python(event, mode="json")}


def event_from_json(data: Mapping[str, Any]) -> Progress:
    """Rebuild an event written by :func:`event_to_json`."""
    values = dict(data)
    event: Progress = _adapter(str(values.pop("kind"))).validate_python(values)
    return event


class EffectKind(StrEnum):
    """What the outbox delivers to Slack for an operation, in order."""

    POST_CONFIRMATION = "post_confirmation"  # chat.postMessage of the confirmation card
    UPDATE_CARD = "update_card"  # chat.update of the card from the operation's current state
    THREAD = "thread"  # a reply in the card's thread (``event``)
    RESPOND = "respond"  # an ephemeral reply to the requester through the response_url (``event``)
    DIRECT = "direct"  # a direct message to the requester with the outcome (``event``) and the card's link
    AUDIT_LINE = "audit_line"  # one line in VPNBOT_AUDIT_CHANNEL about a decision (``event``: Announced)


@dataclass(frozen=True, slots=True)
class Effect:
    """One Slack side effect of a state change, written in the same transaction as the change."""

    kind: EffectKind
    event: Progress | None = None


@dataclass(frozen=True, slots=True)
class PendingEffect:
    """An effect waiting in the outbox."""

    id: int
    op_id: str
    kind: EffectKind
    event: Progress | None
    attempts: int
    created_at: datetime
    next_at: datetime
    # What the last attempt failed with (bot.slack.codes; None before the first failure).
    last_error: str | None = None


class ApprovalOutcome(StrEnum):
    """What one approval click (or its withdrawal) did under an :class:`ApprovalRule`."""

    CLOSED = "closed"  # the operation no longer awaits approval (or does not exist): nothing recorded
    REPEATED = "repeated"  # this person had already approved it
    COVERED = "covered"  # every rule group this person is in already has its approver
    COUNTED = "counted"  # recorded; more approvals are needed
    COMPLETE = "complete"  # recorded, and it met the rule: the operation moved to approved
    WITHDRAWN = "withdrawn"  # the person's approval was removed
    NOT_APPROVED = "not_approved"  # a withdrawal by someone with no approval to withdraw


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    """The store's answer to recording or withdrawing an approval, in one transaction.

    ``op`` is the operation after it (None: no such operation); ``effects`` the outbox effects read
    under the delivery claim taken in the same transaction (as ``transition_and_claim``; None: another
    replica holds the claim, or nothing was written).
    """

    outcome: ApprovalOutcome
    op: Operation | None
    effects: list[PendingEffect] | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Which outbox effect a Slack post carries out, so that it is posted once.

    ``key`` goes with the message (Slack message metadata); ``maybe_done`` says an earlier attempt
    may have posted it already (its answer was lost), so the notifier looks for ``key`` among the
    messages since ``since`` (when the effect was written) before posting again.
    """

    key: str
    since: datetime
    maybe_done: bool = False
