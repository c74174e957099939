"""The ``/vpn`` slash command: ack at once, parse, then help, history, list, status, a delete request,
or an admin's freeze or unfreeze."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import AlreadyRequested, NotAllowed, TooManyRequests, UsageError
from bot.slack.accounts import allowed_accounts, check_freeze_account, choose_account
from bot.slack.batch import check_batch_size, request_batch
from bot.slack.blocks import (
    build_busy,
    build_freeze_answer,
    build_frozen_request_note,
    build_history,
    build_looking_up,
    build_refusal,
    build_unfreeze_answer,
    build_usage,
)
from bot.slack.blocks.batch import build_batch_looking_up
from bot.slack.deps import SlackDeps
from bot.slack.errors import errors_to_user
from bot.slack.find import show_list, show_status
from bot.slack.parsing import (
    BatchDeleteCommand,
    DeleteCommand,
    FreezeCommand,
    HelpCommand,
    HistoryCommand,
    ListCommand,
    PickCommand,
    SlashCommand,
    StatusCommand,
    UnfreezeCommand,
    parse_command,
    parse_slash_command,
)
from bot.slack.picker import open_picker
from bot.slack.reason import check_reason
from bot.slack.replies import already_requested, check_region, check_run_time, send
from bot.slack.visibility import history_accounts

__all__ = ["check_region", "check_run_time", "make_vpn_command_listener", "send"]

log = logging.getLogger(__name__)

BUSY_BATCH = (
    "I'm working through a lot of requests right now, so I did not start this one; nothing was looked up "
    "or deleted. Run the command again in a minute."
)


def make_vpn_command_listener(deps: SlackDeps) -> Callable[..., Awaitable[None]]:
    """Build the ``/vpn`` listener bound to ``deps``."""

    async def handle_vpn_command(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """Handle /vpn: ack first, then help, history, list, status or a delete request."""
        ticket: str | None = None
        try:
            request = parse_slash_command(command)
            # Every command counts, before anything is parsed, looked up or stored.
            deps.rate.take(request.user_id)
            parsed = parse_command(request.text, default_region=deps.settings.default_region)
            if isinstance(parsed, BatchDeleteCommand):
                account = choose_account(deps.settings, channel_id=request.channel_id, asked=parsed.account)
                parsed = dataclasses.replace(parsed, account=account)
                ticket = check_reason(deps.settings, account=account or "", reason=parsed.reason)
                check_batch_size(deps.settings, len(parsed.vco_ids))
                if parsed.run_at is not None:
                    check_run_time(deps, parsed.run_at)
            elif isinstance(parsed, DeleteCommand):
                # Pure and instant (settings only): a refusal rides on the ack, nothing is started.
                account = choose_account(deps.settings, channel_id=request.channel_id, asked=parsed.account)
                parsed = dataclasses.replace(parsed, account=account)
                ticket = check_reason(deps.settings, account=account or "", reason=parsed.reason)
                if parsed.run_at is not None:
                    check_run_time(deps, parsed.run_at)
            elif isinstance(parsed, PickCommand) and parsed.account is not None:
                choose_account(deps.settings, channel_id=request.channel_id, asked=parsed.account)
            elif isinstance(parsed, FreezeCommand | UnfreezeCommand):
                check_freeze_account(deps.settings, parsed.account)
        # Parsing is pure and instant, so the reply can ride on the ack itself.
        except (NotAllowed, TooManyRequests) as err:
            await ack(**build_refusal(err.friendly))
            return
        except UsageError as err:
            await ack(**build_usage(error=err.friendly, accounts=_accounts_here(deps, command)))
            return
        match parsed:
            case HelpCommand():
                await ack(**build_usage(accounts=_accounts_here(deps, command)))
                return
            case DeleteCommand(vco_id=vco_id, region=region, account=chosen) if deps.inflight.full:
                deps.inflight.shed()
                await ack(**build_busy(vco_id, region, chosen or ""))
                return
            case DeleteCommand(vco_id=vco_id, region=region, account=chosen):
                await ack(**build_looking_up(vco_id, region, chosen or ""))
            case BatchDeleteCommand() if deps.inflight.full:
                deps.inflight.shed()
                await ack(**build_refusal(BUSY_BATCH))
                return
            case BatchDeleteCommand(vco_ids=vco_ids, gateway_id=gateway_id, region=region):
                await ack(**build_batch_looking_up(len(vco_ids), gateway_id, region))
            case _:
                await ack()
        async with errors_to_user(command, respond, inflight=deps.inflight):
            await _after_ack(deps, parsed, request, respond, client, ticket=ticket)

    return handle_vpn_command


async def _freeze(deps: SlackDeps, parsed: FreezeCommand | UnfreezeCommand, user_id: str) -> dict[str, Any]:
    """An admin's freeze or unfreeze, and the answer to show (NotAllowed for anyone else)."""
    if deps.admin_policy is None:
        raise NotAllowed("Freezes are not set up in this bot.")
    await deps.admin_policy.check_admin(user_id=user_id)
    if isinstance(parsed, FreezeCommand):
        freeze, replaced = await deps.workflow.freeze(
            user_id=user_id, duration=parsed.duration, account=parsed.account, reason=parsed.reason
        )
        return build_freeze_answer(freeze, replaced)
    lifted = await deps.workflow.unfreeze(
        user_id=user_id, account=parsed.account, everything=parsed.account is None
    )
    # An account's unfreeze leaves an every-account freeze in force: say so.
    still = await deps.workflow.frozen(parsed.account) if parsed.account is not None else None
    return build_unfreeze_answer(user_id, lifted, still=still)


