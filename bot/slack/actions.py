"""The Delete and Withdraw buttons (Cancel: bot.slack.cancel): ack at once, check the click belongs to its
message, call the workflow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import NotAllowed
from bot.slack.block_ids import ActionId
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user
from bot.slack.parsing import FOREIGN_BUTTON, ButtonClick, parse_click

__all__ = ["check_click", "make_approve_listener", "make_override_listener", "make_withdraw_listener"]


async def check_click(deps: SlackDeps, click: ButtonClick) -> None:
    """Refuse a click whose operation was posted in another message or channel."""
    if deps.operation is None:
        return
    op = await deps.operation(click.op_id)
    if op is None or op.channel_id != click.channel_id:
        raise NotAllowed(FOREIGN_BUTTON)
    # A batch's connections are decided together, by the batch card's own buttons.
    if op.batch_id is not None and click.action_id in (
        ActionId.APPROVE,
        ActionId.CANCEL,
        ActionId.OVERRIDE_WINDOW,
        ActionId.WITHDRAW,
    ):
        raise NotAllowed(FOREIGN_BUTTON)
    # A confirmation posted through the response_url has no ts of its own; the channel is all we have.
    if op.message_ts is not None and op.message_ts != click.message_ts:
        raise NotAllowed(FOREIGN_BUTTON)


def make_approve_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Delete-button listener bound to ``deps``."""

    async def handle_approve_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Handle a click on Delete: approve, then the workflow deletes and updates the message."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            await check_click(deps, click)
            await deps.workflow.approve(op_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts)

    return handle_approve_click


def make_override_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the *Override window* listener: a second approver runs a window-held deletion now."""

    async def handle_override_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Handle a click on Override window: the workflow checks the second approver and starts it."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            await check_click(deps, click)
            await deps.workflow.override_window(op_id=click.op_id, user_id=click.user_id)

    return handle_override_click


def make_withdraw_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the *Withdraw my approval* listener bound to ``deps`` (quorum rules only)."""

    async def handle_withdraw_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Handle a click on Withdraw my approval: the workflow removes it and updates the card."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            await check_click(deps, click)
            await deps.workflow.withdraw(
                op_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts
            )

    return handle_withdraw_click
