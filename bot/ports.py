"""The Protocols the deletion workflow depends on.

The workflow never imports httpx or slack_sdk: the cloud client implements :class:`VpcApi`,
the Slack layer implements :class:`Notifier` and :class:`Policy`, and tests pass small fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from bot.domain import Operation, Progress, VpnConnection, VpnGateway
from bot.errors import CloudError

__all__ = ["Clock", "Notifier", "OnRetry", "Policy", "SystemClock", "VpcApi"]

# Called by the cloud client before it sleeps for a transient retry: (error, delay_s, attempt, max_attempts).
OnRetry = Callable[[CloudError, float, int, int], Awaitable[None]]


class VpcApi(Protocol):
    """The Alibaba Cloud VPC operations the workflow needs. Errors are :class:`CloudError`."""

    async def describe_vpn_connection(self, *, region: str, vco_id: str) -> VpnConnection:
        """Return the connection; raise CloudApiError ``InvalidVpnConnectionInstanceId.NotFound`` if gone."""
        ...

    async def describe_vpn_gateway(self, *, region: str, gateway_id: str) -> VpnGateway:
        """Return the gateway with its current ``status``."""
        ...

    async def delete_vpn_connection(
        self, *, region: str, vco_id: str, client_token: str, on_retry: OnRetry | None = None
    ) -> str:
        """Start the asynchronous deletion; return Alibaba's RequestId.

        Transient errors are retried inside, with the same ClientToken, calling ``on_retry``
        before each wait. BUSY and NEVER errors are raised to the caller.
        """
        ...

    async def list_regions(self) -> list[str]:
        """Return the region ids the VPC API knows (DescribeRegions)."""
        ...


class Notifier(Protocol):
    """How the workflow talks to people. Implemented by the Slack layer."""

    async def post_confirmation(self, op: Operation) -> str:
        """Post the confirmation (details + Delete/Cancel) in ``op.channel_id``; return its ts.

        Raises :class:`bot.errors.SlackError` if the bot cannot post there; the caller then
        falls back to the response_url.
        """
        ...

    async def update_parent(self, op: Operation) -> None:
        """Re-render the confirmation message from the operation's state. Never raises."""
        ...

    async def progress(self, op: Operation, event: Progress) -> None:
        """Reply in the confirmation's thread. Never raises."""
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


class Clock(Protocol):
    """Wall-clock time, injectable for tests."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
