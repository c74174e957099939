"""The configuration snapshot posted as the thread's last reply after a deletion.

A summary line, then the whole configuration as YAML in code blocks, split on line boundaries so
each section stays within Slack's 3,000 characters. When that would not fit in one message (the
message budget, :data:`bot.slack.blocks.text.MESSAGE_BUDGET`: a connection with many routes and
tags), the reply is the summary alone and the YAML goes with it as a file in the thread
(:class:`SnapshotFile`, uploaded by the notifier). The record holds no key, so none is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from bot.domain import PART_CONFIGURATION, Snapshot, SnapshotRoute, Unread
from bot.slack.blocks.text import (
    SECTION_MAX,
    Block,
    Message,
    build_message,
    code,
    context_block,
    escape,
    fits,
    inert_name,
    section_block,
)

__all__ = ["FILE_KEY", "SnapshotFile", "build_snapshot_reply", "snapshot_document", "snapshot_summary"]

# The key of a message that carries a file to upload with it (not a chat.postMessage argument).
FILE_KEY = "file"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """The configuration as a YAML file, for a thread reply too long for one message."""

    filename: str
    title: str
    content: str


_FENCE = "```"
# Room for the fence and its two line breaks in one section.
_CHUNK_MAX = SECTION_MAX - 2 * len(_FENCE) - 2


def _file_note(filename: str) -> str:
    return (
        f"The configuration is too long for one Slack message, so it is attached below as a YAML file "
        f"({code(filename, 120)}). It is also stored with the operation in the bot's database "
        "(`operations.snapshot`)."
    )


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _reason(unread: Unread) -> str:
    why = escape(unread.reason) if unread.reason else "unknown reason"
    return f"{why} (Alibaba Cloud code {code(unread.code, 80)})" if unread.code else why


def snapshot_summary(snapshot: Snapshot) -> str:
    """The one-line summary (mrkdwn): what was saved, or why it could not be."""
    name = f" ({inert_name(snapshot.name)})" if snapshot.name and snapshot.name.strip() else ""
    missing = snapshot.unread_part(PART_CONFIGURATION)
    if missing is not None:
        return (
            f":warning: The configuration of {code(snapshot.vco_id)}{name} could not be taken before the "
            f"deletion: {_reason(missing)}. The deletion went on; what the bot knew is below."
        )
    parts = [f"gateway {code(snapshot.gateway_id)}"]
    if snapshot.customer_gateway_id:
        parts.append(f"customer gateway {code(snapshot.customer_gateway_id, 200)}")
    parts.append(_plural(len(snapshot.routes), "route pointed at it", "routes pointed at it"))
    return (
        f":floppy_disk: *Configuration before the deletion* of {code(snapshot.vco_id)}{name}: "
        f"{', '.join(parts)}. Everything to recreate it is below; keys are never kept."
    )


def _route(route: SnapshotRoute) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": route.kind, "destination": route.destination}
    if route.source:
        out["source"] = route.source
    for key in ("priority", "weight"):
        if getattr(route, key) is not None:
            out[key] = getattr(route, key)
    if route.description:
        out["description"] = route.description
    return out


def snapshot_document(snapshot: Snapshot) -> str:
    """The configuration and the routes as YAML (plain text, not yet escaped for Slack)."""
    known = {
        "name": snapshot.name,
        "vpn_gateway_id": snapshot.gateway_id,
        "customer_gateway_id": snapshot.customer_gateway_id,
        "local_subnet": snapshot.local_subnet,
        "remote_subnet": snapshot.remote_subnet,
    }
    connection = {"vpn_connection_id": snapshot.vco_id, "region": snapshot.region}
    connection |= snapshot.config if snapshot.config is not None else {k: v for k, v in known.items() if v}
    document: dict[str, Any] = {"connection": connection, "routes": [_route(r) for r in snapshot.routes]}
    unread = [u for u in snapshot.unread if u.part != PART_CONFIGURATION]
    if unread:
        document["not_read"] = {u.part: u.reason + (f" ({u.code})" if u.code else "") for u in unread}
    dumped: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return dumped


def _cut_at(line: str) -> int:
    # Never inside an escaped entity (&amp; &lt; &gt;): Slack would show the broken halves.
    amp = line.rfind("&", _CHUNK_MAX - 4, _CHUNK_MAX)
    return amp if amp > 0 and ";" not in line[amp:_CHUNK_MAX] else _CHUNK_MAX


def _chunks(document: str) -> list[str]:
    """Escaped pieces of ``document``, each at most _CHUNK_MAX characters, cut at line ends."""
    # A backtick could close the code block early; an apostrophe reads the same.
    lines = escape(document.replace("`", "'")).rstrip("\n").split("\n")
    chunks: list[str] = []
    current = ""
    for line in lines:
        while len(line) > _CHUNK_MAX:  # one very long value: cut it, it reads on in the next block
            at = _cut_at(line)
            head, line = line[:at], line[at:]
            if current:
                chunks.append(current)
            chunks.append(head)
            current = ""
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > _CHUNK_MAX:
            chunks.append(current)
            candidate = line
        current = candidate
    if current:
        chunks.append(current)
    return chunks


def snapshot_filename(snapshot: Snapshot) -> str:
    """The file name of the configuration: the connection id and ``-configuration.yaml``."""
    stem = _UNSAFE_NAME.sub("-", snapshot.vco_id).strip("-.")[:80] or "connection"
    return f"{stem}-configuration.yaml"


def build_snapshot_reply(snapshot: Snapshot) -> Message:
    """The thread reply with the saved configuration: a summary, then YAML code blocks.

    If the code blocks would not fit in one message, the reply is the summary and a note, and the
    message carries the YAML under :data:`FILE_KEY` as a :class:`SnapshotFile` to upload after it.
    """
    summary = snapshot_summary(snapshot)
    fallback = summary.replace("*", "")
    document = snapshot_document(snapshot)
    blocks: list[Block] = [section_block(summary)]
    blocks += [section_block(f"{_FENCE}\n{chunk}\n{_FENCE}") for chunk in _chunks(document)]
    if fits(blocks):
        return build_message(fallback, blocks)
    filename = snapshot_filename(snapshot)
    message = build_message(fallback, [section_block(summary), context_block(_file_note(filename))])
    message[FILE_KEY] = SnapshotFile(
        filename=filename, title=f"Configuration of {snapshot.vco_id} before the deletion", content=document
    )
    return message
