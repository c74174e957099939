"""Recreate: the deleted card's offer, the modal that asks for the key, the recreation's card and replies.

No key ever reaches these builders: the modal only has an empty input for the pre-shared key, and
the records rendered here (Operation, Snapshot, RouteResult) hold none. What Recreate cannot put
back (:attr:`bot.domain.Snapshot.not_carried`) is listed in the modal before anyone types a key,
and again in the thread once it is done.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain import (
    CUSTOMER_GATEWAY_GONE,
    GATEWAY_GONE,
    ConnectionReady,
    Created,
    KeyLost,
    NotCarried,
    Operation,
    OpState,
    Recreated,
    RouteResult,
    Snapshot,
    SnapshotRoute,
)
from bot.errors import RecreateRefused
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.blocks.text import (
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    FIELD_MAX,
    SECTION_MAX,
    Block,
    Message,
    account_line,
    build_message,
    cap,
    code,
    context_block,
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

__all__ = [
    "PSK_MAX",
    "build_recreate_confirmation",
    "build_recreate_modal",
    "build_recreate_parent",
    "not_carried_lines",
    "recreate_offer_blocks",
    "recreate_progress",
    "recreate_refused_text",
    "recreated_line",
]

View = dict[str, Any]
MODAL_TITLE_MAX = 24
PSK_MAX = 100  # Alibaba: Psk is 1-100 characters
ROUTES_LISTED = 20

# The modal's field errors (plain text under the field; never quoting what was typed).
FOREIGN_FORM = "That form did not come from this bot, or it was changed on the way; click Recreate… again."
PSK_MISSING = "Type the pre-shared key the remote side uses."
PSK_TOO_LONG = f"Too long: a pre-shared key has at most {PSK_MAX} characters."
PSK_CHARS = 'Only letters, digits and ~!`@#$%^&*()_-+={}[]\\|;:",.<>/? are allowed, without spaces.'
BGP_AUTH_NOTE = (
    "*BGP authentication* is not asked for: CreateVpnConnection takes no BGP key. The key (if the "
    "session had one) is set on the customer gateway, which deleting the connection left in place, "
    "so the new connection's BGP session uses it as before."
)


# --- on the deleted card ---------------------------------------------------------------------------


def recreate_offer_blocks(op: Operation, *, now: datetime) -> list[Block]:
    """The deleted card's Recreate… button while its window is open; nothing after it closes."""
    if op.undo_until is None or now >= op.undo_until or op.new_vco_id:
        return []
    note = (
        f"Deleted by mistake? *Recreate…* rebuilds it from the configuration snapshot in the thread, "
        f"with a new pre-shared key and the same approval, until {format_time(op.undo_until, now=now)}."
    )
    return [
        section_block(note, BlockId.RECREATE.value),
        {
            "type": "actions",
            "block_id": BlockId.ACTIONS.value,
            "elements": [
                {
                    "type": "button",
                    "action_id": ActionId.RECREATE_OPEN.value,
                    "text": plain_object("Recreate…", 75),
                    "value": op.id,
                }
            ],
        },
    ]


def recreated_line(op: Operation) -> str:
    """The deleted card's line once it was recreated."""
    return f":recycle: Recreated as {code(op.new_vco_id or '')} — see the thread."


def recreate_refused_text(err: RecreateRefused, *, now: datetime) -> str:
    """Why Recreate… does nothing now (a click, or a submitted modal)."""
    parent, other = err.parent, err.other
    match err.reason:
        case "off":
            return "Recreate is turned off on this bot (VPNBOT_UNDO_WINDOW_SECONDS=0). Nothing was changed."
        case "window_closed" if parent is not None:
            return (
                "The time to recreate this connection from the bot has passed (the window is "
                "VPNBOT_UNDO_WINDOW_SECONDS after the deletion). Nothing was changed; the configuration "
                "is still in the thread if you need to rebuild it by hand."
            )
        case "recreated":
            new = other.new_vco_id if other is not None else (parent.new_vco_id if parent else None)
            return f"This connection was already recreated as {code(new or 'unknown')}. Nothing was changed."
        case "in_progress" if other is not None:
            if other.state is OpState.AWAITING_APPROVAL:
                return (
                    f"{mention(other.requester_id)} already asked to recreate it; that confirmation waits "
                    "for approval in the thread. Nothing was changed."
                )
            return "A recreation of this connection is already under way — follow the thread. Nothing was changed."
        case "no_snapshot":
            return (
                "The bot could not take this connection's configuration before deleting it, so it cannot "
                "recreate it. Nothing was changed."
            )
        case _:
            return "Only a deleted connection can be recreated. Nothing was changed."


