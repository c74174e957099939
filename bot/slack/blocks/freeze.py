"""Every sentence about change freezes: the answers to ``/vpn freeze`` and ``/vpn unfreeze``, the
refused approval, the held operation's thread reply and the Home tab's section.

A freeze's reason is person-typed: it is always shown through :func:`code` (inert).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.domain import Freeze, Held
from bot.slack.block_ids import SLASH_COMMAND, BlockId
from bot.slack.blocks.text import Block, Message, build_message, code, context_block, mention, section_block

__all__ = [
    "build_freeze_answer",
    "build_frozen_request_note",
    "build_unfreeze_answer",
    "freeze_end",
    "frozen_refusal_text",
    "held_text",
    "home_freeze_blocks",
]

REASON_SHOWN = 300


def freeze_end(until: datetime) -> str:
    """``2026-12-08 07:00 UTC``: a freeze's end, whole (it may be days away)."""
    at = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _scope(account: str | None) -> str:
    return f"account {code(account, 40)}" if account is not None else "all accounts"


def held_text(event: Held) -> str:
    """The one thread reply of an approved operation a freeze holds."""
    return (
        f":snowflake: Approved, but held by a freeze until {freeze_end(event.until)} "
        f"({code(event.reason, REASON_SHOWN)}, set by {mention(event.by)} for {_scope(event.account)}). "
        "Nothing was sent; it goes on by itself when the freeze ends or is lifted "
        f"(`{SLASH_COMMAND} unfreeze`)."
    )


def frozen_refusal_text(freeze: Freeze) -> str:
    """Why an approval was refused: the freeze, its end and its reason."""
    return (
        f":snowflake: Approvals are frozen for {_scope(freeze.account)} until {freeze_end(freeze.until)}: "
        f"{code(freeze.reason, REASON_SHOWN)} (set by {mention(freeze.created_by)}). Nothing was approved; "
        "approve again after the freeze ends, or ask an admin to lift it "
        f"(`{SLASH_COMMAND} unfreeze`)."
    )


def build_frozen_request_note(freeze: Freeze) -> Message:
    """Told only to someone whose request was posted during a freeze: it waits for the freeze's end."""
    text = (
        f":snowflake: Your request is posted, but approvals are frozen for {_scope(freeze.account)} until "
        f"{freeze_end(freeze.until)}: {code(freeze.reason, REASON_SHOWN)} (set by {mention(freeze.created_by)}). "
        "It can be approved once the freeze ends, while the card is still open."
    )
    return {"response_type": "ephemeral", **build_message(text, [section_block(text)])}


def build_freeze_answer(freeze: Freeze, replaced: Sequence[Freeze]) -> Message:
    """The channel's answer to ``/vpn freeze``: who froze what, until when, and why."""
    text = (
        f":snowflake: {mention(freeze.created_by)} froze VPN changes in {_scope(freeze.account)} until "
        f"{freeze_end(freeze.until)}. Reason: {code(freeze.reason, REASON_SHOWN)}"
    )
    blocks: list[Block] = [section_block(text)]
    notes = [
        "No approval is taken meanwhile; approved deletions and recreations that have not started wait "
        f"until it ends. `{SLASH_COMMAND} unfreeze` lifts it early."
    ]
    if replaced:
        ends = ", ".join(freeze_end(f.until) for f in replaced)
        notes.append(f"It replaces the freeze that was to end {ends}.")
    blocks.append(context_block(" ".join(notes)))
    return {"response_type": "in_channel", **build_message(text, blocks)}


def build_unfreeze_answer(user_id: str, lifted: Sequence[Freeze], *, still: Freeze | None = None) -> Message:
    """The answer to ``/vpn unfreeze``: in the channel what was lifted; only to the admin, that nothing was."""
    if not lifted:
        text = "Nothing to lift: no freeze of that scope is in force."
        if still is not None:
            text += f" {_scope(still.account).capitalize()} stays frozen until {freeze_end(still.until)}."
        message = build_message(text, [section_block(text)])
        return {"response_type": "ephemeral", **message}
    parts = [f"{_scope(f.account)} (until {freeze_end(f.until)}, {code(f.reason, 100)})" for f in lifted]
    text = f":sunny: {mention(user_id)} lifted the freeze of {'; '.join(parts)}. Approvals are taken again."
    blocks: list[Block] = [section_block(text)]
    if still is not None:
        blocks.append(
            context_block(
                f"A freeze of {_scope(still.account)} is still in force until {freeze_end(still.until)}."
            )
        )
    return {"response_type": "in_channel", **build_message(text, blocks)}


def home_freeze_blocks(freezes: Sequence[Freeze]) -> list[Block]:
    """The Home tab's warning while freezes are in force (none: no blocks)."""
    if not freezes:
        return []
    lines = [
        f":snowflake: *Frozen:* {_scope(f.account)} until {freeze_end(f.until)}, set by "
        f"{mention(f.created_by)}. Reason: {code(f.reason, REASON_SHOWN)}"
        for f in freezes[:5]
    ]
    lines.append("No approval is taken meanwhile; approved changes wait until it ends.")
    return [section_block("\n".join(lines), BlockId.HOME_FREEZE.value)]
