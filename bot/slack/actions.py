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

__all__ = [
    "ClickAction",
    "check_click",
    "make_approve_listener",
    "make_click_listener",
    "make_override_listener",
    "make_withdraw_listener",
]


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


ClickAction = Callable[[SlackDeps, ButtonClick], Awaitable[object]]


def make_click_listener(deps: SlackDeps, act: ClickAction) -> Callable[..., Awaitable[None]]:
    """A button's listener: ack at once, then parse the click and ``act`` on it, errors told to the clicker."""

    async def handle_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            await act(deps, parse_click(body))

    return handle_click


async def _approve(deps: SlackDeps, click: ButtonClick) -> None:
    await check_click(deps, click)
    await deps.workflow.approve(op_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts)


async def _override(deps: SlackDeps, click: ButtonClick) -> None:
    await check_click(deps, click)
    await deps.workflow.override_window(op_id=click.op_id, user_id=click.user_id)


async def _withdraw(deps: SlackDeps, click: ButtonClick) -> None:
    await check_click(deps, click)
    await deps.workflow.withdraw(op_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts)


def make_approve_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The Delete button: approve, then the workflow deletes and updates the message."""
    return make_click_listener(deps, _approve)


def make_override_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The *Override window* button: a second approver runs a window-held deletion now."""
    return make_click_listener(deps, _override)


def make_withdraw_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The *Withdraw my approval* button (quorum rules only): the workflow removes it and updates the card."""
    return make_click_listener(deps, _withdraw)