# --- the modal -------------------------------------------------------------------------------------


def _route_line(route: SnapshotRoute) -> str:
    # Recreated unpublished as it was: said, so nobody expects it in the VPC's route table.
    unpublished = ", not published to the VPC" if route.published is False else ""
    match route.kind:
        case "policy":
            return (
                f"• {code(route.destination, 60)} from {code(route.source, 60)} (policy-based{unpublished})"
            )
        case "bgp":
            return f"• {code(route.destination, 60)} (BGP-learned: learned again once BGP is up, not created)"
        case _:
            return f"• {code(route.destination, 60)} (destination-based{unpublished})"


def _route_lines(routes: Sequence[SnapshotRoute]) -> str:
    lines = [_route_line(r) for r in routes[:ROUTES_LISTED]]
    if len(routes) > ROUTES_LISTED:
        lines.append(f"… and {len(routes) - ROUTES_LISTED} more")
    return "\n".join(lines)


def _has_bgp(snapshot: Snapshot) -> bool:
    config = snapshot.config or {}
    return bool(config.get("bgp_config")) or bool(config.get("enable_tunnels_bgp"))


def _what(snapshot: Snapshot) -> str:
    config = snapshot.config or {}
    tunnels = config.get("tunnel_options_specification") or []
    ike = config.get("ike_config") or {}
    lines = [
        f"*Name* {inert_name(str(config.get('name') or snapshot.name or ''))}",
        f"*Gateway* {code(snapshot.gateway_id)}",
        f"*Customer gateway* {code(snapshot.customer_gateway_id) if snapshot.customer_gateway_id else '—'}",
        f"*Local subnets* {subnets(snapshot.local_subnet)}",
        f"*Remote subnets* {subnets(snapshot.remote_subnet)}",
    ]
    if tunnels:
        lines.append(f"*Tunnels* {len(tunnels)} (the same pre-shared key is set on each)")
    elif ike:
        lines.append(
            f"*IKE* {code(str(ike.get('ike_version', '')), 40)} {code(str(ike.get('ike_enc_alg', '')), 40)}"
        )
    lines.append(f"*BGP* {'on' if _has_bgp(snapshot) else 'off'}")
    return "\n".join(lines)


def not_carried_lines(lost: Sequence[NotCarried]) -> list[str]:
    """One mrkdwn line per thing Recreate cannot put back, saying why and what to do instead."""
    lines: list[str] = []
    for item in lost:
        values = ", ".join(code(v, 80) for v in item.values[:10])
        if len(item.values) > 10:
            values += f" and {len(item.values) - 10} more"
        match item.part:
            case "resource_group":
                lines.append(
                    f"• *Resource group* {values}: CreateVpnConnection takes none, so the new connection "
                    "goes to the account's default resource group (nothing lost if that is this one; "
                    "else move it in the console)."
                )
            case "health_check_policy":
                lines.append(
                    f"• *Health check policy* {values} (whether published routes are withdrawn when the "
                    "check fails): CreateVpnConnection's HealthCheckConfig has no policy, so Alibaba's "
                    "default applies; set it in the console if it differs."
                )
            case "reserved_tags":
                lines.append(
                    f"• *Tags* {values}: keys starting with `aliyun` or `acs:` are Alibaba's own; Create refuses them."
                )
            case "tags_over_limit":
                lines.append(
                    f"• *Tags* {values}: Create takes 20 tags, and one goes to the bot's "
                    "`vpnbot-operation` tag (how it finds the new connection after a restart)."
                )
            case "route_descriptions":
                lines.append(
                    "• *Route descriptions*: Alibaba's route listings do not return them, so the routes "
                    "come back without descriptions."
                )
            case _:  # pragma: no cover - every part is listed above
                lines.append(f"• {code(item.part, 80)} {values}")
    return lines


