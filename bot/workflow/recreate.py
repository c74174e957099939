"""Recreating a deleted connection from its snapshot: the request, the create and its routes.

:class:`RecreateRequests` is what the Slack layer calls; :class:`RecreateSteps` drives an
approved recreation (the runner, :mod:`bot.workflow.runner`, calls it while it holds the lease).

The pre-shared key exists only in ``Runner._keys`` of the replica that took
the modal submission (Operation.key_holder names it; the key is never stored). Hazards:

- The approval click may land on another replica: it approves without taking the lease, and
  the holder's resume pass drives the recreation. Other replicas leave it alone while the
  holder's heartbeat is fresh; once the holder is gone the first one to claim it fails the
  recreation with KeyLost, and the thread asks for the key again (Recreate… on the card).
- kill -9 after the create was sent: the send is recorded (``attempts``) before it is made,
  with a stored ClientToken. After a restart the key is gone, and resending the token without
  it is unsafe: if the first send never reached Alibaba, a keyless create would make a
  connection with a random key. So a resumed recreation never resends; it looks for the
  connection on the gateway by the tag the create carried (``vpnbot-operation=<op id>``)
  and carries on with it if found, else fails with KeyLost(sent=True). Never by CreateTime,
  name or subnets: a clock off by minutes, or a look-alike, would decide wrongly.
- Approved for a gateway or customer gateway that has gone since: both are read afresh just
  before the first create; one that is gone fails the recreation with nothing sent
  (GATEWAY_GONE, CUSTOMER_GATEWAY_GONE). A read that fails otherwise lets the create go.
- Routes: the create says AutoConfigRoute=false, so the new connection starts with none and
  gets exactly the snapshot's. Before the first route (and after any refusal) the gateway's
  route tables are read: a route already on the new connection is not sent again (no error
  code is trusted to say "exists"). Each has its own deterministic token chain
  (``vpnbot-<op>-r<i>-<n>``), so a resend after a crash replays Alibaba's first answer; each
  result is stored as soon as it is known, and a route already stored is never sent again.
  One at a time, each after the gateway is ``active`` again (Alibaba refuses concurrent
  changes on a gateway).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from pydantic import SecretStr

from bot.domain import (
    CUSTOMER_GATEWAY_GONE,
    GATEWAY_GONE,
    KIND_RECREATE,
    OPERATION_TAG,
    AuditEntry,
    Created,
    Effect,
    EffectKind,
    Failed,
    KeyLost,
    NotCarried,
    Operation,
    OpState,
    Recreated,
    RouteResult,
    SnapshotRoute,
    client_token_for,
)
from bot.errors import (
    CloudError,
    NotAllowed,
    RecreateRefused,
)
from bot.workflow.runner import Runner
from bot.workflow.steps import (
    LostOperation,
    RecreateKeys,
    StepBase,
    snapshot_routes,
)

__all__ = ["RecreateRequests", "RecreateSteps"]

log = logging.getLogger("bot.workflow")
# What DescribeVpnGateway answers for a gateway that is not there.
GATEWAY_NOT_FOUND = "InvalidVpnGatewayInstanceId.NotFound"
# What DescribeCustomerGateway answers for a customer gateway that is not there.
CUSTOMER_GATEWAY_NOT_FOUND = "InvalidCustomerGatewayInstanceId.NotFound"


class RecreateRequests(Runner):
    """The Slack layer's calls for a recreation: whether it may be asked for, and asking for it."""

    async def recreate_target(self, *, op_id: str, user_id: str, channel_id: str) -> Operation:
        """The deleted operation ``op_id`` if Recreate… may be used on it now by ``user_id``.

        Raises RecreateRefused (window closed, already recreated or under way, …) or NotAllowed.
        """
        parent = await self._store.get_operation(op_id=op_id)
        if self._config.undo_window_s <= 0:
            raise RecreateRefused("off", parent)
        if parent is None or parent.is_recreate or parent.state is not OpState.DELETED:
            raise RecreateRefused("not_deleted", parent)
        if parent.snapshot is None or parent.snapshot.config is None:
            raise RecreateRefused("no_snapshot", parent)
        for other in await self._store.recreations_of(parent_op_id=parent.id):
            if other.state is OpState.RECREATED:
                raise RecreateRefused("recreated", parent, other)
            if not other.is_terminal:
                raise RecreateRefused("in_progress", parent, other)
        if parent.new_vco_id:
            raise RecreateRefused("recreated", parent)
        if parent.undo_until is None or self._clock.now() >= parent.undo_until:
            raise RecreateRefused("window_closed", parent)
        await self._policy.check_request(user_id=user_id, channel_id=channel_id, region=parent.region)
        return parent

    async def request_recreate(
        self,
        *,
        op_id: str,
        user_id: str,
        channel_id: str,
        psk: SecretStr,
    ) -> Operation:
        """Record a recreation of deleted ``op_id`` and post its confirmation in the card's thread.

        ``user_id`` submitted the modal: they are the requester (four-eyes counts them). The key
        stays in this process's memory (``key_holder`` names it); it is never stored.
        """
        parent = await self._audited_target(op_id=op_id, user_id=user_id, channel_id=channel_id)
        op = self._recreation_of(parent, user_id=user_id)
        new_id = op.id
        self._keys[new_id] = RecreateKeys(psk=psk)
        try:
            # One transaction with the parent locked: a modal submitted twice at once starts one.
            entry = self._steps.entry(op, "recreate_requested", actor_id=user_id, detail=f"of {parent.id}")
            created = await self._store.create_recreation(
                op=op,
                audit_entry=entry,
                effects=[Effect(EffectKind.POST_CONFIRMATION), *self._steps.announce(entry)],
            )
        except BaseException:
            self._keys.pop(new_id, None)
            raise
        if created is None:
            self._keys.pop(new_id, None)
            # Another submission won the race: say why, as a click would.
            await self.recreate_target(op_id=op_id, user_id=user_id, channel_id=channel_id)
            raise RecreateRefused("in_progress", parent)
        await self.outbox.deliver(new_id)
        return created

    async def _audited_target(self, *, op_id: str, user_id: str, channel_id: str) -> Operation:
        """:meth:`recreate_target`, with a refusal by the policy audited before it is raised."""
        try:
            return await self.recreate_target(op_id=op_id, user_id=user_id, channel_id=channel_id)
        except NotAllowed as err:
            refused = await self._store.get_operation(op_id=op_id)
            await self._store.add_audit(
                AuditEntry(
                    at=self._clock.now(),
                    action="recreate_refused",
                    actor_id=user_id,
                    op_id=op_id,
                    vco_id=refused.vco_id if refused else None,
                    region=refused.region if refused else None,
                    detail=f"request: {err.friendly}",
                )
            )
            raise

    def _recreation_of(self, parent: Operation, *, user_id: str) -> Operation:
        """A new recreation of deleted ``parent``, requested by ``user_id``, its key held here."""
        now = self._clock.now()
        new_id = uuid.uuid4().hex
        return Operation(
            id=new_id,
            state=OpState.AWAITING_APPROVAL,
            region=parent.region,
            connection=parent.connection,
            gateway=parent.gateway,
            requester_id=user_id,
            channel_id=parent.channel_id,
            team_id=parent.team_id,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=self._config.confirmation_ttl_s),
            client_token=client_token_for(new_id),
            snapshot=parent.snapshot,
            kind=KIND_RECREATE,
            parent_op_id=parent.id,
            thread_ts=parent.message_ts,
            key_holder=self.instance_id,
            # The deleted connection's account: it is recreated where it was.
            account=parent.account,
        )


