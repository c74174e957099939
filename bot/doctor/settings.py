"""Settings checks: the Slack tokens for the chosen mode, the default region, who may approve and request.

Nothing here calls out; the Alibaba credentials are checked with the cloud (:mod:`.alibaba`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bot.doctor.model import SETTINGS, Check, Status, plural
from bot.ids import is_user_group_id

if TYPE_CHECKING:
    from pydantic import SecretStr

    from bot.config import Settings

__all__ = ["FIX_BOT_CREDENTIAL", "check_settings", "secret_text"]

FIX_BOT_CREDENTIAL: Final = (
    "Set SLACK_BOT_TOKEN to the Bot User OAuth Token (xoxb-…) from api.slack.com/apps → your app → "
    "OAuth & Permissions; if the app was uninstalled, install it again first."
)


def secret_text(value: SecretStr | None) -> str:
    """The secret's value, stripped; ``""`` when unset."""
    return value.get_secret_value().strip() if value is not None else ""


def check_settings(settings: Settings) -> list[Check]:
    """The Settings rows, in table order."""
    return [
        _bot_token_row(settings),
        _mode_row(settings),
        _region_row(settings),
        _approvers_row(settings),
        _request_policy_row(settings),
        *_approval_rules_rows(settings),
        *_account_binding_rows(settings),
    ]


def _bot_token_row(settings: Settings) -> Check:
    name = "Slack bot token"
    token = secret_text(settings.slack_bot_token)
    if not token:
        return Check(SETTINGS, name, Status.FAIL, "SLACK_BOT_TOKEN is not set.", FIX_BOT_CREDENTIAL)
    if token.startswith("xapp-"):
        return Check(
            SETTINGS,
            name,
            Status.FAIL,
            "SLACK_BOT_TOKEN holds an app-level token (xapp-…), not a bot token.",
            "Move that value to SLACK_APP_TOKEN. " + FIX_BOT_CREDENTIAL,
        )
    if not token.startswith("xoxb-"):
        return Check(
            SETTINGS,
            name,
            Status.WARN,
            "SLACK_BOT_TOKEN is set but does not start with xoxb- (a user token acts as a person).",
            FIX_BOT_CREDENTIAL,
        )
    return Check(SETTINGS, name, Status.PASS, "SLACK_BOT_TOKEN is set (xoxb-…).")


def _mode_row(settings: Settings) -> Check:
    name = "Slack connection mode"
    app_token = secret_text(settings.slack_app_token)
    signing = secret_text(settings.slack_signing_secret)
    if app_token and not app_token.startswith("xapp-"):
        return Check(
            SETTINGS,
            name,
            Status.FAIL,
            "Socket Mode: SLACK_APP_TOKEN is set but is not an app-level token (xapp-…).",
            "Create an app-level token with the connections:write scope (api.slack.com/apps → your app → "
            "Basic Information → App-Level Tokens) and put it in SLACK_APP_TOKEN.",
        )
    if app_token:
        also = " SLACK_SIGNING_SECRET is set too, for `serve --http`." if signing else ""
        return Check(SETTINGS, name, Status.PASS, "Socket Mode: SLACK_APP_TOKEN is set (xapp-…)." + also)
    if signing:
        return Check(
            SETTINGS,
            name,
            Status.PASS,
            "HTTP mode: SLACK_SIGNING_SECRET is set (only Slack can verify it: a wrong one shows as "
            "HTTP 401 answers to Slack's requests).",
        )
    return Check(
        SETTINGS,
        name,
        Status.FAIL,
        "Neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP mode) is set.",
        "For Socket Mode set SLACK_APP_TOKEN (xapp-…, Basic Information → App-Level Tokens, scope "
        "connections:write); for HTTP mode set SLACK_SIGNING_SECRET (Basic Information → App Credentials).",
    )


def _region_row(settings: Settings) -> Check:
    region = settings.default_region
    if settings.allowed_regions and region not in settings.allowed_regions:
        return Check(
            SETTINGS,
            "Default region",
            Status.WARN,
            f"{region}, but VPNBOT_ALLOWED_REGIONS ({', '.join(settings.allowed_regions)}) does not "
            "include it: a request without a region will be refused.",
            f"Add {region} to VPNBOT_ALLOWED_REGIONS or set VPNBOT_DEFAULT_REGION to an allowed region.",
        )
    return Check(SETTINGS, "Default region", Status.PASS, f"{region} (VPNBOT_DEFAULT_REGION)")