def build_recreate_modal(op: Operation) -> View:
    """The modal Recreate… opens: what will be created, what will not come back, and an empty key input."""
    snapshot = op.snapshot or Snapshot(vco_id=op.vco_id, region=op.region)
    routes = snapshot.routes
    intro = (
        f"This asks for approval to create a new IPsec-VPN connection like the deleted "
        f"{code(op.vco_id)} in {f'account {code(op.account, 40)}, region ' if op.account else ''}"
        f"{code(op.region, 64)}, then put its {len(routes)} "
        f"route{'s' if len(routes) != 1 else ''} back on it, each published to the VPC as it was "
        "(Alibaba adds no route of its own: the create says AutoConfigRoute=false):"
    )
    blocks: list[Block] = [section_block(intro), section_block(_what(snapshot))]
    if routes:
        blocks.append(section_block(_route_lines(routes), BlockId.RECREATE_ROUTES.value))
    if _has_bgp(snapshot):
        blocks.append(section_block(BGP_AUTH_NOTE))
    lost = not_carried_lines(snapshot.not_carried)
    if lost:
        text = "*Not carried over* — the API has no way to recreate these:\n" + "\n".join(lost)
        blocks.append(section_block(cap(text, SECTION_MAX), BlockId.RECREATE_NOT_CARRIED.value))
    blocks.append(
        {
            "type": "input",
            "block_id": BlockId.RECREATE_PSK.value,
            "label": plain_object("New pre-shared key", 2000),
            "hint": plain_object(
                '1-100 characters, no spaces: letters, digits and ~!`@#$%^&*()_-+={}[]\\|;:",.<>/? '
                "Use the key the remote side is configured with.",
                2000,
            ),
            "element": {
                "type": "plain_text_input",
                "action_id": ActionId.RECREATE_PSK.value,
                "max_length": PSK_MAX,
            },
        }
    )
    blocks.append(
        context_block(
            "Alibaba Cloud never gives the old key back in a form the bot keeps, so it is asked again. "
            "The bot keeps it only in memory until the create is sent — never in its database, logs or "
            "Slack. If the bot restarts before that, the thread asks for it again."
        )
    )
    return {
        "type": "modal",
        "callback_id": CallbackId.RECREATE.value,
        "private_metadata": op.id,
        "title": plain_object("Recreate connection", MODAL_TITLE_MAX),
        "submit": plain_object("Ask for approval", MODAL_TITLE_MAX),
        "close": plain_object("Cancel", MODAL_TITLE_MAX),
        "blocks": blocks,
    }


# --- the recreation's confirmation and its later states ----------------------------------------------


def _details(op: Operation) -> Block:
    conn = op.connection
    fields = [
        f"*Deleted connection*\n{code(conn.id)}\n{inert_name(conn.name, missing='_(no name)_')}",
        f"*Gateway*\n{code(op.gateway.id or conn.gateway_id)}",
        f"*New connection*\n{code(op.new_vco_id) if op.new_vco_id else '— (not created yet)'}",
        f"*Customer gateway*\n{code(conn.customer_gateway_id) if conn.customer_gateway_id else '—'}",
        f"*Local subnets*\n{subnets(conn.local_subnet)}",
        f"*Remote subnets*\n{subnets(conn.remote_subnet)}",
        # With several accounts, the account comes with the region: it is recreated where it was.
        *([f"*Account*\n{code(op.account, 40)}"] if op.account else []),
        f"*Region*\n{code(op.region, 64)}",
        f"*Requested by*\n{mention(op.requester_id)}",
    ]
    return {
        "type": "section",
        "block_id": BlockId.DETAILS.value,
        "fields": [mrkdwn_object(f, FIELD_MAX) for f in fields],
    }


