"""Hand-written fakes of the workflow's Protocols (VpcApi, Notifier, Policy, Clock), shared by tests.

``FakeVpc`` behaves like the real API where it matters: DeleteVpnConnection is asynchronous
(the gateway goes ``updating`` for a few DescribeVpnGateway polls, then ``active`` and the
connection is gone), a replayed ClientToken gets the first answer back, and a second delete on
a gateway that is still updating is refused with a busy error and recorded in ``overlaps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from bot.domain import (
    OPERATION_TAG,
    PART_CONNECTION,
    Announced,
    CustomerGateway,
    Delivery,
    Impact,
    ImpactRoute,
    Operation,
    Progress,
    Reread,
    Snapshot,
    SnapshotRoute,
    Unread,
    VpnConnection,
    VpnGateway,
)
from bot.errors import (
    CloudApiError,
    CloudError,
    CloudTransportError,
    ErrorInfo,
    NotAllowed,
    RetryClass,
    SlackError,
    Who,
)
from bot.workflow.steps import CONNECTION_NOT_FOUND

REGION = "cn-hangzhou"


def api_error(
    code: str,
    *,
    retry: RetryClass = RetryClass.NEVER,
    http_status: int = 400,
    friendly: str | None = None,
    request_id: str = "REQ-ERR",
) -> CloudApiError:
    """An Alibaba Cloud API error as the cloud client would raise it."""
    info = ErrorInfo(
        code=code,
        http_status=http_status,
        api_message=code,
        friendly=friendly or f"Alibaba Cloud refused: {code}.",
        action="",
        who=Who.NOBODY if retry is not RetryClass.NEVER else Who.ACCOUNT_OWNER,
        retry=retry,
    )
    return CloudApiError(code, info=info, http_status=http_status, request_id=request_id)


def busy_error(code: str = "VpnGateway.Configuring") -> CloudApiError:
    return api_error(code, retry=RetryClass.BUSY, friendly="The VPN gateway is busy with another change.")


def not_found_error(vco_id: str) -> CloudApiError:
    return api_error(
        "InvalidVpnConnectionInstanceId.NotFound",
        http_status=404,
        friendly=f"Connection {vco_id} does not exist.",
    )


def transport_error() -> CloudTransportError:
    info = ErrorInfo(
        code="Transport.Timeout",
        http_status=None,
        api_message="timeout",
        friendly="Alibaba Cloud did not answer in time.",
        action="",
        who=Who.NOBODY,
        retry=RetryClass.TRANSIENT,
    )
    return CloudTransportError("timeout", info=info)


def make_connection(
    vco_id: str = "vco-1", gateway_id: str = "vpn-gw1", region: str = REGION
) -> VpnConnection:
    return VpnConnection(
        id=vco_id,
        region=region,
        name=f"to-office-{vco_id}",
        gateway_id=gateway_id,
        customer_gateway_id="cgw-1",
        status="ike_sa_established",
        local_subnet="10.0.0.0/16",
        remote_subnet="192.168.0.0/24",
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@dataclass
class DeleteCall:
    region: str
    vco_id: str
    client_token: str
    gateway_id: str | None


@dataclass
class _InFlight:
    vco_id: str
    polls_left: int
    # A create (Recreate) in flight: the connection stays when it finishes.
    creating: bool = False


class FakeVpc:
    """An in-memory VPC API with asynchronous deletes and ClientToken replay."""

    def __init__(self, *, updating_polls: int = 2) -> None:
        self.connections: dict[tuple[str, str], VpnConnection] = {}
        self.gateway_names: dict[tuple[str, str], str] = {}
        self.updating_polls = updating_polls
        self.delete_calls: list[DeleteCall] = []
        self.describe_gateway_calls = 0
        # Scripted outcomes for the next delete calls: an error to raise; "transport-after-send"
        # (the request reaches Alibaba, the answer is lost, the client replays the same token);
        # "lost-answer-then-gone" (as before, but the deletion finishes at once and the replay
        # finds no connection: NotFound).
        self.delete_script: list[CloudError | str] = []
        self.overlaps: list[tuple[str, str, str]] = []
        self.held: set[str] = set()  # gateways kept "updating" until released
        # ClientToken -> the first answer: a RequestId, or the error it was refused with.
        self.tokens: dict[str, str | CloudError] = {}
        self.effective_deletes: list[str] = []
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self._ids = itertools.count(1)
        self.max_concurrent_calls = 0
        self._calls_now = 0
        # How many deletes had been sent when each snapshot was read (0: before the first send).
        self.snapshot_reads: list[int] = []
        # Recreate: keys the creates carried, errors for the next creates, routes made.
        self.created_keys: list[str] = []
        self.create_script: list[CloudError] = []
        self.routes_created: list[tuple[str, str, str]] = []
        # Tags each created connection carries, and the routes on each next hop (what routes_to reads).
        self.connection_tags: dict[tuple[str, str], dict[str, str]] = {}
        self.routes_on: dict[str, list[SnapshotRoute]] = {}
        self.route_script: list[CloudError] = []
        # Customer gateways: every one exists but those listed here (NotFound); errors for the next
        # reads; the ids read.
        self.gone_customer_gateways: set[str] = set()
        self.customer_gateway_script: list[CloudError] = []
        self.customer_gateway_reads: list[str] = []

    def add_connection(
        self, vco_id: str = "vco-1", gateway_id: str = "vpn-gw1", region: str = REGION
    ) -> VpnConnection:
        conn = make_connection(vco_id, gateway_id, region)
        self.connections[(region, vco_id)] = conn
        self.gateway_names.setdefault((region, gateway_id), f"gw-{gateway_id}")
        return conn

    def in_flight(self, gateway_id: str, region: str = REGION) -> str | None:
        entry = self._in_flight.get((region, gateway_id))
        return entry.vco_id if entry else None

    async def describe_vpn_connection(
        self, *, region: str, vco_id: str, shared: bool = False
    ) -> VpnConnection:
        await asyncio.sleep(0)
        conn = self.connections.get((region, vco_id))
        if conn is None:
            raise not_found_error(vco_id)
        return conn

    async def describe_vpn_gateway(self, *, region: str, gateway_id: str, shared: bool = False) -> VpnGateway:
        await asyncio.sleep(0)
        self.describe_gateway_calls += 1
        key = (region, gateway_id)
        if key not in self.gateway_names:
            raise api_error("InvalidVpnGatewayInstanceId.NotFound", http_status=404)
        entry = self._in_flight.get(key)
        if entry is not None and gateway_id not in self.held:
            entry.polls_left -= 1
            if entry.polls_left < 0:
                del self._in_flight[key]
                if not entry.creating:
                    self.connections.pop((region, entry.vco_id), None)
                entry = None
        status = "updating" if entry is not None else "active"
        return VpnGateway(id=gateway_id, region=region, name=self.gateway_names[key], status=status)

    async def describe_customer_gateway(self, *, region: str, customer_gateway_id: str) -> CustomerGateway:
        await asyncio.sleep(0)
        self.customer_gateway_reads.append(customer_gateway_id)
        if self.customer_gateway_script:
            raise self.customer_gateway_script.pop(0)
        if customer_gateway_id in self.gone_customer_gateways:
            raise api_error("InvalidCustomerGatewayInstanceId.NotFound", http_status=404)
        return CustomerGateway(id=customer_gateway_id, region=region, name=f"peer-{customer_gateway_id}")

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str:
        self._calls_now += 1
        self.max_concurrent_calls = max(self.max_concurrent_calls, self._calls_now)
        try:
            await asyncio.sleep(0)
            conn = self.connections.get((region, vco_id))
            self.delete_calls.append(
                DeleteCall(region, vco_id, client_token, conn.gateway_id if conn else None)
            )
            step = self.delete_script.pop(0) if self.delete_script else None
            if isinstance(step, CloudError):
                # A definite rejection is what Alibaba answers, and replays, for this token.
                self.tokens.setdefault(client_token, step)
                raise step
            if step == "unanswered":
                # The client gave up without an answer; the request never reached Alibaba Cloud.
                raise transport_error()
            answer = self._accept(region, vco_id, client_token)
            if step == "lost-answer-then-gone":
                # The client resent after a lost answer; meanwhile it finished and the token was forgotten.
                self._in_flight.pop((region, conn.gateway_id if conn else ""), None)
                self.connections.pop((region, vco_id), None)
                self.tokens.pop(client_token, None)
                gone = not_found_error(vco_id)
                gone.after_ambiguous = True
                raise gone
            if step == "carried-out-unanswered":
                # Carried out, but every answer was lost: the client gave up with a transport error.
                raise transport_error()
            # "transport-after-send": the client resent the same token after a lost answer and got
            # the first answer replayed; nothing more to do here.
            return answer
        finally:
            self._calls_now -= 1

    def _accept(self, region: str, vco_id: str, client_token: str) -> str:
        if client_token in self.tokens:
            first = self.tokens[client_token]  # idempotent replay: the first answer, errors included
            if isinstance(first, CloudError):
                raise first
            return first
        conn = self.connections.get((region, vco_id))
        if conn is None:
            raise not_found_error(vco_id)
        key = (region, conn.gateway_id)
        busy = self._in_flight.get(key)
        if busy is not None:
            self.overlaps.append((conn.gateway_id, busy.vco_id, vco_id))
            error = busy_error("VpnTask.CONFLICT")
            self.tokens[client_token] = error
            raise error
        self._in_flight[key] = _InFlight(vco_id=vco_id, polls_left=self.updating_polls)
        request_id = f"REQ-{next(self._ids):04d}"
        self.tokens[client_token] = request_id
        self.effective_deletes.append(vco_id)
        return request_id

    async def list_regions(self) -> list[str]:
        return [REGION, "cn-shanghai"]

    # --- Recreate: creates honour ClientToken replay; keys are recorded to check what was sent ---

    async def recreate_connection(
        self,
        *,
        region: str,
        config: dict[str, Any],
        psk: SecretStr,
        operation_id: str,
        client_token: str,
    ) -> tuple[str, str]:
        await asyncio.sleep(0)
        if client_token in self.tokens:
            first = self.tokens[client_token]
            if isinstance(first, CloudError):
                raise first
            new_id, request_id = first.split("|")
            return new_id, request_id
        if self.create_script:
            error = self.create_script.pop(0)
            self.tokens[client_token] = error
            raise error
        new_id = f"vco-new{next(self._ids):04d}"
        request_id = f"REQ-{next(self._ids):04d}"
        gateway_id = str(config["vpn_gateway_id"])
        self.connections[(region, new_id)] = dataclasses.replace(
            make_connection(new_id, gateway_id, region),
            name=str(config.get("name") or new_id),
            customer_gateway_id=str(config.get("customer_gateway_id") or ""),
            local_subnet=str(config.get("local_subnet") or ""),
            remote_subnet=str(config.get("remote_subnet") or ""),
            created_at=None,
        )
        self.created_keys.append(psk.get_secret_value())
        self.connection_tags[(region, new_id)] = {
            **dict(config.get("tags") or {}),
            OPERATION_TAG: operation_id,
        }
        self.tokens[client_token] = f"{new_id}|{request_id}"
        self._in_flight[(region, gateway_id)] = _InFlight(
            vco_id=new_id, polls_left=self.updating_polls, creating=True
        )
        return new_id, request_id

    async def create_route(
        self, *, region: str, gateway_id: str, route: SnapshotRoute, next_hop: str, client_token: str
    ) -> str:
        await asyncio.sleep(0)
        if client_token in self.tokens:
            first = self.tokens[client_token]
            if isinstance(first, CloudError):
                raise first
            return first
        if self.route_script:
            error = self.route_script.pop(0)
            self.tokens[client_token] = error
            raise error
        request_id = f"REQ-{next(self._ids):04d}"
        self.tokens[client_token] = request_id
        self.routes_created.append((route.destination, next_hop, client_token))
        self.routes_on.setdefault(next_hop, []).append(route)
        return request_id

    async def routes_to(self, *, region: str, gateway_id: str, vco_id: str) -> tuple[SnapshotRoute, ...]:
        await asyncio.sleep(0)
        return tuple(self.routes_on.get(vco_id, ()))

    async def tagged_connections(
        self, *, region: str, gateway_id: str, key: str, value: str
    ) -> list[VpnConnection]:
        await asyncio.sleep(0)
        return [
            c
            for (r, vco_id), c in self.connections.items()
            if r == region
            and c.gateway_id == gateway_id
            and self.connection_tags.get((r, vco_id), {}).get(key) == value
        ]

    async def describe_before_delete(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Reread:
        """This fake's snapshot and preview of the connection as it is now (tests override either to
        fail or hang), and the connection and gateway as they are (no gateway poll counted)."""
        try:
            async with asyncio.timeout(deadline_s):
                snapshot = await self.describe_snapshot(
                    region=region, connection=connection, deadline_s=deadline_s
                )
        except TimeoutError:
            snapshot = Snapshot.unavailable(connection, f"no answer within {deadline_s:g} s")
        except Exception:  # noqa: BLE001 - as the adapter: a failed part is unread, never raised
            snapshot = Snapshot.unavailable(connection, "an unexpected error (see the bot's log)")
        current = self.connections.get((region, connection.id))
        if current is None:
            impact = Impact(unread=(Unread(part=PART_CONNECTION, reason="gone", code=CONNECTION_NOT_FOUND),))
        else:
            try:
                async with asyncio.timeout(deadline_s):
                    impact = await self.describe_impact(
                        region=region, connection=current, deadline_s=deadline_s
                    )
            except TimeoutError:
                impact = Impact.unavailable(f"no answer within {deadline_s:g} s")
            except Exception:  # noqa: BLE001 - as the adapter: a failed part is unread, never raised
                impact = Impact.unavailable("an unexpected error (see the bot's log)")
        name = self.gateway_names.get((region, connection.gateway_id))
        gateway = (
            None
            if name is None
            else VpnGateway(id=connection.gateway_id, region=region, name=name, status="active")
        )
        return Reread(snapshot=snapshot, impact=impact, connection=current, gateway=gateway)

    async def describe_impact(self, *, region: str, connection: VpnConnection, deadline_s: float) -> Impact:
        """A preview with the connection's status and one destination route through it."""
        await asyncio.sleep(0)
        route = ImpactRoute(kind="custom", destination=connection.remote_subnet or "192.168.0.0/24")
        return Impact(status=connection.status, routes=(route,), route_count=1)

    async def describe_snapshot(
        self, *, region: str, connection: VpnConnection, deadline_s: float
    ) -> Snapshot:
        """The connection's create parameters (no key) and one destination route through it."""
        await asyncio.sleep(0)
        self.snapshot_reads.append(len(self.delete_calls))
        config = {
            "vpn_gateway_id": connection.gateway_id,
            "customer_gateway_id": connection.customer_gateway_id,
            "local_subnet": connection.local_subnet,
            "remote_subnet": connection.remote_subnet,
            "name": connection.name,
        }
        route = SnapshotRoute(kind="custom", destination=connection.remote_subnet or "192.168.0.0/24")
        return Snapshot(
            vco_id=connection.id,
            region=region,
            name=connection.name,
            gateway_id=connection.gateway_id,
            customer_gateway_id=connection.customer_gateway_id,
            local_subnet=connection.local_subnet,
            remote_subnet=connection.remote_subnet,
            config=config,
            routes=(route,),
        )


