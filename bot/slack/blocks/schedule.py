"""Scheduled deletions on the card and in the thread: when it runs, in each reader's zone and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain import SCHEDULE_WINDOW, Operation, Scheduled, Starting
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks.text import (
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    Block,
    code,
    mention,
    plain_object,
)

__all__ = [
    "run_time_text",
    "scheduled_actions",
    "scheduled_progress",
    "scheduled_status",
    "utc_text",
]


def utc_text(at: datetime) -> str:
    """``2026-12-09 18:00 UTC``."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def run_time_text(at: datetime) -> str:
    """When, as Slack shows it in each reader's own time zone, followed by the time in UTC.

    ``<!date^UNIX^{date_short_pretty} {time}|fallback>``: clients that cannot format it show the
    fallback (the UTC time), so the UTC time is always there.
    """
    utc = utc_text(at)
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{utc}> ({utc})"


def scheduled_status(op: Operation) -> str:
    """The status line of a scheduled deletion's card."""
    runs = run_time_text(op.run_at) if op.run_at is not None else "an unknown time"
    approved = f"Approved by {mention(op.approver_id)}"
    if op.schedule_kind == SCHEDULE_WINDOW:
        where = f" of account {code(op.account, 40)}" if op.account else ""
        return (
            f":calendar: {approved} outside the change window{where}: it runs when the window next opens, "
            f"{runs}. *Cancel* stops it until then; *Override window* (another approver) runs it now."
        )
    return f":calendar: {approved}; scheduled to run {runs}. *Cancel* stops it until then."


def _override_confirm(op: Operation) -> dict[str, object]:
    return {
        "title": plain_object("Override the change window?", CONFIRM_TITLE_MAX),
        "text": plain_object(
            f"This deletes {op.connection.id} now, outside the change window. It needs a second approver "
            "and is recorded in the audit.",
            CONFIRM_TEXT_MAX,
        ),
        "confirm": plain_object("Delete now", CONFIRM_BUTTON_MAX),
        "deny": plain_object("Wait for the window", CONFIRM_BUTTON_MAX),
        "style": "danger",
    }


def scheduled_actions(op: Operation) -> Block:
    """Cancel, and for a deletion the change window holds back, Override window."""
    elements: list[dict[str, object]] = [
        {
            "type": "button",
            "action_id": ActionId.CANCEL.value,
            "text": plain_object("Cancel", 75),
            "value": op.id,
        }
    ]
    if op.schedule_kind == SCHEDULE_WINDOW:
        elements.append(
            {
                "type": "button",
                "action_id": ActionId.OVERRIDE_WINDOW.value,
                "text": plain_object("Override window", 75),
                "value": op.id,
                "style": "danger",
                "confirm": _override_confirm(op),
            }
        )
    return {"type": "actions", "block_id": BlockId.ACTIONS.value, "elements": elements}


def scheduled_progress(event: Scheduled | Starting) -> str:
    """The thread reply for a scheduled deletion's approval and its start."""
    match event:
        case Scheduled(run_at=run_at, window=window) if window:
            return (
                f":calendar: Approved outside the change window ({code(window, 300)}): scheduled for its "
                f"next opening, {run_time_text(run_at)}."
            )
        case Scheduled(run_at=run_at):
            return f":calendar: Approved; scheduled for {run_time_text(run_at)}."
        case Starting(override_by=by) if by:
            return f":rotating_light: {mention(by)} overrode the change window: starting now."
        case Starting(run_at=run_at):
            return f":arrow_forward: It is {utc_text(run_at)}, the scheduled time: starting now."
