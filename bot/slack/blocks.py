"""Pure Block Kit builders: domain records in, message dicts out. No I/O, no clients.

Every message has a ``text`` fallback (notifications, screen readers). Every string that came
from a user or from an API is escaped for mrkdwn (``& < >``), so a connection named
``<!channel>`` cannot ping anyone, and every text is capped to Slack's limits. Pre-shared keys
and BGP AuthKeys are not in the domain records, and raw API bodies are never rendered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.domain import (
    ACTIVE_STATES,
    PART_CONNECTION,
    PART_POLICY_ROUTES,
    PART_ROUTES,
    Accepted,
    AuditEntry,
    Crashed,
    Deleted,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Impact,
    ImpactBgp,
    ImpactRoute,
    ImpactTunnel,
    LookupFailed,
    Operation,
    OpState,
    PostFailed,
    Progress,
    Queued,
    Resumed,
    Retrying,
    StillExists,
    TimedOut,
    Unanswered,
)
from bot.ids import CHANNEL_BODY, USER_BODY, USERGROUP_BODY, is_user_id
from bot.slack import codes as slack_codes
from bot.slack.ids import SLASH_COMMAND, ActionId, BlockId

__all__ = [
    "CONFIRM_TEXT_MAX",
    "CONFIRM_TITLE_MAX",
    "FIELD_MAX",
    "HEADER_MAX",
    "SECTION_MAX",
    "USAGE_LINE",
    "USAGE_TEXT",
    "build_confirmation",
    "build_history",
    "build_impact_blocks",
    "build_looking_up",
    "build_parent",
    "build_progress",
    "build_refusal",
    "build_respond",
    "build_unexpected_error",
    "build_usage",
    "cap",
    "closed_text",
    "code",
    "escape",
    "explain_slack_error",
    "format_duration",
    "format_time",
    "impact_summary",
    "safe_mrkdwn",
]

Message = dict[str, Any]
Block = dict[str, Any]

# Slack's limits (Block Kit reference; slack_sdk.models.blocks).
SECTION_MAX = 3000
FIELD_MAX = 2000
HEADER_MAX = 150
CONTEXT_MAX = 2000
TEXT_MAX = 3000  # our own cap for the fallback ``text``; Slack truncates at 40k
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
CONFIRM_BUTTON_MAX = 30
BLOCKS_MAX = 50
# Routes listed on the card; past that it says "and N more".
ROUTES_SHOWN = 20

# Tokens the bot itself writes into "trusted" texts (policy refusals, workflow reasons): user,
# user-group and channel mentions, and entities that are already escaped. Nothing else survives.
_SAFE_TOKEN_RE = re.compile(
    rf"<@(?:{USER_BODY})>|<!subteam\^(?:{USERGROUP_BODY})>|<#(?:{CHANNEL_BODY})>|&(?:amp|lt|gt);",
    re.ASCII,
)
# A cut that ends inside an entity or a mention would render as garbage; trim back to before it.
_DANGLING_RE = re.compile(r"(&[a-z]{0,4}|<[^>]{0,40})$", re.ASCII)

# One placeholder for the connection id everywhere (manifest usage hint, README, replies).
# "<" is escaped: Slack would read <vco-id> as a link even inside a code span.
USAGE_LINE = f"{SLASH_COMMAND} delete &lt;vco-id&gt; [region]"
USAGE_TEXT = (
    "*Usage*\n"
    f"• `{USAGE_LINE}` shows the VPN connection and asks an approver to delete it.\n"
    f"• `{SLASH_COMMAND} list [region] [gateway-id] [words]` lists the region's connections, only to you; "
    "words narrow by name or id.\n"
    f"• `{SLASH_COMMAND} status &lt;vco-id | request-id&gt; [region]` shows a connection's live state or a "
    "request's progress, only to you.\n"
    f"• `{SLASH_COMMAND} history [count]` shows the last actions (1–50, default 10).\n"
    f"• `{SLASH_COMMAND} help` shows this help.\n"
    f"`&lt;vco-id&gt;` is the connection's id, such as `vco-bp1abc2def3gh`. The region, such as "
    f"`cn-hangzhou`, may also be written `--region cn-hangzhou`; without it the bot's default "
    f"region is used."
)


# --- text helpers ------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape ``& < >`` so Slack shows the text literally (no links, mentions or pings)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_mrkdwn(text: str) -> str:
    """Escape a bot-written text but keep its user, user-group and channel mentions."""
    out: list[str] = []
    pos = 0
    for match in _SAFE_TOKEN_RE.finditer(text):
        out.append(escape(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def cap(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending with "…" if it was cut."""
    if len(text) <= limit:
        return text
    cut = _DANGLING_RE.sub("", text[: limit - 1])
    return cut + "…"


