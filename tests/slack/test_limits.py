"""The per-person rate: a token bucket per Slack user, refilled evenly, bounded in memory."""

from __future__ import annotations

import pytest

from bot.errors import TooManyRequests
from bot.slack.limits import UserRate


def test_a_person_gets_a_burst_then_one_per_refill() -> None:
    now = [0.0]
    rate = UserRate(3, clock=lambda: now[0])
    for _ in range(3):
        rate.take("U0A")
    with pytest.raises(TooManyRequests) as refused:
        rate.take("U0A")
    assert refused.value.retry_s == pytest.approx(20.0)  # 3 per minute: one every 20 s
    assert "try again in 20 s" in refused.value.friendly
    rate.take("U0B")  # someone else has their own bucket
    now[0] = 19.0
    with pytest.raises(TooManyRequests):
        rate.take("U0A")
    now[0] = 20.0
    rate.take("U0A")
    with pytest.raises(TooManyRequests):
        rate.take("U0A")
    now[0] = 1000.0  # a long pause refills to the burst, not beyond
    for _ in range(3):
        rate.take("U0A")
    with pytest.raises(TooManyRequests):
        rate.take("U0A")


def test_zero_turns_it_off() -> None:
    rate = UserRate(0, clock=lambda: 0.0)
    for _ in range(1000):
        rate.take("U0A")


def test_memory_is_bounded_by_the_least_recently_seen() -> None:
    rate = UserRate(1, clock=lambda: 0.0, people_max=100)
    for i in range(1000):
        rate.take(f"U{i:05d}")
    with pytest.raises(TooManyRequests):
        rate.take("U00999")  # recently seen: still counted
