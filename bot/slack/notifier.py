"""How the outbox talks to Slack: :class:`SlackNotifier` (implements :class:`bot.ports.Notifier`).

Each method makes one Web API call (slack_sdk's own retry handlers absorb short 429s and 5xx
inside it) and translates a failure once into :class:`bot.errors.SlackError`, saying whether it
is worth trying later. When to try again is the outbox's business, not this module's.

Posts happen once. chat.postMessage has no idempotency key, so every post the outbox makes
carries its effect's key in Slack message metadata (:data:`EFFECT_EVENT`). After an attempt whose
answer was lost (a reset, a timeout, a 5xx: :attr:`bot.domain.Delivery.maybe_done`) the notifier
first reads the thread (conversations.replies) or the channel (conversations.history) for a
message with that key, and takes it as posted. slack_sdk itself never re-sends a post after a
lost connection or a 5xx (:func:`configure_retries`): that is the outbox's decision, with a look.

A configuration snapshot too long for one message goes as a YAML file in the thread
(files.uploadV2) after its summary message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from slack_sdk.errors import SlackRequestError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain import Announced, Delivery, Operation, OpState, Progress, Scheduled
from bot.errors import SlackError
from bot.schedule import Window, windows_for
from bot.slack.blocks import (
    FILE_KEY,
    SnapshotFile,
    build_confirmation,
    build_parent,
    build_respond,
    build_thread_reply,
    code,
)
from bot.slack.blocks.audit_line import build_audit_line
from bot.slack.blocks.batch import build_batch_card
from bot.slack.blocks.direct import build_direct_message
from bot.slack.codes import BAD_RESPONSE, FILE_UPLOAD_FAILED, NO_TS, SLACK_FAILURES, slack_error, translate

__all__ = ["EFFECT_EVENT", "SlackNotifier", "configure_retries"]

log = logging.getLogger(__name__)

# The message metadata event type of every post the outbox makes; its payload names the effect.
EFFECT_EVENT: Final = "vpnbot_effect"
# Calls that create something each time they run: a lost answer must not make slack_sdk send
# them again on its own (the outbox tries again, after looking whether the first one arrived).
_NOT_IDEMPOTENT: Final = ("chat.postMessage", "files.completeUploadExternal")
# How far back a look reaches before the effect was written (clocks differ), and how many pages.
_LOOK_BACK = timedelta(minutes=2)
_LOOK_PAGES = 5
_LOOK_PAGE_SIZE = 200


def _not_idempotent(request: HttpRequest) -> bool:
    return request.url.rstrip("/").rsplit("/", 1)[-1] in _NOT_IDEMPOTENT


class _NotTwice(AsyncRetryHandler):
    """A slack_sdk retry handler that never retries a call that must not run twice (see _NOT_IDEMPOTENT)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _not_idempotent(request):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class _OnceConnectionErrorRetryHandler(_NotTwice, AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry after a lost connection, except for calls that must not run twice."""


class _OnceServerErrorRetryHandler(_NotTwice, AsyncServerErrorRetryHandler):
    """slack_sdk's retry after a 5xx, except for calls that must not run twice (Slack may have done it)."""


class _ScaledJitter(Jitter):
    """slack_sdk's RandomJitter (up to 1 s more), scaled like the back-off it goes with."""

    def __init__(self, most: float) -> None:
        self._most = most

    def recalculate(self, duration: float) -> float:
        return duration + random.random() * self._most  # noqa: S311 - spreading retries, not a secret


def configure_retries(client: AsyncWebClient, *, backoff_s: float = 0.5) -> None:
    """Retries for 429 (honouring Retry-After), 5xx and lost connections; safe to call twice.

    A post (chat.postMessage, files.completeUploadExternal) is retried by slack_sdk only after a
    429, when Slack surely did nothing; after a lost answer or a 5xx the outbox decides. Between
    its retries slack_sdk waits ``backoff_s`` doubling, plus up to twice that at random (0.5 s:
    slack_sdk's own default, up to 1 s of jitter); the app passes a quarter of
    VPNBOT_SLACK_RETRY_BASE_SECONDS, so one setting sets every wait before Slack is asked again.
    """
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff_s, jitter=_ScaledJitter(2 * backoff_s))
    kept: list[AsyncRetryHandler] = []
    for handler in client.retry_handlers:
        if isinstance(handler, AsyncConnectionErrorRetryHandler):
            # slack_sdk's default: it would post a message again after a reset.
            handler = _OnceConnectionErrorRetryHandler(
                max_retry_count=handler.max_retry_count, interval_calculator=interval
            )
        elif isinstance(handler, AsyncServerErrorRetryHandler):
            handler = _OnceServerErrorRetryHandler(
                max_retry_count=handler.max_retry_count, interval_calculator=interval
            )
        kept.append(handler)
    kinds = {type(h) for h in kept}
    if AsyncRateLimitErrorRetryHandler not in kinds:
        kept.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    if _OnceServerErrorRetryHandler not in kinds:
        kept.append(_OnceServerErrorRetryHandler(max_retry_count=1, interval_calculator=interval))
    client.retry_handlers[:] = kept


