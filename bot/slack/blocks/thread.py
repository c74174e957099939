"""Thread replies for the workflow's events and outcomes, and the replies through the response_url."""

from __future__ import annotations

from bot.domain import (
    KIND_RECREATE,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    Accepted,
    Announced,
    ChangedSinceApproval,
    ConnectionReady,
    Crashed,
    Created,
    Deferred,
    Deleted,
    Denied,
    Escalated,
    Expired,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Held,
    KeyLost,
    LookupFailed,
    PostFailed,
    Progress,
    Queued,
    Recreated,
    Reminded,
    Resumed,
    Retrying,
    Scheduled,
    SnapshotTaken,
    Starting,
    StillExists,
    TimedOut,
    Unanswered,
)
from bot.ids import is_user_group_id, is_user_id
from bot.slack.blocks.cards import changes_text
from bot.slack.blocks.ephemeral import build_refusal, explain_slack_error
from bot.slack.blocks.freeze import held_text
from bot.slack.blocks.recreate import recreate_progress
from bot.slack.blocks.schedule import scheduled_progress
from bot.slack.blocks.snapshot import build_snapshot_reply, snapshot_summary
from bot.slack.blocks.text import Message, cap, code, escape, format_duration, mention, safe_mrkdwn
from bot.workflow.binding import short

# Mentioned at most this many approvers in a reminder (the setting may list more).
_REMIND_MAX = 10


def _principal(slack_id: str) -> str:
    """A user (``<@U…>``) or user-group (``<!subteam^S…>``) mention; anything else escaped."""
    if is_user_group_id(slack_id):
        return f"<!subteam^{slack_id}>"
    if is_user_id(slack_id):
        return f"<@{slack_id}>"
    return escape(cap(slack_id, 40))


def _reminder(waited_s: float, approvers: tuple[str, ...], approvals: int = 0, needed: int = 0) -> str:
    asked = f"This request has waited {format_duration(waited_s)} for a decision"
    if needed:
        # Under a quorum rule: how far it got (the card names who approved; not pinged again here).
        left = needed - approvals
        asked += (
            f" ({approvals} of {needed} approvals so far, {left} more needed)"
            if approvals
            else f" ({needed} approvals needed)"
        )
    if not approvers:
        return f":bell: {asked}: anyone who can see it may approve or cancel it."
    who = ", ".join(_principal(a) for a in approvers[:_REMIND_MAX])
    more = f" (and {len(approvers) - _REMIND_MAX} more)" if len(approvers) > _REMIND_MAX else ""
    return f":bell: {who}{more}: {asked[0].lower()}{asked[1:]}. Please approve or cancel it."


# --- thread replies ----------------------------------------------------------------------------


