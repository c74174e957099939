"""One request rate for every Alibaba Cloud call a process makes, slowed down by throttling.

Alibaba Cloud throttles per account and per API (``Throttling.User``, ``Throttling.Api``), not per
connection, so the client paces its requests by rate rather than by a connection pool's size.
:class:`AdaptiveRateLimiter` lets requests go 1/rate apart; its rate halves when Alibaba
throttles and grows back by a tenth of the ceiling after each run of successes (additive increase,
multiplicative decrease), never above the configured ceiling.

aiolimiter (a leaky bucket) paces well but has no notion of changing its rate while waiters queue;
the adaptive part is the point here, so this is the small pacer it needs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["AdaptiveRateLimiter"]

_EPSILON = 1e-9
# Successes in a row before the rate grows again after a throttle.
_RECOVERY_RUN = 20


class AdaptiveRateLimiter:
    """Requests 1/rate apart, shared by all calls of a process: ``await acquire()`` before each one.

    Waiters queue in arrival order and one pacer lets them go, each at least 1/rate after the one
    before by the clock at the moment it goes (not by a schedule made in advance): a busy event
    loop that wakes the pacer late delays the queue, it never lets a clump through to catch up.
    Nothing is saved up while idle, so no window of any length sees more than the rate, give or
    take one. An uncontended call goes straight through without touching the event loop.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        floor: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("the rate must be positive")
        self.ceiling = rate_per_second
        self.floor = min(floor, rate_per_second)
        self._rate = rate_per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = -math.inf  # when the last request went
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._successes = 0

    @property
    def rate(self) -> float:
        """The current rate, in requests per second."""
        return self._rate

    async def acquire(self) -> None:
        """Wait for this request's turn; turns go in arrival order."""
        now = self._monotonic()
        if not self._waiters and now - self._last >= 1.0 / self._rate - _EPSILON:
            self._last = now
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace(), name="vpnbot-rate-limiter")
        await turn  # a cancelled waiter's turn is cancelled with it, and skipped

    async def _pace(self) -> None:
        while self._waiters:
            wait = self._last + 1.0 / self._rate - self._monotonic()
            if wait > _EPSILON:
                await self._sleep(wait)
                continue  # the rate may have changed meanwhile (a throttle): look again
            turn = self._waiters.popleft()
            if turn.done():
                continue
            self._last = self._monotonic()
            turn.set_result(None)

    def throttled(self) -> None:
        """Alibaba said slow down: halve the rate (not below the floor); the next request waits a full interval."""
        self._rate = max(self.floor, self._rate / 2)
        self._last = max(self._last, self._monotonic())
        self._successes = 0

    def succeeded(self) -> None:
        """A request went through: after a run of them, grow the rate back towards the ceiling."""
        if self._rate >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= _RECOVERY_RUN:
            self._rate = min(self.ceiling, self._rate + self.ceiling / 10)
            self._successes = 0
