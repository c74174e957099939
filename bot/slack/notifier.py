"""How the outbox talks to Slack: :class:`SlackNotifier` (implements :class:`bot.ports.Notifier`).

Each method makes one Web API call (slack_sdk's own retry handlers absorb short 429s and 5xx
inside it) and translates a failure once into :class:`bot.errors.SlackError`, saying whether it
is worth trying later. When to try again is the outbox's business, not this module's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain import Operation, Progress
from bot.slack.blocks import build_confirmation, build_parent, build_respond, build_thread_reply
from bot.slack.codes import NO_TS, SLACK_FAILURES, slack_error, translate

__all__ = ["SlackNotifier", "configure_retries"]

log = logging.getLogger(__name__)


def configure_retries(client: AsyncWebClient) -> None:
    """Add retries for 429 (honouring Retry-After) and 5xx to ``client``; safe to call twice."""
    kinds = {type(h) for h in client.retry_handlers}
    if AsyncRateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    if AsyncServerErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=1))


class SlackNotifier:
    """Posts, updates and threads the confirmation message through an injected AsyncWebClient."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        now: Callable[[], datetime] | None = None,
        anyone_may_approve: bool = False,
    ) -> None:
        self._client = client
        # VPNBOT_APPROVERS=*: the card says that anyone who sees it may approve.
        self._anyone = anyone_may_approve
        # Cards say times with their date unless it is today: "today" is the clock's.
        self._now = now or (lambda: datetime.now(UTC))

    async def post_confirmation(self, op: Operation) -> str:
        """Post the confirmation in ``op.channel_id`` and return its ts."""
        message = build_confirmation(op, now=self._now(), anyone_may_approve=self._anyone)
        try:
            # A recreation's confirmation goes in the deleted card's thread.
            response = await self._client.chat_postMessage(
                channel=op.channel_id, thread_ts=op.thread_ts, text=message["text"], blocks=message["blocks"]
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise slack_error(NO_TS)
        return ts

    async def update_card(self, op: Operation) -> None:
        """Re-render the confirmation for the op's state."""
        message = build_parent(op, now=self._now(), anyone_may_approve=self._anyone)
        try:
            await self._client.chat_update(
                channel=op.channel_id, ts=op.message_ts or "", text=message["text"], blocks=message["blocks"]
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc

    async def reply_in_thread(self, op: Operation, event: Progress) -> None:
        """Reply in the confirmation's thread."""
        message = build_thread_reply(event)
        try:
            await self._client.chat_postMessage(
                channel=op.channel_id,
                thread_ts=op.thread_ts or op.message_ts,
                text=message["text"],
                blocks=message.get("blocks"),
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc

    async def respond(self, op: Operation, event: Progress) -> None:
        """Tell the requester alone, through the response_url (valid for 30 minutes)."""
        message = build_respond(event)
        webhook = AsyncWebhookClient(op.response_url or "", session=self._client.session)
        try:
            response = await webhook.send(
                text=message["text"],
                blocks=message["blocks"],
                response_type="ephemeral",
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc
        if response.status_code != 200:
            # 5xx and 429 are worth another try; a 404 means the response_url expired (30 min).
            raise slack_error(f"http_{response.status_code}")