def build_progress(event: Progress) -> str:
    """The thread reply (mrkdwn) for one progress event or outcome."""
    match event:
        case Accepted(request_id=request_id, account=account) if account:
            return (
                f"Request accepted by Alibaba Cloud in account {code(account, 40)}, in a role session named "
                f"after the approver (RequestId {code(request_id, 80)})."
            )
        case Accepted(request_id=request_id):
            return f"Request accepted by Alibaba Cloud (RequestId {code(request_id, 80)})."
        case GatewayUpdating(gateway_id=gateway_id):
            return f"Gateway {code(gateway_id)} is updating…"
        case GatewayActive(gateway_id=gateway_id):
            return f"Gateway {code(gateway_id)} is `active` again; checking that the connection is gone…"
        case Retrying(reason=reason, delay_s=delay, attempt=attempt, max_attempts=most, code=err_code):
            why = safe_mrkdwn(cap(reason, 500)) if reason else "A temporary error"
            suffix = f" (code {code(err_code, 80)})" if err_code else ""
            return f"{why.rstrip('.')}; sending again in {format_duration(delay)} (attempt {attempt} of {most}){suffix}."
        case Unanswered(code=err_code):
            return (
                f"Alibaba Cloud gave no usable answer to the delete (code {code(err_code, 80)}); it may have "
                "been carried out. Watching the gateway and checking whether the connection is gone…"
            )
        case Queued(blocking_vco_id=other):
            return f"Waiting for {code(other)} on the same gateway to finish."
        case Held():
            return held_text(event)
        case Deferred(driving=driving):
            return (
                f"Approved; waiting to start. This bot instance is already carrying out {driving} "
                "operations, as many as it runs at once: this one starts as soon as one of them ends, "
                "here or on another instance with room."
            )
        case Resumed(instance=instance, fresh=True):
            return f"Started by bot instance {code(instance, 80)}."
        case Resumed(instance=instance):
            return f"Picked up again by bot instance {code(instance, 80)} after a restart; continuing."
        case Deleted(elapsed_s=elapsed):
            # The parent says who approved; the thread adds the final check.
            return f":white_check_mark: Deleted in {format_duration(elapsed)}: Alibaba Cloud no longer finds the connection."
        case Failed(code=err_code) if err_code == SCHEDULED_GONE:
            return ":x: Not run: at the scheduled time the connection no longer existed. Nothing was deleted."
        case Failed(code=err_code) if err_code == SCHEDULED_MOVED:
            return (
                ":x: Not run: at the scheduled time the connection was on another gateway than the one "
                "approved. Nothing was deleted."
            )
        case Failed(code=err_code, request_id=request_id):
            # The parent carries the explanation and the next step; the thread keeps the facts.
            rid = f", RequestId {code(request_id, 80)}" if request_id else ""
            return f":x: Stopped (code {code(err_code or 'unknown', 80)}{rid})."
        case StillExists(status=status, request_id=request_id, unanswered=unanswered):
            said = "never answered the delete" if unanswered else "accepted the delete"
            rid = f" (RequestId {code(request_id, 80)})" if request_id else ""
            return (
                f":x: Alibaba Cloud {said}, but the connection still exists (status {code(status, 80)}){rid}."
            )
        case TimedOut(phase=phase, waited_s=waited, sent=sent, request_id=request_id, change=kind):
            rid = f" RequestId {code(request_id, 80)}." if request_id else ""
            change = "create" if kind == KIND_RECREATE else "delete"
            what = f"the {change} may still finish" if sent else f"the {change} was never sent"
            return f":warning: Timed out after {format_duration(waited)} in {code(phase, 40)}: {what}.{rid}"
        case Crashed(error_id=error_id):
            return f":x: Stopped after repeated unexpected errors (error id {code(error_id, 20)})."
        case SnapshotTaken(snapshot=snapshot):
            return snapshot_summary(snapshot)
        case Created() | ConnectionReady() | Recreated() | KeyLost():
            return recreate_progress(event)
        case LookupFailed() | PostFailed():
            return str(build_respond(event)["text"])
        case Denied(by=by, reason=reason):
            why = f" Reason: {code(reason, 500)}" if reason else ""
            return f":no_entry_sign: Denied by {mention(by)}. Nothing was changed.{why}"
        case Expired():
            return ":hourglass: Expired without approval. Nothing was changed."
        case Reminded(waited_s=waited, approvers=approvers, approvals=approvals, needed=needed):
            return _reminder(waited, approvers, approvals, needed)
        case Escalated(group=group, left_s=left):
            return (
                f":rotating_light: {_principal(group)}: this request is still unanswered and expires in "
                f"{format_duration(left)}. Please approve or cancel it."
            )
        case Announced(action=action):
            # The audit channel's line (bot/slack/blocks/audit_line.py), never a thread reply.
            return f"Recorded: {code(action, 64)}."
        case Scheduled() | Starting():
            return scheduled_progress(event)
        case ChangedSinceApproval(changes=changes, approver_id=approver, fingerprint=new_print):
            who = f" since {mention(approver)} approved it" if approver else " since it was approved"
            return (
                f":warning: Not deleted: the connection changed{who}, so that approval no longer counts. "
                f"The card shows the new preview ({code(short(new_print), 16)}) and asks for approval "
                f"again; nothing was sent to Alibaba Cloud.\n{changes_text(changes)}"
            )


def build_thread_reply(event: Progress) -> Message:
    """The thread reply as a message: text alone, or with blocks for the configuration snapshot."""
    if isinstance(event, SnapshotTaken):
        return build_snapshot_reply(event.snapshot)
    return {"text": build_progress(event)}


def build_respond(event: Progress) -> Message:
    """The ephemeral reply to the requester for an outcome told through the response_url."""
    match event:
        case LookupFailed(code="interrupted"):
            text = "The bot restarted while looking the connection up, too late to continue. Nothing was changed; run the command again."
        case LookupFailed(reason=reason, code=err_code):
            text = (
                safe_mrkdwn(cap(reason, 2000))
                if reason
                else f"The lookup failed (code {code(err_code, 80)})."
            )
        case PostFailed(error=error):
            text = explain_slack_error(error)
        case _:
            text = build_progress(event)
    return build_refusal(text)
