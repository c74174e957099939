"""Modals and the Home tab: the ``/vpn delete`` picker and the per-person overview.

Every view here passes slack_sdk's own ``View(...).validate_json()`` (see tests/slack/test_views.py).
Connection names come from the cloud (up to 128 characters at Alibaba) and are cut to Slack's
75-character option text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.domain import ACTIVE_STATES, REASON_MAX, Freeze, Operation, OpState
from bot.ids import is_channel_id
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.blocks.freeze import home_freeze_blocks
from bot.slack.blocks.schedule import run_time_text
from bot.slack.blocks.text import (
    SECTION_MAX,
    cap,
    code,
    context_block,
    format_time,
    header_block,
    inert_name,
    mention,
    plain_object,
    section_block,
)
from bot.slack.inventory import ConnectionRow

__all__ = [
    "HOME_SECTION_MAX",
    "OPTIONS_MAX",
    "build_cancel_modal",
    "build_connection_options",
    "build_home",
    "build_picker",
    "picker_metadata",
]

View = dict[str, Any]
OPTION_TEXT_MAX = 75  # Slack's limit on an option's text
OPTIONS_MAX = 100  # Slack shows at most 100 options per select
MODAL_TITLE_MAX = 24


def picker_metadata(*, channel_id: str, region: str, account: str = "") -> str:
    """The ``private_metadata`` of the picker: where the command came from, its first region (and account)."""
    meta = {"c": channel_id, "r": region} | ({"a": account} if account else {})
    return json.dumps(meta, separators=(",", ":"))


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": plain_object(text, OPTION_TEXT_MAX), "value": value}


def _account_select(accounts: Sequence[str], account: str) -> list[dict[str, Any]]:
    """With several accounts: which one, the chosen (or the channel's default) first."""
    if not accounts:
        return []
    shown = list(dict.fromkeys([account, *accounts] if account else accounts))[:OPTIONS_MAX]
    options = [_option(a, a) for a in shown]
    return [
        {
            "type": "input",
            "block_id": BlockId.PICK_ACCOUNT.value,
            "label": plain_object("Alibaba Cloud account", 2000),
            "hint": plain_object("The connection search looks in this account.", 2000),
            "element": {
                "type": "static_select",
                "action_id": ActionId.PICK_ACCOUNT.value,
                "options": options,
                "initial_option": options[0],
            },
        }
    ]


def _more_connections(max_batch: int) -> list[dict[str, Any]]:
    """Site decommission: up to ``max_batch - 1`` more connections, asked on one card with one approval."""
    if max_batch < 2:
        return []
    return [
        {
            "type": "input",
            "block_id": BlockId.PICK_MORE.value,
            "optional": True,
            "label": plain_object("More connections (one request, one approval)", 2000),
            "hint": plain_object(
                f"Closing a site? Add up to {max_batch - 1} more of the region's connections: one card lists them "
                "all and one approval deletes each, one per gateway at a time.",
                2000,
            ),
            "element": {
                "type": "multi_external_select",
                "action_id": ActionId.PICK_MORE.value,
                "placeholder": plain_object("Search by name or id", 150),
                "min_query_length": 0,
                "max_selected_items": max_batch - 1,
            },
        }
    ]


def build_picker(
    *,
    regions: Collection[str],
    region: str,
    channel_id: str,
    accounts: Sequence[str] = (),
    account: str = "",
    reason: str | None = None,
    reason_hint: str = "",
    max_schedule_days: float = 14.0,
    max_batch: int = 1,
) -> View:
    """The modal ``/vpn delete`` opens without an id: a region select, a connection search, a reason
    and an optional run time (a datetimepicker, in the person's own time zone; at most
    ``max_schedule_days`` ahead).

    ``accounts`` (those the channel may use, with several) adds an account select, ``account`` first.
    ``reason`` (from ``reason=…``) fills the reason field; ``reason_hint`` states the reason rules.
    """
    shown = list(dict.fromkeys([region, *sorted(regions)]))[:OPTIONS_MAX]
    region_options = [_option(r, r) for r in shown]
    first = account or (accounts[0] if accounts else "")
    return {
        "type": "modal",
        "callback_id": CallbackId.PICKER.value,
        "private_metadata": picker_metadata(channel_id=channel_id, region=region, account=first),
        "title": plain_object("Delete a VPN connection", MODAL_TITLE_MAX),
        "submit": plain_object("Ask for approval", MODAL_TITLE_MAX),
        "close": plain_object("Cancel", MODAL_TITLE_MAX),
        "blocks": [
            *_account_select(accounts, first),
            {
                "type": "input",
                "block_id": BlockId.PICK_REGION.value,
                "label": plain_object("Region", 2000),
                "element": {
                    "type": "static_select",
                    "action_id": ActionId.PICK_REGION.value,
                    "options": region_options,
                    "initial_option": region_options[0],
                },
            },
            {
                "type": "input",
                "block_id": BlockId.PICK_CONNECTION.value,
                "label": plain_object("Connection", 2000),
                "hint": plain_object("Type part of its name or id, e.g. office or vco-bp1.", 2000),
                "element": {
                    "type": "external_select",
                    "action_id": ActionId.PICK_CONNECTION.value,
                    "placeholder": plain_object("Search by name or id", 150),
                    "min_query_length": 0,
                },
            },
            *_more_connections(max_batch),
            _reason_input(
                BlockId.PICK_REASON,
                ActionId.PICK_REASON,
                label="Reason",
                hint=reason_hint or "Why it is deleted; shown on the card and in the audit trail.",
                initial=reason,
            ),
            {
                "type": "input",
                "block_id": BlockId.PICK_RUN_AT.value,
                "optional": True,
                "label": plain_object("When (optional)", 2000),
                "hint": plain_object(
                    "Leave empty to delete it once approved. A time (yours, at most "
                    f"{max_schedule_days:g} days ahead) deletes it then; Cancel stops it until then.",
                    2000,
                ),
                "element": {"type": "datetimepicker", "action_id": ActionId.PICK_RUN_AT.value},
            },
        ],
    }


def _reason_input(
    block: BlockId, action: ActionId, *, label: str, hint: str, initial: str | None = None
) -> dict[str, Any]:
    """An optional multi-line text field for a reason (its rules are checked on submit)."""
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": action.value,
        "multiline": True,
        "max_length": REASON_MAX,
        "placeholder": plain_object("e.g. CHG-1234: the branch office closed", 150),
    }
    if initial:
        element["initial_value"] = initial[:REASON_MAX]
    return {
        "type": "input",
        "block_id": block.value,
        "optional": True,
        "label": plain_object(label, 2000),
        "hint": plain_object(hint, 2000),
        "element": element,
    }


