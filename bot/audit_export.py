"""``vpn-bot audit export``: the audit trail from the database, for a SIEM or an auditor's spreadsheet.

Every field of :class:`bot.domain.AuditEntry`, one record per audit row in the order written, times
in UTC ISO 8601 (``2026-12-08T05:30:00.000000Z``). Two formats:

- ``jsonl``: one JSON object per line, a missing value as ``null``;
- ``csv``: RFC 4180 with a header row; a missing value is an empty cell (only ``detail`` is never
  missing, so an empty ``detail`` is an empty string). A cell that a spreadsheet would run as a
  formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a
  leading ``'``, and so is a cell that starts with ``'`` itself, so reading it back is one rule:
  drop one leading ``'``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

from bot.domain import AuditEntry
from bot.store import Store

__all__ = ["FIELDS", "FORMULA_STARTS", "export_audit", "parse_since", "record", "utc_text"]

# The columns, in AuditEntry's order.
FIELDS: Final = tuple(f.name for f in fields(AuditEntry))
# A CSV cell starting with one of these gets a leading ' (see the module's docstring).
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r", "'")
_PAGE = 1000

Format = Literal["jsonl", "csv"]


def utc_text(moment: datetime) -> str:
    """``moment`` in UTC ISO 8601 with microseconds and ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_since(value: str) -> datetime:
    """``--since``: an ISO 8601 date or time; without an offset it is UTC. ValueError if neither."""
    moment = datetime.fromisoformat(value.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record(entry: AuditEntry) -> dict[str, Any]:
    """The entry as plain values: every field, its time as UTC ISO 8601."""
    values = {name: getattr(entry, name) for name in FIELDS}
    values["at"] = utc_text(entry.at)
    return values


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


async def _entries(store: Store, since: datetime | None) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        page = await store.audit_page(after_id=after, since=since, limit=_PAGE)
        for _, entry in page:
            yield entry
        if len(page) < _PAGE:
            return
        after = page[-1][0]


async def export_audit(store: Store, out: IO[str], *, fmt: Format, since: datetime | None = None) -> int:
    """Write the audit trail (from ``since``) to ``out`` in ``fmt``; return how many records."""
    write: Callable[[AuditEntry], None]
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(FIELDS)

        def write(entry: AuditEntry) -> None:
            writer.writerow([_cell(v) for v in record(entry).values()])

    else:

        def write(entry: AuditEntry) -> None:
            out.write(json.dumps(record(entry), ensure_ascii=False) + "\n")

    count = 0
    async for entry in _entries(store, since):
        write(entry)
        count += 1
    return count