def _metadata(delivery: Delivery) -> dict[str, Any]:
    return {"event_type": EFFECT_EVENT, "event_payload": {"effect_id": delivery.key}}


def _carries(message: Any, delivery: Delivery) -> bool:
    """Whether a message from conversations.history/replies carries ``delivery``'s key."""
    if not isinstance(message, dict):
        return False
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != EFFECT_EVENT:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, dict) and payload.get("effect_id") == delivery.key


def _has_file(message: Any, filename: str) -> bool:
    files = message.get("files") if isinstance(message, dict) else None
    return isinstance(files, list) and any(isinstance(f, dict) and f.get("name") == filename for f in files)


def _constant(text: str) -> Callable[[Operation], str]:
    return lambda _op: text


class SlackNotifier:
    """Posts, updates and threads the confirmation message through an injected AsyncWebClient."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        now: Callable[[], datetime] | None = None,
        anyone_may_approve: bool = False,
        approval_rule: str | Callable[[Operation], str] = "",
        approval_progress: Callable[[Operation], str] | None = None,
        audit_channel: str | None = None,
        change_windows: Mapping[str, tuple[Window, ...]] | None = None,
    ) -> None:
        self._client = client
        # VPNBOT_AUDIT_CHANNEL: where each decision gets its line (None: nowhere).
        self._audit_channel = audit_channel
        # VPNBOT_CHANGE_WINDOWS: an open confirmation says when a deletion approved now would run.
        self._windows = change_windows or {}
        # Who may approve (bot.slack.policy.approval_rule_text), stated on every open card: the rule
        # of the operation's account and region; and the approvals so far under a quorum rule.
        self._rule: Callable[[Operation], str] = (
            approval_rule if callable(approval_rule) else _constant(approval_rule)
        )
        self._progress: Callable[[Operation], str] = approval_progress or _constant("")
        # VPNBOT_APPROVERS=*: the card says that anyone who sees it may approve.
        self._anyone = anyone_may_approve
        # Cards say times with their date unless it is today: "today" is the clock's.
        self._now = now or (lambda: datetime.now(UTC))

    async def post_confirmation(self, op: Operation, delivery: Delivery | None = None) -> str:
        """Post the confirmation in ``op.channel_id`` and return its ts (once per ``delivery``)."""
        message = build_confirmation(
            op,
            now=self._now(),
            anyone_may_approve=self._anyone,
            approval_rule=self._rule(op),
            progress=self._progress(op),
            windows=windows_for(self._windows, op.account),
        )
        # A recreation's confirmation goes in the deleted card's thread.
        ts, _ = await self._post_once(op.channel_id, op.thread_ts, message, delivery)
        return ts

    async def update_card(self, op: Operation) -> None:
        """Re-render the confirmation for the op's state."""
        message = build_parent(
            op,
            now=self._now(),
            anyone_may_approve=self._anyone,
            approval_rule=self._rule(op),
            progress=self._progress(op),
            windows=windows_for(self._windows, op.account),
        )
        try:
            await self._client.chat_update(
                channel=op.channel_id, ts=op.message_ts or "", text=message["text"], blocks=message["blocks"]
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc

    async def post_batch(self, ops: Sequence[Operation], delivery: Delivery | None = None) -> str:
        """Post a batch's one card in its channel and return its ts (once per ``delivery``)."""
        message = build_batch_card(
            list(ops),
            now=self._now(),
            anyone_may_approve=self._anyone,
            approval_rule=self._rule(ops[0]),
            windows=windows_for(self._windows, ops[0].account),
            progress=self._batch_progress(ops),
        )
        ts, _ = await self._post_once(ops[0].channel_id, None, message, delivery)
        return ts

    async def update_batch(self, ops: Sequence[Operation]) -> None:
        """Re-render a batch's card from its members' states (the whole card: any update converges)."""
        lead = ops[0]
        message = build_batch_card(
            list(ops),
            now=self._now(),
            anyone_may_approve=self._anyone,
            approval_rule=self._rule(ops[0]),
            windows=windows_for(self._windows, lead.account),
            progress=self._batch_progress(ops),
        )
        try:
            await self._client.chat_update(
                channel=lead.channel_id,
                ts=lead.message_ts or "",
                text=message["text"],
                blocks=message["blocks"],
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc

    def _batch_progress(self, ops: Sequence[Operation]) -> str:
        """A quorum's progress on a batch card: each approval is recorded on every member alike."""
        waiting = next((op for op in ops if op.state is OpState.AWAITING_APPROVAL), None)
        return self._progress(waiting) if waiting is not None else ""

    async def reply_in_thread(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        """Reply in the confirmation's thread (once per ``delivery``), with a file if it carries one."""
        message = build_thread_reply(event)
        if op.batch_id is not None and not isinstance(event, Scheduled):
            # Many connections share a batch's thread: each reply says whose it is (a batch's
            # scheduling is told once, for all of them).
            message["text"] = f"{code(op.vco_id)}: {message['text']}"
        attached = message.pop(FILE_KEY, None)
        thread_ts = op.thread_ts or op.message_ts
        ts, found = await self._post_once(op.channel_id, thread_ts, message, delivery)
        if isinstance(attached, SnapshotFile):
            try:
                await self._attach(op.channel_id, thread_ts or ts, attached, after=ts if found else None)
            except SlackError as err:
                # The reply is there; the next attempt finds it and only sends the file.
                err.maybe_done = True
                raise

    async def _post_once(
        self, channel: str, thread_ts: str | None, message: dict[str, Any], delivery: Delivery | None
    ) -> tuple[str, bool]:
        """Post ``message`` unless ``delivery`` may be done and is found; return (ts, found)."""
        if delivery is not None and delivery.maybe_done:
            found = await self._find(channel, thread_ts, delivery)
            if found is not None:
                log.info(
                    "notifier: the message was posted before; its answer was lost",
                    extra={"channel": channel, "effect": delivery.key, "ts": found},
                )
                return found, True
        extra: dict[str, Any] = {"metadata": _metadata(delivery)} if delivery is not None else {}
        try:
            response = await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=message["text"],
                blocks=message.get("blocks"),
                **extra,
            )
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise slack_error(NO_TS)
        return ts, False

    async def _read(self, channel: str, thread_ts: str | None, oldest: str, cursor: str | None) -> Any:
        """One page of the thread (``thread_ts``) or of the channel's top level, with metadata."""
        if thread_ts:
            return await self._client.conversations_replies(
                channel=channel,
                ts=thread_ts,
                oldest=oldest,
                include_all_metadata=True,
                limit=_LOOK_PAGE_SIZE,
                cursor=cursor,
            )
        return await self._client.conversations_history(
            channel=channel, oldest=oldest, include_all_metadata=True, limit=_LOOK_PAGE_SIZE, cursor=cursor
        )

    async def _messages_since(self, channel: str, thread_ts: str | None, since: datetime) -> list[Any]:
        """The messages of the thread or channel since ``since`` (less a margin), a few pages at most."""
        oldest = f"{max(0.0, (since - _LOOK_BACK).timestamp()):.6f}"
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(_LOOK_PAGES):
            response = await self._read(channel, thread_ts, oldest, cursor)
            messages = response.get("messages")
            found += messages if isinstance(messages, list) else []
            meta = response.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not response.get("has_more") or not cursor:
                break
        return found

    async def _find(self, channel: str, thread_ts: str | None, delivery: Delivery) -> str | None:
        """The ts of the message that carries ``delivery``'s key, if Slack has it.

        A look Slack refuses for good (a missing history scope, the channel gone) is logged and
        the message posted: at least once, as before. A look that fails for now fails the attempt.
        """
        try:
            messages = await self._messages_since(channel, thread_ts, delivery.since)
        except SLACK_FAILURES as exc:
            err = translate(exc)
            if err.transient:
                err.maybe_done = True  # not settled: the next attempt looks again
                raise err from exc
            log.warning(
                "notifier: could not look whether a post arrived; posting it again",
                extra={"channel": channel, "effect": delivery.key, "slack_error": err.error},
            )
            return None
        for message in messages:
            if _carries(message, delivery):
                ts = message.get("ts")
                if isinstance(ts, str) and ts:
                    return ts
        return None

    async def _attach(self, channel: str, thread_ts: str, file: SnapshotFile, *, after: str | None) -> None:
        """Upload ``file`` into the thread; with ``after`` (a found reply), unless it is there already."""
        if after is not None:
            try:
                messages = await self._messages_since(
                    channel, thread_ts, datetime.fromtimestamp(float(after), UTC) + _LOOK_BACK
                )
            except SLACK_FAILURES as exc:
                err = translate(exc)
                if err.transient:
                    raise err from exc
                messages = []
            if any(_has_file(m, file.filename) for m in messages):
                return
        try:
            await self._client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                filename=file.filename,
                title=file.title,
                content=file.content,
                snippet_type="yaml",
            )
        except SlackRequestError as exc:
            # The upload to the URL Slack gave answered other than 200: try again later.
            raise slack_error(FILE_UPLOAD_FAILED) from exc
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc

    async def direct_message(self, op: Operation, event: Progress, delivery: Delivery | None = None) -> None:
        """Tell the requester in a direct message how the request ended, with the card's link (once).

        The DM is opened with conversations.open (its channel id is where a lost answer is looked for);
        a link that cannot be had (chat.getPermalink refused) is left out rather than failing the message.
        """
        try:
            opened = await self._client.conversations_open(users=op.requester_id)
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc
        channel = opened.get("channel")
        dm = channel.get("id") if isinstance(channel, dict) else None
        if not isinstance(dm, str) or not dm:
            raise slack_error(BAD_RESPONSE)
        message = build_direct_message(op, event, permalink=await self._permalink(op))
        await self._post_once(dm, None, message, delivery)

    async def audit_line(
        self, op: Operation | None, event: Announced, delivery: Delivery | None = None
    ) -> None:
        """Post the decision's line in the audit channel, linking the card (once per ``delivery``).

        Written by a replica with VPNBOT_AUDIT_CHANNEL set and delivered by one without it, the
        line has nowhere to go: it is logged and dropped.
        """
        if self._audit_channel is None:
            log.warning(
                "notifier: no VPNBOT_AUDIT_CHANNEL here; the audit line is dropped",
                extra={"op_id": op.id if op is not None else None},
            )
            return
        link = await self._permalink(op) if op is not None else None
        message = build_audit_line(op, event, permalink=link)
        await self._post_once(self._audit_channel, None, message, delivery)

    async def _permalink(self, op: Operation) -> str | None:
        if not op.message_ts:
            return None
        try:
            response = await self._client.chat_getPermalink(channel=op.channel_id, message_ts=op.message_ts)
        except SLACK_FAILURES as exc:
            log.info("notifier: no link to the card for the DM", extra={"error": translate(exc).error})
            return None
        link = response.get("permalink")
        return link if isinstance(link, str) else None

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
