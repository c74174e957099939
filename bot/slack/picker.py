"""The ``/vpn delete`` picker: a modal to find a connection by name instead of copying its id.

``/vpn delete`` with no id opens the modal (views.open with the command's trigger id). Typing in
the connection field sends block_suggestion requests, answered from the briefly cached region
listing; submitting it posts the same confirmation as ``/vpn delete <id> <region>`` in the channel
the command came from. Every payload is parsed by :mod:`bot.slack.parsing.picker` and checked by the
region list and the read policy before the cloud is asked anything.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any, TypedDict

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import AlreadyRequested, BotError, CloudApiError, NotAllowed, UsageError
from bot.slack.accounts import allowed_accounts, choose_account
from bot.slack.block_ids import BlockId
from bot.slack.blocks.views import build_connection_options, build_picker
from bot.slack.codes import SLACK_FAILURES, translate
from bot.slack.deps import SlackDeps
from bot.slack.errors import reply_for
from bot.slack.parsing import PickerSubmission, parse_submission, parse_suggestion
from bot.slack.reason import check_reason, clean_reason
from bot.slack.replies import already_requested, check_region, check_run_time

__all__ = ["field_error", "make_picker_submit_listener", "make_picker_suggest_listener", "open_picker"]

log = logging.getLogger(__name__)

Errors = dict[str, str]
_GONE = "InvalidVpnConnectionInstanceId.NotFound"
# A modal field error is shown under the field; Slack cuts it, so keep it short.
_FIELD_ERROR_MAX = 150
_CHECK_TIMEOUT = 1.5


class _RequestArgs(TypedDict):
    """What a picker's submission asks of request_delete and request_batch alike."""

    team_id: str
    user_id: str
    channel_id: str
    region: str
    response_url: str | None
    account: str
    reason: str | None
    ticket: str | None
    run_at: datetime | None


async def _regions(deps: SlackDeps) -> Collection[str]:
    if deps.settings.allowed_regions:
        return deps.settings.allowed_regions
    try:
        async with asyncio.timeout(deps.regions_timeout):
            return await deps.regions()
    # The default region alone still makes a usable picker.
    except Exception as exc:  # noqa: BLE001 - the picker works on the default region alone
        log.warning("picker: region list unavailable", extra={"error": type(exc).__name__})
        return ()


async def open_picker(
    deps: SlackDeps,
    client: AsyncWebClient,
    *,
    trigger_id: str,
    channel_id: str,
    region: str,
    account: str | None = None,
    reason: str | None = None,
) -> None:
    """Open the picker modal for the person who typed ``/vpn delete`` (trigger ids last 3 seconds).

    With several accounts it offers those the channel may use, ``account`` (checked) first.
    """
    allowed: tuple[str, ...] = ()
    if deps.settings.multi_account:
        allowed, _ = allowed_accounts(deps.settings, channel_id)
        # Checked (and refused with a reason) when asked for, or when no account may be used here.
        if account is not None or not allowed:
            account = choose_account(deps.settings, channel_id=channel_id, asked=account)
    view = build_picker(
        regions=await _regions(deps),
        region=region,
        channel_id=channel_id,
        accounts=allowed,
        account=account or "",
        reason=reason,
        reason_hint=_reason_hint(deps, account or (allowed[0] if allowed else "")),
        max_schedule_days=deps.settings.max_schedule_days,
        max_batch=deps.settings.max_batch,
    )
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
    except SLACK_FAILURES as exc:
        raise translate(exc) from exc


def _reason_hint(deps: SlackDeps, account: str) -> str:
    """The reason field's hint: the rules of the account first shown, so nobody learns them by refusal."""
    pattern = deps.settings.ticket_pattern(account)
    if pattern is not None:
        return f"Required here: a change ticket matching {pattern}. Shown on the card and in the audit trail."
    if deps.settings.reason_required(account):
        return "Required here. Shown on the card and in the audit trail."
    return ""


async def _check_read(deps: SlackDeps, *, user_id: str, channel_id: str, region: str) -> None:
    if deps.read_policy is not None:
        await deps.read_policy.check_read(user_id=user_id, channel_id=channel_id, region=region)


def _error_option(text: str) -> dict[str, Any]:
    # A search cannot show an error, so the answer is one option that says what is wrong; picking
    # it is refused on submit (its value is not a connection id).
    return {"options": [{"text": {"type": "plain_text", "text": text[:75]}, "value": "none"}]}


def make_picker_suggest_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the connection search (block_suggestion) listener bound to ``deps``."""

    async def handle_picker_suggestion(ack: AsyncAck, body: dict[str, Any]) -> None:
        """Answer what was typed with the region's matching connections (from the cached listing)."""
        try:
            suggestion = parse_suggestion(body)
            deps.rate.take(suggestion.user_id)
            account = choose_account(
                deps.settings, channel_id=suggestion.channel_id, asked=suggestion.account
            )
            await check_region(deps, suggestion.region)
            await _check_read(
                deps, user_id=suggestion.user_id, channel_id=suggestion.channel_id, region=suggestion.region
            )
            if deps.listings is None:
                raise UsageError("Listing connections is not set up on this bot.")
            rows = await deps.listings.rows(region=suggestion.region, account=account)
        except BotError as err:
            log.info("picker search refused", extra={"error_type": type(err).__name__, "reason": err.message})
            await ack(**_error_option(_short(err)))
            return
        if not rows:
            await ack(**_error_option(f"No IPsec connections in {suggestion.region}"))
            return
        await ack(**build_connection_options([r for r in rows if r.matches(suggestion.words)]))

    return handle_picker_suggestion


