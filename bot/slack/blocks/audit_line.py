"""The audit channel's line about one decision (VPNBOT_AUDIT_CHANNEL), with a link to the card.

Which actions are announced is :data:`bot.domain.ANNOUNCED_ACTIONS`; how each is worded is
:data:`WORDING` below, and an action missing from it is still announced, in plain words.
"""

from __future__ import annotations

from datetime import UTC

from bot.domain import Announced, Operation
from bot.ids import is_user_id
from bot.slack.blocks.direct import linkable
from bot.slack.blocks.text import Message, build_message, cap, code, context_block, inert_name, section_block

__all__ = ["WORDING", "build_audit_line"]

# action -> (emoji, what happened to the request). Recreations' actions are these with "recreate_".
WORDING: dict[str, tuple[str, str]] = {
    "requested": (":inbox_tray:", "requested"),
    "approved": (":white_check_mark:", "approved"),
    "frozen": (":snowflake:", "frozen"),
    "unfrozen": (":sunny:", "unfrozen"),
    "window_override": (":warning:", "run outside its change window (override by a second approver)"),
    "started": (":arrow_forward:", "started at its scheduled time"),
    "changed_since_approval": (
        ":leftwards_arrow_with_hook:",
        "sent back for approval: the connection changed since it was approved, the approval is void",
    ),
    "cancelled": (":no_entry_sign:", "denied"),
    "expired": (":hourglass:", "expired without a decision"),
    "deleted": (":wastebasket:", "done: the connection is deleted"),
    "failed": (":x:", "failed"),
    "timed_out": (":x:", "timed out"),
    "recreated": (":recycle:", "done: the connection is recreated"),
}
_RECREATE = "recreate_"
# What a line's note is, for the actions whose note is the bot's own detail rather than a reason.
_NOTE_LABEL = {
    "approved": "Details",
    "started": "Details",
    "window_override": "Details",
    "changed_since_approval": "What changed",
}


def _words(action: str) -> tuple[str, str, str]:
    """(emoji, kind of request, what happened) for ``action``."""
    kind = "Deletion"
    if action == "recreated" or action.startswith(_RECREATE):
        kind = "Recreation"
        action = action.removeprefix(_RECREATE)
    emoji, what = WORDING.get(action, (":memo:", action.replace("_", " ")))
    return emoji, kind, what


def build_audit_line(op: Operation | None, event: Announced, *, permalink: str | None) -> Message:
    """One line: what was decided, by whom, about which connection, and a link to its card."""
    emoji, kind, what = _words(event.action)
    if op is None:
        kind += "s"  # of no one operation (a freeze): "Deletions frozen by …"
    if (
        event.action.removeprefix(_RECREATE) == "cancelled"
        and op is not None
        and event.actor_id == op.requester_id
    ):
        what = "withdrawn"  # the requester cancelled their own request: nobody denied it
    by = f" by <@{event.actor_id}>" if is_user_id(event.actor_id) else ""
    if by and op is not None and event.action.removeprefix(_RECREATE) == "approved":
        # Under a quorum rule the approval that completed it is the decision: with whom, on one line.
        others = [a.user_id for a in op.approvals if a.user_id != event.actor_id and is_user_id(a.user_id)]
        if others:
            by += " with " + ", ".join(f"<@{u}>" for u in others)
    about = ""
    if op is not None:
        where = f"{code(op.account, 40)} / {code(op.region, 64)}" if op.account else code(op.region, 64)
        name = f" {inert_name(op.connection.name, missing='')}" if op.connection.name else ""
        about = f" of {code(op.vco_id)}{name} in {where}"
    if op is not None and op.is_recreate and op.new_vco_id and event.action == "recreated":
        about += f" as {code(op.new_vco_id)}"
    line = f"{emoji} {kind}{about} {what}{by}."
    if event.note:
        label = "Details" if op is None else _NOTE_LABEL.get(event.action.removeprefix(_RECREATE), "Reason")
        line += f" {label}: {code(event.note, 500)}"
    elif op is not None and op.reason and event.action.removeprefix(_RECREATE) == "requested":
        ticket = f" (ticket {code(op.ticket, 128)})" if op.ticket else ""
        line += f" Reason{ticket}: {code(op.reason, 500)}"
    facts = [event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]
    if op is not None:
        facts.append(f"request {code(op.id, 64)}")
    if linkable(permalink):
        facts.append(f"<{permalink}|Open the card>")
    blocks = [section_block(cap(line, 2900)), context_block(" · ".join(facts))]
    return build_message(line, blocks)
