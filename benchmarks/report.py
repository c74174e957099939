"""Regenerate benchmarks/results.md with one command: every benchmark, on this machine, now.

    .venv/bin/python benchmarks/report.py            # the full runs (about 11 minutes)
    .venv/bin/python benchmarks/report.py --quick    # the quick runs, to check the report works

It runs ``run.py``, ``baselines.py``, ``polling.py`` and ``scale.py`` one after the other (never
side by side: they would measure each other), puts their tables under a header naming the machine,
and appends the hand-written analysis in ``benchmarks/analysis.md``. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get("VPNBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

SECTIONS = (
    ("Speed, throughput, memory, store queries", ["run.py"]),
    ("The confirmation against hand-written bots", ["baselines.py"]),
    ("Completion lag and API cost of gateway polling", ["polling.py"]),
    ("Scale and start-up", ["scale.py", "--postgres", PG_URL]),
)


def _run(args: Sequence[str], quick: bool) -> str:
    command = [sys.executable, str(HERE / args[0]), *args[1:], *(["--quick"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=HERE.parent)  # noqa: S603
    table = done.stdout.strip()
    if done.returncode != 0 and not table:
        table = f"(failed with exit status {done.returncode}: {done.stderr.strip().splitlines()[-1:]})"
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="regenerate benchmarks/results.md")
    parser.add_argument("--quick", action="store_true", help="quick runs only")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results.md", help="where to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    parts = []
    for title, command in SECTIONS:
        print(f"running {command[0]}…", file=sys.stderr, flush=True)
        parts.append(
            f"## {title}\n\n`python benchmarks/{' '.join(command[:1])}`\n\n{_run(command, args.quick)}\n"
        )
    took = time.perf_counter() - started
    header = (
        "# Benchmark results\n\n"
        f"`python benchmarks/report.py{' --quick' if args.quick else ''}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"{platform.platform(terse=True)} · took {took:.0f} s.\n"
    )
    analysis = (HERE / "analysis.md").read_text(encoding="utf-8") if (HERE / "analysis.md").exists() else ""
    args.out.write_text("\n".join([header, *parts, analysis]), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