class RecreateSteps(StepBase):
    """The steps of a recreation: the create (with the key held here) and putting the routes back."""

    async def _step_creating(self, op: Operation) -> Operation:
        """CREATING -> WAITING_GATEWAY with the new connection, or a final failure."""
        if op.new_vco_id:
            return await self._move(op, OpState.WAITING_GATEWAY)
        keys = self._keys.get(op.id)
        if keys is None:
            return await self._without_key(op)
        config = op.snapshot.config if op.snapshot is not None else None
        if config is None:  # pragma: no cover - request_recreate refuses a snapshot without it
            return await self.finish(op, OpState.FAILED, Failed(code="no_snapshot", reason=""))
        if op.attempts == 0 and not await self._gateway_usable(op):
            # Approved for a gateway that is not there any more: fail with the reason, send nothing.
            return await self.finish(op, OpState.FAILED, Failed(code=GATEWAY_GONE, reason=""))
        gone = await self._customer_gateways_gone(op) if op.attempts == 0 else ()
        if gone:
            # The same for the customer gateway(s) it would use: nothing is sent.
            what = (
                f"Customer gateway {gone[0]} no longer exists"
                if len(gone) == 1
                else (f"Customer gateways {', '.join(gone)} no longer exist")
            )
            reason = (
                f"{what} (checked just before CreateVpnConnection): nothing was sent and nothing was created."
            )
            return await self.finish(op, OpState.FAILED, Failed(code=CUSTOMER_GATEWAY_GONE, reason=reason))
        while True:
            op = await self._record_send(op, OpState.CREATING)
            try:
                new_vco_id, request_id = await self._write(op).recreate_connection(
                    region=op.region,
                    config=config,
                    psk=keys.psk,
                    operation_id=op.id,
                    client_token=op.client_token,
                )
            except CloudError as err:
                if not err.definite:
                    # No usable answer: it may have been carried out. We still hold the key, so a
                    # resend with the same token is safe (Alibaba replays the first answer).
                    log.info("create got no answer; resending the same token", extra={"op_id": op.id})
                    await self._sleep_until_deadline(op, self._config.poll_interval_s)
                    if self._clock.now() >= self._deadline(op):
                        return op
                    continue
                retry_in = self._busy_retry(op, err)
                if retry_in is None:
                    return await self.finish(
                        op,
                        OpState.FAILED,
                        Failed(code=err.code, reason=err.friendly, request_id=err.request_id),
                    )
                op = await self._next_token(op, err, retry_in, state=OpState.CREATING)
                await self._pause(retry_in)
                continue
            # The key has done its job: it leaves memory now.
            self._keys.pop(op.id, None)
            return await self._move(
                op,
                OpState.WAITING_GATEWAY,
                event=Created(new_vco_id=new_vco_id, request_id=request_id),
                audit_action="recreate_sent",
                delete_request_id=request_id,
                new_vco_id=new_vco_id,
            )

    async def _gateway_usable(self, op: Operation) -> bool:
        """Whether the gateway the create will use is still there (not gone, not being deleted).

        Read afresh just before the first CreateVpnConnection. A gateway ``updating`` is usable (the
        create waits its turn as a busy answer); a read that fails otherwise lets the create go, since
        Alibaba refuses a create on a gateway that is not there. The customer gateways are read
        next (:meth:`_customer_gateways_gone`).
        """
        try:
            gateway = await self._read(op).describe_vpn_gateway(region=op.region, gateway_id=op.gateway_id)
        except CloudError as err:
            if err.code == GATEWAY_NOT_FOUND:
                log.info("the gateway is gone; not creating", extra={"op_id": op.id})
                return False
            log.warning("could not read the gateway before the create (%s)", err.code, extra={"op_id": op.id})
            return True
        return gateway.status != "deleting"

    async def _customer_gateways_gone(self, op: Operation) -> tuple[str, ...]:
        """The customer gateways the create would use that are gone (DescribeCustomerGateway: NotFound).

        Read afresh, one by one (one for a single-tunnel connection, one per tunnel otherwise),
        just before the first CreateVpnConnection. A read that fails otherwise (no answer,
        throttled, denied) lets the create go, as for the gateway: Alibaba refuses a create whose
        customer gateway is not there, and that refusal is shown as it is.
        """
        snapshot = op.snapshot
        gone: list[str] = []
        for cgw_id in snapshot.customer_gateway_ids if snapshot is not None else ():
            try:
                await self._read(op).describe_customer_gateway(region=op.region, customer_gateway_id=cgw_id)
            except CloudError as err:
                if err.code == CUSTOMER_GATEWAY_NOT_FOUND:
                    log.info("a customer gateway is gone; not creating", extra={"op_id": op.id})
                    gone.append(cgw_id)
                    continue
                log.warning(
                    "could not read a customer gateway before the create (%s)",
                    err.code,
                    extra={"op_id": op.id},
                )
        return tuple(gone)

    async def _without_key(self, op: Operation) -> Operation:
        """Resumed without the key: carry on with what a sent create made, else ask for the key again."""
        if op.attempts > 0:
            try:
                found = await self._created_before(op)
            except CloudError as err:
                log.warning(
                    "could not look for the created connection (%s)", err.code, extra={"op_id": op.id}
                )
                await self._sleep_until_deadline(op, self._config.poll_interval_s)
                return op
            if found is not None:
                log.info("found the connection the create made before a restart", extra={"op_id": op.id})
                return await self._move(
                    op,
                    OpState.WAITING_GATEWAY,
                    event=Created(new_vco_id=found, found=True),
                    audit_action="recreate_sent",
                    new_vco_id=found,
                )
        return await self.finish(op, OpState.FAILED, KeyLost(sent=op.attempts > 0), error_code="key_lost")

    async def _created_before(self, op: Operation) -> str | None:
        """The id of the connection this recreation's create made, found by its operation tag."""
        found = await self._read(op).tagged_connections(
            region=op.region, gateway_id=op.gateway_id, key=OPERATION_TAG, value=op.id
        )
        ids = sorted(c.id for c in found if c.id != op.vco_id)
        if len(ids) > 1:  # pragma: no cover - one create token, one connection; said if ever not
            log.warning("several connections carry this recreation's tag: %s", ids, extra={"op_id": op.id})
        return ids[0] if ids else None

    async def _step_routing(self, op: Operation) -> Operation:
        """ROUTING -> RECREATED: put each route back on the new connection, one at a time."""
        new_vco_id = op.new_vco_id
        assert new_vco_id is not None  # noqa: S101 - ROUTING is entered only with it
        tried = len(op.route_results)
        # What is on the new connection now (after a crash, some may be there already).
        present = await self._present_routes(op)
        for index, route in enumerate(snapshot_routes(op)):
            if index < tried:
                continue
            if route.kind == "bgp":
                result = RouteResult(kind=route.kind, destination=route.destination, ok=True, code="bgp")
            elif present is not None and route.key in present:
                result = RouteResult(kind=route.kind, destination=route.destination, source=route.source)
            else:
                result = await self._create_route(op, index, route)
                if result.ok and present is not None:
                    present.add(route.key)
                elif not result.ok:
                    # A refusal may mean it is there (no code says so reliably): the tables decide.
                    present = await self._present_routes(op)
                    if present is not None and route.key in present:
                        result = RouteResult(
                            kind=route.kind, destination=route.destination, source=route.source
                        )
            stored = await self._store.set_fields(
                op.id,
                now=self._clock.now(),
                states={OpState.ROUTING},
                require_owner=self._owner,
                route_results=(*op.route_results, result),
            )
            if stored is None:
                raise LostOperation(op.id)
            op = stored
        elapsed = (self._clock.now() - (op.approved_at or op.created_at)).total_seconds()
        outcome = Recreated(
            new_vco_id=new_vco_id,
            elapsed_s=elapsed,
            routes=op.route_results,
            not_carried=await self._not_carried(op),
        )
        return await self.finish(op, OpState.RECREATED, outcome)

    async def _not_carried(self, op: Operation) -> tuple[NotCarried, ...]:
        """What the snapshot says cannot come back, less a resource group the new connection is in anyway."""
        snapshot = op.snapshot
        lost = snapshot.not_carried if snapshot is not None else ()
        if snapshot is None or op.new_vco_id is None or not snapshot.resource_group_id:
            return lost
        try:
            new = await self._read(op).describe_vpn_connection(region=op.region, vco_id=op.new_vco_id)
        except CloudError as err:
            log.warning("could not read the new connection (%s)", err.code, extra={"op_id": op.id})
            return lost  # said as possibly lost: the thread tells people to check
        if new.resource_group_id == snapshot.resource_group_id:
            # The account's default group was the old one's: nothing lost there.
            return tuple(n for n in lost if n.part != "resource_group")
        return lost

    async def _present_routes(self, op: Operation) -> set[tuple[str, str, str]] | None:
        """The routes on the new connection now, by :attr:`SnapshotRoute.key`; None if unreadable."""
        assert op.new_vco_id is not None  # noqa: S101 - see _step_routing
        try:
            routes = await self._read(op).routes_to(
                region=op.region, gateway_id=op.gateway_id, vco_id=op.new_vco_id
            )
        except CloudError as err:
            # Unread: each route is sent with its token chain, which replays rather than repeats.
            log.warning("could not read the route tables (%s)", err.code, extra={"op_id": op.id})
            return None
        return {r.key for r in routes}

    async def _create_route(self, op: Operation, index: int, route: SnapshotRoute) -> RouteResult:
        """One route, exactly once: wait for the gateway, send with this route's token chain."""
        assert op.new_vco_id is not None  # noqa: S101 - see _step_routing
        seq = 0
        last: CloudError | None = None
        while seq < self._config.busy_retry_attempts and self._clock.now() < self._deadline(op):
            await self._gateway_active(op)
            token = f"vpnbot-{op.id}-r{index}-{seq}"[:64]
            try:
                await self._write(op).create_route(
                    region=op.region,
                    gateway_id=op.gateway_id,
                    route=route,
                    next_hop=op.new_vco_id,
                    client_token=token,
                )
            except CloudError as err:
                last = err
                if not err.definite:
                    await self._sleep_until_deadline(op, self._config.poll_interval_s)
                    continue  # same token: a replay if it got there
                if not err.retryable:
                    return _route_failed(route, err)
                seq += 1  # a definite refusal (busy): the next send needs a new token
                await self._sleep_until_deadline(op, self._config.busy_retry_base_s)
                continue
            break
        else:
            return _route_failed(route, last) if last else _route_failed(route, None)
        return RouteResult(kind=route.kind, destination=route.destination, source=route.source)

    async def _gateway_active(self, op: Operation) -> None:
        """Wait (until the deadline) for the gateway to be ``active``: changes on it go one at a time."""
        while self._clock.now() < self._deadline(op):
            try:
                gateway = await self._read(op).describe_vpn_gateway(
                    region=op.region, gateway_id=op.gateway_id
                )
            except CloudError as err:
                log.warning("polling the gateway failed (%s); polling on", err.code, extra={"op_id": op.id})
            else:
                if gateway.status == "active":
                    return
            await self._sleep_until_deadline(op, self._config.poll_interval_s)


def _route_failed(route: SnapshotRoute, err: CloudError | None) -> RouteResult:
    return RouteResult(
        kind=route.kind,
        destination=route.destination,
        source=route.source,
        ok=False,
        code=err.code if err else "timeout",
        reason=err.friendly if err else "",
    )
