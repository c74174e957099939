"""The Slack error table: what each Web API ``error`` means to a person and whether it passes.

One row per code, like :mod:`bot.cloud.codes` for Alibaba Cloud: whether Slack may accept the
same call a little later (``transient``), what happened, what to do and who must act.
:func:`translate` is the one place that turns slack_sdk and aiohttp failures into
:class:`bot.errors.SlackError`; callers catch :data:`SLACK_FAILURES` and ``raise translate(exc)``.

Codes that are ours, not Slack's: ``transport`` (no connection), ``timeout`` (no answer in time),
``http_<status>`` (an HTTP error without a Slack error body), ``no_ts`` (Slack accepted a post
but returned no message ts), ``bad_response`` (an answer without the expected field),
``client_error`` (slack_sdk refused the call before sending it) and ``file_upload_failed`` (the
upload to the URL files.getUploadURLExternal gave did not answer 200).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.errors import SlackError, Who

__all__ = [
    "BAD_RESPONSE",
    "CLIENT_ERROR",
    "FILE_UPLOAD_FAILED",
    "NO_TS",
    "SLACK_CODES",
    "SLACK_FAILURES",
    "TIMEOUT",
    "TRANSPORT",
    "SlackCode",
    "error_code",
    "lookup",
    "slack_error",
    "translate",
]

TRANSPORT: Final = "transport"
TIMEOUT: Final = "timeout"
NO_TS: Final = "no_ts"
BAD_RESPONSE: Final = "bad_response"
CLIENT_ERROR: Final = "client_error"
FILE_UPLOAD_FAILED: Final = "file_upload_failed"

# What a Slack call can raise: catch these, then ``raise translate(exc) from exc``.
SLACK_FAILURES: Final = (SlackClientError, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class SlackCode:
    """One Slack error: whether a later retry may pass, what happened, what to do, who acts.

    ``token_refused``: the token itself is wrong or lacks a scope; no retry and no other input helps.
    """

    error: str
    transient: bool
    friendly: str
    action: str
    who: Who
    token_refused: bool = False

    @property
    def ambiguous(self) -> bool:
        """Whether Slack may have carried the call out although it failed: no answer, a timeout, a 5xx.

        A rate limit and every definite Slack error (``ok: false`` with a code) mean it did not.
        Before posting again after an ambiguous failure, look whether the first post arrived.
        """
        return self.transient and self.error not in _REFUSED_BEFORE_DOING

    @property
    def text(self) -> str:
        """What happened and what to do, in one sentence pair (mrkdwn-safe, no secrets)."""
        return f"{self.friendly} {self.action}"


# Transient answers that say Slack did nothing: it refused the call before carrying it out.
_REFUSED_BEFORE_DOING = frozenset({"ratelimited", "rate_limited", "http_429"})

_INVITE = "Invite me with `/invite @vpn-bot`, or use a channel where I'm a member."
_FIX_BOT_CREDENTIAL = (
    "The bot administrator must check SLACK_BOT_TOKEN (the Bot User OAuth Token, xoxb-…) and reinstall "
    "the app if it was removed."
)
_SCOPES = (
    "The bot administrator must add the missing scope in manifest.yml (oauth_config.scopes.bot) and "
    "reinstall the app to the workspace."
)
_LATER = "Slack usually recovers within a minute; try again shortly."
_BOT_BUG = "This is a bot bug: the bot administrator should report it with the time it happened."
_RESTRICTED = (
    "This workspace does not let me post in this channel.",
    "Ask a Slack admin, or use another channel.",
)


def _row(error: str, transient: bool, friendly: str, action: str, who: Who) -> SlackCode:
    return SlackCode(error=error, transient=transient, friendly=friendly, action=action, who=who)


def _token(error: str, what: str) -> SlackCode:
    return SlackCode(
        error, False, f"Slack refused the token ({what}).", _FIX_BOT_CREDENTIAL, Who.ADMIN, token_refused=True
    )


def _busy(error: str, what: str) -> SlackCode:
    return _row(error, True, what, _LATER, Who.NOBODY)


_ROWS: tuple[SlackCode, ...] = (
    # --- the channel ------------------------------------------------------------------------------
    _row(
        "not_in_channel",
        False,
        "I'm not a member of this channel, so I can't post here.",
        _INVITE + " Then run the command again.",
        Who.REQUESTER,
    ),
    _row(
        "channel_not_found",
        False,
        "I can't see this channel (it is private, or a DM I'm not part of).",
        _INVITE,
        Who.REQUESTER,
    ),
    _row(
        "is_archived",
        False,
        "This channel is archived, so I can't post here.",
        "Run the command in an active channel.",
        Who.REQUESTER,
    ),
    _row("restricted_action", False, *_RESTRICTED, Who.REQUESTER),
    _row("restricted_action_read_only_channel", False, *_RESTRICTED, Who.REQUESTER),
    _row("ekm_access_denied", False, *_RESTRICTED, Who.REQUESTER),
    # --- the token and the app's scopes -------------------------------------------------------------
    _token("invalid_auth", "invalid_auth: it is not a valid token for this workspace"),
    _token("not_authed", "not_authed: no token was sent"),
    _token("account_inactive", "account_inactive: the app or its workspace was deactivated"),
    _token("token_revoked", "token_revoked: the app was uninstalled or the token revoked"),
    _token("token_expired", "token_expired: token rotation is on and the token expired"),
    _token("not_allowed_token_type", "not_allowed_token_type: this method needs another kind of token"),
    SlackCode(
        "missing_scope",
        False,
        "The Slack app lacks a permission (scope) this call needs.",
        _SCOPES,
        Who.ADMIN,
        token_refused=True,
    ),
    # --- user groups --------------------------------------------------------------------------------
    _row(
        "no_such_subteam",
        False,
        "Slack knows no user group with this id.",
        "The bot administrator must fix the S… id in VPNBOT_APPROVERS / VPNBOT_REQUESTERS "
        "(in Slack: People → User groups → ⋯ → Copy group ID).",
        Who.ADMIN,
    ),
    _row(
        "subteam_not_found",
        False,
        "Slack knows no user group with this id.",
        "The bot administrator must fix the S… id in VPNBOT_APPROVERS / VPNBOT_REQUESTERS.",
        Who.ADMIN,
    ),
    # --- messages ------------------------------------------------------------------------------------
    _row(
        "message_not_found",
        False,
        "The message to update is gone (deleted, or in a channel I can no longer see).",
        "Nothing to do; the thread and the audit history keep the record.",
        Who.NOBODY,
    ),
    _row(
        "cant_update_message",
        False,
        "Slack does not let me edit this message.",
        "Nothing to do; the thread and the audit history keep the record.",
        Who.NOBODY,
    ),
    _row(
        "invalid_blocks",
        False,
        "Slack rejected the message layout (an invalid block, or more than 50 blocks).",
        _BOT_BUG,
        Who.ADMIN,
    ),
    _row(
        "invalid_blocks_format",
        False,
        "Slack rejected the message layout (not a list of blocks).",
        _BOT_BUG,
        Who.ADMIN,
    ),
    # Not in Slack's reference: observed, reported in slackapi/bolt-js issues #2509 and #2867. Slack
    # refuses a message whose blocks carry more than about 12,000 characters of text in all.
    _row(
        "msg_blocks_too_long",
        False,
        "Slack refused the message as too long (its blocks' text in all).",
        _BOT_BUG,
        Who.ADMIN,
    ),
    _row(
        "msg_too_long",
        False,
        "Slack refused the message as too long (over 40,000 characters).",
        _BOT_BUG,
        Who.ADMIN,
    ),
    _row("no_text", False, "Slack refused an empty message.", _BOT_BUG, Who.ADMIN),
    _row(
        "too_many_attachments", False, "Slack refused the message: too many attachments.", _BOT_BUG, Who.ADMIN
    ),
    # --- files (the configuration snapshot, when it is too long for a message) ------------------------
    _row(
        "file_upload_size_restricted",
        False,
        "This workspace does not allow a file this large.",
        "The configuration is still stored with the operation in the bot's database.",
        Who.ADMIN,
    ),
    _row(
        "file_uploads_disabled",
        False,
        "File uploads are turned off in this workspace.",
        "The configuration is still stored with the operation in the bot's database.",
        Who.ADMIN,
    ),
    _row(
        "file_not_found",
        False,
        "Slack lost the uploaded file before it was shared.",
        "Nothing to do: the bot uploads it again.",
        Who.NOBODY,
    ),
    # --- Slack is busy or down ------------------------------------------------------------------------
    _busy("ratelimited", "Slack is rate-limiting the bot right now."),
    _busy("rate_limited", "Slack is rate-limiting the bot right now."),
    _busy("internal_error", "Slack had an internal error."),
    _busy("fatal_error", "Slack had an internal error."),
    _busy("service_unavailable", "Slack is temporarily unavailable."),
    _busy("request_timeout", "Slack did not receive the whole request in time."),
    _busy("http_429", "Slack is rate-limiting the bot right now."),
    # --- ours ------------------------------------------------------------------------------------------
    _row(
        TRANSPORT,
        True,
        "I could not reach Slack.",
        "Try again in a minute; if it persists, the bot administrator must check the network path "
        "(DNS, proxy, firewall) to slack.com.",
        Who.NOBODY,
    ),
    _row(
        TIMEOUT,
        True,
        "Slack did not answer in time.",
        "Try again in a minute; if it persists, the bot administrator must check the network path to slack.com.",
        Who.NOBODY,
    ),
    _row(
        NO_TS,
        False,
        "Slack accepted the message but did not say where it is (no ts).",
        "Try again; if it keeps happening, ask the bot administrator.",
        Who.ADMIN,
    ),
    _row(
        BAD_RESPONSE,
        False,
        "Slack's answer lacked what the bot asked for.",
        "Try again; if it keeps happening, the bot administrator should check VPNBOT_SLACK_API_URL.",
        Who.ADMIN,
    ),
    _row(
        FILE_UPLOAD_FAILED,
        True,
        "Slack did not take the configuration file.",
        "Nothing to do: the bot sends it again shortly.",
        Who.NOBODY,
    ),
    _row(
        CLIENT_ERROR,
        False,
        "The Slack client refused to send the call.",
        "This is a bot bug or a setting: the bot administrator should look at the bot's log.",
        Who.ADMIN,
    ),
)

SLACK_CODES: Mapping[str, SlackCode] = MappingProxyType({row.error: row for row in _ROWS})

_SERVER_ERROR = re.compile(r"http_5\d\d")
# Slack's codes are snake_case; anything else is shown cut down to that alphabet.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def lookup(error: str) -> SlackCode:
    """Return the row for ``error``; unknown codes get a generic, non-transient row."""
    known = SLACK_CODES.get(error)
    if known is not None:
        return known
    if _SERVER_ERROR.fullmatch(error):
        return _row(
            error, True, f"Slack answered with a server error (HTTP {error[5:]}).", _LATER, Who.NOBODY
        )
    shown = _UNSAFE.sub("", error)[:60] or "unknown"
    return _row(
        error,
        False,
        f"Slack refused the call (error `{shown}`).",
        "Try again; if it keeps failing, ask the bot administrator.",
        Who.ADMIN,
    )


def error_code(exc: BaseException) -> str:
    """The table's code for a failure of a Slack call (``transport``, ``invalid_auth``, …)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, str) and error:
            return error
        status = getattr(response, "status_code", None)
        return f"http_{status}" if isinstance(status, int) and status != 200 else BAD_RESPONSE
    if isinstance(exc, TimeoutError):  # before OSError: asyncio's and the builtin are one class
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TRANSPORT
    return CLIENT_ERROR


def slack_error(error: str) -> SlackError:
    """The :class:`SlackError` for one code, e.g. ``no_ts`` when Slack's answer lacks the ts."""
    row = lookup(error)
    return SlackError(row.text, error=row.error, transient=row.transient, maybe_done=row.ambiguous)


def _retry_after(exc: BaseException) -> float | None:
    """Slack's Retry-After (seconds) on a rate-limited answer, if it sent one."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(value[0] if isinstance(value, list) else value))
            except (TypeError, ValueError):
                return None
    return None


def translate(exc: BaseException) -> SlackError:
    """Turn a slack_sdk, aiohttp or timeout failure into :class:`SlackError` (``raise … from exc``)."""
    error = slack_error(error_code(exc))
    error.retry_after = _retry_after(exc)
    return error
