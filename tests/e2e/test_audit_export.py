"""``vpn-bot audit export`` as a user runs it: every audit field round-trips, on SQLite and PostgreSQL.

The entries are written through the store, the command runs as a child process reading
VPNBOT_DATABASE_URL, and what it prints is parsed back (JSON lines, CSV with the formula guard
undone by its one documented rule) and compared with what was written.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.audit_export import FIELDS
from bot.domain import AuditEntry
from bot.store import Store

from .support import child_env, run_to_exit

_T0 = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)

# Everything a trail holds: unicode, commas, quotes, newlines, formula starts, missing values.
ENTRIES = (
    AuditEntry(
        at=_T0,
        action="requested",
        actor_id="U0ALICE",
        op_id="0f" * 16,
        vco_id="vco-bp1aaaa",
        region="cn-hangzhou",
        detail='channel C0VPNOPS; reason (ticket CHG-1): move "prod", then\nclose — 北京 ✓',
        account="prod",
    ),
    AuditEntry(
        at=_T0 + timedelta(seconds=1),
        action="approved",
        actor_id="U0BOB",
        op_id="0f" * 16,
        vco_id="vco-bp1aaaa",
        region="cn-hangzhou",
        detail='=HYPERLINK("http://evil","x")',
        request_id="5C3A-REQ",
        account="prod",
    ),
    AuditEntry(
        at=_T0 + timedelta(minutes=2),
        action="refused",
        actor_id="U0CAROL",
        op_id="0f" * 16,
        detail="-cmd|' /C calc'!A0",
        times=3,
    ),
    AuditEntry(
        at=_T0 + timedelta(days=1), action="deleted", actor_id="vpn-bot", detail="+1, @SUM(A1) 'quoted'"
    ),
    AuditEntry(at=_T0 + timedelta(days=2), action="cancelled", actor_id="U0BOB", detail="'=already quoted"),
    AuditEntry(at=_T0 + timedelta(days=3), action="expired", actor_id="vpn-bot", detail=""),
)


async def _write(url: str) -> None:
    store = await Store.open(url)
    try:
        for entry in ENTRIES:
            await store.add_audit(entry)
    finally:
        await store.close()


async def _export(tmp_path: Path, url: str, *args: str) -> str:
    status, out, err = await run_to_exit(
        [sys.executable, "-m", "bot", "audit", "export", *args],
        env=child_env(tmp_path, VPNBOT_DATABASE_URL=url),
        cwd=tmp_path,
    )
    assert status == 0, err
    assert "Traceback" not in err
    return out


def _typed(values: dict[str, Any]) -> AuditEntry:
    """An entry from exported values: the time parsed, ``times`` an int."""
    raw = dict(values)
    raw["at"] = datetime.fromisoformat(raw["at"])
    if raw["times"] is not None:
        raw["times"] = int(raw["times"])
    return AuditEntry(**raw)


def _from_csv(text: str) -> list[AuditEntry]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == FIELDS
    optional = {f.name for f in fields(AuditEntry) if f.name not in {"at", "action", "actor_id", "detail"}}
    entries = []
    for row in rows[1:]:
        # The documented rule: drop one leading '; an empty optional cell is a missing value.
        cells = [cell[1:] if cell.startswith("'") else cell for cell in row]
        values: dict[str, Any] = dict(zip(FIELDS, cells, strict=True))
        for name in optional:
            if values[name] == "":
                values[name] = None
        entries.append(_typed(values))
    return entries


@pytest.mark.process
async def test_export_round_trips_every_audit_field(tmp_path: Path, db_url: str) -> None:
    await _write(db_url)

    jsonl = await _export(tmp_path, db_url)
    lines = jsonl.splitlines()
    assert len(lines) == len(ENTRIES)
    records = [json.loads(line) for line in lines]
    assert all(tuple(r) == FIELDS for r in records), "every field, in order"
    assert records[0]["at"] == "2026-12-01T08:30:15.123456Z", "UTC ISO 8601"
    assert [_typed(r) for r in records] == list(ENTRIES)

    text = await _export(tmp_path, db_url, "--format", "csv")
    assert _from_csv(text) == list(ENTRIES)
    # No cell a spreadsheet would run: the formula starts are quoted.
    for row in list(csv.reader(io.StringIO(text, newline="")))[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row

    out = tmp_path / "audit.csv"
    await _export(tmp_path, db_url, "--format", "csv", "--output", str(out))
    assert _from_csv(out.read_text(encoding="utf-8")) == list(ENTRIES)

    since = await _export(tmp_path, db_url, "--since", "2026-12-02T08:30:15+00:00")
    assert [_typed(json.loads(line)) for line in since.splitlines()] == list(ENTRIES[3:])
    # A date alone is midnight UTC; a time with an offset is converted.
    day = await _export(tmp_path, db_url, "--since", "2026-12-03")
    assert [_typed(json.loads(line)) for line in day.splitlines()] == list(ENTRIES[4:])


@pytest.mark.process
async def test_bad_since_and_missing_database_exit_two_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    status, out, err = await run_to_exit(
        [sys.executable, "-m", "bot", "audit", "export"],
        env=child_env(tmp_path, VPNBOT_DATABASE_URL=url),
        cwd=tmp_path,
    )
    assert (status, out) == (2, "")
    assert "no database at" in err
    assert "Traceback" not in err
    assert not (tmp_path / "nothing-here.db").exists(), "the export never creates a database"

    await _write(f"sqlite:///{tmp_path / 'bot.db'}")
    status, out, err = await run_to_exit(
        [sys.executable, "-m", "bot", "audit", "export", "--since", "last tuesday"],
        env=child_env(tmp_path, VPNBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}"),
        cwd=tmp_path,
    )
    assert status == 2
    assert "is not an ISO 8601 date" in err
    assert "Traceback" not in err
