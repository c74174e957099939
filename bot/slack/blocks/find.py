"""Pure Block Kit builders for ``/vpn list`` and ``/vpn status``: records in, ephemeral messages out.

As in :mod:`bot.slack.blocks`: every text from a person or an API enters mrkdwn through ``code()``
(inert) and is capped, every message has a ``text`` fallback, and no secret is in the records to render.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain import ACTIVE_STATES, TERMINAL_STATES, Operation, OpState, VpnGateway
from bot.ids import is_channel_id, is_vco_id
from bot.slack.block_ids import SLASH_COMMAND, ActionId, BlockId
from bot.slack.blocks import (
    TEXT_MAX,
    cap,
    code,
    context_block,
    fit_blocks,
    format_time,
    inert_name,
    mention,
    safe_mrkdwn,
    section_block,
    subnets,
)
from bot.slack.blocks.schedule import run_time_text, utc_text
from bot.slack.inventory import ConnectionRow
from bot.slack.parsing import ListPage, RowDelete

__all__ = ["PAGE_SIZE", "build_connection_status", "build_list_page", "build_operation_status", "page_count"]

Message = dict[str, Any]
Block = dict[str, Any]

# A link from chat.getPermalink is only rendered if nothing in it can end or alter the mrkdwn link.
_SAFE_LINK_RE = re.compile(r"https://[A-Za-z0-9.-]+/[A-Za-z0-9/._?=&%-]*", re.ASCII)
PAGE_SIZE = 15
BUTTON_TEXT_MAX = 75


def page_count(total: int) -> int:
    """How many pages ``total`` rows fill (at least one, so an empty listing has a page)."""
    return max(1, -(-total // PAGE_SIZE))


def _button(label: str, action_id: ActionId, value: str) -> Block:
    return {
        "type": "button",
        "action_id": action_id.value,
        "text": {"type": "plain_text", "text": cap(label, BUTTON_TEXT_MAX), "emoji": True},
        "value": value,
    }


def _ephemeral(text: str, blocks: Sequence[Block]) -> Message:
    # A page of long names and subnet lists could pass Slack's limit; the budget cuts the longest rows.
    return {"response_type": "ephemeral", "text": cap(text, TEXT_MAX), "blocks": fit_blocks(blocks)}


def _tunnel_status(row: ConnectionRow) -> str:
    if row.tunnels:
        return " / ".join(code(t or "unknown", 40) for t in row.tunnels)
    return code(row.status or "unknown", 40)


def _row_text(row: ConnectionRow) -> str:
    name = f"{inert_name(row.name, missing='')} " if row.name and row.name.strip() else ""
    return (
        f"{name}{code(row.id)}\n"
        f"gateway {code(row.gateway_id or '—')} · tunnel {_tunnel_status(row)} · remote {subnets(row.remote_subnet)}"
    )


def _scope_text(page: ListPage) -> str:
    parts = [
        f"account {code(page.a, 40)}, region {code(page.r, 40)}" if page.a else f"region {code(page.r, 40)}"
    ]
    if page.g:
        parts.append(f"gateway {code(page.g)}")
    if page.f:
        parts.append("matching " + " ".join(code(w, 40) for w in page.f))
    return ", ".join(parts)


def build_list_page(rows: Sequence[ConnectionRow], page: ListPage, *, total: int) -> Message:
    """One page of a listing; ``rows`` are the page's rows, ``total`` the matching count."""
    scope = _scope_text(page)
    if total == 0:
        text = f"No IPsec-VPN connections in {scope}."
        return _ephemeral(text, [section_block(text, BlockId.LIST_HEADER.value)])
    pages = page_count(total)
    first = page.p * PAGE_SIZE + 1
    last = first + len(rows) - 1
    title = f"*IPsec-VPN connections in {scope}* — {first}–{last} of {total}"
    blocks: list[Block] = [section_block(title, BlockId.LIST_HEADER.value)]
    for row in rows:
        # An id the API spelled unexpectedly gets no button: its click would be refused anyway.
        delete = (
            _button("Delete…", ActionId.LIST_DELETE, RowDelete(r=page.r, v=row.id, a=page.a).to_value())
            if is_vco_id(row.id)
            else None
        )
        blocks.append(section_block(_row_text(row), accessory=delete))
    nav: list[Block] = []
    if page.p > 0:
        previous = page.model_copy(update={"p": page.p - 1}).to_value()
        nav.append(_button("Previous", ActionId.LIST_PREVIOUS, previous))
    if page.p + 1 < pages:
        following = page.model_copy(update={"p": page.p + 1}).to_value()
        nav.append(_button("Next", ActionId.LIST_NEXT, following))
    if nav:
        blocks.append({"type": "actions", "block_id": BlockId.LIST_NAV.value, "elements": nav})
    blocks.append(
        context_block(
            f"Page {page.p + 1} of {pages}. Delete… asks for the usual confirmation in this channel. "
            f"`{SLASH_COMMAND} status &lt;vco-id&gt;` shows one connection live.",
            BlockId.LIST_FOOTER.value,
        )
    )
    fallback = f"IPsec-VPN connections in {page.r}: {first}–{last} of {total} (page {page.p + 1} of {pages})"
    return _ephemeral(fallback, blocks)


