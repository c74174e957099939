"""Small steps shared by the command and button listeners: reply through response_url, check a region."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.cloud.regions import PUBLIC_REGIONS
from bot.errors import UsageError
from bot.slack.blocks import code
from bot.slack.deps import SlackDeps

__all__ = ["check_region", "send"]

log = logging.getLogger(__name__)


async def send(respond: AsyncRespond, message: Mapping[str, Any]) -> None:
    """Reply through the response_url; a refused reply is logged (respond() does not raise on HTTP errors)."""
    response = await respond(**message)
    if response.status_code != 200:
        log.warning("response_url refused a reply", extra={"status": response.status_code})


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
    except Exception as exc:
        log.warning(
            "region list unavailable; accepting any well-formed region", extra={"error": type(exc).__name__}
        )
        return
    if known and region not in known:
        listed = ", ".join(code(r, 40) for r in sorted(known)[:30])
        raise UsageError(f"Alibaba Cloud has no VPC region {code(region, 40)}. Known regions: {listed}.")
