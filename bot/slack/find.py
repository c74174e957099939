"""``/vpn list`` and ``/vpn status``, and the list's Next / Previous / Delete… buttons.

Read-only, and only to the person who asked: every reply is ephemeral. Each command and each
click is checked by the read policy (channel, person, region) and the account binding before
anything is fetched, an operation's status by the visibility rule (:mod:`bot.slack.visibility`)
too, and button values are parsed by :mod:`bot.slack.parsing.find`, never trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import OpState, VpnGateway
from bot.errors import AlreadyRequested, CloudError, UsageError
from bot.slack.accounts import choose_account
from bot.slack.blocks import build_busy, build_looking_up, code
from bot.slack.blocks.find import (
    PAGE_SIZE,
    build_connection_status,
    build_list_page,
    build_operation_status,
    page_count,
)
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user
from bot.slack.inventory import Inventory, ListingCache
from bot.slack.parsing import ListClick, ListCommand, ListPage, RowDelete, StatusCommand, parse_list_click
from bot.slack.policy import approval_progress_text
from bot.slack.replies import already_requested, check_region, permalink, send

__all__ = ["make_list_delete_listener", "make_list_page_listener", "show_list", "show_status"]

log = logging.getLogger(__name__)

NOT_SET_UP = "Listing connections is not set up on this bot; ask its administrator."
Message = dict[str, Any]


def _inventory(deps: SlackDeps) -> tuple[Inventory, ListingCache]:
    if deps.inventory is None or deps.listings is None:
        raise UsageError(NOT_SET_UP)
    return deps.inventory, deps.listings


async def _check_read(deps: SlackDeps, *, user_id: str, channel_id: str, region: str) -> None:
    # None only where register() was given no policy (Slack-layer tests); create_app always wires one.
    if deps.read_policy is not None:
        await deps.read_policy.check_read(user_id=user_id, channel_id=channel_id, region=region)


async def render_page(deps: SlackDeps, page: ListPage, *, user_id: str, channel_id: str) -> Message:
    """Check the account, the region and the policy, then render one page of the (cached) listing."""
    _, listings = _inventory(deps)
    account = choose_account(deps.settings, channel_id=channel_id, asked=page.a)
    await check_region(deps, page.r)
    await _check_read(deps, user_id=user_id, channel_id=channel_id, region=page.r)
    rows = await listings.rows(region=page.r, gateway_id=page.g, account=account)
    matched = [row for row in rows if row.matches(page.f)]
    pages = page_count(len(matched))
    if page.p >= pages:
        raise UsageError(
            f"There is no page {page.p + 1}: the list now has {pages} page{'s' if pages != 1 else ''}. "
            f"Run `/vpn list {page.r}` again."
        )
    start = page.p * PAGE_SIZE
    return build_list_page(matched[start : start + PAGE_SIZE], page, total=len(matched))


async def show_list(
    deps: SlackDeps, command: ListCommand, *, user_id: str, channel_id: str, respond: AsyncRespond
) -> None:
    """Answer ``/vpn list`` with the first page."""
    _inventory(deps)
    try:
        await check_region(deps, command.region)
    except UsageError:
        if not command.guessed:
            raise
        command = command.as_filter(deps.settings.default_region)
    account = choose_account(deps.settings, channel_id=channel_id, asked=command.account)
    page = ListPage(r=command.region, g=command.gateway_id, f=command.words, p=0, a=account or None)
    await send(respond, await render_page(deps, page, user_id=user_id, channel_id=channel_id))


async def _gateway(inventory: Inventory, region: str, gateway_id: str, account: str) -> VpnGateway | None:
    try:
        return await inventory.gateway(region=region, gateway_id=gateway_id, account=account)
    # The connection's own state is the answer; a missing gateway state is shown as unknown.
    except CloudError as exc:
        log.warning("status: DescribeVpnGateway failed", extra={"error": exc.message})
        return None


async def _routes(
    inventory: Inventory, region: str, gateway_id: str, vco_id: str, account: str
) -> int | None:
    try:
        return await inventory.route_count(
            region=region, gateway_id=gateway_id, vco_id=vco_id, account=account
        )
    except CloudError as exc:
        log.warning("status: route lookup failed", extra={"error": exc.message})
        return None


async def show_status(
    deps: SlackDeps,
    command: StatusCommand,
    *,
    user_id: str,
    channel_id: str,
    respond: AsyncRespond,
    client: AsyncWebClient,
) -> None:
    """Answer ``/vpn status`` for a connection (live) or an operation (from the store)."""
    if command.op_id is not None:
        op = await deps.operation(command.op_id) if deps.operation is not None else None
        if op is None:
            raise UsageError(
                f"I know no request {code(command.op_id, 64)}. Request ids are shown under each confirmation."
            )
        await _check_read(deps, user_id=user_id, channel_id=channel_id, region=op.region)
        if deps.visibility is not None:
            await deps.visibility.check(op, user_id=user_id, place=channel_id)
        link = await permalink(client, op)
        progress = approval_progress_text(deps.settings, op) if op.state is OpState.AWAITING_APPROVAL else ""
        await send(
            respond, build_operation_status(op, permalink=link, now=datetime.now(UTC), progress=progress)
        )
        return
    inventory, _ = _inventory(deps)
    assert command.vco_id is not None  # noqa: S101 - parse_status sets one of the two
    account = choose_account(deps.settings, channel_id=channel_id, asked=command.account)
    await check_region(deps, command.region)
    await _check_read(deps, user_id=user_id, channel_id=channel_id, region=command.region)
    row = await inventory.connection(region=command.region, vco_id=command.vco_id, account=account)
    gateway, routes = await asyncio.gather(
        _gateway(inventory, command.region, row.gateway_id, account),
        _routes(inventory, command.region, row.gateway_id, row.id, account),
    )
    status = build_connection_status(row, gateway, region=command.region, routes=routes, account=account)
    await send(respond, status)


def make_list_page_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the Next / Previous listener bound to ``deps``."""

    async def handle_list_page_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Handle Next / Previous: replace the list with the asked page."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_list_click(body)
            deps.rate.take(click.user_id)
            if not isinstance(click.value, ListPage):
                raise UsageError("This button is not a page button.")
            message = await render_page(deps, click.value, user_id=click.user_id, channel_id=click.channel_id)
            await respond(**message, replace_original=True)

    return handle_list_page_click


