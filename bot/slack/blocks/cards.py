"""The confirmation card and how it reads in each later state, and why a click is closed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain import (
    ACTIVE_STATES,
    REASON_MAX,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    Operation,
    OpState,
)
from bot.schedule import Window, run_time
from bot.slack.block_ids import SLASH_COMMAND, ActionId, BlockId
from bot.slack.blocks.impact import build_impact_blocks, impact_summary
from bot.slack.blocks.recreate import (
    build_recreate_confirmation,
    build_recreate_parent,
    recreate_offer_blocks,
    recreated_line,
)
from bot.slack.blocks.schedule import run_time_text, scheduled_actions, scheduled_status
from bot.slack.blocks.text import (
    CHANGE_LINE_MAX,
    CHANGES_SHOWN,
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    FIELD_MAX,
    Block,
    Message,
    account_line,
    build_message,
    cap,
    code,
    context_block,
    escape,
    format_duration,
    format_time,
    header_block,
    inert_name,
    mention,
    mrkdwn_object,
    op_name,
    plain_object,
    safe_mrkdwn,
    section_block,
    subnets,
)
from bot.workflow.binding import short

# --- the confirmation and its later states -----------------------------------------------------


def _details(op: Operation) -> Block:
    conn, gw = op.connection, op.gateway
    conn_name = inert_name(conn.name, missing="_(no name)_")
    gw_name = inert_name(gw.name, missing="_(no name)_")
    # The states were looked up for the confirmation; once it is decided they are history.
    when = "" if op.state is OpState.AWAITING_APPROVAL else " at request time"
    fields = [
        f"*Connection*\n{code(conn.id)}\n{conn_name}",
        f"*Gateway*\n{code(gw.id or conn.gateway_id)} {gw_name}\nstate{when}: {code(gw.status or 'unknown', 40)}",
        f"*Connection status{when}*\n{code(conn.status or 'unknown', 40)}",
        f"*Customer gateway*\n{code(conn.customer_gateway_id) if conn.customer_gateway_id else '—'}",
        f"*Local subnets*\n{subnets(conn.local_subnet)}",
        f"*Remote subnets*\n{subnets(conn.remote_subnet)}",
        *([f"*Account*\n{code(op.account, 40)}"] if op.account else []),
        f"*Region*\n{code(op.region, 64)}",
        f"*Requested by*\n{mention(op.requester_id)}",
    ]
    return {
        "type": "section",
        "block_id": BlockId.DETAILS.value,
        "fields": [mrkdwn_object(f, FIELD_MAX) for f in fields],
    }


def retry_command(op: Operation) -> str:
    """The ``/vpn delete`` that asks again for the same connection, in the same account and region."""
    account = f" account={op.account}" if op.account else ""
    return code(f"{SLASH_COMMAND} delete {op.connection.id} {op.region}{account}", 200)


def _where(op: Operation) -> str:
    """``in prod / cn-hangzhou`` with several accounts, else ``in cn-hangzhou`` (plain text)."""
    return f"in account {op.account}, region {op.region}" if op.account else f"in {op.region}"


def _confirm_dialog(op: Operation) -> dict[str, Any]:
    name = op.connection.name or "(no name)"
    return {
        "title": plain_object(f"Delete {op.connection.id}?", CONFIRM_TITLE_MAX),
        "text": plain_object(
            f"This deletes VPN connection {cap(name, 80)} ({op.connection.id}) on gateway "
            f"{op.gateway.id or op.connection.gateway_id}{f' in account {op.account}' if op.account else ''}. "
            "The tunnel goes down and this cannot be undone.",
            CONFIRM_TEXT_MAX,
        ),
        "confirm": plain_object("Delete connection", CONFIRM_BUTTON_MAX),
        "deny": plain_object("Keep it", CONFIRM_BUTTON_MAX),
        "style": "danger",
    }


def withdraw_button(op: Operation) -> Block:
    """Under a quorum rule, once someone approved: take one's own approval back (until the rule is met)."""
    return {
        "type": "button",
        "action_id": ActionId.WITHDRAW.value,
        "text": plain_object("Withdraw my approval", 75),
        "value": op.id,
    }