def _routes_block(op: Operation) -> list[Block]:
    routes = op.snapshot.routes if op.snapshot else ()
    if not routes:
        return [section_block("*Routes to put back:* none pointed at it.", BlockId.RECREATE_ROUTES.value)]
    text = f"*Routes to put back* ({len(routes)}):\n{_route_lines(routes)}"
    return [section_block(cap(text, SECTION_MAX), BlockId.RECREATE_ROUTES.value)]


def _footer(op: Operation) -> Block:
    parts = [f"Request {code(op.id, 64)}"]
    if op.delete_request_id:
        parts.append(f"Alibaba Cloud RequestId {code(op.delete_request_id, 80)}")
    return context_block(" · ".join(parts), BlockId.FOOTER.value)


def build_recreate_confirmation(
    op: Operation,
    *,
    now: datetime | None = None,
    anyone_may_approve: bool = False,
    approval_rule: str = "",
    progress: str = "",
) -> Message:
    """The recreation's confirmation, posted in the deleted card's thread: Recreate and Cancel.

    ``approval_rule`` and ``progress`` as for :func:`bot.slack.blocks.cards.build_confirmation`.
    """
    now = now or op.updated_at
    who = (
        "*Anyone who can see this message may approve* (VPNBOT_APPROVERS=*) by clicking *Recreate*"
        if anyone_may_approve
        else "Someone allowed to approve clicks *Recreate*"
    )
    summary = account_line(op) + (
        f"{mention(op.requester_id)} asked to recreate the deleted VPN connection {code(op.vco_id)} from "
        f"its configuration snapshot, with the new pre-shared key they gave (held in the bot's memory only).\n"
        f"{who}; *Cancel* closes the request. It expires at {format_time(op.expires_at, now=now)} if "
        "nobody acts."
    )
    name = op.connection.name or "(no name)"
    actions: Block = {
        "type": "actions",
        "block_id": BlockId.ACTIONS.value,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.APPROVE.value,
                "text": plain_object("Recreate", 75),
                "value": op.id,
                "style": "primary",
                "confirm": {
                    "title": plain_object("Recreate the connection?", CONFIRM_TITLE_MAX),
                    "text": plain_object(
                        f"This creates a new VPN connection {cap(name, 80)} on gateway "
                        f"{op.gateway.id or op.connection.gateway_id}"
                        f"{f' in account {op.account}' if op.account else ''} and puts its routes back on it.",
                        CONFIRM_TEXT_MAX,
                    ),
                    "confirm": plain_object("Recreate", CONFIRM_BUTTON_MAX),
                    "deny": plain_object("Not now", CONFIRM_BUTTON_MAX),
                },
            },
            {
                "type": "button",
                "action_id": ActionId.CANCEL.value,
                "text": plain_object("Cancel", 75),
                "value": op.id,
            },
            *(
                [
                    {
                        "type": "button",
                        "action_id": ActionId.WITHDRAW.value,
                        "text": plain_object("Withdraw my approval", 75),
                        "value": op.id,
                    }
                ]
                if progress and op.approvals
                else []
            ),
        ],
    }
    blocks = [
        header_block(f"Recreate VPN connection {op_name(op)}?"),
        section_block(summary, BlockId.SUMMARY.value),
        _details(op),
        *_routes_block(op),
        *([section_block(progress, BlockId.APPROVALS.value)] if progress else []),
        actions,
        *([context_block(approval_rule, BlockId.APPROVAL_RULE.value)] if approval_rule else []),
        _footer(op),
    ]
    text = (
        f"{mention(op.requester_id)} asks to recreate VPN connection {code(op.vco_id)} "
        f"({inert_name(op.connection.name)}) in {code(op.region, 64)}: approve or cancel."
    )
    return build_message(text, blocks)


