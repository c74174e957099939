"""The site decommission card: several connections, one pre-flight table, one approval, one line each.

Built from every member of the batch as the store holds them now (:func:`build_batch_card`), so
any member's card update renders the whole batch and the last one to land shows the latest state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain import ALREADY_DELETING, SCHEDULE_WINDOW, Operation, OpState
from bot.schedule import Window
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks.cards import approvals_block, reason_line, when_approved
from bot.slack.blocks.schedule import run_time_text
from bot.slack.blocks.text import (
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    Block,
    Message,
    account_line,
    build_message,
    cap,
    code,
    context_block,
    format_time,
    header_block,
    inert_name,
    mention,
    plain_object,
    safe_mrkdwn,
    section_block,
)

__all__ = ["LINES_MAX", "build_batch_card", "build_batch_looking_up"]

# One section per connection up to this many; the rest are counted in one line (50 blocks at most).
LINES_MAX = 40
_RUNNING = frozenset({OpState.DELETING, OpState.WAITING_GATEWAY, OpState.VERIFYING})
_NOT_FOUND_CODES = frozenset({"InvalidVpnConnectionInstanceId.NotFound"})


def build_batch_looking_up(count: int, gateway_id: str | None, region: str) -> Message:
    """The immediate ack of a several-connection request."""
    what = f"every connection of gateway {code(gateway_id)}" if gateway_id else f"{count} connections"
    text = f":mag: Looking up {what} in {code(region, 64)}…"
    message = build_message(text, [section_block(text)])
    message["response_type"] = "ephemeral"
    return message


def _problems(op: Operation) -> list[str]:
    """What the pre-flight check found about one member (bot-written mrkdwn, names inert)."""
    found: list[str] = []
    if op.state is OpState.FAILED and op.approved_at is None:
        # Its lookup failed: it is left out of the approval.
        if op.error_code == ALREADY_DELETING:
            found.append(":no_entry: already being deleted by another request; left out")
        elif op.error_code in _NOT_FOUND_CODES:
            found.append(
                f":no_entry: not found in {code(op.region, 64)} (gone, or in another region); left out"
            )
        elif op.error_code == "interrupted":
            found.append(":no_entry: the bot restarted during its lookup; left out")
        else:
            why = (
                safe_mrkdwn(cap(op.error_text, 300))
                if op.error_text
                else f"code {code(op.error_code or '', 80)}"
            )
            found.append(f":no_entry: could not be looked up: {why}; left out")
        return found
    impact = op.impact
    if impact is not None:
        if impact.is_up:
            found.append(":warning: tunnel up: traffic flows through it now")
        if impact.wider_attachment:
            found.append(
                f":warning: attached to {code(impact.attach_instance_id or impact.attach_type, 64)} (a wider blast radius)"
            )
        if impact.unread:
            parts = ", ".join(code(u.part, 40) for u in impact.unread)
            found.append(f":grey_question: could not read {parts}")
    if op.gateway.business_status == "FinancialLocked":
        found.append(":warning: its gateway is locked for an overdue payment")
    return found


def _facts(op: Operation) -> str:
    """Tunnel state and routes, as looked up for the pre-flight table."""
    impact = op.impact
    if impact is None:
        return ""
    if impact.tunnels:
        up = sum(t.is_up for t in impact.tunnels)
        tunnel = f"{up} of {len(impact.tunnels)} tunnels up"
    else:
        tunnel = "tunnel up" if impact.is_up else "tunnel down"
    routes = f"{impact.route_count} route{'s' if impact.route_count != 1 else ''}"
    return f"{tunnel} · {routes}"


def _outcome(op: Operation, now: datetime) -> str:
    """The member's line once the batch was approved, cancelled or expired."""
    match op.state:
        case OpState.SCHEDULED:
            return ":calendar: scheduled"
        case OpState.APPROVED:
            return ":hourglass: waiting for its gateway"
        case state if state in _RUNNING:
            return ":hourglass_flowing_sand: deleting…"
        case OpState.DELETED:
            done = ":white_check_mark: deleted"
            if op.new_vco_id:
                done += f"; recreated as {code(op.new_vco_id)}"
            return done
        case OpState.FAILED:
            why = (
                safe_mrkdwn(cap(op.error_text, 300))
                if op.error_text
                else f"code {code(op.error_code or '', 80)}"
            )
            return f":x: failed: {why}"
        case OpState.TIMED_OUT:
            return f":warning: timed out; check it in the console (request {code(op.id, 64)})"
        case OpState.CANCELLED:
            return ":no_entry_sign: not deleted (cancelled)"
        case OpState.EXPIRED:
            return ":hourglass: not deleted (expired)"
        case _:
            return ""


