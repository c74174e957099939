"""The direct message that tells the requester how their request ended, with a link to its card."""

from __future__ import annotations

import re

from bot.domain import (
    REASON_MAX,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    Crashed,
    Deleted,
    Denied,
    Expired,
    Failed,
    Operation,
    Progress,
    Recreated,
    StillExists,
    TimedOut,
)
from bot.slack.blocks.text import (
    Message,
    build_message,
    cap,
    code,
    context_block,
    escape,
    mention,
    safe_mrkdwn,
    section_block,
)
from bot.slack.blocks.thread import build_progress

__all__ = ["build_direct_message", "linkable"]

# A link from chat.getPermalink is rendered only if nothing in it can end or alter the mrkdwn link.
_SAFE_LINK_RE = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?/[A-Za-z0-9/._?=&%-]*", re.ASCII)
# The thread reply's leading emoji (this message has its own).
_EMOJI_RE = re.compile(r"^:[a-z_]+: ")


def linkable(permalink: str | None) -> bool:
    """Whether a link from chat.getPermalink may go into mrkdwn (nothing in it can end the link)."""
    return bool(permalink) and _SAFE_LINK_RE.fullmatch(permalink or "") is not None


def _what(op: Operation) -> str:
    verb = "recreate" if op.is_recreate else "delete"
    name = f" ({escape(cap(op.connection.name, 128))})" if op.connection.name else ""
    where = (
        f"account {code(op.account, 40)}, region {code(op.region, 64)}" if op.account else code(op.region, 64)
    )
    if op.batch_id is not None and not op.is_recreate:
        # Told once for the whole batch (its card lists every connection).
        return f"Your request to delete several VPN connections (a site decommission) in {where}"
    return f"Your request to {verb} VPN connection {code(op.connection.id)}{name} in {where}"


def _outcome(op: Operation, event: Progress) -> str:
    """What became of it, in one sentence after "Your request to …"."""
    approved = f" was approved by {mention(op.approver_id)}" if op.approver_id else ""
    match event:
        case Deleted():
            return f":white_check_mark: {_what(op)}{approved}: the connection is deleted."
        case Recreated(new_vco_id=new_id):
            return f":white_check_mark: {_what(op)}{approved}: it is recreated as {code(new_id)}."
        case Failed(code=err_code) if err_code in (SCHEDULED_GONE, SCHEDULED_MOVED):
            where = "no longer existed" if err_code == SCHEDULED_GONE else "was on another gateway"
            return (
                f":x: {_what(op)}{approved} was not run: at the scheduled time the connection {where}. "
                "Nothing was deleted."
            )
        case Failed(reason=reason, code=err_code):
            why = (
                safe_mrkdwn(cap(reason, 1000))
                if reason
                else f"Alibaba Cloud refused it (code {code(err_code, 80)})."
            )
            return f":x: {_what(op)}{approved}, but it failed. {why}"
        case StillExists() | Crashed() | TimedOut():
            return f":x: {_what(op)}{approved}, but it did not finish. {_EMOJI_RE.sub('', build_progress(event))}"
        case Expired():
            return f":hourglass: {_what(op)} expired: nobody approved it in time. Nothing was changed."
        case Denied(by=by, reason=reason):
            why = f" *Reason:* {code(reason, REASON_MAX)}" if reason else " No reason was given."
            return f":no_entry_sign: {_what(op)} was denied by {mention(by)}. Nothing was changed.{why}"
        case _:
            return f"{_what(op)}: {build_progress(event)}"


def build_direct_message(op: Operation, event: Progress, *, permalink: str | None) -> Message:
    """The requester's direct message about ``event`` (an outcome), linking the card when it can."""
    outcome = _outcome(op, event)
    blocks = [section_block(outcome)]
    if permalink and _SAFE_LINK_RE.fullmatch(permalink):
        blocks.append(context_block(f"<{permalink}|Open the request> for its card and thread."))
    if op.reason:
        blocks.append(context_block(f"Your reason: {code(op.reason, REASON_MAX)}"))
    return build_message(outcome, blocks)