def build_cancel_modal(
    *, op_id: str, channel_id: str, message_ts: str, vco_id: str, batch_count: int | None = None
) -> View:
    """The modal Cancel opens: an optional reason for denying the request, then Deny.

    ``batch_count``: a site decommission's Cancel (``op_id`` is then the batch's id): it closes them all.
    """
    meta: dict[str, Any] = {"o": op_id, "c": channel_id, "t": message_ts}
    what = vco_id
    if batch_count is not None:
        meta["b"] = 1
        what = f"these {batch_count} connections"
    return {
        "type": "modal",
        "callback_id": CallbackId.CANCEL.value,
        "private_metadata": json.dumps(meta, separators=(",", ":")),
        "title": plain_object("Deny this deletion", MODAL_TITLE_MAX),
        "submit": plain_object("Deny", MODAL_TITLE_MAX),
        "close": plain_object("Back", MODAL_TITLE_MAX),
        "blocks": [
            {
                "type": "section",
                "text": plain_object(f"Nothing is deleted: the request to delete {what} is closed.", 3000),
            },
            _reason_input(
                BlockId.CANCEL_REASON,
                ActionId.CANCEL_REASON,
                label="Reason (optional)",
                hint="Shown on the card, sent to the requester and kept in the audit trail.",
            ),
        ],
    }


def _label(row: ConnectionRow) -> str:
    # The id is what identifies it; the name is cut so the id always shows.
    room = OPTION_TEXT_MAX - len(row.id) - 3
    return f"{cap(row.name, room)} · {row.id}" if row.name and room > 4 else row.id


def build_connection_options(rows: Sequence[ConnectionRow]) -> dict[str, Any]:
    """The options answering a block_suggestion: at most 100 matching connections."""
    return {"options": [_option(_label(row), row.id) for row in rows[:OPTIONS_MAX]]}


# --- the Home tab ----------------------------------------------------------------------------------

