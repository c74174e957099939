"""Slack checks: ``auth.test``, the granted bot scopes against the manifest's, every user group named,
and the audit channel (VPNBOT_AUDIT_CHANNEL) the bot must be able to post in.

Failures are read through the bot's own Slack error table (:func:`bot.slack.codes.translate`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from bot.doctor.model import SLACK, Check, Status, plural
from bot.doctor.settings import FIX_BOT_CREDENTIAL
from bot.errors import SlackError
from bot.ids import is_user_group_id
from bot.slack.codes import SLACK_FAILURES, lookup, translate
from bot.slack.scopes import BOT_SCOPES

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.config import Settings

__all__ = ["NEEDED_SCOPES", "check_slack"]

log = logging.getLogger("bot.doctor")

NEEDED_SCOPES: Final = BOT_SCOPES
_REINSTALL: Final = (
    "then reinstall the app to the workspace (api.slack.com/apps → your app → Install App → "
    "Reinstall to Workspace); if Slack shows a new Bot User OAuth Token, put it in SLACK_BOT_TOKEN."
)
_UNKNOWN_GROUP: Final = frozenset({"no_such_subteam", "subteam_not_found", "invalid_usergroup"})


async def check_slack(settings: Settings, slack: AsyncWebClient | None) -> list[Check]:
    """auth.test, the scopes, and each user group; ``slack`` is None when there is no bot token."""
    if slack is None:
        why = "skipped: SLACK_BOT_TOKEN is not set."
        return [Check(SLACK, "auth.test", Status.SKIP, why), Check(SLACK, "Bot scopes", Status.SKIP, why)]
    try:
        answer = await slack.auth_test()
    except SLACK_FAILURES as exc:
        log.debug("doctor: auth.test failed", exc_info=True)
        return [_auth_failure_row(translate(exc), settings), _skipped_scopes()]
    team = f"{answer.get('team') or '?'} ({answer.get('team_id') or '?'})"
    bot = f"@{answer.get('user') or '?'} ({answer.get('user_id') or '?'})"
    rows = [Check(SLACK, "auth.test", Status.PASS, f"workspace {team}, bot user {bot}.")]
    rows.append(_scopes_row(_header(answer.headers, "x-oauth-scopes")))
    rule_groups = (g for rule in settings.approval_rules.values() for g in rule.groups)
    named = (
        *settings.approvers,
        *settings.requesters,
        *rule_groups,
        *([settings.escalate_to] if settings.escalate_to else []),
    )
    groups = dict.fromkeys(g for g in named if is_user_group_id(g))
    for group in groups:
        rows.append(await _usergroup_row(slack, group, settings))
    if settings.audit_channel:
        rows.append(await _audit_channel_row(slack, settings.audit_channel))
    return rows


async def _audit_channel_row(slack: AsyncWebClient, channel: str) -> Check:
    """Whether the bot can post in VPNBOT_AUDIT_CHANNEL: it exists, is not archived, and a private
    one has the bot as a member (a public one needs none: chat:write.public)."""
    name = f"Audit channel {channel}"
    invite = "Invite the bot to it (/invite @<bot name> in the channel), or fix VPNBOT_AUDIT_CHANNEL."
    try:
        answer = await slack.conversations_info(channel=channel)
    except SLACK_FAILURES as exc:
        log.debug("doctor: conversations.info failed", exc_info=True)
        error = translate(exc)
        if error.error == "channel_not_found":
            detail = f"Slack shows the bot no channel {channel} (VPNBOT_AUDIT_CHANNEL): gone, or private without the bot."
            return Check(SLACK, name, Status.FAIL, detail, invite)
        row = lookup(error.error)
        return Check(
            SLACK, name, Status.FAIL, f"conversations.info failed ({error.error}): {row.friendly}", row.action
        )
    info = answer.get("channel")
    info = info if isinstance(info, dict) else {}
    label = f"#{info.get('name') or channel}"
    if info.get("is_archived"):
        return Check(SLACK, name, Status.FAIL, f"{label} is archived: no line can be posted there.", invite)
    if info.get("is_private") and not info.get("is_member"):
        return Check(SLACK, name, Status.FAIL, f"{label} is private and the bot is not in it.", invite)
    how = "the bot is a member" if info.get("is_member") else "public: the bot posts with chat:write.public"
    return Check(SLACK, name, Status.PASS, f"{label}, one line per decision ({how}).")


def _skipped_scopes() -> Check:
    return Check(SLACK, "Bot scopes", Status.SKIP, "skipped: auth.test failed.")


def _header(headers: object, name: str) -> str | None:
    items = getattr(headers, "items", None)
    if not callable(items):
        return None
    for key, value in items():
        if str(key).lower() == name:
            return str(value)
    return None


def _auth_failure_row(error: SlackError, settings: Settings) -> Check:
    row = lookup(error.error)
    if row.token_refused:
        detail = f"Slack rejected SLACK_BOT_TOKEN ({error.error})."
        return Check(SLACK, "auth.test", Status.FAIL, detail, FIX_BOT_CREDENTIAL)
    if error.transient:
        detail = f"{row.friendly} ({error.error}, at {settings.slack_api_url})"
        fix = (
            "Check DNS, proxy and firewall for outbound HTTPS to slack.com, then run the doctor again; leave "
            "VPNBOT_SLACK_API_URL unset unless you test against a stand-in."
        )
        return Check(SLACK, "auth.test", Status.FAIL, detail, fix)
    detail = f"Slack answered auth.test with the error {error.error}: {row.friendly}"
    return Check(SLACK, "auth.test", Status.FAIL, detail, row.action + " Check SLACK_BOT_TOKEN.")


def _scopes_row(header: str | None) -> Check:
    name = "Bot scopes"
    if header is None:
        return Check(
            SLACK,
            name,
            Status.WARN,
            "Slack did not report the granted scopes (no x-oauth-scopes header), so they could not be checked.",
            f"Check OAuth & Permissions → Bot Token Scopes lists: {', '.join(NEEDED_SCOPES)}.",
        )
    granted = {s.strip() for s in header.split(",") if s.strip()}
    missing = [s for s in NEEDED_SCOPES if s not in granted]
    if missing:
        return Check(
            SLACK,
            name,
            Status.FAIL,
            f"missing: {', '.join(missing)} (granted: {', '.join(sorted(granted)) or 'none'}).",
            f"Add {', '.join(missing)} under oauth_config.scopes.bot in manifest.yml (or OAuth & Permissions → "
            "Bot Token Scopes), " + _REINSTALL,
        )
    extra = sorted(granted - set(NEEDED_SCOPES))
    also = f"; also granted, not needed: {', '.join(extra)}" if extra else ""
    return Check(SLACK, name, Status.PASS, f"all {len(NEEDED_SCOPES)} needed scopes granted{also}.")


async def _usergroup_row(slack: AsyncWebClient, group: str, settings: Settings) -> Check:
    lists = (
        ("VPNBOT_APPROVERS", settings.approvers),
        ("VPNBOT_REQUESTERS", settings.requesters),
        ("VPNBOT_ESCALATE_TO", [settings.escalate_to] if settings.escalate_to else []),
    )
    where = " and ".join(var for var, ids in lists if group in ids)
    name = f"User group {group}"
    try:
        answer = await slack.usergroups_users_list(usergroup=group)
    except SLACK_FAILURES as exc:
        log.debug("doctor: usergroups.users.list failed", exc_info=True)
        return _usergroup_failure_row(translate(exc), name, group, where)
    users = answer.get("users")
    count = len(users) if isinstance(users, list) else 0
    if count == 0:
        return Check(
            SLACK,
            name,
            Status.WARN,
            f"the group has no members ({where}): nobody can act through it.",
            "Add members to the group in Slack, or list user ids instead.",
        )
    return Check(SLACK, name, Status.PASS, f"{plural(count, 'member')} ({where}).")


def _usergroup_failure_row(error: SlackError, name: str, group: str, where: str) -> Check:
    if error.error == "missing_scope":
        return Check(
            SLACK,
            name,
            Status.FAIL,
            f"usergroups.users.list is refused: the app lacks usergroups:read ({where}).",
            "Add usergroups:read under oauth_config.scopes.bot in manifest.yml, " + _REINSTALL,
        )
    if error.error in _UNKNOWN_GROUP:
        return Check(
            SLACK,
            name,
            Status.FAIL,
            f"Slack knows no user group {group} ({error.error}), named in {where}.",
            f"Fix the id in {where}: in Slack open the group (People → User groups), ⋯ → Copy group ID.",
        )
    row = lookup(error.error)
    again = " Then run the doctor again." if error.transient else ""
    detail = f"usergroups.users.list failed ({error.error}, {where}): {row.friendly}"
    return Check(SLACK, name, Status.FAIL, detail, row.action + again)