_HEADERS: dict[OpState, str] = {
    OpState.APPROVED: "Recreating VPN connection {}…",
    OpState.CREATING: "Recreating VPN connection {}…",
    OpState.WAITING_GATEWAY: "Recreating VPN connection {}…",
    OpState.ROUTING: "Recreating VPN connection {}…",
    OpState.RECREATED: "Recreated VPN connection {}",
    OpState.FAILED: "Could not recreate VPN connection {}",
    OpState.TIMED_OUT: "Recreation of VPN connection {} timed out",
    OpState.CANCELLED: "Cancelled: recreate VPN connection {}",
    OpState.EXPIRED: "Expired: recreate VPN connection {}",
}


def _routes_summary(results: Sequence[RouteResult]) -> str:
    created = [r for r in results if r.ok and r.code != "bgp"]
    wanted = [r for r in results if r.code != "bgp"]
    if not wanted:
        return "No routes to put back."
    text = f"{len(created)} of {len(wanted)} route{'s' if len(wanted) != 1 else ''} back on it."
    failed = [r for r in results if not r.ok]
    if failed:
        text += " Not recreated:\n" + "\n".join(_failed_line(r) for r in failed[:ROUTES_LISTED])
    return text


def _failed_line(r: RouteResult) -> str:
    src = f" from {code(r.source, 60)}" if r.source else ""
    why = safe_mrkdwn(cap(r.reason, 300)) if r.reason else "no answer before the deadline"
    return f"• {code(r.destination, 60)}{src}: {why.rstrip('.')} (code {code(r.code or 'unknown', 80)})"


def _status(op: Operation, now: datetime) -> str:
    approved = f"Approved by {mention(op.approver_id)} at {format_time(op.approved_at, now=now)}"
    gateway = code(op.gateway.id or op.connection.gateway_id)
    match op.state:
        case OpState.APPROVED if op.held_at is not None:
            return f":snowflake: {approved}; held by a freeze (see the thread). Nothing was sent yet."
        case OpState.APPROVED | OpState.CREATING:
            return f":hourglass_flowing_sand: {approved}, creating the connection…"
        case OpState.WAITING_GATEWAY:
            return (
                f":hourglass_flowing_sand: {approved}. Alibaba Cloud is creating {code(op.new_vco_id or '')}; "
                f"waiting for gateway {gateway}…"
            )
        case OpState.ROUTING:
            return f":hourglass_flowing_sand: {approved}. {code(op.new_vco_id or '')} exists; putting the routes back…"
        case OpState.RECREATED:
            start = op.approved_at or op.started_at
            took = (
                f" in {format_duration((op.finished_at - start).total_seconds())}"
                if start and op.finished_at
                else ""
            )
            return (
                f":white_check_mark: {approved} and recreated{took} as {code(op.new_vco_id or '')}. "
                f"{_routes_summary(op.route_results)}"
            )
        case OpState.FAILED:
            return f":x: {approved}. {_failure(op)}"
        case OpState.TIMED_OUT:
            if op.new_vco_id:
                return (
                    f":warning: {approved}. {code(op.new_vco_id)} was created, but not every route was put back "
                    f"before the deadline; check gateway {gateway} in the console (VPN › IPsec Connections)."
                )
            return (
                f":warning: {approved}. No confirmation that the connection was created before the deadline; "
                f"check gateway {gateway} in the console before asking again."
            )
        case OpState.CANCELLED:
            when = format_time(op.finished_at or op.updated_at, now=now)
            return f":no_entry_sign: Cancelled by {mention(op.cancelled_by)} at {when}. Nothing was created."
        case OpState.EXPIRED:
            return (
                f":hourglass: Expired at {format_time(op.expires_at, now=now)} without approval. Nothing was "
                "created; click *Recreate…* on the card above to ask again."
            )
        case _:  # pragma: no cover - not rendered as a card
            return ""


