"""Who sees which operation, and from where: the one visibility rule (:meth:`Visibility.visible`).

Reading is authorization too. A person sees an operation only if

1. the place they ask from may use its account (:func:`bot.slack.accounts.account_usable`; the
   Home tab is the person's own place and is not limited by account: its other tests decide);
2. and either they ask in the operation's own channel (they are in it: Slack runs a command only
   where its author is), or the operation's channel is not private and they requested it, are a
   member of its channel or are a named approver (``VPNBOT_APPROVERS``). A private channel's or a
   DM's operations appear nowhere else; on the Home tab they appear only to its members (the
   requester included).

``/vpn history`` in a channel lists that channel's operations in the accounts it may use (the
store filters, :meth:`bot.store.core.Store.recent_audit`); ``/vpn status <request>`` and the Home
tab ask :meth:`Visibility.visible`; ``/vpn list``, ``/vpn status <vco-id>`` and the
picker show the cloud, not operations, and apply rule 1 through :func:`choose_account`.

Channel membership and privacy come from Slack (``users.conversations``, ``conversations.info``),
cached for :data:`MEMBERSHIP_TTL_SECONDS`. When Slack cannot answer, the operation is shown only
in its own channel and, on the Home tab, to its requester (fail closed); the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.domain import Operation
from bot.errors import NotAllowed, SlackError
from bot.slack.accounts import account_usable, allowed_accounts
from bot.slack.codes import BAD_RESPONSE, SLACK_FAILURES, slack_error, translate

__all__ = [
    "MEMBERSHIP_TTL_SECONDS",
    "Approvers",
    "ChannelDirectory",
    "SlackChannelDirectory",
    "Visibility",
    "history_accounts",
    "not_visible_text",
]

log = logging.getLogger(__name__)

# Short: someone removed from a channel stops seeing its operations within a minute.
MEMBERSHIP_TTL_SECONDS = 60.0
# users.conversations pages of 200; past this many pages the rest is not looked at (fail closed).
_PAGE = 200
_MAX_PAGES = 10
_TYPES = "public_channel,private_channel"


class ChannelDirectory(Protocol):
    """Slack's answers about conversations; raises SlackError when it cannot give one."""

    async def channels_of(self, user_id: str) -> Mapping[str, bool]:
        """The channels ``user_id`` is a member of, each with whether it is private."""
        ...

    async def is_private(self, channel_id: str) -> bool:
        """Whether ``channel_id`` is a private channel (or a DM)."""
        ...


class Approvers(Protocol):
    """Who is named as an approver (implemented by :class:`bot.slack.policy.SlackPolicy`)."""

    async def named_approver(self, user_id: str) -> bool:
        """True if ``user_id`` is on VPNBOT_APPROVERS (directly or by group); False if unknown."""
        ...


def _private_by_id(channel_id: str) -> bool | None:
    # DMs (D…) and legacy private channels (G…) are private whatever Slack says; C… must be asked.
    return True if channel_id[:1] in ("D", "G") else None


