"""The local Slack stand-in: Web API server, fake user agent, and a plain-text transcript view.

Typical use (tests and ``vpn-bot demo``)::

    standin = await start_slack_standin(bot_token="xoxb-test")
    client = AsyncWebClient(token="xoxb-test", base_url=standin.url)
    agent = SlackUserAgent(events_url=".../slack/events", signing_secret=..., state=standin.state)
    await agent.slash_command("U0ALICE", "C0VPNOPS", "delete vco-123")
    print(render_transcript(standin.state, "C0VPNOPS"))
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from bot.sandbox.slack_api import (
    DEFAULT_SCOPES,
    ApiCall,
    Channel,
    Interaction,
    Message,
    ResponsePost,
    Revision,
    SlackStandin,
    StandinState,
    User,
    Usergroup,
    Workspace,
    demo_workspace,
    start_slack_standin,
)
from bot.sandbox.slack_user import HttpReply, SlackUserAgent, find_button

__all__ = [
    "DEFAULT_SCOPES",
    "ApiCall",
    "Channel",
    "HttpReply",
    "Interaction",
    "Message",
    "ResponsePost",
    "Revision",
    "SlackStandin",
    "SlackUserAgent",
    "StandinState",
    "User",
    "Usergroup",
    "Workspace",
    "demo_workspace",
    "find_button",
    "render_message",
    "render_mrkdwn",
    "render_timeline",
    "render_transcript",
    "start_slack_standin",
]

_INDENT = " " * 10
_THREAD = "  │ "
# <@U123>, <@U123|name>, <#C123|name>, <!subteam^S1|@h>, <!here>, <!date^…|fallback>, <url|label>
_ANGLE = re.compile(r"<([^<>]+)>")


def render_mrkdwn(text: str, state: StandinState) -> str:
    """Show Slack mrkdwn as a person reads it: mentions by name, links with labels, entities decoded."""

    def one(match: re.Match[str]) -> str:
        inner = match.group(1)
        ref, _, label = inner.partition("|")
        if ref.startswith("@"):
            return "@" + state.user_name(ref[1:]) if ref[1:] in state.users or not label else "@" + label
        if ref.startswith("#"):
            channel = state.channels.get(ref[1:])
            return "#" + (channel.name if channel else label or ref[1:])
        if ref.startswith("!subteam^"):
            group = state.usergroups.get(ref.removeprefix("!subteam^"))
            return "@" + group.handle if group else label or "@group"
        if ref.startswith("!date^"):
            return label or ref
        if ref.startswith("!"):
            return "@" + ref[1:]
        return f"{label} ({ref})" if label else ref

    out = _ANGLE.sub(one, text)
    return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text_obj(obj: Any, state: StandinState) -> str:
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return render_mrkdwn(text, state) if obj.get("type") == "mrkdwn" else text


def _element(element: dict[str, Any], state: StandinState) -> str:
    kind = element.get("type")
    if kind == "button":
        return f"[{_text_obj(element.get('text'), state)}]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind in {"mrkdwn", "plain_text"}:
        return _text_obj(element, state)
    placeholder = _text_obj(element.get("placeholder"), state)
    return f"[{placeholder or kind} ▾]"


def _rich_text(node: Any, state: StandinState) -> str:
    if isinstance(node, list):
        return "".join(_rich_text(n, state) for n in node)
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "link":
        return str(node.get("text") or node.get("url", ""))
    if kind == "user":
        return "@" + state.user_name(str(node.get("user_id", "")))
    if kind == "channel":
        return "#" + state.channel_name(str(node.get("channel_id", "")))
    if kind == "emoji":
        return f":{node.get('name', '')}:"
    return _rich_text(node.get("elements", []), state)


def _block_lines(block: dict[str, Any], state: StandinState) -> list[str]:
    kind = block.get("type")
    if kind in {"section", "header"}:
        lines = _text_obj(block.get("text"), state).splitlines()
        # A field is a label/value pair stacked on two lines in Slack; one line reads better here.
        lines += [" ".join(_text_obj(f, state).split("\n")) for f in block.get("fields", [])]
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            lines.append(_element(accessory, state))
        return lines
    if kind == "context":
        return ["  ".join(_element(e, state) for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_element(e, state) for e in block.get("elements", []))]
    if kind == "divider":
        return ["─" * 24]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "rich_text":
        return _rich_text(block.get("elements", []), state).splitlines()
    return []


def render_message(msg: Message, state: StandinState) -> list[str]:
    """The lines a person reads in ``msg`` as it is now (its buttons as ``[Label]``)."""
    return _version_body(msg.text, msg.blocks, state)


def _version_body(text: str, blocks: Sequence[dict[str, Any]], state: StandinState) -> list[str]:
    if blocks:
        lines = [line for b in blocks for chunk in _block_lines(b, state) for line in chunk.split("\n")]
        if lines:
            return lines
    return render_mrkdwn(text, state).splitlines() or [""]


def _body(msg: Message, state: StandinState) -> list[str]:
    return _version_body(msg.text, msg.blocks, state)


def _clock(ts: str, tz: tzinfo) -> str:
    return datetime.fromtimestamp(float(ts), tz).strftime("%H:%M:%S")


def _message_lines(msg: Message, state: StandinState, viewer: str | None, tz: tzinfo) -> list[str]:
    author = state.user_name(msg.user)
    if msg.bot_id:
        author += " (APP)"
    marks = []
    if msg.edited:
        marks.append("(edited)")
    if msg.visible_to is not None:
        who = "you" if viewer is not None else "@" + state.user_name(msg.visible_to)
        marks.append(f"(only visible to {who})")
    head = f"{_clock(msg.ts, tz)}  {author}" + "".join(f"  {m}" for m in marks)
    body = ["(This message was deleted.)"] if msg.deleted else _body(msg, state)
    return [head, *(_INDENT + line if line else "" for line in body)]


def _interaction_lines(event: Interaction, state: StandinState, tz: tzinfo) -> list[str]:
    who = state.user_name(event.user)
    did = f"ran {event.text}" if event.kind == "slash_command" else f"clicked [{event.text}]"
    failed = "" if event.status in (None, 200) else f"  (the app answered HTTP {event.status})"
    return [f"{_clock(event.ts, tz)}  {who} {did}{failed}"]


def render_transcript(
    state: StandinState,
    channel: str,
    *,
    viewer: str | None = None,
    show_interactions: bool = True,
    tz: tzinfo = UTC,
) -> str:
    """Render a channel and its threads as plain text, as a person would read them.

    With ``viewer`` only that user's ephemerals appear ("only visible to you"); without it every
    ephemeral appears, marked with who sees it. Slash commands and clicks appear as "ran"/"clicked".
    """
    visible = [
        m for m in state.all_messages(channel) if m.visible_to is None or viewer in (None, m.visible_to)
    ]
    replies: dict[str, list[Message]] = {}
    for m in visible:
        if m.is_reply and not m.deleted:
            replies.setdefault(str(m.thread_ts), []).append(m)
    timeline: list[tuple[float, list[str]]] = []
    for m in visible:
        if m.is_reply or (m.deleted and not replies.get(m.ts)):
            continue
        lines = _message_lines(m, state, viewer, tz)
        thread = replies.get(m.ts, [])
        if thread:
            lines.append(f"{_INDENT}└ {len(thread)} {'reply' if len(thread) == 1 else 'replies'}")
            for reply in thread:
                lines += [_THREAD + line for line in _message_lines(reply, state, viewer, tz)]
        timeline.append((float(m.ts), lines))
    if show_interactions:
        for event in state.interactions:
            if event.channel == channel and viewer in (None, event.user):
                timeline.append((float(event.ts), _interaction_lines(event, state, tz)))
    timeline.sort(key=lambda item: item[0])
    header = f"#{state.channel_name(channel)}"
    out = [header, "─" * max(len(header), 24)]
    for _, lines in timeline:
        out += lines
    return "\n".join(line.rstrip() for line in out) + "\n"


# --- the timeline: every event in the order it happened ------------------------------------------


def _versions(msg: Message, state: StandinState) -> list[tuple[str, list[str]]]:
    """(ts it appeared, its lines) for each version of ``msg``, oldest first."""
    raw: list[tuple[str, str, Sequence[dict[str, Any]]]] = []
    shown_at = msg.ts
    for rev in msg.edits:
        raw.append((shown_at, rev.text, rev.blocks))
        shown_at = rev.replaced_at
    raw.append((shown_at, msg.text, msg.blocks))
    return [(ts, _version_body(text, blocks, state)) for ts, text, blocks in raw]


def _title(msg: Message, state: StandinState) -> str:
    """The first line of the message as first posted: how people tell messages apart."""
    _, lines = _versions(msg, state)[0]
    first = next((line for line in lines if line.strip()), "a message")
    return f"“{first if len(first) <= 60 else first[:59] + '…'}”"


def _author(msg: Message, state: StandinState, viewer: str | None) -> str:
    author = state.user_name(msg.user) + (" (APP)" if msg.bot_id else "")
    if msg.visible_to is not None:
        who = "you" if viewer is not None else "@" + state.user_name(msg.visible_to)
        author += f"  (only visible to {who})"
    return author


def _changed(before: list[str], after: list[str]) -> list[str]:
    """The lines of ``after`` that are new, and a note for buttons that went away."""
    new = [line for line in after if line not in before] or ["(no visible change)"]
    gone = [line for line in before if line not in after and line.startswith("[")]
    return [*new, f"(removed {' '.join(gone)})"] if gone else new


def _message_events(
    msg: Message, state: StandinState, viewer: str | None, tz: tzinfo, anchor: float | None
) -> list[tuple[float, list[str]]]:
    versions = _versions(msg, state)
    author = _author(msg, state, viewer)
    where = f"  in the thread of {_title(_parent(msg, state), state)}" if msg.is_reply else ""
    prefix = _THREAD if msg.is_reply else ""
    first_ts, first_lines = versions[0]
    # An ack is shown when its HTTP reply arrives, right after the command it answers.
    at = anchor if anchor is not None else float(first_ts)
    events = [(at, [f"{_clock(str(at), tz)}  {author}{where}", *(_INDENT + line for line in first_lines)])]
    title = _title(msg, state)
    for (_, before), (ts, after) in itertools.pairwise(versions):
        lines = [
            f"{_clock(ts, tz)}  {author}  edited {title}",
            *(_INDENT + line for line in _changed(before, after)),
        ]
        events.append((float(ts), lines))
    if msg.deleted:
        events[-1][1].append(_INDENT + "(later deleted)")
    return [(when, [prefix + line if line else "" for line in lines]) for when, lines in events]


def _parent(msg: Message, state: StandinState) -> Message:
    return state.message(msg.channel, str(msg.thread_ts)) or msg


def _ack_anchor(msg: Message, commands: list[Interaction]) -> float | None:
    if msg.via != "ack":
        return None
    earlier = [float(c.ts) for c in commands if c.user == msg.visible_to and float(c.ts) <= float(msg.ts)]
    # Just after the command: ts values are microseconds apart, so half of one is between them.
    return max(earlier) + 0.0000005 if earlier else None


def _interaction_event(event: Interaction, state: StandinState, tz: tzinfo) -> list[str]:
    who = state.user_name(event.user)
    if event.kind == "slash_command":
        did = f"ran {event.text}"
    else:
        target = state.message(event.channel, event.message_ts) if event.message_ts else None
        did = f"clicked [{event.text}]" + (f" on {_title(target, state)}" if target else "")
    failed = "" if event.status in (None, 200) else f"  (the app answered HTTP {event.status})"
    return [f"{_clock(event.ts, tz)}  {who} {did}{failed}"]


def render_timeline(state: StandinState, channel: str, *, viewer: str | None = None, tz: tzinfo = UTC) -> str:
    """Render everything that happened in a channel as plain text, one event after another.

    Unlike :func:`render_transcript` (the channel as it looks at the end), every version of a
    message appears when it appeared: a card with its buttons, then each edit (only the lines that
    changed), thread replies, commands and clicks, all in the order they happened.
    """
    interactions = [e for e in state.interactions if e.channel == channel and viewer in (None, e.user)]
    commands = [e for e in interactions if e.kind == "slash_command"]
    events: list[tuple[float, list[str]]] = [
        (float(e.ts), _interaction_event(e, state, tz)) for e in interactions
    ]
    for msg in state.all_messages(channel):
        if msg.visible_to is None or viewer in (None, msg.visible_to):
            events += _message_events(msg, state, viewer, tz, _ack_anchor(msg, commands))
    events.sort(key=lambda item: item[0])
    header = f"#{state.channel_name(channel)}"
    out = [header, "─" * max(len(header), 24)]
    for _, lines in events:
        out += lines
    return "\n".join(line.rstrip() for line in out) + "\n"
