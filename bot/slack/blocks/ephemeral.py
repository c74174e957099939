"""Replies only the asker sees: usage, looking up, refusals, errors, history."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from bot.domain import (
    AuditEntry,
    Operation,
    OpState,
)
from bot.ids import is_channel_id
from bot.slack import codes as slack_codes
from bot.slack.block_ids import SLASH_COMMAND, BlockId
from bot.slack.blocks.text import (
    BLOCKS_MAX,
    SECTION_MAX,
    USAGE_LINE,
    USAGE_TEXT,
    Block,
    Message,
    build_message,
    cap,
    code,
    escape,
    format_time,
    mention,
    safe_mrkdwn,
    section_block,
)

# --- ephemeral replies ---------------------------------------------------------------------------


def _ephemeral(text: str, blocks: Sequence[Block]) -> Message:
    message = build_message(text, blocks)
    message["response_type"] = "ephemeral"
    return message


def build_usage(error: str | None = None, *, accounts: Sequence[str] = ()) -> Message:
    """Help text, optionally after a one-line explanation of what was wrong (bot-written mrkdwn).

    ``accounts``: with several Alibaba Cloud accounts, those this channel may use (a line is added).
    """
    blocks: list[Block] = []
    if error:
        error = safe_mrkdwn(error)
        blocks.append(section_block(f":warning: {error}", BlockId.REFUSAL.value))
    blocks.append(section_block(USAGE_TEXT, BlockId.USAGE.value))
    if accounts:
        names = ", ".join(code(a, 40) for a in accounts)
        line = (
            "*Alibaba Cloud accounts:* add `account=NAME` (or `--account NAME`) to `delete`, `list` and "
            f"`status` (and to `freeze` and `unfreeze`, for one account only); here you may use {names}"
            + (f" ({code(accounts[0], 40)} when you give none)." if len(accounts) == 1 else ".")
        )
        blocks.append(section_block(line))
    text = f"{error} Usage: {USAGE_LINE}" if error else USAGE_TEXT
    return _ephemeral(text, blocks)


def build_looking_up(vco_id: str, region: str, account: str = "") -> Message:
    """The immediate ack for a delete request."""
    where = f"account {code(account, 40)}, region" if account else "region"
    text = f":mag: Looking up {code(vco_id)} in {where} {code(region, 64)}…"
    return _ephemeral(text, [section_block(text)])


def build_busy(vco_id: str, region: str, account: str = "") -> Message:
    """The ack when the bot has too much in flight: nothing was started, try again."""
    suffix = f" account={escape(account)}" if account else ""
    text = (
        ":hourglass: I'm working through a lot of requests right now, so I did not start this one; "
        f"nothing was looked up or deleted. Run `{SLASH_COMMAND} delete {escape(vco_id)} {escape(region)}{suffix}` again "
        "in a minute."
    )
    return _ephemeral(text, [section_block(text)])


def build_refusal(text: str) -> Message:
    """An ephemeral refusal or error; ``text`` is bot-written mrkdwn (mentions kept, rest escaped)."""
    body = f":no_entry: {safe_mrkdwn(text)}"
    return _ephemeral(body, [section_block(body, BlockId.REFUSAL.value)])


# A link from chat.getPermalink is only rendered if nothing in it can end or alter the mrkdwn link.
_SAFE_LINK_RE = re.compile(r"https://[A-Za-z0-9.-]+/[A-Za-z0-9/._?=&%-]*", re.ASCII)


def build_already_requested(op: Operation, *, permalink: str | None, now: datetime) -> Message:
    """The reply to a second delete of a connection whose earlier request by the same person is still open."""
    if permalink and _SAFE_LINK_RE.fullmatch(permalink):
        card = f"<{permalink.replace('&', '&amp;')}|its confirmation>"
    elif is_channel_id(op.channel_id):
        card = f"its confirmation in <#{op.channel_id}>"
    else:
        card = "its confirmation"
    if op.state is OpState.LOOKING_UP:
        where = f" in <#{op.channel_id}>" if is_channel_id(op.channel_id) else ""
        body = (
            f":point_up: You already asked to delete {code(op.vco_id)} a moment ago; it is being looked up "
            f"and its confirmation will appear{where}. Nothing new was posted."
        )
    else:
        body = (
            f":point_up: You already asked to delete {code(op.vco_id)}: {card} is still waiting for "
            f"approval (until {format_time(op.expires_at, now=now)}). Nothing new was posted; cancel "
            "that one there if you changed your mind."
        )
    return _ephemeral(body, [section_block(body, BlockId.REFUSAL.value)])


def build_unexpected_error(error_id: str, *, nothing_deleted: bool) -> Message:
    """The reply for a bug: an error id to quote, never a traceback."""
    if nothing_deleted:
        tail = (
            "Nothing was deleted. Try again; if it keeps failing, give the error id to the bot administrator."
        )
    else:
        tail = "The request's message shows its real state; give the error id to the bot administrator."
    body = f":warning: Something went wrong on our side (error id {code(error_id, 16)}). {tail}"
    return _ephemeral(body, [section_block(body, BlockId.REFUSAL.value)])


def account_choice_text(allowed: Sequence[str], *, asked: str | None, bound: bool) -> str:
    """Why the account could not be chosen, with the accounts this person may use here."""
    names = ", ".join(code(n, 40) for n in allowed)
    where = "this channel may use" if bound else "you may use"
    if asked is None:
        return f"Which Alibaba Cloud account? Add `account=NAME`; {where}: {names}."
    if bound:
        return f"This channel may act only on the account{'s' if len(allowed) != 1 else ''} {names}, not {code(asked, 40)}."
    return f"There is no account {code(asked, 40)}; {where}: {names}."


ONE_ACCOUNT_TEXT = "This bot serves one Alibaba Cloud account; leave `account=` out."


def explain_slack_error(error: str) -> str:
    """What a Slack error means when posting the confirmation, and what to do (from the table)."""
    return f"{slack_codes.lookup(error).text} Nothing was deleted."


# --- history -----------------------------------------------------------------------------------


# Where the person-typed part of an audit detail starts: a denial's or a request's reason.
_REASON_SPLIT = re.compile(r"(?:^|; )(?=(?:denied|reason(?: \(ticket [^)]*\))?): )")


def _history_line(entry: AuditEntry, now: datetime) -> str:
    parts = [
        code(format_time(entry.at, now=now), 40),
        mention(entry.actor_id),
        f"*{escape(cap(entry.action, 40))}*",
    ]
    if entry.times is not None and entry.times > 1:
        parts.append(f"({entry.times} times, the last shown)")
    if entry.vco_id:
        parts.append(code(entry.vco_id))
    if entry.account:
        parts.append(f"account {code(entry.account, 40)}")
    if entry.region:
        parts.append(code(entry.region, 64))
    # A reason (person-typed, always last: see bot.workflow.steps.StepBase.entry) is shown inert.
    found = _REASON_SPLIT.search(entry.detail)
    written, said = (
        (entry.detail[: found.start()], entry.detail[found.end() :]) if found else (entry.detail, "")
    )
    detail = safe_mrkdwn(cap(written, 200))
    if said:
        said_text = code(said, 200)  # inert, like every outside string
        detail = f"{detail}; {said_text}" if detail else said_text
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
        return _ephemeral(text, [section_block(text, BlockId.HISTORY.value)])
    title = f"*Last {len(entries)} action{'s' if len(entries) != 1 else ''}*"
    lines = [_history_line(e, now) for e in entries]
    blocks = [section_block(title, BlockId.HISTORY.value)]
    blocks += [section_block(chunk) for chunk in _chunks(lines, SECTION_MAX)][: BLOCKS_MAX - 1]
    return _ephemeral(f"Last {len(entries)} VPN bot actions", blocks)