def _failure(op: Operation) -> str:
    if op.error_code == GATEWAY_GONE:
        return (
            f"Gateway {code(op.gateway_id)} is gone or being deleted: checked again just before "
            "CreateVpnConnection, it could no longer take the connection, so nothing was sent and nothing "
            "was created. A connection is recreated on its own gateway only."
        )
    if op.error_code == CUSTOMER_GATEWAY_GONE:
        # The stored reason names the gone ones (the workflow's text); only the snapshot's ids are shown.
        said = set(re.split(r"[\s,()]+", op.error_text or ""))
        ids = [i for i in (op.snapshot.customer_gateway_ids if op.snapshot is not None else ()) if i in said]
        named = ", ".join(code(i) for i in ids) or "it uses"
        return (
            f"The customer gateway {named} is gone: checked again just before CreateVpnConnection, it no "
            "longer exists, so nothing was sent and nothing was created. A connection is recreated with its "
            "own customer gateway only: create the connection again by hand in the console."
        )
    if op.error_code == "key_lost":
        return (
            "The bot restarted before the new connection was created, and the key lives only in its "
            "memory: nothing was created. Click *Recreate…* on the card above and give the key again."
        )
    if op.error_code and op.error_code.startswith("crash:"):
        return (
            f"The bot failed unexpectedly several times (error id {code(op.error_code[6:], 20)}); check the "
            f"gateway {code(op.gateway_id)} in the console before asking again."
        )
    reason = (
        safe_mrkdwn(op.error_text)
        if op.error_text
        else f"Alibaba Cloud refused it with code {code(op.error_code or 'unknown', 80)}."
    )
    return f"The connection was not recreated. {reason}"


def build_recreate_parent(op: Operation, *, now: datetime | None = None) -> Message:
    """The recreation's confirmation re-rendered for its current state (no buttons once decided)."""
    now = now or op.updated_at
    status = _status(op, now)
    header = _HEADERS[op.state]
    blocks = [
        header_block(header.format(op_name(op))),
        section_block(account_line(op) + status, BlockId.STATUS.value),
        _details(op),
        _footer(op),
    ]
    shown = inert_name(op.connection.name) if op.connection.name else code(op.connection.id)
    return build_message(f"{header.format(shown)}. {status}", blocks)


# --- thread replies --------------------------------------------------------------------------------


def recreate_progress(event: Created | ConnectionReady | Recreated | KeyLost) -> str:
    """The thread reply (mrkdwn) for a recreation's event."""
    match event:
        case Created(new_vco_id=new, found=True):
            return (
                f"After the restart, found the connection the create had already made: {code(new)}; "
                "carrying on with it (nothing was sent again)."
            )
        case Created(new_vco_id=new, request_id=request_id):
            rid = f" (RequestId {code(request_id, 80)})" if request_id else ""
            return f"Alibaba Cloud accepted the create{rid}: the new connection is {code(new)}."
        case ConnectionReady(gateway_id=gw, new_vco_id=new, routes=0):
            return f"Gateway {code(gw)} is `active` again and {code(new)} exists. No routes to put back."
        case ConnectionReady(gateway_id=gw, new_vco_id=new, routes=n):
            return (
                f"Gateway {code(gw)} is `active` again and {code(new)} exists. Putting {n} "
                f"route{'s' if n != 1 else ''} back on it, one at a time…"
            )
        case Recreated(new_vco_id=new, elapsed_s=elapsed, routes=routes, not_carried=lost):
            text = (
                f":white_check_mark: Recreated in {format_duration(elapsed)} as {code(new)}. "
                f"{_routes_summary(routes)}"
            )
            if lost:
                text += "\nNot carried over (the API has no way to):\n" + "\n".join(not_carried_lines(lost))
            return text
        case KeyLost(sent=True):
            return (
                ":x: The bot restarted after sending the create, and no connection it made is on the gateway: "
                "nothing was created. Keys live only in the bot's memory, so click *Recreate…* on the card "
                "above and give the key again."
            )
        case KeyLost():
            return (
                ":x: The bot restarted before it sent the create, and keys live only in its memory: nothing "
                "was created. Click *Recreate…* on the card above and give the key again."
            )
