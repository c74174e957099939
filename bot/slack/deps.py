"""What the Slack listeners depend on: the workflow's API and a few injected callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from bot.config import Settings
from bot.domain import AuditEntry, Operation

__all__ = ["OperationLookup", "Regions", "SlackDeps", "WorkflowApi"]

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
    ) -> Operation:
        """Check policy, look the connection up and post the confirmation."""
        ...

    async def approve(self, *, op_id: str, user_id: str) -> Operation:
        """Approve (raises NotAllowed or ConfirmationClosed) and start the deletion."""
        ...

    async def cancel(self, *, op_id: str, user_id: str) -> Operation:
        """Cancel a confirmation that is still open."""
        ...

    async def history(self, *, limit: int = 10) -> list[AuditEntry]:
        """The latest audit entries, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class SlackDeps:
    """Everything the listeners need, built once by :func:`bot.slack.register`."""

    workflow: WorkflowApi
    settings: Settings
    regions: Regions
    operation: OperationLookup | None = None
    regions_timeout: float = 3.0
