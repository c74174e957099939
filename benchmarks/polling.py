"""Completion lag and API cost of the gateway polling schedule (issue 14, point 4).

For gateway updates lasting about 10 s, 60 s and 300 s (each run drawn from ±15 % around that,
seeded), compare the bot's schedule (``bot.workflow.polling``: wait until 90 % of the median of past
updates, then look every second) with fixed 5 s polling. *Lag* is the time from the gateway
becoming ``active`` to the poll that sees it — what the final Slack message waits for; *calls* are
DescribeVpnGateway calls per deletion. The workflow follows ``poll_delay`` exactly, so simulating
the schedule on virtual time measures what the bot does, deterministically and in milliseconds.

    .venv/bin/python benchmarks/polling.py          # prints a markdown table
    .venv/bin/python benchmarks/polling.py --quick  # fewer runs
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.workflow.polling import expected_duration, poll_delay

FIXED_INTERVAL_S = 5.0
HISTORY = 20


@dataclass(frozen=True)
class Result:
    lag_p50: float
    lag_p95: float
    calls_mean: float


def _simulate(actual: float, first: float, next_delay: Callable[[float], float]) -> tuple[float, int]:
    """Look first at ``first``, then after ``next_delay(t)``, until a look at or after ``actual``: (lag, calls)."""
    t = first
    calls = 0
    while True:
        calls += 1
        if t >= actual:
            return t - actual, calls
        t += next_delay(t)


def _bot_delay(elapsed: float, *, expected: float | None) -> float:
    return poll_delay(elapsed, expected, FIXED_INTERVAL_S)


def run(duration: float, runs: int, seed: int) -> tuple[Result, Result]:
    rng = random.Random(seed)
    draws = [duration * rng.uniform(0.85, 1.15) for _ in range(HISTORY + runs)]
    ours: list[tuple[float, int]] = []
    fixed: list[tuple[float, int]] = []
    for i in range(runs):
        expected = expected_duration(draws[i : i + HISTORY])
        actual = draws[HISTORY + i]

        # As in the workflow: a first wait (none without history), then poll_delay after each look.
        first = poll_delay(0.0, expected, 0.0)
        ours.append(_simulate(actual, first, functools.partial(_bot_delay, expected=expected)))
        fixed.append(_simulate(actual, 0.0, lambda _t: FIXED_INTERVAL_S))
    return _summary(ours), _summary(fixed)


def _summary(samples: Sequence[tuple[float, int]]) -> Result:
    lags = sorted(lag for lag, _ in samples)
    return Result(
        lag_p50=statistics.median(lags),
        lag_p95=lags[min(len(lags) - 1, int(0.95 * len(lags)))],
        calls_mean=statistics.fmean(calls for _, calls in samples),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gateway polling: completion lag and API calls")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    runs = 50 if args.quick else 1000
    print("| update | schedule | lag p50 | lag p95 | DescribeVpnGateway calls per deletion | goal met |")
    print("|---|---|---|---|---|---|")
    missed = False
    for duration in (10.0, 60.0, 300.0):
        ours, fixed = run(duration, runs, seed=int(duration))
        met = ours.lag_p50 <= 1.5 and ours.calls_mean <= fixed.calls_mean
        missed |= not met
        print(
            f"| ~{duration:.0f} s | bot (history) | {ours.lag_p50:.2f} s | {ours.lag_p95:.2f} s | "
            f"{ours.calls_mean:.1f} | {'✅' if met else '❌'} |"
        )
        print(
            f"| ~{duration:.0f} s | fixed 5 s | {fixed.lag_p50:.2f} s | {fixed.lag_p95:.2f} s | {fixed.calls_mean:.1f} | — |"
        )
    print(
        f"\n{runs} deletions per row, each after {HISTORY} past ones; goal: lag p50 ≤ 1.5 s, calls ≤ fixed 5 s."
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
