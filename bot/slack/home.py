"""The Home tab: a freeze in force, what is waiting for the person who opens it, what is in flight,
what finished last.

Refreshed on every ``app_home_opened`` with views.publish. Kept cheap: one store call
(:meth:`bot.store.core.Store.recent_operations`), permalinks fetched concurrently with a short
deadline, no cloud calls. Each operation is shown only if the visibility rule lets this person see
it (:mod:`bot.slack.visibility`: their own, those awaiting them, their channels') and the read
policy lets them read its channel and region; confirmations are listed as theirs to approve only if
the approval policy agrees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import TERMINAL_STATES, Freeze, Operation, OpState
from bot.errors import BotError, NotAllowed
from bot.ids import UserId, is_channel_id
from bot.slack.blocks.views import build_home
from bot.slack.codes import SLACK_FAILURES
from bot.slack.deps import ReadPolicy
from bot.slack.visibility import Visibility

__all__ = ["ActiveFreezes", "ApprovalPolicy", "RecentOperations", "make_home_listener", "render_home"]

log = logging.getLogger(__name__)

# Open operations and the last ``finished`` finished ones, newest first (one store call).
RecentOperations = Callable[..., Awaitable[list[Operation]]]
# The freezes in force now (one store call; bot.workflow.freeze.FreezeRequests.active_freezes).
ActiveFreezes = Callable[[], Awaitable[list[Freeze]]]
FINISHED_SHOWN = 10
_LINK_TIMEOUT = 2.0


class ApprovalPolicy(Protocol):
    """Who may approve (implemented by :class:`bot.slack.policy.SlackPolicy`)."""

    async def check_approval(self, *, user_id: str, op: Operation) -> None:
        """Raise NotAllowed if ``user_id`` may not approve ``op``."""
        ...


class _User(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    user: UserId
    tab: str = "home"


async def _visible(policy: ReadPolicy | None, user_id: str, op: Operation) -> bool:
    if policy is None:
        return True
    try:
        await policy.check_read(user_id=user_id, channel_id=op.channel_id, region=op.region)
    except NotAllowed:
        return False
    return True


async def _may_approve(policy: ApprovalPolicy | None, user_id: str, op: Operation) -> bool:
    if policy is None:
        return True
    try:
        await policy.check_approval(user_id=user_id, op=op)
    except NotAllowed:
        return False
    return True


async def _link(client: AsyncWebClient, op: Operation) -> tuple[str, str | None]:
    if op.message_ts is None or not is_channel_id(op.channel_id):
        return op.id, None
    try:
        response = await client.chat_getPermalink(channel=op.channel_id, message_ts=op.message_ts)
    # Without a link the line names the channel instead.
    except SLACK_FAILURES as exc:
        log.info("home: chat.getPermalink failed", extra={"error": type(exc).__name__})
        return op.id, None
    link = response.get("permalink")
    return op.id, link if isinstance(link, str) else None


async def _links(client: AsyncWebClient, ops: Sequence[Operation]) -> dict[str, str]:
    try:
        async with asyncio.timeout(_LINK_TIMEOUT):
            found = await asyncio.gather(*(_link(client, op) for op in ops))
    except TimeoutError:
        return {}
    return {op_id: link for op_id, link in found if link}


async def render_home(
    user_id: str,
    *,
    recent: RecentOperations,
    client: AsyncWebClient,
    read_policy: ReadPolicy | None,
    approvals: ApprovalPolicy | None,
    visibility: Visibility | None = None,
    freezes: ActiveFreezes | None = None,
    progress: Callable[[Operation], str] | None = None,
) -> dict[str, Any]:
    """The Home view for ``user_id``: only operations they may see, confirmations only if they may approve.

    ``progress`` says a quorum's approvals so far for an operation awaiting approval ("" for none).
    """
    ops = await recent(finished=FINISHED_SHOWN)
    frozen = await freezes() if freezes is not None else []
    seen = await asyncio.gather(*(_visible(read_policy, user_id, op) for op in ops))
    ops = [op for op, ok in zip(ops, seen, strict=True) if ok]
    if visibility is not None:
        ops = await visibility.visible(ops, user_id=user_id, place=None)
    waiting = [op for op in ops if op.state is OpState.AWAITING_APPROVAL]
    allowed = await asyncio.gather(*(_may_approve(approvals, user_id, op) for op in waiting))
    pending = [op for op, ok in zip(waiting, allowed, strict=True) if ok]
    mine = {op.id for op in pending}
    running = [op for op in ops if op.state not in TERMINAL_STATES and op.id not in mine]
    finished = [op for op in ops if op.state in TERMINAL_STATES]
    links = await _links(client, [*pending, *running, *finished])
    return build_home(
        # Someone who may approve none of the waiting confirmations does not get the heading at all.
        pending=pending if pending or not waiting else None,
        running=running,
        finished=finished,
        links=links,
        now=datetime.now(UTC),
        freezes=frozen,
        progress={op.id: text for op in waiting if (text := progress(op))} if progress is not None else None,
    )


def make_home_listener(
    *,
    recent: RecentOperations,
    read_policy: ReadPolicy | None,
    approvals: ApprovalPolicy | None,
    visibility: Visibility | None = None,
    freezes: ActiveFreezes | None = None,
    progress: Callable[[Operation], str] | None = None,
) -> Callable[..., Awaitable[None]]:
    """Build the ``app_home_opened`` listener."""

    async def handle_app_home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        """Publish the Home view for the person who opened it."""
        try:
            opened = _User.model_validate(event)
        except ValidationError:
            log.warning("home: app_home_opened without a valid user; ignored")
            return
        if opened.tab != "home":
            return  # the Messages tab needs nothing from us
        try:
            view = await render_home(
                opened.user,
                recent=recent,
                client=client,
                read_policy=read_policy,
                approvals=approvals,
                visibility=visibility,
                freezes=freezes,
                progress=progress,
            )
        except BotError as err:
            log.warning("home: could not load operations", extra={"error_type": type(err).__name__})
            view = build_home(
                pending=None,
                running=(),
                finished=(),
                links={},
                now=datetime.now(UTC),
                refused="The bot cannot read its operations just now; open this tab again in a minute.",
            )
        try:
            await client.views_publish(user_id=opened.user, view=view)
        except SLACK_FAILURES as exc:
            log.warning("home: views.publish failed", extra={"error": type(exc).__name__})

    return handle_app_home_opened
