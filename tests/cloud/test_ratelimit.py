"""The adaptive rate limiter on a fake clock: pacing, slowing down on throttling, recovering."""

from __future__ import annotations

import asyncio
import heapq
import itertools

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


async def test_requests_are_paced_at_the_rate_and_never_above_it() -> None:
    clock = FakeTime()
    bucket = limiter(10, clock)
    stamps = []
    for _ in range(50):
        await bucket.acquire()
        stamps.append(clock.now)
    # One request every 0.1 s: 50 requests take 4.9 s.
    assert stamps[-1] == pytest.approx(4.9, abs=0.01)
    for start in stamps:
        in_window = [t for t in stamps if start <= t < start + 1.0 - 1e-6]  # float sums
        assert len(in_window) <= 10


async def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    clock = FakeTime()
    bucket = limiter(10, clock)
    clock.now += 60.0  # a quiet minute
    stamps = []
    for _ in range(20):
        await bucket.acquire()
        stamps.append(clock.now)
    assert stamps[-1] - stamps[0] == pytest.approx(1.9, abs=0.01)


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


async def test_a_burst_of_waiters_goes_out_in_arrival_order_at_the_rate() -> None:
    clock = VirtualTime()
    bucket = AdaptiveRateLimiter(10, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[tuple[int, float]] = []

    async def request(n: int) -> None:
        await bucket.acquire()
        sent.append((n, clock.now))

    await clock.run(*(asyncio.create_task(request(n)) for n in range(30)))
    assert [n for n, _ in sent] == list(range(30))
    assert [t for _, t in sent] == pytest.approx([n / 10 for n in range(30)])


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
    assert before == pytest.approx([n / 10 for n in range(10)])
    # The twenty that were already waiting go out at the halved rate, 0.2 s apart.
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) >= 0.2 - 1e-9
    assert after[0] >= sent[9] + 0.2 - 1e-9


async def test_a_late_wake_up_never_lets_a_clump_through() -> None:
    clock = VirtualTime()
    clock.late[3] = 0.55  # the event loop was busy for half a second
    bucket = AdaptiveRateLimiter(10, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[float] = []

    async def request() -> None:
        await bucket.acquire()
        sent.append(clock.now)

    await clock.run(*(asyncio.create_task(request()) for _ in range(30)))
    assert len(sent) == 30
    # However late the loop, two requests never go closer than 1/rate: no catching up.
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.1 - 1e-9
    for start in sent:
        assert len([t for t in sent if start <= t < start + 1.0 - 1e-9]) <= 10


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