def code(text: str, limit: int = 100) -> str:
    """Render an id as inline code, escaped and bounded (a backtick would end the span)."""
    inner = escape(cap(text.replace("`", "'"), limit))
    return f"`{inner}`"


def mention(user_id: str | None) -> str:
    """``<@U…>`` for a Slack user id; anything else is shown escaped, never as markup."""
    if not user_id:
        return "someone"
    if is_user_id(user_id):
        return f"<@{user_id}>"
    return escape(cap(user_id, 80))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(at: datetime | None, *, now: datetime) -> str:
    """``HH:MM UTC`` on the day of ``now``, else ``YYYY-MM-DD HH:MM UTC``; naive times are UTC."""
    if at is None:
        return "an unknown time"
    at = _utc(at)
    if at.date() == _utc(now).date():
        return at.strftime("%H:%M UTC")
    return at.strftime("%Y-%m-%d %H:%M UTC")


def format_duration(seconds: float) -> str:
    """``12 s``, ``2.5 s``, ``1 min 12 s``, ``3 min``, ``1 h 5 min``."""
    seconds = max(0.0, seconds)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(total, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": cap(text or " ", limit), "emoji": True}


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cap(text or " ", limit)}


def _section(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text, SECTION_MAX)}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [_mrkdwn(text, CONTEXT_MAX)]}
    if block_id:
        block["block_id"] = block_id
    return block


def _header(text: str) -> Block:
    # plain_text never parses mentions, so a name here cannot ping; it is only capped.
    return {"type": "header", "block_id": BlockId.HEADER.value, "text": _plain(text, HEADER_MAX)}


def _message(text: str, blocks: Sequence[Block]) -> Message:
    return {"text": cap(text, TEXT_MAX), "blocks": list(blocks)[:BLOCKS_MAX]}


def _subnets(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return ", ".join(escape(p) for p in parts) if parts else "—"


def _name(op: Operation) -> str:
    return op.connection.name or op.connection.id


# --- the confirmation and its later states -----------------------------------------------------


def _details(op: Operation) -> Block:
    conn, gw = op.connection, op.gateway
    conn_name = escape(conn.name) if conn.name else "_(no name)_"
    gw_name = escape(gw.name) if gw.name else "_(no name)_"
    # The states were looked up for the confirmation; once it is decided they are history.
    when = "" if op.state is OpState.AWAITING_APPROVAL else " at request time"
    fields = [
        f"*Connection*\n{code(conn.id)}\n{conn_name}",
        f"*Gateway*\n{code(gw.id or conn.gateway_id)} {gw_name}\nstate{when}: {code(gw.status or 'unknown', 40)}",
        f"*Connection status{when}*\n{code(conn.status or 'unknown', 40)}",
        f"*Customer gateway*\n{code(conn.customer_gateway_id) if conn.customer_gateway_id else '—'}",
        f"*Local subnets*\n{_subnets(conn.local_subnet)}",
        f"*Remote subnets*\n{_subnets(conn.remote_subnet)}",
        f"*Region*\n{code(op.region, 64)}",
        f"*Requested by*\n{mention(op.requester_id)}",
    ]
    return {
        "type": "section",
        "block_id": BlockId.DETAILS.value,
        "fields": [_mrkdwn(f, FIELD_MAX) for f in fields],
    }


def _confirm_dialog(op: Operation) -> dict[str, Any]:
    name = op.connection.name or "(no name)"
    return {
        "title": _plain(f"Delete {op.connection.id}?", CONFIRM_TITLE_MAX),
        "text": _plain(
            f"This deletes VPN connection {cap(name, 80)} ({op.connection.id}) on gateway "
            f"{op.gateway.id or op.connection.gateway_id}. The tunnel goes down and this cannot be undone.",
            CONFIRM_TEXT_MAX,
        ),
        "confirm": _plain("Delete connection", CONFIRM_BUTTON_MAX),
        "deny": _plain("Keep it", CONFIRM_BUTTON_MAX),
        "style": "danger",
    }


def _actions(op: Operation) -> Block:
    return {
        "type": "actions",
        "block_id": BlockId.ACTIONS.value,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.APPROVE.value,
                "text": _plain("Delete", 75),
                "value": op.id,
                "style": "danger",
                "confirm": _confirm_dialog(op),
            },
            {
                "type": "button",
                "action_id": ActionId.CANCEL.value,
                "text": _plain("Cancel", 75),
                "value": op.id,
            },
        ],
    }