async def _start_delete(
    deps: SlackDeps, click: ListClick, value: RowDelete, respond: AsyncRespond, client: AsyncWebClient
) -> None:
    account = choose_account(deps.settings, channel_id=click.channel_id, asked=value.a)
    if deps.inflight.full:
        deps.inflight.shed()
        await respond(**build_busy(value.v, value.r, account), replace_original=False)
        return
    await check_region(deps, value.r)
    await respond(**build_looking_up(value.v, value.r, account), replace_original=False)
    try:
        await deps.workflow.request_delete(
            team_id=click.team_id,
            user_id=click.user_id,
            channel_id=click.channel_id,
            vco_id=value.v,
            region=value.r,
            response_url=click.response_url,
            account=account,
        )
    except AlreadyRequested as err:
        await respond(**await already_requested(client, err.op), replace_original=False)
        return
    if deps.listings is not None:
        deps.listings.forget(region=value.r, account=account)


def make_list_delete_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the row Delete… listener bound to ``deps``."""

    async def handle_list_delete_click(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """Handle Delete… on a row: the same request as ``/vpn delete <id> <region>``."""
        await ack()
        async with errors_to_user(body, respond, inflight=deps.inflight):
            click = parse_list_click(body)
            deps.rate.take(click.user_id)
            if not isinstance(click.value, RowDelete):
                raise UsageError("This button is not a Delete… button.")
            await _start_delete(deps, click, click.value, respond, client)

    return handle_list_delete_click
