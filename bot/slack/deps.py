"""What the Slack listeners depend on: the workflow's API and a few injected callables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import SecretStr

from bot.config import Settings
from bot.domain import AuditEntry, Freeze, Operation
from bot.slack.inventory import Inventory, ListingCache
from bot.slack.limits import UserRate
from bot.slack.visibility import Visibility

__all__ = [
    "AdminPolicy",
    "InFlight",
    "LoadMeter",
    "OperationLookup",
    "ReadPolicy",
    "Regions",
    "SlackDeps",
    "WorkflowApi",
]

# The regions DescribeRegions knows (cached by the caller).
Regions = Callable[[], Awaitable[Collection[str]]]
# Load an operation by id, to check a click against the message it came from.
OperationLookup = Callable[[str], Awaitable[Operation | None]]


class WorkflowApi(Protocol):
    """The deletion workflow as the Slack layer sees it (implemented by bot.workflow.Workflow)."""

    async def request_delete(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_id: str,
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
        run_at: datetime | None = None,
    ) -> Operation:
        """Check policy, look the connection up and post the confirmation (in ``account``, with ``reason``).

        ``run_at``: when to delete it once approved (None: at once).
        """
        ...

    async def override_window(self, *, op_id: str, user_id: str) -> Operation:
        """Run a deletion its change window holds back now (a second approver; raises NotAllowed)."""
        ...

    async def request_batch(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_ids: Sequence[str],
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
        run_at: datetime | None = None,
    ) -> list[Operation]:
        """Check policy, look every connection up and post the one batch card (site decommission);
        ``run_at``: when all of them run once approved (``at …``), None: at once."""
        ...

    async def approve_batch(
        self, *, batch_id: str, user_id: str, message_ts: str | None = None
    ) -> list[Operation]:
        """Approve every member of a batch still awaiting approval (the same checks as one), then delete each."""
        ...

    async def cancel_batch(
        self, *, batch_id: str, user_id: str, reason: str | None = None
    ) -> list[Operation]:
        """Close every member of a batch still awaiting approval, or scheduled and not started."""
        ...

    async def override_batch_window(self, *, batch_id: str, user_id: str) -> list[Operation]:
        """Start now every member of a batch its change window holds back (a second approver)."""
        ...

    async def withdraw_batch(self, *, batch_id: str, user_id: str) -> list[Operation]:
        """Take one's approval of a whole batch back while its quorum is not met."""
        ...

    async def batch_members(self, *, batch_id: str) -> list[Operation]:
        """A batch's operations in the order asked (empty: no such batch)."""
        ...

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Approve (raises NotAllowed or ConfirmationClosed) and start the deletion."""
        ...

    async def withdraw(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        """Take one's approval back under a quorum rule (raises ApprovalRefused or ConfirmationClosed)."""
        ...

    async def cancel(
        self, *, op_id: str, user_id: str, message_ts: str | None = None, reason: str | None = None
    ) -> Operation:
        """Cancel a confirmation that is still open."""
        ...

    async def recreate_target(self, *, op_id: str, user_id: str, channel_id: str) -> Operation:
        """The deleted operation if Recreate… may be used on it now (raises RecreateRefused, NotAllowed)."""
        ...

    async def request_recreate(
        self,
        *,
        op_id: str,
        user_id: str,
        channel_id: str,
        psk: SecretStr,
    ) -> Operation:
        """Record a recreation (the key in memory only) and post its confirmation in the card's thread."""
        ...

    async def history(
        self,
        *,
        limit: int = 10,
        user_id: str | None = None,
        channel_id: str = "",
        accounts: Collection[str] | None = None,
    ) -> list[AuditEntry]:
        """``channel_id``'s latest audit entries in ``accounts``, newest first (NotAllowed if ``user_id`` may not)."""
        ...

    async def freeze(
        self, *, user_id: str, duration: timedelta, account: str | None, reason: str
    ) -> tuple[Freeze, list[Freeze]]:
        """Freeze ``account`` (None: all) for ``duration``; the freeze and those it replaced."""
        ...

    async def unfreeze(self, *, user_id: str, account: str | None, everything: bool) -> list[Freeze]:
        """Lift the freezes in force (all, or ``account``'s); those lifted."""
        ...

    async def frozen(self, account: str, now: datetime | None = None) -> Freeze | None:
        """The freeze covering ``account`` now, or None."""
        ...

    async def active_freezes(self) -> list[Freeze]:
        """Every freeze in force now (the Home tab)."""
        ...


