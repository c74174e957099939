"""Keep benchmarks/run.py from rotting: each benchmark runs at tiny sizes and returns numbers.

Nothing here asserts on speed or memory; the goals live in benchmarks/README.md and are checked
by running ``python benchmarks/run.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.benchmark

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
POLLING_PY = RUN_PY.with_name("polling.py")


def _load() -> ModuleType:
    name = "vpnbot_benchmarks_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RUN_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


run = _load()


def _numbers(rows: list[Any]) -> list[float]:
    """Every number the rows report, after checking each row is well formed."""
    found: list[float] = []
    for row in rows:
        assert row.benchmark
        assert row.result
        assert row.goal
        assert row.met in (True, False, None)
        for value in row.numbers.values():
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert math.isfinite(value)
                found.append(float(value))
    return found


@pytest.mark.parametrize("name", ["ack", "e2e", "memory", "store"])
async def test_async_benchmark_runs_and_reports_numbers(name: str) -> None:
    rows = await run.BENCHMARKS[name](run.Sizes.quick())
    assert rows
    measured = [r for r in rows if r.met is not None]
    assert measured, "at least one row must carry a verdict"
    assert _numbers(measured)


def test_signing_benchmark_runs_and_reports_numbers() -> None:
    rows = run.bench_sign(run.Sizes.quick())
    assert rows[0].numbers["signatures"] == run.Sizes.quick().sign_count
    assert rows[0].numbers["per_second"] > 0


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures logging for the whole process; put it back for the tests that follow."""
    root = logging.getLogger()
    names = ["aiohttp", "slack_sdk", "slack_bolt", "httpx", "httpcore", "aiohttp.access", "asyncio"]
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_cli_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    status = run.main(["--quick", "--only", "sign", "--json", str(out)])
    printed = capsys.readouterr().out
    assert status in (0, 1)
    assert "| benchmark | result | goal | met |" in printed
    assert "ACS3 signing" in printed
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert data["environment"]["cpus"] >= 1
    assert [r["benchmark"] for r in data["results"]] == ["ACS3 signing"]


def test_cli_rejects_an_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_polling_benchmark_runs_and_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("vpnbot_benchmarks_polling", POLLING_PY)
    assert spec is not None
    assert spec.loader is not None
    polling = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = polling  # dataclasses look their module up there
    spec.loader.exec_module(polling)
    polling.main(["--quick"])
    table = capsys.readouterr().out
    assert table.count("| bot (history) |") == 3
    assert table.count("| fixed 5 s |") == 3


def test_baselines_benchmark_runs_every_app_in_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "vpnbot_benchmarks_baselines", RUN_PY.with_name("baselines.py")
    )
    assert spec is not None
    assert spec.loader is not None
    baselines = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = baselines  # dataclasses look their module up there
    spec.loader.exec_module(baselines)
    assert baselines.main(["--quick"]) == 0
    table = capsys.readouterr().out
    for app in ("| vpn-bot |", "| vpn-bot, no rate limit |", "| bare Bolt |", "| raw aiohttp |"):
        assert table.count(app) == len(baselines.SCENARIOS), table
    rows = [
        line.split("|") for line in table.splitlines() if line.startswith("| ") and "scenario" not in line
    ]
    # Every command got its confirmation.
    assert [cells[5].strip() for cells in rows] == ["0"] * 4 * len(baselines.SCENARIOS)
    # The round-trip scenarios (issue 24) weigh both bots against their goal.
    assert table.count("round trips + 1.5 x the bare app's overhead") == 4, table


def test_scale_and_startup_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("vpnbot_benchmarks_scale", RUN_PY.with_name("scale.py"))
    assert spec is not None
    assert spec.loader is not None
    scale = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scale  # dataclasses look their module up there
    spec.loader.exec_module(scale)
    assert scale.main(["--quick"]) == 0
    table = capsys.readouterr().out
    assert "50/50 finished" in table
    assert "`vpn-bot serve` start-up" in table
