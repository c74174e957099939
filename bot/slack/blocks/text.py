"""Block Kit primitives: escaping, caps, names and ids made inert, mentions, times and durations, blocks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.domain import (
    Operation,
)
from bot.ids import CHANNEL_BODY, USER_BODY, USERGROUP_BODY, is_user_id
from bot.inert import neutralise
from bot.slack.block_ids import SLASH_COMMAND, BlockId

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
# Slack refuses a message whose blocks carry more than about 12,000 characters of text in all
# (``msg_blocks_too_long``). Not in Slack's reference: unverified but observed, reported in
# slackapi/bolt-js issues #2509 and #2867. The stand-in counts every ``text`` string in the blocks.
BLOCKS_TEXT_MAX = 12_000
# The one budget every message builder keeps to: the blocks' text in all, with room to spare for
# however Slack really counts (entities, emoji).
MESSAGE_BUDGET = 11_000
# Slack's cap on a message's top-level ``text`` (``msg_too_long``).
MESSAGE_TEXT_MAX = 40_000
# The shortest a text is cut to when a message must shrink to fit the budget.
_FIT_FLOOR = 200
# Alibaba's longest connection or gateway name: shown whole, never cut.
NAME_MAX = 128
# Subnets listed on a card or a status line; past that it says "and N more".
SUBNETS_SHOWN = 10
# Routes listed on the card; past that it says "and N more".
ROUTES_SHOWN = 20
# What changed since an approval: lines shown on the card and in the thread, and each line's length.
CHANGES_SHOWN = 10
CHANGE_LINE_MAX = 150

# Tokens the bot itself writes into "trusted" texts (policy refusals, workflow reasons): user,
# user-group and channel mentions, and entities that are already escaped. Nothing else survives.
_SAFE_TOKEN_RE = re.compile(
    rf"<@(?:{USER_BODY})>|<!subteam\^(?:{USERGROUP_BODY})>|<#(?:{CHANNEL_BODY})>|&(?:amp|lt|gt);",
    re.ASCII,
)
# Characters that break a line: a code span does not cross one, and a line starting with "&gt;" is a quote.
# A cut that ends inside an entity or a mention would render as garbage; trim back to before it.
_DANGLING_RE = re.compile(r"(&[a-z]{0,4}|<[^>]{0,40})$", re.ASCII)

# One placeholder for the connection id everywhere (manifest usage hint, README, replies).
# "<" is escaped: Slack would read <vco-id> as a link even inside a code span.
USAGE_LINE = f"{SLASH_COMMAND} delete &lt;vco-id&gt; [region]"
USAGE_TEXT = (
    "*Usage*\n"
    f"• `{USAGE_LINE}` shows the VPN connection and asks an approver to delete it; "
    f"`{SLASH_COMMAND} delete` alone opens a picker to find it by name (with a reason and a time field). "
    'Add `reason="…"` (or `--reason "…"`) to say why, e.g. `reason="CHG-1234 branch closed"`: some '
    "deletions require a reason, with a change ticket in it (VPNBOT_REQUIRE_REASON, VPNBOT_TICKET_PATTERN).\n"
    f"• `{SLASH_COMMAND} delete &lt;vco-id&gt; at 2026-12-10 02:00 Asia/Shanghai` (or "
    "`at 2026-12-10T02:00+08:00`, `…Z`; `at now` is at once) deletes it at that time once approved; until "
    "then *Cancel* stops it. Outside a change window (VPNBOT_CHANGE_WINDOWS) a deletion waits for it to "
    "open, unless a second approver clicks *Override window*.\n"
    f"• `{SLASH_COMMAND} delete vco-a vco-b vco-c [region]` or `{SLASH_COMMAND} delete gateway=vpn-… all [region]` "
    "asks to delete several connections (a site decommission; every connection of the gateway) on one card "
    "with one approval; each is then deleted on its own, one per gateway at a time. `at …` and the change "
    "windows apply to all of them: approved, they wait together, and *Cancel* stops all of them until then.\n"
    f"• `{SLASH_COMMAND} list [region] [gateway-id] [words]` lists the region's connections, only to you; "
    "words narrow by name or id.\n"
    f"• `{SLASH_COMMAND} status &lt;vco-id | request-id&gt; [region]` shows a connection's live state or a "
    "request's progress (its approvals so far), only to you.\n"
    f"• `{SLASH_COMMAND} history [count]` shows the last actions (1–50, default 10).\n"
    f'• `{SLASH_COMMAND} freeze 2h reason="…"` (admins) stops approvals, and holds approved changes '
    "that have not started, for that long: `30m`, `2h`, `1d`, `1h30m` (at most 30 days); "
    f"`{SLASH_COMMAND} unfreeze` lifts it.\n"
    f"• `{SLASH_COMMAND} help` shows this help.\n"
    "Some deletions need several approvals (VPNBOT_APPROVAL_RULES): the card names the rule (how many, or "
    "one from each of several user groups) and shows who approved so far; the requester never counts. "
    "*Withdraw my approval* takes yours back until the last one needed. *Cancel* asks for an optional "
    "reason, shown on the card and sent to the requester.\n"
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
    """Render a cloud- or person-provided string inert in mrkdwn: as inline code, escaped and bounded.

    This is the one way an id, a name, a status or a subnet that the bot did not write enters
    mrkdwn. Slack formats nothing inside a code span (no bold, italics, strike, emoji, quotes), so
    ``*``, ``_``, ``~`` and ``:x:`` in a name stay literal; the only characters that could end the
    span are neutralised: a backtick becomes its lookalike U+02CB and a line break a space.
    ``& < >`` are escaped, so nothing links or pings. Ids (``vco-…``) keep every character, so they
    copy and paste exactly. A blank string renders as "—" (an empty span would show two backticks).
    """
    flat = neutralise(text)
    if not flat.strip():
        return "—"
    return f"`{escape(cap(flat, limit))}`"


def inert_name(text: str | None, *, missing: str = "(no name)") -> str:
    """A connection's or gateway's name, inert (see :func:`code`), whole up to Alibaba's 128 characters."""
    return code(text, NAME_MAX) if text and text.strip() else missing


