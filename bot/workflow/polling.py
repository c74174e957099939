"""When to look at the gateway again while a deletion runs: informed by how long past ones took.

Polling every few seconds makes the final message lag the gateway's return to ``active`` by half
an interval on average, and costs a call per interval. When past deletions on the same gateway (or
in the region) say how long an update takes, the bot instead waits quietly until 90 % of that,
then looks every second until twice that, then falls back to the base interval. The final message
then follows the gateway within a second, with fewer calls than fixed polling for updates longer
than a few seconds (``benchmarks/polling.py`` measures both).
"""

from __future__ import annotations

from statistics import median

__all__ = ["CLOSE_POLL_S", "expected_duration", "poll_delay"]

CLOSE_POLL_S = 1.0
_START_FRACTION = 0.9
_GIVE_UP_FACTOR = 2.0


def expected_duration(past: list[float]) -> float | None:
    """The typical duration of past updates (their median), or None with too little history."""
    usable = [d for d in past if d > 0]
    return median(usable) if len(usable) >= 2 else None


def poll_delay(elapsed: float, expected: float | None, base: float) -> float:
    """Seconds to wait before the next look, ``elapsed`` seconds after the delete was accepted."""
    if expected is None:
        return base
    start = _START_FRACTION * expected
    if elapsed < start:
        return start - elapsed
    if elapsed < _GIVE_UP_FACTOR * expected:
        return CLOSE_POLL_S
    return base