def _approvers_row(settings: Settings) -> Check:
    name = "Approvers"
    approvers = settings.approvers
    if not approvers:
        return Check(
            SETTINGS,
            name,
            Status.FAIL,
            "VPNBOT_APPROVERS is not set: `vpn-bot serve` refuses to start without it.",
            "Set VPNBOT_APPROVERS to the Slack user ids (U…) and/or user-group ids (S…) allowed to approve, "
            "comma-separated, or to * to let anyone who sees the confirmation approve.",
        )
    if settings.anyone_may_approve:  # the explicit opt-in to "anyone who sees the confirmation"
        return Check(
            SETTINGS,
            name,
            Status.WARN,
            "VPNBOT_APPROVERS=*: anyone who sees the confirmation may approve.",
            "List the Slack user ids (U…) and/or user-group ids (S…) allowed to approve instead, unless "
            "that is what you want.",
        )
    groups = [a for a in approvers if is_user_group_id(a)]
    detail = f"{plural(len(approvers) - len(groups), 'user')}, {plural(len(groups), 'user group')} (VPNBOT_APPROVERS)"
    if not settings.require_second_approver:
        return Check(SETTINGS, name, Status.PASS, detail + ".")
    if groups or len(approvers) > 1:
        return Check(SETTINGS, name, Status.PASS, detail + "; a second approver is required.")
    return _single_approver_row(settings, approvers[0], detail)


def _single_approver_row(settings: Settings, approver: str, detail: str) -> Check:
    """Four-eyes with one approver: they approve others' requests, never their own."""
    requesters = settings.requesters
    may_request = not requesters or approver in requesters or any(is_user_group_id(r) for r in requesters)
    if not may_request:
        return Check(
            SETTINGS,
            "Approvers",
            Status.PASS,
            detail + f"; a second approver is required, and {approver} is not a requester, so every "
            "request can be approved.",
        )
    return Check(
        SETTINGS,
        "Approvers",
        Status.WARN,
        detail + f"; VPNBOT_REQUIRE_SECOND_APPROVER is on and {approver} is the only approver: they can "
        "approve others' requests, but the single approver cannot approve their own requests, so a "
        "deletion they request can never be approved.",
        "Add a second approver to VPNBOT_APPROVERS if the approver also requests deletions.",
    )


def _request_policy_row(settings: Settings) -> Check:
    requesters = (
        f"{plural(len(settings.requesters), 'id')} in VPNBOT_REQUESTERS" if settings.requesters else "anyone"
    )
    channels = ", ".join(settings.allowed_channels) if settings.allowed_channels else "any channel"
    regions = ", ".join(settings.allowed_regions) if settings.allowed_regions else "any region"
    return Check(
        SETTINGS,
        "Who may request",
        Status.PASS,
        f"requesters: {requesters}; channels: {channels}; regions: {regions}.",
    )


def _approval_rules_rows(settings: Settings) -> list[Check]:
    """VPNBOT_APPROVAL_RULES as the bot reads them (checked at start; no row when unset)."""
    rules = settings.approval_rules
    if not rules:
        return []
    shown = "; ".join(
        f"{scope}: {'one from each of ' + ' + '.join(rule.groups) if rule.groups else plural(rule.count, 'approver')}"
        for scope, rule in rules.items()
    )
    return [
        Check(
            SETTINGS,
            "Approval rules",
            Status.PASS,
            f"{shown} (VPNBOT_APPROVAL_RULES; the most specific scope wins, the requester never counts).",
        )
    ]


def _account_binding_rows(settings: Settings) -> list[Check]:
    """With several accounts: which of them DMs and channels without a binding can reach."""
    if not settings.multi_account:
        return []
    name = "Accounts from unbound channels"
    mode = f"VPNBOT_ACCOUNT_BINDING={settings.account_binding}"
    reachable = settings.unbound_accounts
    if settings.account_binding == "default-only" and settings.channel_accounts:
        return [
            Check(
                SETTINGS,
                name,
                Status.WARN,
                f"{', '.join(reachable)} ({mode}): a DM or any channel without a binding may act on, and "
                "see operations of, accounts bound to other channels.",
                "Unset VPNBOT_ACCOUNT_BINDING (exclusive) so a bound account is usable only from its channels.",
            )
        ]
    detail = ", ".join(reachable) if reachable else "none (every account is bound to its channels)"
    return [Check(SETTINGS, name, Status.PASS, f"{detail} ({mode}).")]