def subnets(value: str) -> str:
    """A comma-separated subnet list from the cloud, each inert, at most SUBNETS_SHOWN of them."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        return "—"
    shown = ", ".join(code(p, 64) for p in parts[:SUBNETS_SHOWN])
    return shown + (f" and {len(parts) - SUBNETS_SHOWN} more" if len(parts) > SUBNETS_SHOWN else "")


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


def account_line(op: Operation) -> str:
    """With several accounts, which one comes first on a card: the same ids mean nothing without it."""
    return f":office: *Account {code(op.account, 40)}* · region {code(op.region, 64)}\n" if op.account else ""


def plain_object(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": cap(text or " ", limit), "emoji": True}


def mrkdwn_object(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cap(text or " ", limit)}


def section_block(text: str, block_id: str | None = None, accessory: Block | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn_object(text, SECTION_MAX)}
    if block_id:
        block["block_id"] = block_id
    if accessory:
        block["accessory"] = accessory
    return block


def context_block(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [mrkdwn_object(text, CONTEXT_MAX)]}
    if block_id:
        block["block_id"] = block_id
    return block


def header_block(text: str) -> Block:
    # plain_text never parses mentions, so a name here cannot ping; it is only capped. Emoji codes
    # are left as typed: a connection named ":fire:" is shown as that, not as a flame.
    plain = plain_object(text, HEADER_MAX) | {"emoji": False}
    return {"type": "header", "block_id": BlockId.HEADER.value, "text": plain}


def _text_objects(node: object) -> list[dict[str, Any]]:
    """Every text object (``{"type": "mrkdwn" | "plain_text", "text": …}``) under ``node``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            found.append(node)
        for value in node.values():
            if isinstance(value, dict | list):
                found += _text_objects(value)
    elif isinstance(node, list):
        for item in node:
            found += _text_objects(item)
    return found


def blocks_text_length(blocks: Sequence[Block]) -> int:
    """The characters of text the blocks carry in all, the way Slack's message limit counts them."""
    return sum(len(obj["text"]) for obj in _text_objects(list(blocks)))


def fits(blocks: Sequence[Block], budget: int = MESSAGE_BUDGET) -> bool:
    """Whether ``blocks`` keep within the message budget (and Slack's 50 blocks)."""
    return len(blocks) <= BLOCKS_MAX and blocks_text_length(blocks) <= budget


def fit_blocks(blocks: Sequence[Block], budget: int = MESSAGE_BUDGET) -> list[Block]:
    """``blocks`` (at most 50) cut to ``budget`` characters of text in all, keeping every block.

    The longest section and context texts are shortened to one common length (ending in "…"),
    never below a short floor, so each keeps its beginning; buttons, headers and confirm dialogs
    keep their words. Builders that can say more in another way (a file, a page, "and N more") do
    so first; this is the last guard, so that Slack never refuses a message for its size.
    """
    kept = list(blocks)[:BLOCKS_MAX]
    total = blocks_text_length(kept)
    if total <= budget:
        return kept  # nothing shrinks, so nothing is copied (every message is measured, few are cut)
    out = [_copy(b) for b in kept]
    # Only free text shrinks: sections (text and fields) and contexts.
    shrinkable = [
        obj
        for block in out
        if block.get("type") in ("section", "context")
        for obj in _text_objects([block.get("text"), block.get("fields"), block.get("elements")])
        if obj["type"] == "mrkdwn"
    ]
    lengths = [len(obj["text"]) for obj in shrinkable]
    room = budget - (total - sum(lengths))
    # The longest length every text may keep so that all fit: the largest such, by bisection.
    low, high = _FIT_FLOOR, max(lengths, default=_FIT_FLOOR)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            low = mid
        else:
            high = mid - 1
    for obj in shrinkable:
        if len(obj["text"]) > low:
            obj["text"] = cap(obj["text"], low)
    return out


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def build_message(text: str, blocks: Sequence[Block]) -> Message:
    return {"text": cap(text, TEXT_MAX), "blocks": fit_blocks(blocks)}


def op_name(op: Operation) -> str:
    return op.connection.name or op.connection.id
