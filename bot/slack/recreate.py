"""Recreate: the deleted card's Recreate… button, and the modal that asks for the pre-shared key.

The click opens the modal (views.open) showing what will be created; its submission is checked
by :mod:`bot.slack.parsing.recreate` (the key's form: empty, too long, spaces or characters Alibaba
refuses become errors shown in the modal, and nothing changes), then handed to the workflow, which
posts the confirmation with a Recreate button in the card's thread. The key is a SecretStr from the
payload on: it is never logged, stored or echoed (a field error never quotes it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import NotAllowed
from bot.slack.actions import check_click
from bot.slack.block_ids import BlockId
from bot.slack.blocks import build_recreate_modal
from bot.slack.blocks.recreate import FOREIGN_FORM
from bot.slack.codes import SLACK_FAILURES, translate
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user, reply_for
from bot.slack.parsing import KeyProblem, parse_click, parse_recreate_submission
from bot.slack.picker import _short, field_error

__all__ = ["make_recreate_open_listener", "make_recreate_submit_listener"]

log = logging.getLogger(__name__)


def make_recreate_open_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Recreate… button listener: check the window and the policy, then open the modal."""

    async def handle_recreate_open(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """Open the modal (a trigger id lasts 3 seconds, so nothing slow comes before it)."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            await check_click(deps, click)
            op = await deps.workflow.recreate_target(
                op_id=click.op_id, user_id=click.user_id, channel_id=click.channel_id
            )
            if not click.trigger_id:
                raise NotAllowed(FOREIGN_FORM)
            try:
                await client.views_open(trigger_id=click.trigger_id, view=build_recreate_modal(op))
            except SLACK_FAILURES as exc:
                raise translate(exc) from exc

    return handle_recreate_open


def make_recreate_submit_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Recreate modal's view_submission listener."""

    async def handle_recreate_submission(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Key errors stay in the modal; then the confirmation goes to approvers in the card's thread."""
        try:
            sub = parse_recreate_submission(body)
        except KeyProblem as problem:
            await ack(response_action="errors", errors=problem.errors)
            return
        except NotAllowed as err:
            await ack(response_action="errors", errors={BlockId.RECREATE_PSK.value: _short(err)})
            return
        assert sub.psk is not None  # noqa: S101 - parse_recreate_submission refuses a missing key
        try:
            parent = await deps.operation(sub.op_id) if deps.operation is not None else None
            channel_id = parent.channel_id if parent is not None else ""
            # Checked again by the workflow; here so a refusal (or a database outage) shows in the modal.
            await deps.workflow.recreate_target(op_id=sub.op_id, user_id=sub.user_id, channel_id=channel_id)
        except Exception as err:  # noqa: BLE001 - a modal submission: every error is shown in the modal
            text = reply_for(err, kind="view_submission")["text"]
            await ack(response_action="errors", errors={BlockId.RECREATE_PSK.value: field_error(text)})
            return
        await ack()
        with deps.inflight.track():
            try:
                await deps.workflow.request_recreate(
                    op_id=sub.op_id,
                    user_id=sub.user_id,
                    channel_id=channel_id,
                    psk=sub.psk,
                )
            except Exception as error:  # noqa: BLE001 - a modal submission: every error becomes the person's reply
                message = reply_for(error, kind="view_submission")
                try:
                    await client.chat_postEphemeral(channel=channel_id, user=sub.user_id, **message)
                except SLACK_FAILURES as exc:
                    log.warning(
                        "recreate: could not send the error reply", extra={"error": type(exc).__name__}
                    )
                return
        log.info("recreate: asked for approval", extra={"op_id": sub.op_id})

    return handle_recreate_submission