def approvals_block(progress: str) -> list[Block]:
    """The quorum's progress (``1 of 2 approvals: …``), bot-written mrkdwn, or nothing without a rule."""
    return [section_block(progress, BlockId.APPROVALS.value)] if progress else []


def _actions(op: Operation, *, withdraw: bool = False) -> Block:
    return {
        "type": "actions",
        "block_id": BlockId.ACTIONS.value,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.APPROVE.value,
                "text": plain_object("Delete", 75),
                "value": op.id,
                "style": "danger",
                "confirm": _confirm_dialog(op),
            },
            {
                "type": "button",
                "action_id": ActionId.CANCEL.value,
                "text": plain_object("Cancel", 75),
                "value": op.id,
            },
            *([withdraw_button(op)] if withdraw else []),
        ],
    }


def _footer(op: Operation) -> Block:
    parts = [f"Request {code(op.id, 64)}"]
    if op.preview_fingerprint:
        # What an approval is bound to: the same preview, read again just before the delete.
        parts.append(f"preview {code(short(op.preview_fingerprint), 16)}")
    if op.delete_request_id:
        parts.append(f"Alibaba Cloud RequestId {code(op.delete_request_id, 80)}")
    return context_block(" · ".join(parts), BlockId.FOOTER.value)


def _gateway_warnings(op: Operation) -> str:
    """What the approver should know about the gateway before clicking Delete."""
    lines = []
    if op.gateway.business_status == "FinancialLocked":
        lines.append(
            ":warning: This gateway is locked for an overdue payment: Alibaba Cloud will refuse the "
            "deletion until the account owner tops up the account."
        )
    if op.gateway.status and op.gateway.status != "active":
        lines.append(
            f":hourglass_flowing_sand: The gateway is {code(op.gateway.status, 40)} right now; after approval "
            "the bot waits for it before deleting."
        )
    return "\n".join(lines)


def reason_line(op: Operation) -> str:
    """``*Reason:* …`` (person-typed, escaped) with its change ticket, or "" when none was given."""
    if not op.reason:
        return ""
    ticket = f" · *Ticket:* {code(op.ticket, 128)}" if op.ticket else ""
    return f"*Reason:* {code(op.reason, REASON_MAX)}{ticket}"


def denial_reason(op: Operation) -> str:
    """`` Reason: …`` for a denied request (person-typed, escaped), or "" when none was given."""
    return f" *Reason:* {code(op.cancel_reason, REASON_MAX)}" if op.cancel_reason else ""


def changes_text(changes: tuple[str, ...]) -> str:
    """What changed since the last approval, one inert line each (bot.workflow.binding.diff's lines)."""
    shown = [f"• {code(line, CHANGE_LINE_MAX)}" for line in changes[:CHANGES_SHOWN]]
    if len(changes) > CHANGES_SHOWN:
        shown.append(f"…and {len(changes) - CHANGES_SHOWN} more")
    return "\n".join(shown)


def _changed_block(op: Operation) -> list[Block]:
    if not op.preview_changes:
        return []
    text = (
        ":warning: *Changed since it was approved — nothing was deleted.* Just before the delete the "
        "bot read the connection again and it was not what had been approved, so the approval no "
        "longer counts. The preview below is the new one; *Delete* again to approve it.\n"
        + changes_text(op.preview_changes)
    )
    return [section_block(text, BlockId.CHANGED.value)]


def _rule_block(approval_rule: str) -> list[Block]:
    # Who may approve, from the settings, so nobody has to guess why a click was refused.
    return [context_block(approval_rule, BlockId.APPROVAL_RULE.value)] if approval_rule else []


def when_approved(run_at: datetime | None, windows: Sequence[Window], now: datetime, *, runs: str) -> str:
    """An open card's lines on when what it asks runs if approved now ("" for at once).

    ``runs`` is the card's subject with its verb: "it runs" (one deletion) or "they run" (a batch).
    """
    text = ""
    if run_at is not None:
        text += f"\n:calendar: Once approved, {runs} {run_time_text(run_at)}."
    starts = run_time(windows, wanted=run_at, now=now)
    if starts > max(now, run_at or now):
        shown = "; ".join(str(w) for w in windows)
        text += (
            f"\n:calendar: Outside the change window ({code(shown, 300)}): approved now, {runs} when the "
            f"window next opens, {run_time_text(starts)}, unless a second approver overrides the window."
        )
    return text


