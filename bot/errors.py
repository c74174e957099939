"""The one error tree of vpn-bot.

Every error the bot raises on purpose derives from :class:`BotError` and knows how to explain
itself to a person in Slack (``friendly``) without a traceback::

    BotError
    ├── UsageError              the command text could not be understood (requester fixes it)
    ├── NotAllowed              a policy refused the request or the click (someone else must act)
    │   └── Frozen              a change freeze refused the approval (it says until when, and why)
    ├── TooManyRequests         one person sent more commands or lookups than VPNBOT_USER_RATE_PER_MINUTE
    ├── AlreadyRequested        the person already has an open request for that connection (its card)
    ├── ConfirmationClosed      a click on a confirmation that is finished, cancelled or expired
    ├── ApprovalRefused         an approval under a quorum rule that cannot count (twice, group covered, …)
    ├── ConfigError             settings are missing or invalid (the bot's administrator fixes them)
    ├── StartupError            the process cannot start: database, port or faults file (one line + fix)
    ├── SlackError              a Slack Web API call failed (e.g. not_in_channel; transient or not)
    ├── StoreUnavailable        the bot's database cannot be reached or written right now
    └── CloudError              anything that went wrong talking to Alibaba Cloud
        ├── CloudApiError       Alibaba answered with an error ``Code`` (dispatch is on the code)
        ├── CloudTransportError no usable answer: timeout, connection failure, non-JSON body
        └── RoleNotAssumed      an account's RAM role could not be assumed (nothing was sent)

Third-party exceptions (httpx, slack_sdk, SQLAlchemy) are translated into this tree once, at the
boundary that touches them, with ``raise ... from exc``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from bot.inert import neutralise

if TYPE_CHECKING:
    from bot.domain import ApprovalRule, Freeze, Operation

__all__ = [
    "AlreadyRequested",
    "ApprovalRefused",
    "BotError",
    "CloudApiError",
    "CloudError",
    "CloudTransportError",
    "ConfigError",
    "ConfirmationClosed",
    "ErrorInfo",
    "Frozen",
    "NotAllowed",
    "RecreateRefused",
    "RetryClass",
    "RoleNotAssumed",
    "SlackError",
    "StartupError",
    "StoreUnavailable",
    "TooManyRequests",
    "UsageError",
    "Who",
]


class Who(StrEnum):
    """Who has to act to get past an error."""

    REQUESTER = "requester"
    ADMIN = "bot administrator"
    ACCOUNT_OWNER = "Alibaba Cloud account owner"
    NOBODY = "nobody (it resolves itself)"


class RetryClass(StrEnum):
    """How an error is retried.

    ``TRANSIENT`` errors are retried by the cloud client within seconds (throttling, 5xx,
    transport). ``BUSY`` errors mean the gateway is busy with another change; the deletion
    workflow waits longer between attempts and tells the thread. ``NEVER`` is final.
    """

    NEVER = "never"
    TRANSIENT = "transient"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What one Alibaba Cloud error code means to a person, and how the bot handles it."""

    code: str
    http_status: int | None
    api_message: str
    friendly: str
    action: str
    who: Who
    retry: RetryClass = RetryClass.NEVER

    @property
    def retryable(self) -> bool:
        return self.retry is not RetryClass.NEVER


class BotError(Exception):
    """Base of every error vpn-bot raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def friendly(self) -> str:
        """The text to show a Slack user (never contains a secret or a traceback)."""
        return self.message


class UsageError(BotError):
    """The command text could not be understood."""


class NotAllowed(BotError):
    """A policy refused the request or the click; ``who_can`` says who may act instead."""

    def __init__(self, message: str, *, who_can: str = "") -> None:
        super().__init__(message)
        self.who_can = who_can

    @property
    def friendly(self) -> str:
        return f"{self.message} {self.who_can}".strip()


class Frozen(NotAllowed):
    """A change freeze (``freeze``) refused an approval; the Slack layer words its end and reason."""

    def __init__(self, freeze: Freeze) -> None:
        # The plain text goes to the audit entry of the refused click; people read the worded one.
        # The reason last, after "reason: ", as every audit detail has it: /vpn history shows it inert.
        super().__init__(
            f"approvals are frozen until {freeze.until.isoformat(timespec='minutes')} "
            f"by {freeze.created_by}; reason: {neutralise(freeze.reason)}"
        )
        self.freeze = freeze


class TooManyRequests(BotError):
    """One person went past VPNBOT_USER_RATE_PER_MINUTE; ``retry_s``: seconds until they may again."""

    def __init__(self, *, per_minute: int, retry_s: float) -> None:
        wait = max(1, math.ceil(retry_s))
        super().__init__(
            f"Slow down: that is more than {per_minute} commands and lookups in a minute, the limit per "
            f"person. Nothing was done; try again in {wait} s."
        )
        self.per_minute = per_minute
        self.retry_s = retry_s


class AlreadyRequested(BotError):
    """The person already asked to delete this connection and that request is still open (``op``).

    The Slack layer points at its card instead of posting another.
    """

    def __init__(self, op: Operation) -> None:
        super().__init__(f"already requested: operation {op.id} is {op.state.value}")
        self.op = op


class ConfirmationClosed(BotError):
    """The confirmation is no longer open for clicks; ``op`` is the operation as it is now (None: unknown).

    The Slack layer words why (``bot.slack.blocks.closed_text``); the message here is for logs.
    """

    def __init__(self, op: Operation | None) -> None:
        state = op.state.value if op is not None else "unknown"
        super().__init__(f"the confirmation is closed (operation {state})")
        self.op = op


class ApprovalRefused(BotError):
    """An approval click (or its withdrawal) under a quorum rule that changes nothing; the Slack layer words it.

    Reasons: ``repeated`` (this person already approved), ``covered`` (each rule group they are in has
    its approver already), ``not_approved`` (a withdrawal with no approval to withdraw), ``met`` (a
    withdrawal after the rule was met: the operation is approved), ``no_rule`` (a withdrawal where no
    rule applies). ``op`` is the operation as it is now; ``rule`` the rule that applies.
    """

    def __init__(self, reason: str, op: Operation | None, rule: ApprovalRule | None = None) -> None:
        super().__init__(f"approval refused: {reason}")
        self.reason = reason
        self.op = op
        self.rule = rule


class RecreateRefused(BotError):
    """Recreate… cannot be used on ``parent`` now; ``reason`` says why, the Slack layer words it.

    Reasons: ``off`` (VPNBOT_UNDO_WINDOW_SECONDS=0), ``not_deleted``, ``no_snapshot``,
    ``window_closed``, ``recreated`` (``other`` is the finished recreation), ``in_progress``
    (``other`` is the open one).
    """

    def __init__(self, reason: str, parent: Operation | None, other: Operation | None = None) -> None:
        super().__init__(f"recreate refused: {reason}")
        self.reason = reason
        self.parent = parent
        self.other = other


class ConfigError(BotError):
    """Settings are missing or invalid; ``problems`` lists each one, ``fields`` their env names."""

    def __init__(self, problems: list[str], *, fields: list[str] | None = None) -> None:
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems
        self.fields = fields or []


class StartupError(BotError):
    """The process cannot start (database unreachable, port in use, …): ``problem`` and its ``fix``."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem = problem
        self.fix = fix