def _line(index: int, op: Operation, now: datetime, decided: bool) -> Block:
    head = f"*{index}.* {code(op.vco_id)} {inert_name(op.connection.name, missing='')}".rstrip()
    if op.connection.gateway_id:
        head += f" on {code(op.connection.gateway_id)}"
    lines = [head]
    facts = _facts(op)
    if facts:
        lines.append(facts)
    looked_up_failed = op.state is OpState.FAILED and op.approved_at is None
    if decided and not looked_up_failed:
        lines.append(_outcome(op, now))
    else:
        lines.extend(_problems(op))
    accessory = None
    if (
        op.state is OpState.DELETED
        and op.undo_until is not None
        and now < op.undo_until
        and not op.new_vco_id
    ):
        accessory = {
            "type": "button",
            "action_id": ActionId.RECREATE_OPEN.value,
            "text": plain_object("Recreate…", 75),
            "value": op.id,
        }
    return section_block("\n".join(lines), f"{BlockId.BATCH_LINE.value}-{index}", accessory)


def _count_line(ops: list[Operation]) -> str:
    counts = Counter(op.state for op in ops)
    words = {
        OpState.DELETED: "deleted",
        OpState.FAILED: "failed",
        OpState.TIMED_OUT: "timed out",
        OpState.SCHEDULED: "scheduled",
        OpState.APPROVED: "waiting for their gateway",
        OpState.CANCELLED: "cancelled",
        OpState.EXPIRED: "expired",
        OpState.AWAITING_APPROVAL: "awaiting approval",
    }
    running = sum(counts[s] for s in _RUNNING)
    parts = [f"{counts[s]} {w}" for s, w in words.items() if counts[s]]
    if running:
        parts.append(f"{running} deleting")
    return ", ".join(parts)


def _confirm(count: int) -> dict[str, Any]:
    return {
        "title": plain_object(f"Delete {count} connections?", CONFIRM_TITLE_MAX),
        "text": plain_object(
            f"This deletes the {count} VPN connections listed without a stop sign, one per gateway at a "
            "time. Their tunnels go down and this cannot be undone.",
            CONFIRM_TEXT_MAX,
        ),
        "confirm": plain_object("Delete them", CONFIRM_BUTTON_MAX),
        "deny": plain_object("Keep them", CONFIRM_BUTTON_MAX),
        "style": "danger",
    }


def _override_confirm(count: int) -> dict[str, Any]:
    return {
        "title": plain_object("Override the change window?", CONFIRM_TITLE_MAX),
        "text": plain_object(
            f"This starts deleting the {count} scheduled connections now, outside the change window, one "
            "per gateway at a time. It needs a second approver and is recorded in the audit.",
            CONFIRM_TEXT_MAX,
        ),
        "confirm": plain_object("Delete now", CONFIRM_BUTTON_MAX),
        "deny": plain_object("Wait for the window", CONFIRM_BUTTON_MAX),
        "style": "danger",
    }


