"""The Protocols the deletion workflow depends on.

The workflow never imports httpx, slack_sdk or SQLAlchemy: the cloud adapter implements
:class:`VpcApi`, the Slack layer implements :class:`Notifier` and :class:`Policy`, the store
implements :class:`OperationStore`, and tests pass small fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, Unpack

from pydantic import SecretStr

from bot.domain import (
    Announced,
    ApprovalOutcome,
    ApprovalResult,
    ApprovalRule,
    AuditEntry,
    BatchMove,
    CustomerGateway,
    Delivery,
    Effect,
    Freeze,
    Impact,
    Operation,
    OpFields,
    OpState,
    PendingEffect,
    Progress,
    Reread,
    Snapshot,
    SnapshotRoute,
    VpnConnection,
    VpnGateway,
)

__all__ = [
    "Clock",
    "NoMeter",
    "Notifier",
    "OperationMeter",
    "OperationStore",
    "Policy",
    "Quorum",
    "SystemClock",
    "VpcApi",
    "VpcApis",
]


class VpcApi(Protocol):
    """The Alibaba Cloud VPC operations the workflow needs. Errors are :class:`CloudError`.

    The client retries transient failures itself within its API deadline; what reaches the
    caller is final for that call.
    """

    async def describe_vpn_connection(
        self, *, region: str, vco_id: str, shared: bool = False
    ) -> VpnConnection:
        """Return the connection; raise CloudApiError ``InvalidVpnConnectionInstanceId.NotFound`` if gone.

        ``shared``: the answer may be that of the same read already on the way for another caller
        (a burst of lookups costs one call). Only for reads that inform a person, never for one
        that must come after a change (the check after a delete).
        """
        ...

    async def describe_vpn_gateway(self, *, region: str, gateway_id: str, shared: bool = False) -> VpnGateway:
        """Return the gateway with its current ``status`` (``shared`` as above; never when polling)."""
        ...

    async def describe_customer_gateway(self, *, region: str, customer_gateway_id: str) -> CustomerGateway:
        """Return the customer gateway, read afresh; raise CloudApiError
        ``InvalidCustomerGatewayInstanceId.NotFound`` if it is gone."""
        ...

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str:
        """Start the asynchronous deletion; return Alibaba's RequestId.

        Ambiguous failures (no answer, 5xx) are retried inside with the same ClientToken; a
        definite rejection (busy, throttled, any 4xx) is raised at once, since resending the
        same token would only replay it.
        """
        ...

    async def list_regions(self) -> list[str]:
        """Return the region ids the VPC API knows (DescribeRegions)."""
        ...

    async def describe_impact(self, *, region: str, connection: VpnConnection, deadline_s: float) -> Impact:
        """Return what deleting ``connection`` takes down: tunnels, BGP, health check, routes through it.

        Never raises a CloudError: each part is looked up in parallel within ``deadline_s`` and a
        part that fails or is slow comes back as an :class:`bot.domain.Unread` with the reason.
        """
        ...

    async def describe_snapshot(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Snapshot:
        """Return the configuration that recreates ``connection`` and the routes through it, keys left out.

        Never raises a CloudError: each part is read within ``deadline_s``; a part that fails or is
        slow is listed in ``Snapshot.unread`` (the configuration itself under PART_CONFIGURATION).
        """
        ...

    async def describe_before_delete(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Reread:
        """Read ``connection`` afresh just before its deletion: its snapshot and, from the same answers,
        its impact preview as it is now, the connection and its gateway (never a cached or shared read).

        Never raises a CloudError: what cannot be read within ``deadline_s`` is None or listed unread.
        """
        ...

    async def recreate_connection(
        self,
        *,
        region: str,
        config: dict[str, Any],
        psk: SecretStr,
        operation_id: str,
        client_token: str,
    ) -> tuple[str, str]:
        """CreateVpnConnection from a snapshot's ``config`` with the key given anew; ``(vco id, RequestId)``.

        Sent with ``AutoConfigRoute=false`` (the routes put back are the snapshot's alone) and the
        tag ``vpnbot-operation=<operation_id>``, by which :meth:`tagged_connections` finds it after a
        crash. The key is revealed only in the request sent. Errors as for :meth:`delete_vpn_connection`.
        """
        ...

    async def create_route(
        self, *, region: str, gateway_id: str, route: SnapshotRoute, next_hop: str, client_token: str
    ) -> str:
        """CreateVpnRouteEntry (``custom``) or CreateVpnPbrRouteEntry (``policy``) to ``next_hop``, published
        to the VPC as ``route.published`` says; the RequestId."""
        ...

    async def routes_to(self, *, region: str, gateway_id: str, vco_id: str) -> tuple[SnapshotRoute, ...]:
        """The gateway's destination-based and policy-based routes whose next hop is ``vco_id``, as they are now."""
        ...

    async def tagged_connections(
        self, *, region: str, gateway_id: str, key: str, value: str
    ) -> list[VpnConnection]:
        """The gateway's connections carrying the tag ``key=value`` (DescribeVpnConnections' Tag filter)."""
        ...


class VpcApis(Protocol):
    """The VPC API of each Alibaba Cloud account the bot serves (implemented in bot.cloud.accounts).

    ``account`` is an operation's account (``""`` for the single-account bot); ``acting_user`` is
    the person a change is made for (the approver of a delete or a create): it names the role
    session, so Alibaba's own audit (ActionTrail) records them. Read-only lookups pass none.
    Credentials that cannot be had raise :class:`bot.errors.RoleNotAssumed` from the call.
    """

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi: ...


class Notifier(Protocol):
    """How the outbox talks to people. Implemented by the Slack layer.

    Each call either succeeds or raises :class:`bot.errors.SlackError` saying whether it may
    succeed later (``transient``); the outbox decides when to try again.
    """

    async def post_confirmation(self, op: Operation, delivery: Delivery | None = None) -> str:
        """Post the confirmation (details + Delete/Cancel) in ``op.channel_id``; return its ts.

        ``delivery``: the outbox effect this post carries out; the message carries its key, and
        when ``delivery.maybe_done`` the one already posted is found and its ts returned.
        """
        ...

    async def update_card(self, op: Operation) -> None:
        """Re-render the confirmation message from the operation's current state."""
        ...

    async def post_batch(self, ops: Sequence[Operation], delivery: Delivery | None = None) -> str:
        """Post a batch's one card (``ops``: its members, in order) and return its ts (once per ``delivery``)."""
        ...

    async def update_batch(self, ops: Sequence[Operation]) -> None:
        """Re-render a batch's card for its members' current states."""
        ...

    async def reply_in_thread(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        """Reply in the confirmation's thread (once per ``delivery``, as in :meth:`post_confirmation`)."""
        ...

    async def respond(self, op: Operation, event: Progress) -> None:
        """Tell the requester alone, through the slash command's response_url."""
        ...

    async def direct_message(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        """Tell the requester in a direct message how the request ended (once per ``delivery``)."""
        ...

    async def audit_line(
        self, op: Operation | None, event: Announced, delivery: Delivery | None = None
    ) -> None:
        """Post one line about a decision in the audit channel, linking the card (once per ``delivery``).

        ``op`` None: an audit entry of no operation (a freeze, say), which has no card.
        """
        ...


class Policy(Protocol):
    """Server-side rules on who may request and who may approve. Raise NotAllowed to refuse."""

    async def check_request(self, *, user_id: str, channel_id: str, region: str) -> None: ...

    async def check_approval(self, *, user_id: str, op: Operation) -> None: ...

    async def check_cancel(self, *, user_id: str, op: Operation) -> None:
        """The requester and anyone who may approve may cancel."""
        ...

    async def check_history(self, *, user_id: str, channel_id: str) -> None:
        """Who may read the audit trail: people who may request or approve, in allowed channels."""
        ...

    async def check_read(self, *, user_id: str, channel_id: str, region: str) -> None:
        """Who may list and inspect a region's connections: requesters and approvers, in allowed
        channels, for allowed regions (read-only, yet it shows the company's network)."""
        ...


class Quorum(Protocol):
    """How many must approve an operation (VPNBOT_APPROVAL_RULES) and whether a click counts.

    Implemented by :class:`bot.slack.policy.SlackPolicy`. An operation without a rule is approved as
    :class:`Policy` says (one approver).
    """

    def rule_for(self, op: Operation) -> ApprovalRule | None:
        """The rule for ``op``'s account and region; None: no rule, one approval as before."""
        ...

    async def check_quorum_approval(
        self, *, user_id: str, op: Operation, rule: ApprovalRule
    ) -> tuple[str, ...]:
        """Raise NotAllowed (naming the rule) if ``user_id`` may not approve ``op`` under ``rule``.

        Returns the rule's groups ``user_id`` is in, in the rule's order (() for a count rule).
        """
        ...


class OperationMeter(Protocol):
    """Counts operations reaching a final state (implemented by bot.metrics.Metrics)."""

    def operation_finished(
        self, outcome: str, approval_to_final_s: float | None, account: str = ""
    ) -> None: ...


class NoMeter:
    """Counts nothing (tests and tools that need no metrics)."""

    def operation_finished(self, outcome: str, approval_to_final_s: float | None, account: str = "") -> None:
        return None


class Clock(Protocol):
    """Wall-clock time and waiting, injectable so tests move time instead of sleeping."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class OperationStore(Protocol):
    """The durable store as the workflow and the outbox use it (implemented by bot.store.Store).

    Every method is one transaction; state changes are compare-and-set and return None when lost.
    """

    async def create_operation(
        self,
        *,
        op: Operation,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        one_open: bool = False,
    ) -> Operation: ...

    async def get_operation(self, *, op_id: str) -> Operation | None: ...

    async def transition(
        self,
        op_id: str,
        *,
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        require_owner: str | None = None,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None: ...

    async def transition_and_claim(
        self,
        op_id: str,
        *,
        claim: tuple[str, datetime],
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        require_owner: str | None = None,
        lease: tuple[str, datetime] | None = None,
        audit_entry: AuditEntry | None = None,
        effects: Sequence[Effect] = (),
        unfrozen: bool = False,
        **op_fields: Unpack[OpFields],
    ) -> tuple[Operation, list[PendingEffect] | None] | None:
        """``transition``, claiming the outbox for ``claim = (owner, until)`` in the same transaction.

        ``(moved, pending effects)`` with the claim held; ``(moved, None)`` if another replica holds
        it; None if the move lost.
        """
        ...

    async def reopen_approval(
        self,
        op_id: str,
        *,
        from_states: Collection[OpState],
        now: datetime,
        require_owner: str,
        audit_entry: AuditEntry,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None:
        """Back to awaiting approval with every approval void, the lease and the gateway given back."""
        ...

    async def set_fields(
        self,
        op_id: str,
        *,
        now: datetime,
        states: Collection[OpState] | None = None,
        require_owner: str | None = None,
        effects: Sequence[Effect] = (),
        **op_fields: Unpack[OpFields],
    ) -> Operation | None: ...

    async def record_approval(
        self,
        op_id: str,
        *,
        user_id: str,
        groups: Sequence[str] | None,
        needed: int,
        now: datetime,
        claim: tuple[str, datetime],
        audit_entry: AuditEntry,
        progress_effects: Sequence[Effect],
        lease: tuple[str, datetime] | None = None,
        effects: Sequence[Effect] = (),
        to: OpState = OpState.APPROVED,
        **op_fields: Unpack[OpFields],
    ) -> ApprovalResult:
        """Record one approval under a rule; the one that meets it approves the operation (one transaction)."""
        ...

    async def withdraw_approval(
        self,
        op_id: str,
        *,
        user_id: str,
        needed: int,
        now: datetime,
        claim: tuple[str, datetime],
        audit_entry: AuditEntry,
        effects: Sequence[Effect],
    ) -> ApprovalResult:
        """Remove one person's approval while the operation still awaits approval."""
        ...

    async def clear_approvals(self, op_id: str) -> int:
        """Void every approval of ``op_id`` (what was approved changed)."""
        ...

    async def claim_lease(
        self, *, op_id: str, owner: str, until: datetime, now: datetime
    ) -> Operation | None: ...

    async def renew_leases(self, *, op_ids: Collection[str], owner: str, until: datetime) -> set[str]: ...

    async def release_lease(self, *, op_id: str, owner: str) -> None: ...

    async def list_resumable(self, *, now: datetime, limit: int | None = None) -> list[Operation]: ...

    async def list_expired_confirmations(self, *, now: datetime) -> list[Operation]: ...

    async def list_unanswered(
        self,
        *,
        mark: Literal["reminded_at", "escalated_at"],
        now: datetime,
        created_before: datetime | None = None,
        expiring_before: datetime | None = None,
    ) -> list[Operation]: ...

    async def mark_once(
        self,
        op_id: str,
        *,
        mark: Literal["reminded_at", "escalated_at"],
        now: datetime,
        effects: Sequence[Effect] = (),
    ) -> Operation | None: ...

    async def acquire_gateway(self, *, region: str, gateway_id: str, op_id: str, now: datetime) -> str: ...

    async def recent_durations(self, *, region: str, gateway_id: str, limit: int = 20) -> list[float]: ...

    async def add_audit(self, entry: AuditEntry, *, effects: Sequence[Effect] = ()) -> AuditEntry:
        """Append an entry of no state change; ``effects`` (an audit line) go with it, in one transaction."""
        ...

    async def recent_audit(
        self,
        *,
        limit: int = 10,
        op_id: str | None = None,
        channel_id: str | None = None,
        accounts: Collection[str] | None = None,
        unbound: Collection[str] = (),
    ) -> list[AuditEntry]: ...

    async def recent_operations(self, *, finished: int = 10, open_limit: int = 100) -> list[Operation]: ...

    async def heartbeat(self, *, instance: str, now: datetime) -> None: ...

    async def instance_seen(self, *, instance: str) -> datetime | None: ...

    async def list_undo_closing(self, *, now: datetime) -> list[Operation]: ...

    async def list_due_scheduled(self, *, now: datetime) -> list[Operation]: ...

    async def recreations_of(self, *, parent_op_id: str) -> list[Operation]: ...

    async def create_recreation(
        self, *, op: Operation, audit_entry: AuditEntry, effects: Sequence[Effect] = ()
    ) -> Operation | None: ...

    # The outbox.
    async def enqueue(self, *, op_id: str, effects: Sequence[Effect], now: datetime) -> None: ...

    async def add_freeze(
        self, freeze: Freeze, *, audit_entry: AuditEntry, effects: Sequence[Effect] = ()
    ) -> list[Freeze]: ...

    async def lift_freezes(
        self,
        *,
        account: str | None,
        everything: bool,
        by: str,
        now: datetime,
        audit_entry: Callable[[Freeze], AuditEntry],
        effects: Callable[[AuditEntry], Sequence[Effect]] = lambda entry: (),
    ) -> list[Freeze]: ...

    async def active_freezes(self, *, now: datetime) -> list[Freeze]: ...

    async def release_outbox(self, *, op_id: str, owner: str) -> None: ...

    async def take_next(
        self, *, op_id: str, owner: str, until: datetime, now: datetime
    ) -> tuple[list[PendingEffect], Operation | None] | None: ...

    async def ops_with_due_effects(self, *, now: datetime, limit: int = 100) -> list[str]: ...

    async def complete_effects(
        self,
        *,
        ids: Sequence[int],
        now: datetime,
        error: str | None = None,
        release: tuple[str, str] | None = None,
    ) -> bool: ...

    async def reschedule_effect(self, *, effect_id: int, next_at: datetime, error: str) -> None: ...

    async def confirmation_posted(
        self, *, effect_id: int, op_id: str, ts: str, now: datetime, owner: str | None = None
    ) -> bool: ...

    # Batches (site decommission): see bot.workflow.batch.
    async def create_batch(
        self,
        *,
        batch_id: str,
        ops: Sequence[Operation],
        lease: tuple[str, datetime],
        audit_entries: Sequence[AuditEntry],
    ) -> None: ...

    async def batch_operations(self, *, batch_id: str) -> list[Operation]: ...

    async def open_batch(self, *, batch_id: str, now: datetime) -> str | None: ...

    async def transition_batch(
        self,
        moves: Sequence[BatchMove],
        *,
        from_states: Collection[OpState],
        to: OpState,
        now: datetime,
        unfrozen: bool = False,
    ) -> list[Operation]: ...

    async def record_batch_approval(
        self,
        moves: Sequence[BatchMove],
        *,
        user_id: str,
        groups: Sequence[str] | None,
        needed: int,
        now: datetime,
        progress_effects: Sequence[Effect],
        to: OpState,
        unfrozen: bool = False,
    ) -> tuple[ApprovalOutcome, list[Operation]]:
        """One person's approval of a whole batch under a quorum rule, counted once (one transaction)."""
        ...

    async def withdraw_batch_approval(
        self,
        moves: Sequence[BatchMove],
        *,
        user_id: str,
        needed: int,
        now: datetime,
    ) -> tuple[ApprovalOutcome, list[Operation]]:
        """Take one person's approval of a whole batch back while its rule is not met (one transaction)."""
        ...

    async def deleting_elsewhere(self, *, op: Operation) -> Operation | None: ...