class SlackError(BotError):
    """A Slack Web API call failed; ``error`` is the code in :mod:`bot.slack.codes`.

    ``transient`` says whether the same call may pass a little later (rate limit, 5xx, network);
    ``retry_after`` is Slack's hint in seconds, when it gave one. Build it with
    :func:`bot.slack.codes.translate` from the slack_sdk or aiohttp exception. ``maybe_done``: what
    the call was for may be in Slack all the same (a lost answer, or a later step of it failed),
    so the next attempt looks before posting again.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        transient: bool = False,
        retry_after: float | None = None,
        maybe_done: bool = False,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.transient = transient
        self.retry_after = retry_after
        self.maybe_done = maybe_done


class StoreUnavailable(BotError):
    """The bot's database did not answer, refused a connection or cannot be written (disk full, read-only)."""

    def __init__(self, detail: str, *, disk_full: bool = False) -> None:
        if disk_full:
            message = (
                "The bot's database has no disk space left, so nothing was changed. "
                "Tell the bot's administrator: its database server needs space before anything can be recorded."
            )
        else:
            message = (
                "The bot's database is unreachable right now, so nothing was changed. "
                "Try again in a minute; if it persists, tell the bot's administrator."
            )
        super().__init__(message)
        self.detail = detail
        self.disk_full = disk_full


class CloudError(BotError):
    """Something went wrong talking to Alibaba Cloud."""

    def __init__(
        self,
        message: str,
        *,
        info: ErrorInfo,
        request_id: str | None = None,
        action: str | None = None,
        resource_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.info = info
        self.request_id = request_id
        self.action = action
        self.resource_id = resource_id
        # Set by the client when an earlier attempt of the same call got no usable answer, so
        # the request may have been carried out (a NotFound then means "already deleted").
        self.after_ambiguous = False

    @property
    def code(self) -> str:
        return self.info.code

    @property
    def retry(self) -> RetryClass:
        return self.info.retry

    @property
    def retryable(self) -> bool:
        return self.info.retryable

    @property
    def definite(self) -> bool:
        """Alibaba Cloud answered and refused: nothing was carried out under this request.

        False for ambiguous outcomes (no answer, a broken answer, a 5xx): the call may have been
        carried out, so a resend must reuse its ClientToken.
        """
        return False

    @property
    def friendly(self) -> str:
        text = f"{self.info.friendly} {self.info.action}".strip()
        # The code and the RequestId come from Alibaba's answer: shown inert (bot.inert).
        if self.request_id:
            text += f" (Alibaba Cloud code `{neutralise(self.info.code)}`, RequestId `{neutralise(self.request_id)}`)"
        else:
            text += f" (code `{neutralise(self.info.code)}`)"
        return text


class CloudApiError(CloudError):
    """Alibaba Cloud answered with an error ``Code``."""

    def __init__(
        self,
        message: str,
        *,
        info: ErrorInfo,
        http_status: int,
        request_id: str | None = None,
        action: str | None = None,
        resource_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, info=info, request_id=request_id, action=action, resource_id=resource_id)
        self.http_status = http_status
        self.retry_after = retry_after

    @property
    def definite(self) -> bool:
        # A 5xx (InternalError, ServiceUnavailable) may hide a request that was carried out.
        return self.http_status < 500


class CloudTransportError(CloudError):
    """No usable answer from Alibaba Cloud (timeout, connection error, or a body that is not JSON)."""


class RoleNotAssumed(CloudError):
    """The RAM role of ``account`` could not be assumed through STS: nothing reached the VPC API.

    ``friendly`` names the account and what its administrator must fix (from the error table).
    """

    def __init__(
        self,
        message: str,
        *,
        info: ErrorInfo,
        account: str,
        role_arn: str,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, info=info, request_id=request_id, action="AssumeRole")
        self.account = account
        self.role_arn = role_arn

    @property
    def definite(self) -> bool:
        # Raised before any VPC request was signed: nothing was carried out.
        return True

    @property
    def friendly(self) -> str:
        role = f" (`{self.role_arn}`)" if self.role_arn else ""
        return f"Account `{self.account}`{role}: {super().friendly}"