def _footer(op: Operation) -> Block:
    parts = [f"Request {code(op.id, 64)}"]
    if op.delete_request_id:
        parts.append(f"Alibaba Cloud RequestId {code(op.delete_request_id, 80)}")
    return _context(" · ".join(parts), BlockId.FOOTER.value)


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


# --- the impact preview ---------------------------------------------------------------------------


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _routes_unread(impact: Impact) -> bool:
    return impact.unread_part(PART_ROUTES) is not None or impact.unread_part(PART_POLICY_ROUTES) is not None


def _peer_asns(impact: Impact) -> list[int]:
    peers = [impact.bgp] if impact.bgp is not None else []
    peers += [t.bgp for t in impact.tunnels if t.bgp is not None]
    return list(dict.fromkeys(p.peer_asn for p in peers if p.enabled and p.peer_asn is not None))


def impact_summary(impact: Impact) -> str:
    """The one-line risk summary, e.g. "Tunnel up · 3 routes go through it · BGP peer 65010"."""
    parts: list[str] = []
    if impact.unread_part(PART_CONNECTION) is not None:
        parts.append("Tunnel state unknown")
    elif impact.tunnels:
        up = sum(t.is_up for t in impact.tunnels)
        parts.append(f"{up} of {len(impact.tunnels)} tunnels up")
    else:
        parts.append("Tunnel up" if impact.is_up else "Tunnel down")
    n = impact.route_count
    if _routes_unread(impact):
        parts.append(
            f"at least {_plural(n, 'route', 'routes')} (some could not be read)" if n else "routes unknown"
        )
    else:
        parts.append(f"{_plural(n, 'route goes', 'routes go')} through it" if n else "no routes through it")
    peers = _peer_asns(impact)
    if peers:
        parts.append("BGP peer " + ", ".join(str(p) for p in peers))
    if impact.wider_attachment:
        parts.append(f"attached to {impact.attach_type or 'a transit router'}")
    return " · ".join(parts)


def _bgp_text(bgp: ImpactBgp) -> str:
    if not bgp.enabled:
        return "off"
    parts = ["on"]
    if bgp.local_asn is not None:
        parts.append(f"local ASN {bgp.local_asn}")
    if bgp.peer_asn is not None:
        parts.append(f"peer ASN {bgp.peer_asn}")
    if bgp.peer_ip:
        parts.append(f"peer IP {code(bgp.peer_ip, 64)}")
    if bgp.status:
        parts.append(f"status {code(bgp.status, 40)}")
    return " · ".join(parts)


def _tunnel_text(tunnel: ImpactTunnel) -> str:
    mark = ":large_green_circle:" if tunnel.is_up else ":white_circle:"
    label = f"Tunnel {tunnel.index}" if tunnel.index is not None else "Tunnel"
    parts = [f"{mark} {label}", f"role {code(tunnel.role or 'unknown', 40)}"]
    parts.append(f"state {code(tunnel.state or 'unknown', 40)}")
    parts.append(f"status {code(tunnel.status or 'unknown', 60)}")
    if tunnel.bgp is not None:
        parts.append(f"BGP {_bgp_text(tunnel.bgp)}")
    return " · ".join(parts)


def _unread_text(part: str, impact: Impact) -> str | None:
    unread = impact.unread_part(part)
    if unread is None:
        return None
    why = f"Alibaba Cloud code {code(unread.code, 80)}" if unread.code else escape(cap(unread.reason, 200))
    return f":grey_question: {escape(part[:1].upper() + part[1:])}: could not be read ({why})"


