"""How the outbox talks to Slack: :class:`SlackNotifier` (implements :class:`bot.ports.Notifier`).

Each method makes one Web API call (slack_sdk's own retry handlers absorb short 429s and 5xx
inside it) and translates a failure once into :class:`bot.errors.SlackError`, saying whether it
is worth trying later. When to try again is the outbox's business, not this module's.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain import Operation, Progress
from bot.errors import SlackError
from bot.slack.blocks import (
    build_confirmation,
    build_parent,
    build_progress,
    build_respond,
    explain_slack_error,
)

__all__ = ["SlackNotifier", "configure_retries", "translate_slack_error"]

log = logging.getLogger(__name__)

_TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "request_timeout", "service_unavailable"}
)


def configure_retries(client: AsyncWebClient) -> None:
    """Add retries for 429 (honouring Retry-After) and 5xx to ``client``; safe to call twice."""
    kinds = {type(h) for h in client.retry_handlers}
    if AsyncRateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    if AsyncServerErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=1))


def translate_slack_error(exc: Exception) -> SlackError:
    """Turn a slack_sdk or network failure into SlackError(error, transient, retry_after)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        error = str(response.get("error") or f"http_{status}") if response is not None else "unknown"
        retry_after: float | None = None
        headers = getattr(response, "headers", None) or {}
        for name, value in headers.items():
            if str(name).lower() == "retry-after":
                try:
                    retry_after = float(value[0] if isinstance(value, list) else value)
                except (TypeError, ValueError):
                    retry_after = None
        transient = status >= 500 or status == 429 or error in _TRANSIENT_SLACK_ERRORS
        return SlackError(
            explain_slack_error(error), error=error, transient=transient, retry_after=retry_after
        )
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
        return SlackError(
            "I could not reach Slack. Nothing was deleted; try again in a minute.",
            error="transport",
            transient=True,
        )
    raise exc


class SlackNotifier:
    """Posts, updates and threads the confirmation message through an injected AsyncWebClient."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post_confirmation(self, op: Operation) -> str:
        """Post the confirmation in ``op.channel_id`` and return its ts."""
        message = build_confirmation(op)
        try:
            response = await self._client.chat_postMessage(
                channel=op.channel_id, text=message["text"], blocks=message["blocks"]
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise translate_slack_error(exc) from exc
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackError(explain_slack_error("no_ts"), error="no_ts")
        return ts

    async def update_card(self, op: Operation) -> None:
        """Re-render the confirmation for the op's state."""
        message = build_parent(op)
        try:
            await self._client.chat_update(
                channel=op.channel_id, ts=op.message_ts or "", text=message["text"], blocks=message["blocks"]
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise translate_slack_error(exc) from exc

    async def reply_in_thread(self, op: Operation, event: Progress) -> None:
        """Reply in the confirmation's thread."""
        try:
            await self._client.chat_postMessage(
                channel=op.channel_id, thread_ts=op.message_ts, text=build_progress(event)
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise translate_slack_error(exc) from exc

    async def respond(self, op: Operation, event: Progress) -> None:
        """Tell the requester alone, through the response_url (valid for 30 minutes)."""
        message = build_respond(event)
        webhook = AsyncWebhookClient(op.response_url or "", session=self._client.session)
        try:
            response = await webhook.send(
                text=message["text"],
                blocks=message["blocks"],
                response_type="ephemeral",
                replace_original=True,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate_slack_error(exc) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SlackError(
                "Slack did not take the reply.", error=f"http_{response.status_code}", transient=True
            )
        if response.status_code != 200:
            # 404: the response_url expired (30 min) or was used up; nothing later will fix it.
            raise SlackError("The response_url refused the reply.", error=f"http_{response.status_code}")