def _scheduled_actions(batch_id: str, scheduled: list[Operation]) -> Block:
    """Cancel (all of it, until it starts), and for a batch the change window holds back, Override window."""
    elements: list[dict[str, Any]] = [
        {
            "type": "button",
            "action_id": ActionId.BATCH_CANCEL.value,
            "text": plain_object("Cancel", 75),
            "value": batch_id,
        }
    ]
    if any(op.schedule_kind == SCHEDULE_WINDOW for op in scheduled):
        elements.append(
            {
                "type": "button",
                "action_id": ActionId.BATCH_OVERRIDE_WINDOW.value,
                "text": plain_object("Override window", 75),
                "value": batch_id,
                "style": "danger",
                "confirm": _override_confirm(len(scheduled)),
            }
        )
    return {"type": "actions", "block_id": BlockId.ACTIONS.value, "elements": elements}


def _scheduled_status(lead: Operation, scheduled: list[Operation], where: str, count: int) -> str:
    """The status of a batch approved for later: who approved it, when it runs, what may still stop it."""
    first = scheduled[0]
    runs = run_time_text(first.run_at) if first.run_at is not None else "an unknown time"
    approved = (
        f"{mention(lead.requester_id)} asked to delete {count} connections {where}. "
        f"Approved by {mention(first.approver_id)}"
    )
    them = f"the {len(scheduled)} connections are" if len(scheduled) > 1 else "one connection is"
    if first.schedule_kind == SCHEDULE_WINDOW:
        account = f" of account {code(lead.account, 40)}" if lead.account else ""
        return (
            f":calendar: {approved} outside the change window{account}: {them} scheduled for its next "
            f"opening, {runs}, then deleted one per gateway at a time. *Cancel* stops all of them until "
            "then; *Override window* (another approver) starts them now."
        )
    return (
        f":calendar: {approved}: {them} scheduled for {runs}, then deleted one per gateway at a time. "
        "*Cancel* stops all of them until then."
    )


def _actions(batch_id: str, count: int, *, withdraw: bool = False) -> Block:
    return {
        "type": "actions",
        "block_id": BlockId.ACTIONS.value,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.BATCH_APPROVE.value,
                "text": plain_object(f"Delete {count}", 75),
                "value": batch_id,
                "style": "danger",
                "confirm": _confirm(count),
            },
            {
                "type": "button",
                "action_id": ActionId.BATCH_CANCEL.value,
                "text": plain_object("Cancel", 75),
                "value": batch_id,
            },
            *(
                [
                    {
                        "type": "button",
                        "action_id": ActionId.BATCH_WITHDRAW.value,
                        "text": plain_object("Withdraw my approval", 75),
                        "value": batch_id,
                    }
                ]
                if withdraw
                else []
            ),
        ],
    }


def _header(ops: list[Operation], waiting: int, decided: bool) -> str:
    n = len(ops)
    if not decided:
        return f"Delete {n} VPN connections?" if waiting else f"Could not delete {n} VPN connections"
    if any(op.state is OpState.APPROVED or op.state in _RUNNING for op in ops):
        return f"Deleting {n} VPN connections…"
    if any(op.state is OpState.SCHEDULED for op in ops):
        return f"Scheduled: delete {n} VPN connections"
    if all(op.state in (OpState.CANCELLED, OpState.EXPIRED, OpState.FAILED) for op in ops) and (
        not any(op.approved_at for op in ops) or any(op.cancelled_by for op in ops)
    ):
        closed = "Expired" if any(op.state is OpState.EXPIRED for op in ops) else "Cancelled"
        return f"{closed}: delete {n} VPN connections"
    return f"Site decommission: {_count_line(ops)}"