def _traffic_lines(impact: Impact) -> list[str]:
    if impact.is_up:
        lines = [
            ":large_green_circle: *The tunnel is up (IPsec established): traffic may be flowing through it "
            "right now.*"
        ]
    else:
        lines = [f":white_circle: The tunnel is not up ({code(impact.status or 'unknown', 60)})."]
    lines += [_tunnel_text(t) for t in impact.tunnels]
    if impact.bgp is not None:
        lines.append(f"*BGP:* {_bgp_text(impact.bgp)}")
    if impact.health_check is not None:
        target = f", probing {code(impact.health_check_ip, 64)}" if impact.health_check_ip else ""
        lines.append(f"*Health check:* {'on' + target if impact.health_check else 'off'}")
    return lines


def _impact_block(impact: Impact, *, later: bool) -> Block:
    when = " (at request time)" if later else ""
    lines = [f":rotating_light: *{impact_summary(impact)}*{when}"]
    unread = _unread_text(PART_CONNECTION, impact)
    lines += [unread] if unread else _traffic_lines(impact)
    if impact.wider_attachment:
        target = f" {code(impact.attach_instance_id)}" if impact.attach_instance_id else ""
        lines.append(
            f":warning: It is attached to {code(impact.attach_type or 'a transit router', 40)}{target}: "
            "deleting it also cuts what reaches it through that attachment, not just one tunnel."
        )
    return _section("\n".join(lines), BlockId.IMPACT.value)


def _route_line(route: ImpactRoute) -> str:
    if route.kind == "policy":
        return f"• {code(route.destination, 64)} from {code(route.source, 64)} (policy-based)"
    kind = "BGP-learned" if route.kind == "bgp" else "destination-based"
    return f"• {code(route.destination, 64)} ({kind})"


def _routes_block(impact: Impact, *, later: bool) -> Block:
    when = " at request time" if later else ""
    shown = impact.routes[:ROUTES_SHOWN]
    if impact.route_count:
        lines = [f"*Routes through it{when}* ({impact.route_count}):"]
        lines += [_route_line(r) for r in shown]
        if impact.route_count > len(shown):
            lines.append(f"…and {impact.route_count - len(shown)} more")
    elif not _routes_unread(impact):
        lines = [f"*Routes through it{when}:* none on the gateway"]
    else:
        lines = [f"*Routes through it{when}:*"]
    lines += [t for t in (_unread_text(p, impact) for p in (PART_ROUTES, PART_POLICY_ROUTES)) if t]
    return _section("\n".join(lines), BlockId.ROUTES.value)


def build_impact_blocks(impact: Impact | None, *, later: bool = False) -> list[Block]:
    """The preview's blocks: risk summary, tunnels, BGP, health check, attachment, then the routes."""
    if impact is None:
        return []
    return [_impact_block(impact, later=later), _routes_block(impact, later=later)]


def build_confirmation(
    op: Operation, *, now: datetime | None = None, anyone_may_approve: bool = False
) -> Message:
    """The confirmation: connection details with Delete (danger, confirm dialog) and Cancel.

    ``now`` decides whether times need their date; it defaults to when the op last changed.
    ``anyone_may_approve`` (VPNBOT_APPROVERS=*) says so on the card, so nobody assumes a gatekeeper.
    """
    now = now or op.updated_at
    who = (
        "*Anyone who can see this message may approve* (VPNBOT_APPROVERS=*) by clicking *Delete*"
        if anyone_may_approve
        else "Someone allowed to approve clicks *Delete*"
    )
    summary = (
        f"{mention(op.requester_id)} asked to delete this IPsec-VPN connection. Deleting it tears "
        f"down the tunnel: traffic between the local and remote subnets stops, and it cannot be undone.\n"
        f"{who}; *Cancel* closes the request. "
        f"It expires at {format_time(op.expires_at, now=now)} if nobody acts."
    )
    warnings = _gateway_warnings(op)
    if warnings:
        summary += "\n" + warnings
    blocks = [
        _header(f"Delete VPN connection {_name(op)}?"),
        _section(summary, BlockId.SUMMARY.value),
        *build_impact_blocks(op.impact),
        _details(op),
        _actions(op),
        _footer(op),
    ]
    text = (
        f"{mention(op.requester_id)} asks to delete VPN connection {escape(op.connection.id)} "
        f"({escape(op.connection.name or 'no name')}) in {escape(op.region)}: approve or cancel."
    )
    if op.impact is not None:
        text += f" {impact_summary(op.impact)}."
    return _message(text, blocks)