def build_confirmation(
    op: Operation,
    *,
    now: datetime | None = None,
    anyone_may_approve: bool = False,
    approval_rule: str = "",
    windows: Sequence[Window] = (),
    progress: str = "",
) -> Message:
    """The confirmation: connection details with Delete (danger, confirm dialog) and Cancel.

    ``windows`` (the account's change windows): the card says when a deletion approved now would run.

    ``now`` decides whether times need their date; it defaults to when the op last changed.
    ``anyone_may_approve`` (VPNBOT_APPROVERS=*) says so on the card, so nobody assumes a gatekeeper.
    ``approval_rule`` (bot-written mrkdwn, see bot.slack.policy.approval_rule_text) names who may approve;
    ``progress`` (bot.slack.policy.approval_progress_text) the approvals so far under a quorum rule, with
    *Withdraw my approval* once there is one.
    """
    if op.is_recreate:
        return build_recreate_confirmation(
            op, now=now, anyone_may_approve=anyone_may_approve, approval_rule=approval_rule, progress=progress
        )
    now = now or op.updated_at
    who = (
        "*Anyone who can see this message may approve* (VPNBOT_APPROVERS=*) by clicking *Delete*"
        if anyone_may_approve
        else "Someone allowed to approve clicks *Delete*"
    )
    summary = account_line(op) + (
        f"{mention(op.requester_id)} asked to delete this IPsec-VPN connection. Deleting it tears "
        f"down the tunnel: traffic between the local and remote subnets stops, and it cannot be undone.\n"
        f"{who}; *Cancel* closes the request. "
        f"It expires at {format_time(op.expires_at, now=now)} if nobody acts."
    )
    summary += when_approved(op.run_at, windows, now, runs="it runs")
    warnings = _gateway_warnings(op)
    if warnings:
        summary += "\n" + warnings
    reason = reason_line(op)
    blocks = [
        header_block(f"Delete VPN connection {op_name(op)}?"),
        section_block(summary, BlockId.SUMMARY.value),
        *_changed_block(op),
        *([section_block(reason, BlockId.REASON.value)] if reason else []),
        *build_impact_blocks(op.impact),
        _details(op),
        *approvals_block(progress),
        _actions(op, withdraw=bool(progress and op.approvals)),
        *_rule_block(approval_rule),
        _footer(op),
    ]
    text = (
        f"{mention(op.requester_id)} asks to delete VPN connection {code(op.connection.id)} "
        f"({inert_name(op.connection.name, missing='no name')}) {escape(_where(op))}: approve or cancel."
    )
    if reason:
        text += f" {reason}."
    if progress:
        text += f" {progress}."
    if op.impact is not None:
        text += f" {impact_summary(op.impact)}."
    if op.preview_changes:
        text = f"Changed since it was approved, nothing was deleted: {text}"
    return build_message(text, blocks)


_HEADERS: dict[OpState, str] = {
    OpState.SCHEDULED: "Scheduled: delete VPN connection {}",
    OpState.APPROVED: "Deleting VPN connection {}…",
    OpState.DELETING: "Deleting VPN connection {}…",
    OpState.WAITING_GATEWAY: "Deleting VPN connection {}…",
    OpState.VERIFYING: "Deleting VPN connection {}…",
    OpState.DELETED: "Deleted VPN connection {}",
    OpState.FAILED: "Could not delete VPN connection {}",
    OpState.TIMED_OUT: "Deletion of VPN connection {} timed out",
    OpState.CANCELLED: "Cancelled: delete VPN connection {}",
    OpState.EXPIRED: "Expired: delete VPN connection {}",
}


def _elapsed(op: Operation) -> float | None:
    # From the click, as the thread's "Deleted in" counts, so both show the same number.
    start = op.run_at if op.schedule_kind is not None else (op.approved_at or op.started_at)
    if start is None or op.finished_at is None:
        return None
    return (op.finished_at - start).total_seconds()


