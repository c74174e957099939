"""The doctor's rows: :class:`Check` with its :class:`Status`, and the helpers every area shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from bot.errors import BotError

__all__ = [
    "CLOUD",
    "DATABASE",
    "SECTIONS",
    "SETTINGS",
    "SLACK",
    "Check",
    "Status",
    "guarded",
    "plural",
    "unexpected",
]

log = logging.getLogger("bot.doctor")

SETTINGS, SLACK, CLOUD, DATABASE = "Settings", "Slack", "Alibaba Cloud", "Database"
SECTIONS: Final = (SETTINGS, SLACK, CLOUD, DATABASE)
# A doctor should answer within seconds, not wait out the bot's full retry budget.
GROUP_TIMEOUT_S: Final = 45.0


class Status(StrEnum):
    """The outcome of one check."""

    PASS = "PASS"  # noqa: S105 - a check result, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the doctor's table; ``fix`` says what to do when it is not PASS."""

    section: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    needs_ram: bool = False  # a missing RAM permission: the table then prints the policy to grant


def plural(n: int, word: str) -> str:
    """``1 user``, ``2 users``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def unexpected(section: str, name: str, exc: BaseException) -> Check:
    """A FAIL row for an exception no check expected (the details go to the DEBUG log)."""
    friendly = exc.friendly if isinstance(exc, BotError) else "the check failed unexpectedly."
    return Check(
        section,
        name,
        Status.FAIL,
        f"{type(exc).__name__}: {friendly}",
        "Run again with VPNBOT_LOG_LEVEL=DEBUG to see the details in the log.",
    )


async def guarded(section: str, run: Awaitable[list[Check]]) -> list[Check]:
    """Run one group of checks; a crash or a hang becomes one FAIL row, never a traceback."""
    try:
        async with asyncio.timeout(GROUP_TIMEOUT_S):
            return await run
    except TimeoutError:
        return [
            Check(
                section,
                "Checks",
                Status.FAIL,
                f"no answer within {GROUP_TIMEOUT_S:.0f} s.",
                "Check the network path, then run the doctor again.",
            )
        ]
    # The doctor's contract is a table, never a traceback: any crash becomes a row.
    except Exception as exc:
        log.debug("doctor: %s checks crashed", section, exc_info=True)
        return [unexpected(section, "Checks", exc)]