# A modal error is plain text: Slack would show "<#C123>" literally, so mentions become "#C123".
_MENTION_RE = re.compile(r"<([#@])([A-Z0-9]+)(?:\|[^>]*)?>")


def field_error(text: str) -> str:
    """``text`` as a modal field error: plain (no mrkdwn, mentions as #C123) and short."""
    text = _MENTION_RE.sub(r"\1\2", text).replace("`", "").replace("*", "")
    return text if len(text) <= _FIELD_ERROR_MAX else text[: _FIELD_ERROR_MAX - 1] + "…"


def _short(err: BotError) -> str:
    return field_error(err.friendly)


async def _check_submission(deps: SlackDeps, sub: PickerSubmission, account: str) -> Errors:
    """Check a submitted picker; return the field errors to show in the modal (empty if fine)."""
    try:
        deps.rate.take(sub.user_id)
    except BotError as err:
        return {BlockId.PICK_CONNECTION.value: _short(err)}
    try:
        await check_region(deps, sub.region)
        await _check_read(deps, user_id=sub.user_id, channel_id=sub.channel_id, region=sub.region)
    except BotError as err:
        return {BlockId.PICK_REGION.value: _short(err)}
    if sub.vco_id is None:
        return {BlockId.PICK_CONNECTION.value: "Pick a connection from the list (type part of its name)."}
    if len(sub.vco_ids) > deps.settings.max_batch:
        return {
            BlockId.PICK_MORE.value: f"At most {deps.settings.max_batch} connections in one request (VPNBOT_MAX_BATCH)."
        }
    if deps.inventory is None:
        return {}
    try:
        # Slack waits 3 seconds for the answer; past the deadline the workflow's own lookup decides.
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await deps.inventory.connection(region=sub.region, vco_id=sub.vco_id, account=account)
    except TimeoutError:
        log.info("picker: connection check too slow; the request's lookup will decide")
        return {}
    except CloudApiError as err:
        if err.code == _GONE:
            if deps.listings is not None:
                deps.listings.forget(region=sub.region, account=account)
            return {BlockId.PICK_CONNECTION.value: f"{sub.vco_id} no longer exists in {sub.region}."}
        return {BlockId.PICK_CONNECTION.value: _short(err)}
    except BotError as err:
        return {BlockId.PICK_CONNECTION.value: _short(err)}
    return {}


async def _tell(client: AsyncWebClient, sub: PickerSubmission, error: Exception) -> None:
    if isinstance(error, AlreadyRequested):
        message = await already_requested(client, error.op)
    else:
        message = reply_for(error, kind="view_submission")
    try:
        await client.chat_postEphemeral(channel=sub.channel_id, user=sub.user_id, **message)
    # The modal is closed; if even this fails the log is all that is left.
    except SLACK_FAILURES as exc:
        log.warning("picker: could not send the error reply", extra={"error": type(exc).__name__})


def make_picker_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the picker's view_submission listener bound to ``deps``."""

    async def handle_picker_submission(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Check the choice (errors stay in the modal), close it, then ask for approval in the channel."""
        try:
            sub = parse_submission(body)
        except NotAllowed as err:
            await ack(response_action="errors", errors={BlockId.PICK_CONNECTION.value: _short(err)})
            return
        try:
            account = choose_account(deps.settings, channel_id=sub.channel_id, asked=sub.account)
        except BotError as err:
            await ack(response_action="errors", errors={BlockId.PICK_ACCOUNT.value: _short(err)})
            return
        try:
            reason = clean_reason(sub.reason) if sub.reason else None
            ticket = check_reason(deps.settings, account=account, reason=reason)
        except BotError as err:
            await ack(response_action="errors", errors={BlockId.PICK_REASON.value: _short(err)})
            return
        if sub.run_at is not None:
            try:
                check_run_time(deps, sub.run_at)
            except BotError as err:
                await ack(response_action="errors", errors={BlockId.PICK_RUN_AT.value: _short(err)})
                return
        errors = await _check_submission(deps, sub, account)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        assert sub.vco_id is not None  # noqa: S101 - _check_submission refuses a missing one
        await ack()
        with deps.inflight.track():
            try:
                request = _RequestArgs(
                    team_id=sub.team_id,
                    user_id=sub.user_id,
                    channel_id=sub.channel_id,
                    region=sub.region,
                    response_url=None,
                    account=account,
                    reason=reason,
                    ticket=ticket,
                    run_at=sub.run_at,
                )
                if sub.more:
                    # Site decommission: every connection picked, on one card with one approval.
                    await deps.workflow.request_batch(vco_ids=sub.vco_ids, **request)
                else:
                    await deps.workflow.request_delete(vco_id=sub.vco_id, **request)
            except Exception as error:  # noqa: BLE001 - a modal submission: every error becomes the person's reply
                await _tell(client, sub, error)
                return
        if deps.listings is not None:
            deps.listings.forget(region=sub.region, account=account)
        log.info("picker: asked for approval", extra={"vco_id": sub.vco_id, "region": sub.region})

    return handle_picker_submission