def _approved_by(op: Operation) -> str:
    """``<@U1>``, or under a quorum rule everyone who approved (``<@U1> and <@U2>``)."""
    if len(op.approvals) > 1:
        names = [mention(a.user_id) for a in op.approvals]
        return f"{', '.join(names[:-1])} and {names[-1]}"
    return mention(op.approver_id)


def _status_text(op: Operation, now: datetime) -> str:
    approved = f"Approved by {_approved_by(op)} at {format_time(op.approved_at, now=now)}"
    gateway = code(op.gateway.id or op.connection.gateway_id)
    retry_cmd = retry_command(op)
    match op.state:
        case OpState.SCHEDULED:
            return scheduled_status(op)
        case OpState.APPROVED if op.held_at is not None:
            return f":snowflake: {approved}; held by a freeze (see the thread). Nothing was sent yet."
        case OpState.APPROVED | OpState.DELETING:
            return f":hourglass_flowing_sand: {approved}, deleting…"
        case OpState.WAITING_GATEWAY:
            return (
                f":hourglass_flowing_sand: {approved}. Alibaba Cloud accepted the deletion; "
                f"waiting for gateway {gateway} to finish updating…"
            )
        case OpState.VERIFYING:
            return f":hourglass_flowing_sand: {approved}. Checking that the connection is gone…"
        case OpState.DELETED:
            elapsed = _elapsed(op)
            took = f" in {format_duration(elapsed)}" if elapsed is not None else ""
            return f":white_check_mark: {approved} and deleted{took}."
        case OpState.FAILED:
            return f":x: {approved}. {_failure_text(op)}"
        case OpState.TIMED_OUT:
            return f":warning: {approved}. {_timeout_text(op)}"
        case OpState.CANCELLED:
            when = format_time(op.finished_at or op.updated_at, now=now)
            return (
                f":no_entry_sign: Cancelled by {mention(op.cancelled_by)} at {when}. Nothing was deleted."
                f"{denial_reason(op)}"
            )
        case OpState.EXPIRED:
            return (
                f":hourglass: Expired at {format_time(op.expires_at, now=now)} without approval. Nothing was "
                f"deleted. Run {retry_cmd} again if it is still needed."
            )
        case (
            OpState.AWAITING_APPROVAL
            | OpState.LOOKING_UP
            | OpState.CREATING
            | OpState.ROUTING
            | OpState.RECREATED
        ):  # pragma: no cover - not rendered on a deletion's card
            return ""


def _console_check(op: Operation) -> str:
    return (
        f"check gateway {code(op.gateway.id or op.connection.gateway_id)} and connection "
        f"{code(op.connection.id)} in region {code(op.region, 64)}"
        f"{f' of account {code(op.account, 40)}' if op.account else ''} in the console (VPN › IPsec Connections)"
    )


def _failure_text(op: Operation) -> str:
    """Why an operation failed, and the one next step."""
    retry_cmd = retry_command(op)
    error = op.error_code or "unknown"
    if error == SCHEDULED_GONE:
        return (
            "At its scheduled time the connection no longer existed, so nothing was deleted "
            "(someone else deleted it meanwhile)."
        )
    if error == SCHEDULED_MOVED:
        return (
            "At its scheduled time the connection was on another gateway than the one approved, so "
            f"nothing was deleted. Look at it again and run {retry_cmd} if it must still go."
        )
    if error == "still_exists":
        if op.delete_request_id is None:
            return (
                "Alibaba Cloud never answered the delete, and the gateway is active again with the "
                f"connection still there: it was not deleted. Run {retry_cmd} again."
            )
        return (
            "Alibaba Cloud accepted the delete, but the gateway is active again and the connection "
            f"still exists. Check it in the console and run {retry_cmd} again; if it stays, open an "
            "Alibaba Cloud ticket quoting the RequestId."
        )
    if error.startswith("crash:"):
        return (
            f"The bot failed unexpectedly on this deletion several times (error id {code(error[6:], 20)}). "
            f"It may or may not have been deleted: {_console_check(op)}, and give the error id to the "
            "bot's administrator."
        )
    # The friendly text of a known error already says what to do; add a step only without it.
    reason = (
        safe_mrkdwn(op.error_text)
        if op.error_text
        else f"Alibaba Cloud refused it with code {code(error, 80)}. Fix the cause, then run {retry_cmd} again."
    )
    return f"The connection was not deleted. {reason}"


