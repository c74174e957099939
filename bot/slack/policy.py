"""Who may request, approve and cancel deletions, and freeze changes: :class:`SlackPolicy`, checked on the server.

Buttons are visible to everyone in the channel, so every click is checked here. Lists of Slack
ids come from :class:`bot.config.Settings`; user-group ids (``S…``) are resolved through
``usergroups.users.list`` and cached. If Slack cannot tell us who is in a group, we refuse
(fail closed) and say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.approval_rules import rule_for
from bot.config import Settings
from bot.domain import ApprovalRule, Operation, OpState
from bot.errors import NotAllowed
from bot.ids import is_user_group_id
from bot.slack.blocks import code
from bot.slack.blocks.quorum import quorum_count_text, quorum_progress_text, quorum_rule_text
from bot.slack.codes import BAD_RESPONSE, SLACK_FAILURES, slack_error, translate

__all__ = [
    "GroupDirectory",
    "SlackGroupDirectory",
    "SlackPolicy",
    "approval_count_text",
    "approval_progress_text",
    "approval_rule_text",
    "who_can_text",
]

log = logging.getLogger(__name__)

GROUP_TTL_SECONDS = 300.0
_WHO_MAX = 10


class GroupDirectory(Protocol):
    """Resolves a Slack user group to its members; raises SlackError if it cannot."""

    async def members(self, group_id: str) -> frozenset[str]: ...


class SlackGroupDirectory:
    """:class:`GroupDirectory` through ``usergroups.users.list``, cached for ``ttl`` seconds."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = GROUP_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        """Return the group's members (cached); raise SlackError when Slack cannot say."""
        now = self._clock()
        cached = self._cache.get(group_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
        except SLACK_FAILURES as exc:
            raise translate(exc) from exc
        users = response.get("users")
        if not isinstance(users, list):
            raise slack_error(BAD_RESPONSE)
        members = frozenset(u for u in users if isinstance(u, str))
        self._cache[group_id] = (now, members)
        return members


def _ref(slack_id: str) -> str:
    return f"<!subteam^{slack_id}>" if is_user_group_id(slack_id) else f"<@{slack_id}>"


def who_can_text(ids: Sequence[str], *, verb: str = "Ask") -> str:
    """``Ask one of <@U1>, <!subteam^S1>.`` for a list of user and group ids."""
    refs = [_ref(i) for i in ids[:_WHO_MAX]]
    more = f" (and {len(ids) - _WHO_MAX} more)" if len(ids) > _WHO_MAX else ""
    if len(refs) == 1 and not refs[0].startswith("<!subteam"):
        return f"{verb} {refs[0]}."
    return f"{verb} one of {', '.join(refs)}{more}."


def _listed_approvers(settings: Settings) -> list[str]:
    return [] if settings.anyone_may_approve else list(settings.approvers)


def approval_rule_text(settings: Settings, op: Operation | None = None) -> str:
    """The rule the confirmation card states: who may approve, and whether the requester may.

    ``Approval: one of <!subteam^S1>; the requester cannot approve (four-eyes).`` From the same
    settings :class:`SlackPolicy` checks clicks against, so a refused click is never a surprise.
    For ``op``, the quorum rule of its account and region (VPNBOT_APPROVAL_RULES) when one applies.
    """
    rule = rule_for(settings.approval_rules, op) if op is not None else None
    if rule is not None:
        return quorum_rule_text(rule, _listed_approvers(settings))
    if settings.anyone_may_approve or not settings.approvers:
        who = "anyone who can see this message"
    else:
        who = who_can_text(settings.approvers, verb="").strip().rstrip(".")
    eyes = (
        "the requester cannot approve their own request (four-eyes)"
        if settings.require_second_approver
        else "the requester may approve their own request"
    )
    return f"*Approval:* {who}; {eyes}."


def approval_progress_text(settings: Settings, op: Operation) -> str:
    """``1 of 2 approvals: <@U1> ✓ — waiting for one more from …`` for ``op`` under its rule ("" without one)."""
    rule = rule_for(settings.approval_rules, op)
    if rule is None:
        return ""
    return quorum_progress_text(op, rule, _listed_approvers(settings))


def approval_count_text(settings: Settings, op: Operation) -> str:
    """``1 of 2 approvals`` for ``op`` awaiting approval under its rule ("" otherwise), for the Home tab."""
    rule = rule_for(settings.approval_rules, op)
    if rule is None or op.state is not OpState.AWAITING_APPROVAL:
        return ""
    return quorum_count_text(op, rule)


class _LookupFailed(Exception):
    """Group membership could not be resolved."""


class SlackPolicy:
    """:class:`bot.ports.Policy` from the settings' approver, requester, channel and region lists."""

    def __init__(self, settings: Settings, *, directory: GroupDirectory) -> None:
        # ``*`` (an explicit opt-in) lists nobody in particular: anyone who sees the card may approve.
        self._approvers = () if settings.anyone_may_approve else tuple(settings.approvers)
        self._requesters = tuple(settings.requesters)
        self._admins = tuple(settings.admins)
        self._channels = frozenset(settings.allowed_channels)
        self._regions = tuple(settings.allowed_regions)
        self._four_eyes = settings.require_second_approver
        self._directory = directory
        self._settings = settings

    async def _is_member(self, user_id: str, ids: Sequence[str]) -> bool:
        """True if the user is listed directly or is in a listed group; raise _LookupFailed otherwise."""
        if user_id in ids:
            return True
        groups = [g for g in ids if is_user_group_id(g)]
        if not groups:
            return False
        results = await asyncio.gather(*(self._directory.members(g) for g in groups), return_exceptions=True)
        failed = False
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning(
                    "user group lookup failed; refusing (fail closed)",
                    extra={
                        "group": group,
                        "error": getattr(result, "error", type(result).__name__),
                        "transient": getattr(result, "transient", None),
                    },
                )
                failed = True
            elif user_id in result:
                return True
        if failed:
            raise _LookupFailed
        return False

    async def _member_or_refuse(self, user_id: str, ids: Sequence[str]) -> bool:
        try:
            return await self._is_member(user_id, ids)
        except _LookupFailed:
            raise NotAllowed(
                "I could not check user-group membership with Slack just now, so I refused to be "
                "safe (fail closed). Try again in a minute; if it keeps failing, the bot administrator "
                "should check the app's `usergroups:read` scope.",
                who_can=who_can_text(ids, verb="Or ask"),
            ) from None

    def _check_channel(self, channel_id: str, refusal: str, command: str) -> None:
        if self._channels and channel_id not in self._channels:
            channels = ", ".join(f"<#{c}>" for c in sorted(self._channels)[:_WHO_MAX])
            raise NotAllowed(
                f"{refusal}. Run {command} in {channels}.",
                who_can="The bot administrator sets the list (VPNBOT_ALLOWED_CHANNELS).",
            )

    def _check_region(self, region: str) -> None:
        if self._regions and region not in self._regions:
            allowed = ", ".join(code(r, 40) for r in self._regions[:20])
            raise NotAllowed(
                f"Region {code(region, 40)} is not enabled for this bot. Allowed: {allowed}.",
                who_can="The bot administrator sets the list (VPNBOT_ALLOWED_REGIONS).",
            )

    async def check_request(self, *, user_id: str, channel_id: str, region: str) -> None:
        """Refuse requests from the wrong channel, person or region."""
        self._check_channel(channel_id, "VPN deletions can't be requested in this channel", "`/vpn`")
        if self._requesters and not await self._member_or_refuse(user_id, self._requesters):
            raise NotAllowed(
                "You are not on the list of people who may request VPN deletions.",
                who_can=who_can_text(self._requesters, verb="Ask")
                + " The bot administrator can add you (VPNBOT_REQUESTERS).",
            )
        self._check_region(region)

    async def check_approval(self, *, user_id: str, op: Operation) -> None:
        """Refuse approval by the requester (four-eyes) or by someone not on the approver list.

        Where a quorum rule applies (VPNBOT_APPROVAL_RULES), its check instead (the Home tab asks here).
        """
        rule = self.rule_for(op)
        if rule is not None:
            await self.check_quorum_approval(user_id=user_id, op=op, rule=rule)
            return
        what, button = ("recreation", "Recreate") if op.is_recreate else ("deletion", "Delete")
        if self._four_eyes and user_id == op.requester_id:
            who = (
                who_can_text([a for a in self._approvers if a != user_id] or self._approvers)
                if self._approvers
                else f"Ask a colleague in this channel to click {button}."
            )
            raise NotAllowed(
                f"You requested this {what}, so someone else must approve it (four-eyes rule).", who_can=who
            )
        if self._approvers and not await self._member_or_refuse(user_id, self._approvers):
            raise NotAllowed(
                f"You are not allowed to approve VPN {what}s.", who_can=who_can_text(self._approvers)
            )

    def rule_for(self, op: Operation) -> ApprovalRule | None:
        """The quorum rule (VPNBOT_APPROVAL_RULES) for ``op``'s account and region; None: one approver."""
        return rule_for(self._settings.approval_rules, op)

    async def check_quorum_approval(
        self, *, user_id: str, op: Operation, rule: ApprovalRule
    ) -> tuple[str, ...]:
        """Refuse the requester and anyone the rule does not let approve; the rule's groups ``user_id`` is in.

        A count rule takes approvers from VPNBOT_APPROVERS; a group rule takes them from its groups.
        Every refusal names the rule, so nobody has to guess.
        """
        what = "recreation" if op.is_recreate else "deletion"
        rule_text = approval_rule_text(self._settings, op)
        if user_id == op.requester_id:
            raise NotAllowed(
                f"You requested this {what}, and the requester never counts toward its approvals.",
                who_can=rule_text,
            )
        if not rule.groups:
            if self._approvers and not await self._member_or_refuse(user_id, self._approvers):
                raise NotAllowed(f"You are not allowed to approve VPN {what}s.", who_can=rule_text)
            return ()
        results = await asyncio.gather(
            *(self._directory.members(g) for g in rule.groups), return_exceptions=True
        )
        mine: list[str] = []
        for group, result in zip(rule.groups, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning(
                    "user group lookup failed; refusing (fail closed)",
                    extra={"group": group, "error": getattr(result, "error", type(result).__name__)},
                )
                raise NotAllowed(
                    "I could not check user-group membership with Slack just now, so I refused to be "
                    "safe (fail closed). Try again in a minute; if it keeps failing, the bot administrator "
                    "should check the app's `usergroups:read` scope.",
                    who_can=rule_text,
                )
            if user_id in result:
                mine.append(group)
        if not mine:
            raise NotAllowed(
                f"You are in none of the user groups that approve this {what}.", who_can=rule_text
            )
        return tuple(mine)

    async def check_history(self, *, user_id: str, channel_id: str) -> None:
        """The audit trail is for people who may request or approve, in the allowed channels."""
        self._check_channel(
            channel_id, "The VPN audit history can't be shown in this channel", "`/vpn history`"
        )
        readers = (*self._requesters, *self._approvers)
        if self._requesters and self._approvers and not await self._member_or_refuse(user_id, readers):
            raise NotAllowed(
                "Only people who may request or approve VPN deletions can read their history.",
                who_can=who_can_text(readers, verb="Ask"),
            )

    async def check_read(self, *, user_id: str, channel_id: str, region: str) -> None:
        """Listing and status are for people who may request or approve, in allowed channels and regions."""
        self._check_channel(
            channel_id, "VPN connections can't be listed or inspected in this channel", "`/vpn`"
        )
        readers = (*self._requesters, *self._approvers)
        if self._requesters and not await self._member_or_refuse(user_id, readers):
            raise NotAllowed(
                "Only people who may request or approve VPN deletions can list or inspect connections.",
                who_can=who_can_text(self._requesters, verb="Ask")
                + " The bot administrator can add you (VPNBOT_REQUESTERS).",
            )
        self._check_region(region)

    async def check_admin(self, *, user_id: str) -> None:
        """Only admins (VPNBOT_ADMINS: users or user groups) may freeze and unfreeze; nobody when unset."""
        if not self._admins:
            raise NotAllowed(
                "Only a bot admin can freeze or unfreeze VPN changes, and this bot has none.",
                who_can="The bot administrator names them (VPNBOT_ADMINS).",
            )
        if not await self._member_or_refuse(user_id, self._admins):
            raise NotAllowed(
                "Only a bot admin can freeze or unfreeze VPN changes.",
                who_can=who_can_text(self._admins) + " The bot administrator can add you (VPNBOT_ADMINS).",
            )

    async def named_approver(self, user_id: str) -> bool:
        """Whether ``user_id`` is on the approver list (``*`` names nobody); False when Slack can't say."""
        if not self._approvers:
            return False
        try:
            return await self._is_member(user_id, self._approvers)
        except _LookupFailed:
            return False

    async def check_cancel(self, *, user_id: str, op: Operation) -> None:
        """The requester and anyone who may approve may cancel (under a group rule: its groups' members too)."""
        if user_id == op.requester_id or not self._approvers:
            return
        rule = self.rule_for(op)
        if rule is not None and rule.groups and await self._member_or_refuse(user_id, rule.groups):
            return
        if not await self._member_or_refuse(user_id, self._approvers):
            raise NotAllowed(
                f"Only <@{op.requester_id}> (who asked) or an approver can cancel this request.",
                who_can=who_can_text(self._approvers),
            )
