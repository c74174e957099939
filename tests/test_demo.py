"""The demo runs the whole scripted conversation and prints what people would see."""

from __future__ import annotations

import io

from bot.demo import run_demo
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_LOCKED


async def test_demo_runs_the_whole_story() -> None:
    out = io.StringIO()
    assert await run_demo(out) == 0
    transcript = out.getvalue()
    assert SEED_VCO_HANGZHOU in transcript
    assert "Deleted in" in transcript  # the approved delete finished
    assert "not allowed to approve" in transcript  # the refusal
    assert "VpnGateway.FinancialLocked" in transcript
    assert SEED_VCO_LOCKED in transcript
    assert "Usage" in transcript  # the typo's usage reply
    assert "Traceback" not in transcript
