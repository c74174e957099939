"""Small steps shared by the command and button listeners: reply through response_url, check a region,
find a message's permalink, point at a request that is already open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.cloud.regions import PUBLIC_REGIONS
from bot.domain import Operation
from bot.errors import UsageError
from bot.ids import is_channel_id
from bot.schedule import ScheduleError, check_run_at
from bot.slack.blocks import build_already_requested, code
from bot.slack.codes import SLACK_FAILURES
from bot.slack.deps import SlackDeps

__all__ = ["already_requested", "check_region", "check_run_time", "permalink", "send"]

log = logging.getLogger(__name__)


async def send(respond: AsyncRespond, message: Mapping[str, Any]) -> None:
    """Reply through the response_url; a refused reply is logged (respond() does not raise on HTTP errors)."""
    response = await respond(**message)
    if response.status_code != 200:
        log.warning("response_url refused a reply", extra={"status": response.status_code})


async def permalink(client: AsyncWebClient, op: Operation) -> str | None:
    """The link to ``op``'s message, or None (not posted yet, or Slack did not answer)."""
    if op.message_ts is None or not is_channel_id(op.channel_id):
        return None
    try:
        response = await client.chat_getPermalink(channel=op.channel_id, message_ts=op.message_ts)
    # Without a link the reply names the channel instead.
    except SLACK_FAILURES as exc:
        log.warning("chat.getPermalink failed", extra={"error": type(exc).__name__})
        return None
    link = response.get("permalink")
    return link if isinstance(link, str) else None


async def already_requested(client: AsyncWebClient, op: Operation) -> dict[str, Any]:
    """The ephemeral reply pointing at the open request ``op`` (with its permalink when Slack gives it)."""
    return build_already_requested(op, permalink=await permalink(client, op), now=datetime.now(UTC))


async def check_region(deps: SlackDeps, region: str) -> None:
    """Refuse a region DescribeRegions does not know; if that list is unavailable, allow it.

    One of Alibaba's public regions needs no check: asking DescribeRegions first would put a
    round trip in front of the first command after start-up (see bot.cloud.regions).
    """
    if region in PUBLIC_REGIONS:
        return
    try:
        async with asyncio.timeout(deps.regions_timeout):
            known = await deps.regions()
    # Availability over strictness: Alibaba Cloud rejects unknown regions itself, so a failing
    # DescribeRegions must not block every request.
    except Exception as exc:  # noqa: BLE001 - availability over strictness: Alibaba refuses unknown regions itself
        log.warning(
            "region list unavailable; accepting any well-formed region", extra={"error": type(exc).__name__}
        )
        return
    if known and region not in known:
        listed = ", ".join(code(r, 40) for r in sorted(known)[:30])
        raise UsageError(f"Alibaba Cloud has no VPC region {code(region, 40)}. Known regions: {listed}.")


def check_run_time(deps: SlackDeps, run_at: datetime) -> None:
    """UsageError unless ``run_at`` is still to come and within VPNBOT_MAX_SCHEDULE_DAYS."""
    try:
        check_run_at(run_at, now=deps.now(), max_days=deps.settings.max_schedule_days)
    except ScheduleError as err:
        raise UsageError(f"That run time does not work: {err}.") from None