@dataclass
class FakeNotifier:
    """Records every call; ``post_error`` / ``fail_with`` make calls fail like Slack would."""

    post_error: SlackError | None = None
    # While set, every call fails with this error (e.g. a transient outage).
    fail_with: SlackError | None = None
    # While set and not yet set free, every call hangs (Slack accepting connections, never answering).
    hang: asyncio.Event | None = None
    posted: list[Operation] = field(default_factory=list)
    parent_updates: list[Operation] = field(default_factory=list)
    events: list[tuple[str, Progress]] = field(default_factory=list)
    # What each post attempt (confirmation or thread reply, failed ones too) was told of its effect.
    deliveries: list[Delivery | None] = field(default_factory=list)
    responses: list[tuple[str, Progress]] = field(default_factory=list)
    # The requester's direct messages: (op id, outcome).
    directs: list[tuple[str, Progress]] = field(default_factory=list)
    # The audit channel's lines: (op id, decision).
    audit_lines: list[tuple[str | None, Announced]] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def _call(self) -> None:
        await asyncio.sleep(0)
        if self.hang is not None:
            await self.hang.wait()
        if self.fail_with is not None:
            raise self.fail_with

    async def post_confirmation(self, op: Operation, delivery: Delivery | None = None) -> str:
        self.deliveries.append(delivery)
        await self._call()
        if self.post_error is not None:
            raise self.post_error
        self.posted.append(op)
        return f"1700000000.{next(self._ts):06d}"

    async def update_card(self, op: Operation) -> None:
        await self._call()
        self.parent_updates.append(op)

    async def post_batch(self, ops: Sequence[Operation], delivery: Delivery | None = None) -> str:
        return await self.post_confirmation(ops[0], delivery)

    async def update_batch(self, ops: Sequence[Operation]) -> None:
        await self.update_card(ops[0])

    async def reply_in_thread(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        self.deliveries.append(delivery)
        await self._call()
        self.events.append((op.id, event))

    async def respond(self, op: Operation, event: Progress) -> None:
        await self._call()
        self.responses.append((op.id, event))

    async def direct_message(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        await self._call()
        self.directs.append((op.id, event))

    async def audit_line(
        self, op: Operation | None, event: Announced, delivery: Delivery | None = None
    ) -> None:
        self.deliveries.append(delivery)
        await self._call()
        self.audit_lines.append((op.id if op is not None else None, event))

    def events_for(self, op_id: str) -> list[Progress]:
        return [event for oid, event in self.events if oid == op_id]

    def event_types(self, op_id: str) -> list[str]:
        return [type(event).__name__ for event in self.events_for(op_id)]


class AllowAllPolicy:
    """Everyone may request, approve and cancel."""

    async def check_request(self, *, user_id: str, channel_id: str, region: str) -> None:
        return None

    async def check_approval(self, *, user_id: str, op: Operation) -> None:
        return None

    async def check_cancel(self, *, user_id: str, op: Operation) -> None:
        return None

    async def check_history(self, *, user_id: str, channel_id: str) -> None:
        return None

    async def check_read(self, *, user_id: str, channel_id: str, region: str) -> None:
        return None


@dataclass
class FakePolicy:
    """Allow-lists; an empty set allows everyone. The requester may always cancel."""

    requesters: set[str] = field(default_factory=set)
    approvers: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    no_self_approval: bool = False

    async def check_request(self, *, user_id: str, channel_id: str, region: str) -> None:
        if self.requesters and user_id not in self.requesters:
            raise NotAllowed("You may not request deletions.", who_can="Ask a listed requester.")
        if self.channels and channel_id not in self.channels:
            raise NotAllowed("Deletions cannot be requested in this channel.")

    async def check_approval(self, *, user_id: str, op: Operation) -> None:
        if self.no_self_approval and user_id == op.requester_id:
            raise NotAllowed("You cannot approve your own request.", who_can="Ask another approver.")
        if self.approvers and user_id not in self.approvers:
            raise NotAllowed("You may not approve deletions.", who_can="Ask an approver.")

    async def check_cancel(self, *, user_id: str, op: Operation) -> None:
        if user_id == op.requester_id:
            return
        await self.check_approval(user_id=user_id, op=op)

    async def check_history(self, *, user_id: str, channel_id: str) -> None:
        if self.channels and channel_id not in self.channels:
            raise NotAllowed("History cannot be shown in this channel.")

    async def check_read(self, *, user_id: str, channel_id: str, region: str) -> None:
        if self.requesters and user_id not in self.requesters | self.approvers:
            raise NotAllowed("You may not list connections.", who_can="Ask a listed requester.")
        if self.channels and channel_id not in self.channels:
            raise NotAllowed("Connections cannot be listed in this channel.")


class CountingStore:
    """A store (the real one, injected as the OperationStore) recording which methods are called.

    Every store method is one transaction, so ``calls`` is the transactions a piece of work cost.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


class FakeClock:
    """A virtual UTC clock: ``sleep`` waits for virtual time, which only tests move.

    ``advance`` moves time and wakes the sleepers that are due; ``step`` jumps to the next
    sleeper's wake-up time. Nothing in a test sleeps for real, and no wall-clock time is measured.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), future))
        await future

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        self._wake()
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at
        self._wake()

    def step(self) -> bool:
        """Jump to the next live sleeper's wake-up time and wake it; False if nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled
        if not self._sleepers:
            return False
        self._now = max(self._now, self._sleepers[0][0])
        self._wake()
        return True

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


@contextlib.asynccontextmanager
async def time_passes(clock: FakeClock, *, tick: float = 0.005) -> AsyncIterator[None]:
    """Let virtual time pass in the background (one sleeper per real ``tick``) inside the block."""

    async def ticking() -> None:
        while True:
            clock.step()
            await asyncio.sleep(tick)

    task = asyncio.create_task(ticking())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_until(
    clock: FakeClock, check: Callable[[], Awaitable[bool]], *, within: float = 10.0, max_steps: int = 100_000
) -> None:
    """Let virtual time pass, one sleeper at a time, until ``check`` holds (``within`` real seconds)."""
    async with asyncio.timeout(within):
        for _ in range(max_steps):
            if await check():
                return
            clock.step()
            # Real time for database I/O and tasks to run between virtual steps.
            await asyncio.sleep(0.001)
        raise AssertionError("the condition never held")