def build_batch_card(
    ops: list[Operation],
    *,
    now: datetime,
    anyone_may_approve: bool = False,
    approval_rule: str = "",
    windows: Sequence[Window] = (),
    progress: str = "",
) -> Message:
    """The batch's card for its members' current states (``ops`` in the order they were asked).

    ``progress`` (bot.slack.policy.approval_progress_text of a member awaiting approval): the
    approvals so far under a quorum rule, each one counting for the whole batch.

    ``windows`` (the account's change windows): an open card says when the batch, approved now, would run.
    """
    lead = ops[0]
    batch_id = lead.batch_id or lead.id
    waiting = [op for op in ops if op.state is OpState.AWAITING_APPROVAL]
    scheduled = [op for op in ops if op.state is OpState.SCHEDULED]
    decided = not waiting and any(
        op.approved_at or op.state in (OpState.CANCELLED, OpState.EXPIRED) for op in ops
    )
    blocks: list[Block] = [header_block(_header(ops, len(waiting), decided))]
    where = f"in {code(lead.region, 64)}"
    if waiting:
        who = (
            "*Anyone who can see this message may approve* (VPNBOT_APPROVERS=*) by clicking *Delete*"
            if anyone_may_approve
            else "Someone allowed to approve clicks *Delete*"
        )
        summary = account_line(lead) + (
            f"{mention(lead.requester_id)} asked to delete these {len(ops)} IPsec-VPN connections {where} "
            f"(a site decommission). One approval deletes the {len(waiting)} without a stop sign, each on "
            f"its own, one per gateway at a time; a failure of one never stops the others.\n"
            f"{who}; *Cancel* closes the whole request. It expires at "
            f"{format_time(lead.expires_at, now=now)} if nobody acts."
        )
        summary += when_approved(lead.run_at, windows, now, runs="they run")
    else:
        approver = next((op for op in ops if op.approver_id), None)
        closer = next((op for op in ops if op.cancelled_by), None)
        if scheduled:
            status = _scheduled_status(lead, scheduled, where, len(ops))
        elif closer is not None:
            status = f":no_entry_sign: Cancelled by {mention(closer.cancelled_by)}. Nothing was deleted."
            if closer.cancel_reason:
                status += f" *Reason:* {code(closer.cancel_reason, 500)}"
        elif approver is not None:
            status = (
                f"{mention(lead.requester_id)} asked to delete {len(ops)} connections {where}. Approved by "
                f"{mention(approver.approver_id)} at {format_time(approver.approved_at, now=now)}: "
                f"{_count_line(ops)}. Each connection's progress is in the thread."
            )
        elif any(op.state is OpState.EXPIRED for op in ops):
            status = (
                f":hourglass: Expired at {format_time(lead.expires_at, now=now)} without approval. "
                "Nothing was deleted."
            )
        else:
            status = f"Nothing here can be deleted: {_count_line(ops)}."
        summary = account_line(lead) + status
    blocks.append(section_block(summary, BlockId.SUMMARY.value))
    reason = reason_line(lead)
    if reason:
        blocks.append(section_block(reason, BlockId.REASON.value))
    for index, op in enumerate(ops[:LINES_MAX], 1):
        blocks.append(_line(index, op, now, decided))
    if len(ops) > LINES_MAX:
        rest = ops[LINES_MAX:]
        blocks.append(context_block(f"…and {len(rest)} more: {_count_line(rest)}.", BlockId.BATCH_MORE.value))
    if waiting:
        blocks.extend(approvals_block(progress))
        blocks.append(_actions(batch_id, len(waiting), withdraw=bool(progress and waiting[0].approvals)))
        if approval_rule:
            blocks.append(context_block(approval_rule, BlockId.APPROVAL_RULE.value))
    elif scheduled:
        blocks.append(_scheduled_actions(batch_id, scheduled))
    blocks.append(context_block(f"Batch {code(batch_id, 64)} · {len(ops)} requests", BlockId.FOOTER.value))
    if waiting:
        text = f"{mention(lead.requester_id)} asks to delete {len(ops)} VPN connections {where}: approve or cancel."
    else:
        text = f"Delete {len(ops)} VPN connections {where}: {_count_line(ops)}."
    return build_message(text, blocks)