_HEADERS: dict[OpState, str] = {
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
    start = op.approved_at or op.started_at
    if start is None or op.finished_at is None:
        return None
    return (op.finished_at - start).total_seconds()


def _status_text(op: Operation, now: datetime) -> str:
    approved = f"Approved by {mention(op.approver_id)} at {format_time(op.approved_at, now=now)}"
    gateway = code(op.gateway.id or op.connection.gateway_id)
    retry_cmd = code(f"{SLASH_COMMAND} delete {op.connection.id} {op.region}", 200)
    match op.state:
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
            return f":no_entry_sign: Cancelled by {mention(op.cancelled_by)} at {when}. Nothing was deleted."
        case OpState.EXPIRED:
            return (
                f":hourglass: Expired at {format_time(op.expires_at, now=now)} without approval. Nothing was "
                f"deleted. Run {retry_cmd} again if it is still needed."
            )
        case OpState.AWAITING_APPROVAL | OpState.LOOKING_UP:  # pragma: no cover - not rendered as a card
            return ""


def _console_check(op: Operation) -> str:
    return (
        f"check gateway {code(op.gateway.id or op.connection.gateway_id)} and connection "
        f"{code(op.connection.id)} in region {code(op.region, 64)} in the console (VPN › IPsec Connections)"
    )


def _failure_text(op: Operation) -> str:
    """Why an operation failed, and the one next step."""
    retry_cmd = code(f"{SLASH_COMMAND} delete {op.connection.id} {op.region}", 200)
    error = op.error_code or "unknown"
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
            f"Run {code(f'{SLASH_COMMAND} delete {op.connection.id} {op.region}', 200)} again later."
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
    state = op.state.value.replace("_", " ")
    approved = f"approved by {mention(op.approver_id)} at {format_time(op.approved_at, now=now)}"
    if op.approver_id and op.state in ACTIVE_STATES:
        return f"This request was already {approved}; the deletion is in progress — follow the thread."
    if op.approver_id:
        return f"This request is finished ({state}); it was {approved}. See the thread for the outcome."
    return f"This request is finished ({state}). See the thread for details."


def build_parent(op: Operation, *, now: datetime | None = None, anyone_may_approve: bool = False) -> Message:
    """The confirmation message re-rendered for the operation's current state.

    Slack has no disabled buttons, so every state but ``awaiting_approval`` drops the actions
    block and says what happened instead. ``now`` defaults to when the op last changed.
    """
    now = now or op.updated_at
    if op.state in (OpState.AWAITING_APPROVAL, OpState.LOOKING_UP):
        return build_confirmation(op, now=now, anyone_may_approve=anyone_may_approve)
    status = _status_text(op, now)
    header = _HEADERS[op.state].format(_name(op))
    blocks = [
        _header(header),
        _section(status, BlockId.STATUS.value),
        _details(op),
        *build_impact_blocks(op.impact, later=True),
        _footer(op),
    ]
    # The header is plain_text (never parsed); the fallback text is mrkdwn, so escape it there.
    return _message(f"{escape(header)}. {status}", blocks)


# --- thread replies ----------------------------------------------------------------------------


def build_progress(event: Progress) -> str:
    """The thread reply (mrkdwn) for one progress event or outcome."""
    match event:
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
        case Resumed(instance=instance):
            return f"Picked up again by bot instance {code(instance, 80)} after a restart; continuing."
        case Deleted(elapsed_s=elapsed):
            # The parent says who approved; the thread adds the final check.
            return f":white_check_mark: Deleted in {format_duration(elapsed)}: Alibaba Cloud no longer finds the connection."
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
        case TimedOut(phase=phase, waited_s=waited, sent=sent, request_id=request_id):
            rid = f" RequestId {code(request_id, 80)}." if request_id else ""
            what = "the delete may still finish" if sent else "the delete was never sent"
            return f":warning: Timed out after {format_duration(waited)} in {code(phase, 40)}: {what}.{rid}"
        case Crashed(error_id=error_id):
            return f":x: Stopped after repeated unexpected errors (error id {code(error_id, 20)})."
        case LookupFailed() | PostFailed():
            return str(build_respond(event)["text"])


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


# --- ephemeral replies ---------------------------------------------------------------------------


def _ephemeral(text: str, blocks: Sequence[Block]) -> Message:
    message = _message(text, blocks)
    message["response_type"] = "ephemeral"
    return message


def build_usage(error: str | None = None) -> Message:
    """Help text, optionally after a one-line explanation of what was wrong (bot-written mrkdwn)."""
    blocks: list[Block] = []
    if error:
        error = safe_mrkdwn(error)
        blocks.append(_section(f":warning: {error}", BlockId.REFUSAL.value))
    blocks.append(_section(USAGE_TEXT, BlockId.USAGE.value))
    text = f"{error} Usage: {USAGE_LINE}" if error else USAGE_TEXT
    return _ephemeral(text, blocks)


def build_looking_up(vco_id: str, region: str) -> Message:
    """The immediate ack for a delete request."""
    text = f":mag: Looking up {code(vco_id)} in region {code(region, 64)}…"
    return _ephemeral(text, [_section(text)])


def build_busy(vco_id: str, region: str) -> Message:
    """The ack when the bot has too much in flight: nothing was started, try again."""
    text = (
        ":hourglass: I'm working through a lot of requests right now, so I did not start this one; "
        f"nothing was looked up or deleted. Run `{SLASH_COMMAND} delete {escape(vco_id)} {escape(region)}` again "
        "in a minute."
    )
    return _ephemeral(text, [_section(text)])


def build_refusal(text: str) -> Message:
    """An ephemeral refusal or error; ``text`` is bot-written mrkdwn (mentions kept, rest escaped)."""
    body = f":no_entry: {safe_mrkdwn(text)}"
    return _ephemeral(body, [_section(body, BlockId.REFUSAL.value)])


def build_unexpected_error(error_id: str, *, nothing_deleted: bool) -> Message:
    """The reply for a bug: an error id to quote, never a traceback."""
    if nothing_deleted:
        tail = (
            "Nothing was deleted. Try again; if it keeps failing, give the error id to the bot administrator."
        )
    else:
        tail = "The request's message shows its real state; give the error id to the bot administrator."
    body = f":warning: Something went wrong on our side (error id {code(error_id, 16)}). {tail}"
    return _ephemeral(body, [_section(body, BlockId.REFUSAL.value)])


def explain_slack_error(error: str) -> str:
    """What a Slack error means when posting the confirmation, and what to do (from the table)."""
    return f"{slack_codes.lookup(error).text} Nothing was deleted."


# --- history -----------------------------------------------------------------------------------


def _history_line(entry: AuditEntry, now: datetime) -> str:
    parts = [
        code(format_time(entry.at, now=now), 40),
        mention(entry.actor_id),
        f"*{escape(cap(entry.action, 40))}*",
    ]
    if entry.vco_id:
        parts.append(code(entry.vco_id))
    if entry.region:
        parts.append(code(entry.region, 64))
    detail = safe_mrkdwn(cap(entry.detail, 200))
    if detail:
        # Details are bot-written (refusals, error texts): keep their mentions, escape the rest.
        parts.append(detail)
    if entry.request_id and entry.request_id not in detail:
        parts.append(f"(RequestId {code(entry.request_id, 80)})")
    return " ".join(parts)


def _chunks(lines: Iterable[str], limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit and current:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return [cap(c, limit) for c in chunks]


def build_history(entries: Sequence[AuditEntry], *, now: datetime) -> Message:
    """The last audit entries, newest first as given, as an ephemeral list."""
    if not entries:
        text = "No VPN deletions recorded yet."
        return _ephemeral(text, [_section(text, BlockId.HISTORY.value)])
    title = f"*Last {len(entries)} action{'s' if len(entries) != 1 else ''}*"
    lines = [_history_line(e, now) for e in entries]
    blocks = [_section(title, BlockId.HISTORY.value)]
    blocks += [_section(chunk) for chunk in _chunks(lines, SECTION_MAX)][: BLOCKS_MAX - 1]
    return _ephemeral(f"Last {len(entries)} VPN bot actions", blocks)
