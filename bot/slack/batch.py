"""Site decommission in Slack: the several-connection ``/vpn delete``, and the batch card's buttons."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.domain import Operation, OpState
from bot.errors import NotAllowed, UsageError
from bot.slack.actions import make_click_listener
from bot.slack.blocks.text import code
from bot.slack.blocks.views import build_cancel_modal
from bot.slack.codes import SLACK_FAILURES, translate
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user
from bot.slack.parsing import FOREIGN_BUTTON, BatchDeleteCommand, ButtonClick, SlashCommand, parse_click
from bot.slack.replies import check_region

__all__ = [
    "check_batch_click",
    "check_batch_size",
    "make_batch_approve_listener",
    "make_batch_cancel_listener",
    "make_batch_override_listener",
    "make_batch_withdraw_listener",
    "request_batch",
]

log = logging.getLogger(__name__)


def check_batch_size(settings: Settings, count: int) -> None:
    """Refuse more connections than VPNBOT_MAX_BATCH in one request (nothing is recorded)."""
    if count > settings.max_batch:
        raise UsageError(
            f"That is {count} connections; one request may delete at most {settings.max_batch} "
            "(VPNBOT_MAX_BATCH). Split them into several requests."
        )


async def request_batch(
    deps: SlackDeps,
    parsed: BatchDeleteCommand,
    request: SlashCommand,
    respond: AsyncRespond,
    *,
    ticket: str | None,
) -> None:
    """Ask for the batch's deletions; ``gateway=… all`` first lists the gateway's connections."""
    await check_region(deps, parsed.region)
    vco_ids = list(parsed.vco_ids)
    if parsed.gateway_id is not None:
        if deps.inventory is None:
            raise UsageError(
                "Listing a gateway's connections is not available on this bot; name them instead."
            )
        rows = await deps.inventory.connections(
            region=parsed.region, gateway_id=parsed.gateway_id, account=parsed.account or ""
        )
        # Filtered by Alibaba; checked again here, so a filter it ignored cannot pick a stranger.
        vco_ids = list(dict.fromkeys(r.id for r in rows if r.gateway_id == parsed.gateway_id))
        if not vco_ids:
            raise UsageError(
                f"Gateway {code(parsed.gateway_id)} has no IPsec connections in {code(parsed.region, 64)}; "
                "nothing was asked."
            )
        check_batch_size(deps.settings, len(vco_ids))
    await deps.workflow.request_batch(
        team_id=request.team_id or "",
        user_id=request.user_id,
        channel_id=request.channel_id,
        vco_ids=vco_ids,
        region=parsed.region,
        response_url=request.response_url or None,
        account=parsed.account or "",
        reason=parsed.reason,
        ticket=ticket,
        run_at=parsed.run_at,
    )


async def check_batch_click(deps: SlackDeps, click: ButtonClick) -> list[Operation]:
    """The batch's members; refuse a click whose batch was posted in another message or channel."""
    members = await deps.workflow.batch_members(batch_id=click.op_id)
    if not members:
        raise NotAllowed(FOREIGN_BUTTON)
    lead = members[0]
    if lead.channel_id != click.channel_id or (
        lead.message_ts is not None and lead.message_ts != click.message_ts
    ):
        raise NotAllowed(FOREIGN_BUTTON)
    return members


async def _open_reason_modal(
    deps: SlackDeps, client: AsyncWebClient, click: ButtonClick, members: list[Operation]
) -> bool:
    """Open the Cancel modal for the whole batch; False when the click should cancel at once (as one Cancel)."""
    # Cancel closes what nobody approved yet, and what is scheduled and not started yet.
    waiting = [m for m in members if m.state in (OpState.AWAITING_APPROVAL, OpState.SCHEDULED)]
    if not click.trigger_id or not waiting:
        return False  # the workflow explains why it is closed
    if deps.cancel_policy is not None:
        try:
            await deps.cancel_policy.check_cancel(user_id=click.user_id, op=waiting[0])
        except NotAllowed:
            return False  # the workflow refuses it, records the refusal and says who may
    view = build_cancel_modal(
        op_id=click.op_id,
        channel_id=click.channel_id,
        message_ts=click.message_ts,
        vco_id="",
        batch_count=len(waiting),
    )
    try:
        await client.views_open(trigger_id=click.trigger_id, view=view)
    except SLACK_FAILURES as exc:
        log.warning(
            "cancel: the reason modal could not be opened; cancelling without a reason",
            extra={"batch_id": click.op_id, "slack_error": translate(exc).error},
        )
        return False
    return True


async def _approve_batch(deps: SlackDeps, click: ButtonClick) -> None:
    await check_batch_click(deps, click)
    await deps.workflow.approve_batch(
        batch_id=click.op_id, user_id=click.user_id, message_ts=click.message_ts
    )


async def _override_batch(deps: SlackDeps, click: ButtonClick) -> None:
    await check_batch_click(deps, click)
    await deps.workflow.override_batch_window(batch_id=click.op_id, user_id=click.user_id)


async def _withdraw_batch(deps: SlackDeps, click: ButtonClick) -> None:
    await check_batch_click(deps, click)
    await deps.workflow.withdraw_batch(batch_id=click.op_id, user_id=click.user_id)


def make_batch_approve_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The batch card's Delete: one click approves every connection still open."""
    return make_click_listener(deps, _approve_batch)


def make_batch_override_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The batch card's *Override window*: a second approver starts all of it now."""
    return make_click_listener(deps, _override_batch)


def make_batch_withdraw_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """The batch card's *Withdraw my approval* (quorum rules only): it comes off every connection."""
    return make_click_listener(deps, _withdraw_batch)


def make_batch_cancel_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the batch card's Cancel listener: it closes the whole request."""

    async def handle_batch_cancel_click(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """Handle a click on the batch card's Cancel: the reason modal, or (none possible) cancel at once."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_click(body)
            members = await check_batch_click(deps, click)
            if await _open_reason_modal(deps, client, click, members):
                return
            await deps.workflow.cancel_batch(batch_id=click.op_id, user_id=click.user_id)

    return handle_batch_cancel_click
