"""How the workflow talks to Slack: :class:`SlackNotifier` (implements :class:`bot.ports.Notifier`).

Posting the confirmation may fail (the bot is not in the channel), and that failure is the
caller's to handle, so it is translated into :class:`bot.errors.SlackError`. Updating the
message and replying in its thread must never break a deletion in progress: their failures are
logged and swallowed.
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

from bot.domain import Operation, Progress
from bot.errors import SlackError
from bot.slack.blocks import build_confirmation, build_parent, build_progress, explain_slack_error

__all__ = ["SlackNotifier", "configure_retries"]

log = logging.getLogger(__name__)


def configure_retries(client: AsyncWebClient) -> None:
    """Add retries for 429 (honouring Retry-After) and 5xx to ``client``; safe to call twice."""
    kinds = {type(h) for h in client.retry_handlers}
    if AsyncRateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    if AsyncServerErrorRetryHandler not in kinds:
        client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=1))


def _slack_error_code(exc: SlackApiError) -> str:
    response = exc.response
    if response is None:
        return "unknown"
    error = response.get("error")
    return str(error) if error else f"http_{response.status_code}"


class SlackNotifier:
    """Posts, updates and threads the confirmation message through an injected AsyncWebClient."""

    def __init__(
        self, client: AsyncWebClient, *, update_attempts: int = 4, update_backoff_s: float = 1.0
    ) -> None:
        self._client = client
        self._update_attempts = max(1, update_attempts)
        self._update_backoff_s = update_backoff_s

    async def post_confirmation(self, op: Operation) -> str:
        """Post the confirmation in ``op.channel_id`` and return its ts; raise SlackError if refused."""
        message = build_confirmation(op)
        try:
            response = await self._client.chat_postMessage(
                channel=op.channel_id, text=message["text"], blocks=message["blocks"]
            )
        except SlackApiError as exc:
            error = _slack_error_code(exc)
            log.warning("could not post the confirmation", extra={"op_id": op.id, "slack_error": error})
            raise SlackError(explain_slack_error(error), error=error) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "could not reach Slack to post the confirmation",
                extra={"op_id": op.id, "error_type": type(exc).__name__},
            )
            raise SlackError(
                "I could not reach Slack to post the confirmation. Nothing was deleted; try again in a minute.",
                error="transport",
            ) from exc
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackError(explain_slack_error("no_ts"), error="no_ts")
        return ts

    async def update_parent(self, op: Operation) -> None:
        """Re-render the confirmation for the op's state. Never raises."""
        if not op.message_ts:
            log.info("no confirmation message to update", extra={"op_id": op.id, "state": op.state.value})
            return
        message = build_parent(op)
        for attempt in range(1, self._update_attempts + 1):
            try:
                await self._client.chat_update(
                    channel=op.channel_id, ts=op.message_ts, text=message["text"], blocks=message["blocks"]
                )
                return
            # The Notifier contract is "never raises": a Slack hiccup must not abort a deletion
            # that is already running at Alibaba Cloud, so anything short of cancellation is logged.
            except Exception as exc:
                transient = _is_transient(exc)
                log.warning(
                    "could not update the confirmation message",
                    extra={
                        "op_id": op.id,
                        "state": op.state.value,
                        "error": _describe(exc),
                        "attempt": attempt,
                        "will_retry": transient and attempt < self._update_attempts,
                    },
                )
                if not transient or attempt == self._update_attempts:
                    return
            # The parent is the record people look at: outlast a short Slack outage (1 s, 2 s, 4 s…).
            await asyncio.sleep(self._update_backoff_s * 2 ** (attempt - 1))

    async def progress(self, op: Operation, event: Progress) -> None:
        """Reply in the confirmation's thread. Never raises."""
        if not op.message_ts:
            log.info("no thread to reply in", extra={"op_id": op.id, "event": type(event).__name__})
            return
        text = build_progress(event)
        try:
            await self._client.chat_postMessage(channel=op.channel_id, thread_ts=op.message_ts, text=text)
        # Same contract as update_parent: progress replies are best effort.
        except Exception as exc:
            log.warning(
                "could not post a progress reply",
                extra={"op_id": op.id, "event": type(event).__name__, "error": _describe(exc)},
            )


_TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "request_timeout", "service_unavailable"}
)


def _is_transient(exc: Exception) -> bool:
    """Whether Slack may accept the same call a little later (5xx, rate limits, network)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        return status >= 500 or status == 429 or _slack_error_code(exc) in _TRANSIENT_SLACK_ERRORS
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return _slack_error_code(exc)
    return type(exc).__name__
