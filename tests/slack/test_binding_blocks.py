"""The card and the thread when an approval no longer covers what is there (issue 26)."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block
from slackfakes import make_op

from bot.domain import (
    ChangedSinceApproval,
    Impact,
    ImpactRoute,
    OpState,
    event_from_json,
    event_to_json,
)
from bot.sandbox.slack_api import message_size_error
from bot.slack.block_ids import BlockId
from bot.slack.blocks import (
    MESSAGE_BUDGET,
    ROUTES_SHOWN,
    blocks_text_length,
    build_confirmation,
    build_parent,
    build_progress,
)

EVIL = "<!channel> *bold* `tick` <https://evil|click>"
PRINT = "3f9a1c2b" + "0" * 56


def _valid(message: dict[str, Any]) -> None:
    assert message["text"].strip()
    assert message_size_error(message["text"], message["blocks"]) is None
    assert blocks_text_length(message["blocks"]) <= MESSAGE_BUDGET
    for raw in message["blocks"]:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]


def _block(message: dict[str, Any], block_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [b for b in message["blocks"] if b.get("block_id") == block_id]
    assert len(found) == 1
    return found[0]


def test_the_card_shows_the_preview_it_is_bound_to() -> None:
    message = build_confirmation(make_op(preview_fingerprint=PRINT))
    _valid(message)
    footer = " ".join(e["text"] for e in _block(message, BlockId.FOOTER)["elements"])
    assert "preview `3f9a1c2b`" in footer
    assert PRINT not in footer
    assert not [b for b in message["blocks"] if b.get("block_id") == BlockId.CHANGED]
    # Every later state keeps it: the fingerprint names what was approved.
    done = build_parent(make_op(preview_fingerprint=PRINT, state=OpState.DELETED))
    assert "preview `3f9a1c2b`" in str(_block(done, BlockId.FOOTER))


def test_asked_again_the_card_says_what_changed_inert_and_within_budget() -> None:
    routes = tuple(ImpactRoute("custom", f"10.{n}.0.0/16") for n in range(100))
    changes = (f"routes: +{EVIL}", *(f"connection name: {EVIL * 8} → {n}" for n in range(30)))
    op = make_op(
        preview_fingerprint=PRINT,
        preview_changes=changes,
        impact=Impact(routes=routes, route_count=300),
        reason="x" * 500,
    )
    message = build_confirmation(op)
    _valid(message)
    changed = _block(message, BlockId.CHANGED)["text"]["text"]
    assert "Changed since it was approved — nothing was deleted" in changed
    assert "<!channel>" not in changed  # inert
    assert "…and 21 more" in changed
    assert len(_block(message, BlockId.ROUTES)["text"]["text"].splitlines()) <= ROUTES_SHOWN + 2
    assert message["text"].startswith("Changed since it was approved")
    assert any(b.get("block_id") == BlockId.ACTIONS for b in message["blocks"])  # asks again


def test_the_thread_reply_names_the_approval_that_no_longer_counts() -> None:
    event = ChangedSinceApproval(
        changes=("routes: +10.2.0.0/16, \N{MINUS SIGN}10.3.0.0/16", "tunnel 1: down → up", EVIL),
        approver_id="U0BOSS",
        fingerprint=PRINT,
    )
    assert event_from_json(event_to_json(event)) == event
    text = build_progress(event)
    assert text.startswith(":warning: Not deleted: the connection changed since <@U0BOSS> approved it")
    assert "`3f9a1c2b`" in text
    assert "• `routes: +10.2.0.0/16, \N{MINUS SIGN}10.3.0.0/16`" in text
    assert "• `tunnel 1: down → up`" in text
    assert "<!channel>" not in text
    assert "since it was approved" in build_progress(
        ChangedSinceApproval(changes=(), approver_id=None, fingerprint=PRINT)
    )
