"""Modals and the Home tab: the ``/vpn delete`` picker and the per-person overview.

Every view here passes slack_sdk's own ``View(...).validate_json()`` (see tests/slack/test_views.py).
Connection names come from the cloud (up to 128 characters at Alibaba) and are cut to Slack's
75-character option text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from bot.slack.blocks.text import _plain, cap
from bot.slack.ids import ActionId, BlockId, CallbackId
from bot.slack.inventory import ConnectionRow

__all__ = ["OPTIONS_MAX", "build_connection_options", "build_picker", "picker_metadata"]

View = dict[str, Any]
OPTION_TEXT_MAX = 75  # Slack's limit on an option's text
OPTIONS_MAX = 100  # Slack shows at most 100 options per select
MODAL_TITLE_MAX = 24


def picker_metadata(*, channel_id: str, region: str) -> str:
    """The ``private_metadata`` of the picker: where the command came from, and its first region."""
    return json.dumps({"c": channel_id, "r": region}, separators=(",", ":"))


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text, OPTION_TEXT_MAX), "value": value}


def build_picker(*, regions: Collection[str], region: str, channel_id: str) -> View:
    """The modal ``/vpn delete`` opens without an id: a region select and a connection search."""
    shown = list(dict.fromkeys([region, *sorted(regions)]))[:OPTIONS_MAX]
    region_options = [_option(r, r) for r in shown]
    return {
        "type": "modal",
        "callback_id": CallbackId.PICKER.value,
        "private_metadata": picker_metadata(channel_id=channel_id, region=region),
        "title": _plain("Delete a VPN connection", MODAL_TITLE_MAX),
        "submit": _plain("Ask for approval", MODAL_TITLE_MAX),
        "close": _plain("Cancel", MODAL_TITLE_MAX),
        "blocks": [
            {
                "type": "input",
                "block_id": BlockId.PICK_REGION.value,
                "label": _plain("Region", 2000),
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
                "label": _plain("Connection", 2000),
                "hint": _plain("Type part of its name or id, e.g. office or vco-bp1.", 2000),
                "element": {
                    "type": "external_select",
                    "action_id": ActionId.PICK_CONNECTION.value,
                    "placeholder": _plain("Search by name or id", 150),
                    "min_query_length": 0,
                },
            },
        ],
    }


def _label(row: ConnectionRow) -> str:
    # The id is what identifies it; the name is cut so the id always shows.
    room = OPTION_TEXT_MAX - len(row.id) - 3
    return f"{cap(row.name, room)} · {row.id}" if row.name and room > 4 else row.id


def build_connection_options(rows: Sequence[ConnectionRow]) -> dict[str, Any]:
    """The options answering a block_suggestion: at most 100 matching connections."""
    return {"options": [_option(_label(row), row.id) for row in rows[:OPTIONS_MAX]]}