class SlackChannelDirectory:
    """:class:`ChannelDirectory` through ``users.conversations`` and ``conversations.info``, cached."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = MEMBERSHIP_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        page_size: int = _PAGE,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._page = page_size
        self._members: dict[str, tuple[float, dict[str, bool]]] = {}
        self._private: dict[str, tuple[float, bool]] = {}

    async def channels_of(self, user_id: str) -> Mapping[str, bool]:
        """The user's public and private channels (those the bot is in too, for private ones)."""
        now = self._clock()
        cached = self._members.get(user_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        found: dict[str, bool] = {}
        cursor = ""
        for _ in range(_MAX_PAGES):
            try:
                # Archived channels too: their members still see the operations they held.
                response = await self._client.users_conversations(
                    user=user_id, types=_TYPES, limit=self._page, cursor=cursor or None
                )
            except SLACK_FAILURES as exc:
                raise translate(exc) from exc
            channels = response.get("channels")
            if not isinstance(channels, list):
                raise slack_error(BAD_RESPONSE)
            for channel in channels:
                if isinstance(channel, dict) and isinstance(channel.get("id"), str):
                    found[channel["id"]] = bool(channel.get("is_private") or channel.get("is_im"))
            meta = response.get("response_metadata")
            cursor = meta.get("next_cursor", "") if isinstance(meta, dict) else ""
            if not cursor:
                break
        else:
            log.warning("users.conversations: more pages than read; the rest is treated as not a member")
        self._members[user_id] = (now, found)
        for channel_id, private in found.items():
            self._private[channel_id] = (now, private)
        return found

    async def is_private(self, channel_id: str) -> bool:
        """Whether the channel is private; a channel the bot cannot see counts as private."""
        known = _private_by_id(channel_id)
        if known is not None:
            return known
        now = self._clock()
        cached = self._private.get(channel_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.conversations_info(channel=channel_id)
        except SLACK_FAILURES as exc:
            err = translate(exc)
            # Slack hides private channels the bot is not in: that answer is an answer.
            if err.error != "channel_not_found":
                raise err from exc
            private = True
        else:
            info = response.get("channel")
            if not isinstance(info, dict):
                raise slack_error(BAD_RESPONSE)
            private = bool(info.get("is_private") or info.get("is_im") or info.get("is_group"))
        self._private[channel_id] = (now, private)
        return private


def history_accounts(settings: Settings, place: str) -> tuple[str, ...] | None:
    """The accounts whose operations ``/vpn history`` in ``place`` may list (None: one account, all).

    History in a channel lists that channel's operations (its members see them there, rule 2) in
    these accounts (rule 1); the store applies both as one query.
    """
    return allowed_accounts(settings, place)[0] if settings.multi_account else None


def not_visible_text(op_id: str) -> str:
    """The refusal for an operation the person may not see from here (nothing of it is named)."""
    return (
        f"You can't see request `{op_id[:64]}` from here. Ask in the channel where it was requested, "
        "or open the bot's Home tab: it lists your requests, those waiting for you and your channels'."
    )


class Visibility:
    """The visibility rule (see the module docstring), with Slack's answers cached."""

    def __init__(
        self, settings: Settings, *, directory: ChannelDirectory, approvers: Approvers | None
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._approvers = approvers

    async def _member_channels(self, user_id: str) -> Mapping[str, bool] | None:
        try:
            return await self._directory.channels_of(user_id)
        except SlackError as err:
            log.warning(
                "visibility: channel membership unknown; hiding (fail closed)", extra={"error": err.error}
            )
            return None

    async def _private(self, channel_id: str, mine: Mapping[str, bool] | None) -> bool:
        known = _private_by_id(channel_id)
        if known is not None:
            return known
        if mine is not None and channel_id in mine:
            return mine[channel_id]
        try:
            return await self._directory.is_private(channel_id)
        except SlackError as err:
            log.warning(
                "visibility: channel privacy unknown; hiding (fail closed)", extra={"error": err.error}
            )
            return True

    def _decide(
        self,
        op: Operation,
        *,
        user_id: str,
        place: str | None,
        mine: Mapping[str, bool] | None,
        private: bool,
        approver: bool,
    ) -> bool:
        if place is not None and not account_usable(self._settings, place, op.account):
            return False
        if place == op.channel_id:
            return True
        if private and place is not None:
            return False
        if user_id == op.requester_id:
            return True
        if mine is not None and op.channel_id in mine:
            return True
        return approver and not private

    async def visible(self, ops: Iterable[Operation], *, user_id: str, place: str | None) -> list[Operation]:
        """The operations of ``ops`` that ``user_id`` may see from ``place``, in their order.

        Slack is asked at most once per person and once per channel, however many operations.
        """
        ops = list(ops)
        usable = [op for op in ops if place is None or account_usable(self._settings, place, op.account)]
        elsewhere = [op for op in usable if op.channel_id != place]
        if not elsewhere:
            return usable
        mine = await self._member_channels(user_id)
        channels = sorted({op.channel_id for op in elsewhere})
        found = await asyncio.gather(*(self._private(c, mine) for c in channels))
        private = dict(zip(channels, found, strict=True))
        approver = False
        if self._approvers is not None and any(not private[op.channel_id] for op in elsewhere):
            approver = await self._approvers.named_approver(user_id)
        return [
            op
            for op in ops
            if self._decide(
                op,
                user_id=user_id,
                place=place,
                mine=mine,
                private=private.get(op.channel_id, True),
                approver=approver,
            )
        ]

    async def sees(self, op: Operation, *, user_id: str, place: str | None) -> bool:
        """Whether ``user_id`` may see ``op`` from ``place`` (a conversation id; None: the Home tab)."""
        return bool(await self.visible([op], user_id=user_id, place=place))

    async def check(self, op: Operation, *, user_id: str, place: str) -> None:
        """Raise NotAllowed unless ``user_id`` may see ``op`` from ``place``."""
        if not await self.sees(op, user_id=user_id, place=place):
            raise NotAllowed(not_visible_text(op.id))
