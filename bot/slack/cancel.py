"""Deny with a reason: *Cancel* opens a small modal whose optional reason goes with the cancellation.

The click is checked as any click is (it belongs to its message), then the modal opens with the
click's trigger id (it lasts 3 seconds, so nothing slow comes before it). Submitting it cancels
through the workflow exactly as a plain click did (one compare-and-set: the first decision wins), with
the reason shown on the closed card, told to the requester and recorded in the audit entry. Without a
trigger id, or when the modal cannot be opened, the click cancels at once without a reason, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import OpState
from bot.errors import NotAllowed, UsageError
from bot.ids import ChannelId, MessageTs, OperationId, UserId
from bot.slack.actions import check_click
from bot.slack.batch import check_batch_click
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.blocks.views import build_cancel_modal
from bot.slack.codes import SLACK_FAILURES, translate
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user, reply_for
from bot.slack.parsing import ButtonClick, parse_click
from bot.slack.picker import field_error
from bot.slack.reason import clean_reason

__all__ = [
    "CancelSubmission",
    "make_cancel_listener",
    "make_cancel_submit_listener",
    "parse_cancel_submission",
]

log = logging.getLogger(__name__)

FOREIGN_FORM = "That form did not come from this bot, or it was changed on the way; nothing was cancelled."


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Meta(_Payload):
    """The modal's ``private_metadata``: the operation, its channel and its card (checked again on submit)."""

    o: OperationId
    c: ChannelId
    t: MessageTs
    # 1: a site decommission's Cancel (``o`` is the batch's id).
    b: Literal[1] | None = None


class _Input(_Payload):
    value: str | None = Field(default=None, max_length=3000)


class _State(_Payload):
    values: dict[str, dict[str, _Input]] = {}


class _View(_Payload):
    callback_id: Literal[CallbackId.CANCEL]
    private_metadata: str = Field(max_length=500)
    state: _State = _State()


class _User(_Payload):
    id: UserId


class _Submission(_Payload):
    type: Literal["view_submission"]
    user: _User
    view: _View


@dataclass(frozen=True, slots=True)
class CancelSubmission:
    """A submitted Cancel modal: who denies which operation (on which card), and why (None: not said)."""

    user_id: str
    op_id: str
    channel_id: str
    message_ts: str
    reason: str | None
    # A site decommission's Cancel: ``op_id`` is the batch's id, and all of it is closed.
    batch: bool = False


def parse_cancel_submission(body: Mapping[str, Any]) -> CancelSubmission:
    """Validate a submitted Cancel modal; NotAllowed if it is not ours, UsageError if the reason is too long."""
    try:
        payload = _Submission.model_validate(body)
        meta = _Meta.model_validate_json(payload.view.private_metadata)
    except ValidationError:
        raise NotAllowed(FOREIGN_FORM) from None
    typed = payload.view.state.values.get(BlockId.CANCEL_REASON.value, {}).get(ActionId.CANCEL_REASON.value)
    text = typed.value if typed is not None and typed.value else ""
    reason = clean_reason(text) or None
    return CancelSubmission(payload.user.id, meta.o, meta.c, meta.t, reason, batch=meta.b == 1)


async def _open_modal(deps: SlackDeps, client: AsyncWebClient, click: ButtonClick) -> bool:
    """Open the Cancel modal for a still-open confirmation; False when the click should cancel at once."""
    if not click.trigger_id or deps.operation is None:
        return False
    op = await deps.operation(click.op_id)
    if op is None or op.state not in (OpState.AWAITING_APPROVAL, OpState.SCHEDULED):
        return False  # the workflow explains why it is closed
    if deps.cancel_policy is not None:
        try:
            await deps.cancel_policy.check_cancel(user_id=click.user_id, op=op)
        except NotAllowed:
            return False  # the workflow refuses it, records the refusal and says who may
    view = build_cancel_modal(
        op_id=op.id, channel_id=click.channel_id, message_ts=click.message_ts, vco_id=op.vco_id
    )
    try:
        await client.views_open(trigger_id=click.trigger_id, view=view)
    except SLACK_FAILURES as exc:
        log.warning(
            "cancel: the reason modal could not be opened; cancelling without a reason",
            extra={"op_id": op.id, "slack_error": translate(exc).error},
        )
        return False
    return True


def make_cancel_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Cancel-button listener: open the reason modal, or cancel at once without one."""

    async def handle_cancel_click(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """Handle a click on Cancel."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            await check_click(deps, click)
            if await _open_modal(deps, client, click):
                return
            await deps.workflow.cancel(op_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts)

    return handle_cancel_click


def _click(sub: CancelSubmission) -> ButtonClick:
    return ButtonClick(
        action_id=ActionId.BATCH_CANCEL,
        op_id=sub.op_id,
        user_id=sub.user_id,
        channel_id=sub.channel_id,
        message_ts=sub.message_ts,
    )


def make_cancel_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Cancel modal's view_submission listener."""

    async def handle_cancel_submission(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Check the form, close it, then cancel with its reason (a refusal is told to the person alone)."""
        try:
            sub = parse_cancel_submission(body)
        except UsageError as err:
            await ack(
                response_action="errors", errors={BlockId.CANCEL_REASON.value: field_error(err.friendly)}
            )
            return
        except NotAllowed as err:
            await ack(
                response_action="errors", errors={BlockId.CANCEL_REASON.value: field_error(err.friendly)}
            )
            return
        await ack()
        with deps.inflight.track():
            try:
                if sub.batch:
                    await check_batch_click(deps, _click(sub))
                    await deps.workflow.cancel_batch(
                        batch_id=sub.op_id, user_id=sub.user_id, reason=sub.reason
                    )
                    return
                # The form came through the browser: the operation must still belong to that card.
                await check_click(
                    deps,
                    ButtonClick(
                        action_id=ActionId.CANCEL,
                        op_id=sub.op_id,
                        user_id=sub.user_id,
                        channel_id=sub.channel_id,
                        message_ts=sub.message_ts,
                    ),
                )
                await deps.workflow.cancel(
                    op_id=sub.op_id, user_id=sub.user_id, message_ts=sub.message_ts, reason=sub.reason
                )
            except Exception as error:  # noqa: BLE001 - a modal submission: every error becomes the person's reply (reply_for)
                message = reply_for(error, kind="view_submission")
                try:
                    await client.chat_postEphemeral(channel=sub.channel_id, user=sub.user_id, **message)
                except SLACK_FAILURES as exc:
                    log.warning("cancel: could not send the refusal", extra={"error": type(exc).__name__})

    return handle_cancel_submission