def _accounts_here(deps: SlackDeps, command: dict[str, Any]) -> tuple[str, ...]:
    """With several accounts, those the command's channel may use (for the help); else none."""
    channel = command.get("channel_id")
    if not deps.settings.multi_account or not isinstance(channel, str):
        return ()
    return allowed_accounts(deps.settings, channel)[0]


async def _after_ack(
    deps: SlackDeps,
    parsed: Any,
    request: SlashCommand,
    respond: AsyncRespond,
    client: AsyncWebClient,
    *,
    ticket: str | None = None,
) -> None:
    """The work behind an acknowledged ``/vpn`` command (errors go to the funnel)."""
    who = {"user_id": request.user_id, "channel_id": request.channel_id}
    match parsed:
        case HistoryCommand(limit=limit):
            # This channel's operations, in the accounts it may use (the visibility rule).
            accounts = history_accounts(deps.settings, request.channel_id)
            entries = await deps.workflow.history(limit=limit, accounts=accounts, **who)
            await send(respond, build_history(entries, now=datetime.now(UTC)))
        case ListCommand():
            await show_list(deps, parsed, respond=respond, **who)
        case StatusCommand():
            await show_status(deps, parsed, respond=respond, client=client, **who)
        case FreezeCommand() | UnfreezeCommand():
            await send(respond, await _freeze(deps, parsed, request.user_id))
        case PickCommand(region=region, account=asked, reason=reason):
            if not request.trigger_id:
                raise UsageError(
                    "Which connection? Give its id, e.g. `/vpn delete vco-bp1abc2def3gh cn-hangzhou`."
                )
            await open_picker(
                deps,
                client,
                trigger_id=request.trigger_id,
                channel_id=request.channel_id,
                region=region,
                account=asked,
                reason=reason,
            )
        case BatchDeleteCommand():
            await request_batch(deps, parsed, request, respond, ticket=ticket)
        case DeleteCommand(vco_id=vco_id, region=region, account=account, reason=reason, run_at=run_at):
            await check_region(deps, region)
            try:
                await deps.workflow.request_delete(
                    team_id=request.team_id or "",
                    vco_id=vco_id,
                    region=region,
                    response_url=request.response_url or None,
                    account=account or "",
                    reason=reason,
                    ticket=ticket,
                    run_at=run_at,
                    **who,
                )
            except AlreadyRequested as err:
                await send(respond, await already_requested(client, err.op))
                return
            # After the card is out (it never waits for this): a freeze means it waits to be approved.
            freeze = await deps.workflow.frozen(account or "")
            if freeze is not None:
                await send(respond, build_frozen_request_note(freeze))
