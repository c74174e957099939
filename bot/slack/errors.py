"""The one ``@app.error`` funnel: every exception a listener or middleware raises ends here.

Known errors (:class:`bot.errors.BotError`) become a short ephemeral reply to the person who
typed or clicked, through the request's ``response_url``. Anything else is a bug: it is logged
with a short error id, and the person sees only that id, never a traceback.

Bolt calls this handler for errors raised before *and* after ``ack()``; after ``ack()`` the
HTTP response is gone (``response`` is None), so every reply goes through the response_url.

One Bolt quirk (slack_bolt 1.30, ``listener/asyncio_runner.py``): when a listener raises
within ~10 ms of ``ack()`` (before the runner's 10 ms poll has seen the ack), the runner
overwrites ``ack.response`` with None, waits out the 3 s ack timeout and answers 404
("unhandled request"). So listeners wrap their post-ack work in :func:`errors_to_user`, which
sends the error into the same funnel without letting it reach Bolt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse

from bot.errors import (
    AlreadyRequested,
    ApprovalRefused,
    BotError,
    ConfirmationClosed,
    Frozen,
    RecreateRefused,
    SlackError,
    StoreUnavailable,
    UsageError,
)
from bot.slack.blocks import (
    build_already_requested,
    build_refusal,
    build_unexpected_error,
    build_usage,
    closed_text,
    explain_slack_error,
    frozen_refusal_text,
    recreate_refused_text,
)
from bot.slack.blocks.quorum import approval_refused_text
from bot.slack.deps import InFlight

__all__ = ["errors_to_user", "handle_error", "new_error_id", "register_error_handler", "reply_for"]

log = logging.getLogger(__name__)

_RESPOND_TIMEOUT = 10.0
# Slack errors that mean "the bot can't post in this channel": explain how to invite it.
_CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


def new_error_id() -> str:
    """A short id that links what the user sees to one log line."""
    return secrets.token_hex(3)


def _kind(body: Mapping[str, Any]) -> str:
    if "command" in body:
        return "command"
    kind = body.get("type")
    return kind if isinstance(kind, str) else "unknown"


def reply_for(error: Exception, *, kind: str) -> dict[str, Any]:
    """The ephemeral reply for ``error`` (logging unknown errors with their id)."""
    if isinstance(error, UsageError):
        message = build_usage(error=error.friendly)
    elif isinstance(error, AlreadyRequested):
        message = build_already_requested(error.op, permalink=None, now=datetime.now(UTC))
    elif isinstance(error, ConfirmationClosed):
        message = build_refusal(closed_text(error.op, now=datetime.now(UTC)))
    elif isinstance(error, ApprovalRefused):
        message = build_refusal(approval_refused_text(error))
    elif isinstance(error, Frozen):
        message = build_refusal(frozen_refusal_text(error.freeze))
    elif isinstance(error, RecreateRefused):
        message = build_refusal(recreate_refused_text(error, now=datetime.now(UTC)))
    elif isinstance(error, SlackError) and error.error in _CHANNEL_ERRORS:
        message = build_refusal(explain_slack_error(error.error))
    elif isinstance(error, BotError):
        message = build_refusal(error.friendly)
    else:
        error_id = new_error_id()
        log.error(
            "unexpected error in a Slack listener",
            extra={"error_id": error_id, "request_kind": kind, "error_type": type(error).__name__},
            exc_info=error,
        )
        message = build_unexpected_error(error_id, nothing_deleted=kind == "command")
    if kind == "block_actions":
        # Answer only the person who clicked, and keep the confirmation message as it is.
        message["replace_original"] = False
    return message


async def handle_error(
    error: Exception, body: dict[str, Any], respond: AsyncRespond | None, response: BoltResponse | None
) -> BoltResponse | None:
    """Reply to the user with a friendly text; log unknown errors with an error id."""
    kind = _kind(body)
    if isinstance(error, StoreUnavailable):
        # An outage, not a bug: no error id, and the buttons work again once it is back.
        log.warning(
            "the database is unreachable; told the user nothing changed",
            extra={"request_kind": kind, "error": error.detail},
        )
    elif isinstance(error, BotError):
        log.info(
            "refused a Slack request",
            extra={"request_kind": kind, "error_type": type(error).__name__, "reason": error.message},
        )
    message = reply_for(error, kind=kind)
    url = body.get("response_url")
    if respond is None or not respond.response_url:
        respond = AsyncRespond(response_url=url) if isinstance(url, str) and url else None
    if respond is None:
        log.warning("no response_url to reply to", extra={"request_kind": kind})
        return None
    try:
        async with asyncio.timeout(_RESPOND_TIMEOUT):
            result = await respond(**message)
        if result.status_code != 200:
            log.warning("response_url refused the error reply", extra={"status": result.status_code})
    # The funnel is the last stop: if even the reply fails there is nobody left to raise to.
    except Exception as exc:  # noqa: BLE001 - the error funnel's last stop: nobody is left to raise to
        log.warning("could not send the error reply", extra={"error_type": type(exc).__name__})
    if response is not None:
        # Before ack(): answer 200 with no body, so Slack shows our reply and not "dispatch_failed".
        return BoltResponse(status=200, body="")
    return None


def register_error_handler(app: AsyncApp) -> None:
    """Install :func:`handle_error` as the app's only error handler."""
    app.error(handle_error)


@asynccontextmanager
async def errors_to_user(
    body: dict[str, Any], respond: AsyncRespond | None, *, inflight: InFlight | None = None
) -> AsyncIterator[None]:
    """Send errors raised after ``ack()`` to :func:`handle_error` instead of Bolt (see module doc).

    With ``inflight``, the work also counts as in flight so shutdown waits for it.
    """
    with inflight.track() if inflight is not None else contextlib.nullcontext():
        try:
            yield
        except Exception as error:  # noqa: BLE001 - the error funnel: every error becomes a friendly reply
            await handle_error(error, body, respond, None)
