"""The adaptive rate limiter on a fake clock: bursts within the rate, slowing down on throttling, recovering."""

from __future__ import annotations

import asyncio
import heapq
import random

import httpx
import pytest

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.ratelimit import AdaptiveRateLimiter

from .fakes import AK, FakeVpc, error_reply, json_reply


class FakeTime:
    """A monotonic clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(rate: float, clock: FakeTime) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(rate, monotonic=clock.monotonic, sleep=clock.sleep)


def _busiest(stamps: list[float], window: float) -> int:
    """The most requests in any window of ``window`` seconds (float sums: a hair shorter)."""
    return max(len([t for t in stamps if start <= t < start + window - 1e-6]) for start in stamps)


async def test_a_burst_up_to_the_rate_goes_at_once() -> None:
    clock = FakeTime()
    bucket = limiter(10, clock)
    for _ in range(10):
        await bucket.acquire()
    # Ten requests within the ceiling of 10/s: none of them waits (they used to go 0.1 s apart).
    assert clock.now == 0.0
    assert clock.slept == []


async def test_requests_never_go_above_the_rate_in_any_second() -> None:
    clock = FakeTime()
    bucket = limiter(10, clock)
    stamps = []
    for _ in range(50):
        await bucket.acquire()
        stamps.append(clock.now)
    # Ten at once, then ten more each time the window (1 s and the 50 ms guard) has passed.
    assert stamps == pytest.approx([1.05 * (n // 10) for n in range(50)])
    assert _busiest(stamps, 1.0) == 10
    assert _busiest(stamps, 10.0) <= 100


async def test_idle_time_is_saved_up_for_one_window_only() -> None:
    clock = FakeTime()
    bucket = limiter(10, clock)
    clock.now += 60.0  # a quiet minute
    stamps = []
    for _ in range(25):
        await bucket.acquire()
        stamps.append(clock.now - 60.0)
    assert stamps == pytest.approx([1.05 * (n // 10) for n in range(25)])


async def test_a_slow_rate_lets_one_request_go_per_interval() -> None:
    clock = FakeTime()
    bucket = limiter(0.5, clock)
    for _ in range(3):
        await bucket.acquire()
    assert clock.now == pytest.approx(2 * 2.05)


async def test_throttling_halves_the_rate_and_successes_win_it_back() -> None:
    clock = FakeTime()
    bucket = limiter(40, clock)
    bucket.throttled()
    assert bucket.rate == 20
    bucket.throttled()
    bucket.throttled()
    assert bucket.rate == 5
    for _ in range(20):
        bucket.succeeded()
    assert bucket.rate == 9  # +10% of the ceiling after a run of successes
    for _ in range(20 * 20):
        bucket.succeeded()
    assert bucket.rate == 40  # never above the ceiling


async def test_the_rate_never_drops_below_its_floor() -> None:
    bucket = limiter(2, FakeTime())
    for _ in range(10):
        bucket.throttled()
    assert bucket.rate == bucket.floor == 0.5


class VirtualTime:
    """A clock for many sleepers at once: time jumps to the earliest wake-up once all are asleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self.late: dict[int, float] = {}  # the n-th sleep wakes this much late (a busy event loop)
        self._slept = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slept += 1
        late = self.late.get(self._slept, 0.0)
        heapq.heappush(self._sleepers, (self.now + seconds + late, id(wake), wake))
        await wake

    async def run(self, *tasks: asyncio.Task[None]) -> None:
        while not all(t.done() for t in tasks):
            for _ in range(5):  # let everything that can run reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                self.now, _, wake = heapq.heappop(self._sleepers)
                wake.set_result(None)
        await asyncio.gather(*tasks)


async def test_a_burst_of_waiters_goes_out_in_arrival_order_within_the_rate() -> None:
    clock = VirtualTime()
    bucket = AdaptiveRateLimiter(10, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[tuple[int, float]] = []

    async def request(n: int) -> None:
        await bucket.acquire()
        sent.append((n, clock.now))

    await clock.run(*(asyncio.create_task(request(n)) for n in range(30)))
    assert [n for n, _ in sent] == list(range(30))
    assert [t for _, t in sent] == pytest.approx([1.05 * (n // 10) for n in range(30)])


async def test_a_throttle_slows_down_the_requests_already_waiting() -> None:
    clock = VirtualTime()
    bucket = AdaptiveRateLimiter(10, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[float] = []

    async def request(n: int) -> None:
        await bucket.acquire()
        sent.append(clock.now)
        if n == 9:  # the tenth answer is a Throttling.User
            bucket.throttled()

    await clock.run(*(asyncio.create_task(request(n)) for n in range(30)))
    assert len(sent) == 30
    before, after = sent[:10], sent[10:]
    assert before == [0.0] * 10
    # Nothing goes for a full window at the halved rate, then five a window.
    assert after[0] >= 1.05 - 1e-9
    assert _busiest(after, 1.0) == 5
    assert after == pytest.approx([1.05 * (1 + n // 5) for n in range(20)])


async def test_a_late_wake_up_never_lets_a_clump_through() -> None:
    clock = VirtualTime()
    clock.late[1] = 0.55  # the event loop was busy for half a second
    clock.late[2] = 0.3
    bucket = AdaptiveRateLimiter(10, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[float] = []

    async def request() -> None:
        await bucket.acquire()
        sent.append(clock.now)

    await clock.run(*(asyncio.create_task(request()) for _ in range(40)))
    assert len(sent) == 40
    # However late the loop, no second (nor any window) sees more than the rate: no catching up.
    assert _busiest(sent, 1.0) <= 10
    assert _busiest(sent, 1.05) <= 10


async def test_requests_arriving_at_random_never_exceed_the_rate_in_any_second() -> None:
    clock = VirtualTime()
    bucket = AdaptiveRateLimiter(20, monotonic=clock.monotonic, sleep=clock.sleep)
    arrivals = random.Random(24)
    sent: list[float] = []

    async def request(at: float) -> None:
        await clock.sleep(at)
        await bucket.acquire()
        sent.append(clock.now)

    starts = sorted(arrivals.uniform(0, 5) for _ in range(200))
    await clock.run(*(asyncio.create_task(request(at)) for at in starts))
    assert len(sent) == 200
    assert _busiest(sent, 1.0) <= 20
    assert _busiest(sent, 10.0) <= 200
    # Bursts go without waiting for a schedule: the first 20 go as they arrive.
    assert sent[:20] == pytest.approx(starts[:20])


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AdaptiveRateLimiter(0)


async def test_the_client_slows_down_when_alibaba_throttles(fake: FakeVpc) -> None:
    fake.replies = [error_reply("Throttling.User"), json_reply({"RequestId": "R", "Regions": {"Region": []}})]
    bucket = AdaptiveRateLimiter(30)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        client = VpcClient(StaticCredentialsProvider(AK), http=http, limiter=bucket, wait_jitter=0.0)
        await client.describe_regions()
    assert len(fake.requests) == 2
    assert bucket.rate == 15