class ReadPolicy(Protocol):
    """Who may list and inspect connections (implemented by :class:`bot.slack.policy.SlackPolicy`)."""

    async def check_read(self, *, user_id: str, channel_id: str, region: str) -> None:
        """Raise NotAllowed if ``user_id`` may not read ``region`` in ``channel_id``."""
        ...


class CancelPolicy(Protocol):
    """Who may cancel (implemented by :class:`bot.slack.policy.SlackPolicy`): checked before the reason modal opens."""

    async def check_cancel(self, *, user_id: str, op: Operation) -> None:
        """Raise NotAllowed if ``user_id`` may not cancel ``op``."""
        ...


class AdminPolicy(Protocol):
    """Who may freeze and unfreeze (implemented by :class:`bot.slack.policy.SlackPolicy`, VPNBOT_ADMINS)."""

    async def check_admin(self, *, user_id: str) -> None:
        """Raise NotAllowed, naming who may, if ``user_id`` is not an admin."""
        ...


class LoadMeter(Protocol):
    """Where the Slack layer reports load (implemented by :class:`bot.metrics.Metrics`)."""

    def request_shed(self) -> None:
        """Count one request turned away because too much work was in flight."""
        ...


class InFlight:
    """Listener work still running after ``ack()``.

    Bolt runs the rest of a listener in a task nobody keeps; shutdown waits for these so a
    request being looked up or approved is not cut off halfway (and the store is not closed
    under it).
    """

    def __init__(self, *, limit: int = 2000, metrics: LoadMeter | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        # Past this many, new delete requests are turned away in the ack (nothing started) rather
        # than queued: each waiting request holds its whole Bolt context in memory.
        self.limit = limit
        self.metrics = metrics

    def shed(self) -> None:
        """Note that a request was turned away because :attr:`full`."""
        if self.metrics is not None:
            self.metrics.request_shed()

    @property
    def full(self) -> bool:
        """Whether new work should be turned away."""
        return len(self._tasks) >= self.limit

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task as in flight until the block ends."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` seconds for the work in flight to finish."""
        pending = {t for t in self._tasks if t is not asyncio.current_task() and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=grace_s)


@dataclass(frozen=True, slots=True)
class SlackDeps:
    """Everything the listeners need, built once by :func:`bot.slack.register`."""

    workflow: WorkflowApi
    settings: Settings
    regions: Regions
    operation: OperationLookup | None = None
    regions_timeout: float = 3.0
    inflight: InFlight = field(default_factory=InFlight)
    # /vpn list and /vpn status; without them those commands say they are not set up.
    inventory: Inventory | None = None
    listings: ListingCache | None = None
    read_policy: ReadPolicy | None = None
    # Someone who may not cancel is refused at the click, before typing a reason (the workflow decides).
    cancel_policy: CancelPolicy | None = None
    # Who sees which operation (/vpn status <request>); None only in Slack-layer tests.
    visibility: Visibility | None = None
    # /vpn freeze and unfreeze: who may (VPNBOT_ADMINS); None refuses everyone.
    admin_policy: AdminPolicy | None = None
    # Commands and lookups per person (VPNBOT_USER_RATE_PER_MINUTE); off unless register() sets it.
    rate: UserRate = field(default_factory=lambda: UserRate(0))
    # The time now (the workflow's clock): a requested run time is checked against it.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