def _timeout_text(op: Operation) -> str:
    """What a timeout means for this operation, from how far it got."""
    if op.attempts == 0:
        return (
            f"Gave up waiting: gateway {code(op.gateway.id or op.connection.gateway_id)} stayed busy with "
            f"another deletion, so {code(op.connection.id)} was never sent for deletion and still exists. "
            f"Run {retry_command(op)} again later."
        )
    return (
        f"No confirmation that {code(op.connection.id)} is gone before the deadline; the deletion may "
        f"still finish. {_console_check(op).capitalize()}: gateway `updating` means still working, "
        "`active` means done."
    )


def closed_text(op: Operation | None, *, now: datetime | None = None) -> str:
    """Why a click on ``op``'s confirmation does nothing now (``now``: when the click came)."""
    if op is None:
        return (
            "This confirmation was not found; it may belong to another bot installation. "
            "Request the deletion again."
        )
    now = now or op.updated_at
    if op.state is OpState.CANCELLED:
        return (
            f"This request was already cancelled by {mention(op.cancelled_by)} at "
            f"{format_time(op.finished_at or op.updated_at, now=now)}. Nothing was deleted."
        )
    if op.state is OpState.EXPIRED:
        return (
            f"This confirmation expired at {format_time(op.expires_at, now=now)} without approval. Nothing was "
            "deleted; request the deletion again if it is still needed."
        )
    if op.state is OpState.SCHEDULED:
        when = run_time_text(op.run_at) if op.run_at is not None else "later"
        return (
            f"This request was already approved by {mention(op.approver_id)}; it is scheduled to run {when}. "
            "*Cancel* on the card stops it until then."
        )
    state = op.state.value.replace("_", " ")
    approved = f"approved by {mention(op.approver_id)} at {format_time(op.approved_at, now=now)}"
    work = "recreation" if op.is_recreate else "deletion"
    if op.approver_id and op.state in ACTIVE_STATES:
        return f"This request was already {approved}; the {work} is in progress — follow the thread."
    if op.approver_id:
        return f"This request is finished ({state}); it was {approved}. See the thread for the outcome."
    return f"This request is finished ({state}). See the thread for details."


def build_parent(
    op: Operation,
    *,
    now: datetime | None = None,
    anyone_may_approve: bool = False,
    approval_rule: str = "",
    windows: Sequence[Window] = (),
    progress: str = "",
) -> Message:
    """The confirmation message re-rendered for the operation's current state.

    Slack has no disabled buttons, so every state but ``awaiting_approval`` drops the actions
    block and says what happened instead. ``now`` defaults to when the op last changed.
    """
    now = now or op.updated_at
    if op.state in (OpState.AWAITING_APPROVAL, OpState.LOOKING_UP):
        return build_confirmation(
            op,
            now=now,
            anyone_may_approve=anyone_may_approve,
            approval_rule=approval_rule,
            windows=windows,
            progress=progress,
        )
    if op.is_recreate or op.state in (OpState.CREATING, OpState.ROUTING, OpState.RECREATED):
        return build_recreate_parent(op, now=now)
    status = _status_text(op, now)
    if op.state is OpState.DELETED and op.new_vco_id:
        status += "\n" + recreated_line(op)
    header = _HEADERS[op.state]
    reason = reason_line(op)
    blocks = [
        header_block(header.format(op_name(op))),
        section_block(account_line(op) + status, BlockId.STATUS.value),
        *([section_block(reason, BlockId.REASON.value)] if reason else []),
        _details(op),
        *build_impact_blocks(op.impact, later=True),
        *recreate_offer_blocks(op, now=now),
        *([scheduled_actions(op)] if op.state is OpState.SCHEDULED else []),
        _footer(op),
    ]
    # The header is plain_text (never parsed); the fallback text is mrkdwn, so the name is inert there.
    return build_message(
        f"{header.format(inert_name(op.connection.name) if op.connection.name else code(op.connection.id))}. {status}",
        blocks,
    )
