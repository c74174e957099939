"""The doctor's table as text: aligned rows, their fixes, the RAM policy when one is missing, a summary.

Secrets are masked by the log filter's masker (:class:`bot.logs.RedactingFilter`), so the table
and the logs hide the same values the same way.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterable, Sequence
from typing import Final

from bot.doctor.model import SECTIONS, Check, Status, plural
from bot.doctor.permissions import ram_policy
from bot.logs import RedactingFilter

__all__ = ["mask", "render"]

_WIDTH: Final = 110
_HEADER: Final = (
    "vpn-bot doctor: settings, Slack, Alibaba Cloud and the database. Nothing is changed or deleted."
)


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, width=max(40, _WIDTH - indent), break_on_hyphens=False) or [""]


def _section_lines(rows: Sequence[Check], name_width: int) -> list[str]:
    detail_col = 2 + 4 + 2 + name_width + 2
    pad = " " * detail_col
    out: list[str] = []
    for row in rows:
        detail = _wrap(row.detail, detail_col)
        out.append(f"  {row.status.value:<4}  {row.name:<{name_width}}  {detail[0]}".rstrip())
        out += [pad + line for line in detail[1:]]
        if row.fix and row.status is not Status.PASS:
            out += [pad + line for line in _wrap("fix: " + row.fix, detail_col)]
    return out


def _summary(rows: Sequence[Check]) -> str:
    counts = {s: sum(1 for r in rows if r.status is s) for s in Status}
    summary = f"{counts[Status.PASS]} passed, {plural(counts[Status.WARN], 'warning')}, {counts[Status.FAIL]} failed"
    if counts[Status.SKIP]:
        summary += f", {counts[Status.SKIP]} skipped"
    if counts[Status.FAIL]:
        return summary + ": fix the FAIL rows, then run `vpn-bot doctor` again."
    if counts[Status.WARN]:
        return summary + ": nothing blocks a first real deletion; read the WARN rows."
    return summary + ": ready for a first real deletion."


def render(rows: Sequence[Check]) -> str:
    """Render the rows as an aligned table, with fixes, a RAM policy hint and a summary."""
    name_width = max((len(r.name) for r in rows), default=10)
    out = [_HEADER, ""]
    for section in SECTIONS:
        in_section = [r for r in rows if r.section == section]
        if in_section:
            out += [section, *_section_lines(in_section, name_width), ""]
    if any(r.needs_ram for r in rows):
        out += _wrap(
            "Least-privilege RAM policy for the bot (RAM console → Policies → Create Policy → JSON; then "
            "attach it to the bot's RAM user or role):",
            0,
        )
        out += ["  " + line for line in ram_policy().splitlines()]
        out.append("")
    out.append(_summary(rows))
    return "\n".join(out) + "\n"


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and anything shaped like a Slack token) replaced by ``***``."""
    record = logging.LogRecord("bot.doctor", logging.INFO, __file__, 0, text, None, None)
    RedactingFilter(secrets).filter(record)
    return record.getMessage()