HOME_SECTION_MAX = 20  # operations shown per heading (a Home view holds at most 100 blocks)
_SAFE_LINK_RE = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?/[A-Za-z0-9/._~?=%&#+-]*")


def _phrase(op: Operation, progress: str = "") -> str:
    if op.state is OpState.AWAITING_APPROVAL:
        # Sent back: the connection changed since it was approved (bot.workflow.binding).
        waiting = (
            "waiting for approval again, changed since approved"
            if op.preview_changes
            else "waiting for approval"
        )
        return f"{waiting} ({progress})" if progress else waiting
    if op.state is OpState.SCHEDULED and op.run_at is not None:
        return f"scheduled for {run_time_text(op.run_at)}"
    if op.state is OpState.APPROVED and op.held_at is not None:
        return "approved, held by a freeze (nothing sent)"
    if op.state in ACTIVE_STATES:
        return f"in progress ({op.state.value.replace('_', ' ')})"
    return op.state.value.replace("_", " ")


def _where(op: Operation, link: str | None) -> str:
    if link and _SAFE_LINK_RE.fullmatch(link):
        return f"<{link.replace('&', '&amp;')}|thread>"
    return f"in <#{op.channel_id}>" if is_channel_id(op.channel_id) else ""


def _home_line(op: Operation, link: str | None, now: datetime, progress: str = "") -> str:
    name = inert_name(op.connection.name, missing="")
    what = f"{name} {code(op.connection.id)}" if name else code(op.connection.id)
    if op.is_recreate:
        what = f"Recreate {what}" + (f" as {code(op.new_vco_id)}" if op.new_vco_id else "")
    if op.batch_id:
        what += " (one of a batch)"
    when = format_time(op.finished_at or op.created_at, now=now)
    where = f"{code(op.account, 40)} / {code(op.region, 40)}" if op.account else code(op.region, 40)
    line = (
        f"{what} in {where}: {_phrase(op, progress)}, asked by {mention(op.requester_id)} {when} {_where(op, link)}"
    ).strip()
    if op.reason:
        # Person-typed: escaped, and short enough to keep the line readable.
        ticket = f" · {code(op.ticket, 128)}" if op.ticket else ""
        line += f"\n_Reason:_ {code(op.reason, 200)}{ticket}"
    return line


def _home_part(
    title: str,
    block_id: str,
    ops: Sequence[Operation],
    links: Mapping[str, str],
    now: datetime,
    empty: str,
    progress: Mapping[str, str],
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [section_block(f"*{title}*", block_id)]
    if not ops:
        return [*blocks, context_block(empty)]
    shown = ops[:HOME_SECTION_MAX]
    blocks += [
        section_block(cap(_home_line(op, links.get(op.id), now, progress.get(op.id, "")), SECTION_MAX))
        for op in shown
    ]
    if len(ops) > len(shown):
        blocks.append(
            context_block(f"…and {len(ops) - len(shown)} more. `/vpn history` shows the audit trail.")
        )
    return blocks


def build_home(
    *,
    pending: Sequence[Operation] | None,
    running: Sequence[Operation],
    finished: Sequence[Operation],
    links: Mapping[str, str],
    now: datetime,
    refused: str | None = None,
    freezes: Sequence[Freeze] = (),
    progress: Mapping[str, str] | None = None,
) -> View:
    """The Home tab: confirmations waiting for this person (None: they may not approve), work in flight, the last finished.

    ``progress``: op id -> a quorum's approvals so far (``1 of 2 approvals``), for those awaiting approval.
    """
    progress = progress or {}
    blocks: list[dict[str, Any]] = [header_block("VPN deletions")]
    if refused is not None:
        blocks.append(section_block(refused, BlockId.HOME_HEADER.value))
        return {"type": "home", "blocks": blocks}
    blocks.append(
        context_block(
            f"Type `/vpn delete` in a channel to pick a connection, `/vpn list` to browse. Updated {format_time(now, now=now)}.",
            BlockId.HOME_HEADER.value,
        )
    )
    blocks += home_freeze_blocks(freezes)
    if pending is not None:
        blocks += _home_part(
            "Waiting for your approval",
            BlockId.HOME_PENDING.value,
            pending,
            links,
            now,
            "Nothing is waiting for you.",
            progress,
        )
    blocks += _home_part(
        "In flight", BlockId.HOME_RUNNING.value, running, links, now, "No deletion is in flight.", progress
    )
    blocks += _home_part(
        "Last finished",
        BlockId.HOME_FINISHED.value,
        finished,
        links,
        now,
        "Nothing has finished yet.",
        progress,
    )
    return {"type": "home", "blocks": blocks}