def build_connection_status(
    row: ConnectionRow, gateway: VpnGateway | None, *, region: str, routes: int | None, account: str = ""
) -> Message:
    """A connection's live state: tunnels, gateway state and the routes pointing at it."""
    name = inert_name(row.name)
    gateway_state = (
        f"{code(gateway.status or 'unknown', 40)}"
        + (f" ({code(gateway.business_status, 40)})" if gateway.business_status != "Normal" else "")
        if gateway is not None
        else "unknown (DescribeVpnGateway did not answer)"
    )
    route_text = "unknown (the route tables did not answer)" if routes is None else str(routes)
    lines = [
        f"{name} {code(row.id)} in {code(region, 40)}"
        + (f", account {code(account, 40)}" if account else ""),
        f"• Tunnel status: {_tunnel_status(row)}",
        f"• Gateway {code(row.gateway_id or '—')}: {gateway_state}",
        f"• Routes with this connection as next hop: {route_text}",
        f"• Local subnets: {subnets(row.local_subnet)}",
        f"• Remote subnets: {subnets(row.remote_subnet)}",
    ]
    text = "\n".join(lines)
    fallback = (
        f"{code(row.id)} in {code(region, 40)}: tunnel {_tunnel_status(row)}, "
        f"gateway {code(gateway.status if gateway else 'unknown', 40)}"
    )
    return _ephemeral(fallback, [section_block(text, BlockId.LOOKUP.value)])


def _state_phrase(op: Operation) -> str:
    if op.state is OpState.AWAITING_APPROVAL:
        # Sent back: the connection changed since it was approved (bot.workflow.binding).
        return (
            "waiting for approval again, changed since approved"
            if op.preview_changes
            else "waiting for approval"
        )
    if op.state is OpState.SCHEDULED and op.run_at is not None:
        return f"scheduled for {utc_text(op.run_at)}"
    if op.state is OpState.APPROVED and op.held_at is not None:
        return "approved, held by a freeze (nothing sent)"
    if op.state in ACTIVE_STATES:
        return f"in progress ({op.state.value.replace('_', ' ')})"
    return op.state.value.replace("_", " ")


def build_operation_status(
    op: Operation, *, permalink: str | None, now: datetime, progress: str = ""
) -> Message:
    """An operation's state, who asked and who decided, its times and a link to its thread.

    ``progress``: a quorum's approvals so far (bot.slack.policy.approval_progress_text; "" without a rule).
    """
    lines = [
        f"*Request {code(op.id, 64)}*: {_state_phrase(op)}",
        f"• {'Recreation of deleted connection' if op.is_recreate else 'Connection'} "
        f"{code(op.connection.id)} in {code(op.region, 40)}"
        + (f", account {code(op.account, 40)}" if op.account else ""),
        f"• Requested by {mention(op.requester_id)} at {format_time(op.created_at, now=now)}",
    ]
    if op.batch_id:
        lines.append(f"• One of a batch of deletions requested together (batch {code(op.batch_id, 64)})")
    if op.new_vco_id:
        lines.append(f"• {'New connection' if op.is_recreate else 'Recreated as'} {code(op.new_vco_id)}")
    if op.approver_id:
        lines.append(f"• Approved by {mention(op.approver_id)} at {format_time(op.approved_at, now=now)}")
    if op.cancelled_by:
        lines.append(f"• Cancelled by {mention(op.cancelled_by)}")
    if op.state is OpState.AWAITING_APPROVAL:
        if progress:
            lines.append(f"• {progress}")
        lines.append(f"• The confirmation expires at {format_time(op.expires_at, now=now)}")
    if op.state is OpState.SCHEDULED and op.run_at is not None:
        lines.append(f"• Runs {run_time_text(op.run_at)}; *Cancel* on its card stops it until then")
    if op.state in TERMINAL_STATES and op.finished_at is not None:
        lines.append(f"• Finished at {format_time(op.finished_at, now=now)}")
    if op.error_text:
        lines.append(f"• {safe_mrkdwn(cap(op.error_text, 300))}")
    if permalink and _SAFE_LINK_RE.fullmatch(permalink):
        lines.append(f"<{permalink.replace('&', '&amp;')}|Open the thread>")
    elif is_channel_id(op.channel_id):
        lines.append(f"Posted in <#{op.channel_id}>.")
    fallback = f"Request {op.id}: {_state_phrase(op)} ({op.connection.id} in {op.region})"
    return _ephemeral(fallback, [section_block("\n".join(lines), BlockId.LOOKUP.value)])
