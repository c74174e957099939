"""One request rate for every Alibaba Cloud call a process makes, slowed down by throttling.

Alibaba Cloud throttles per account and per API (``Throttling.User``, ``Throttling.Api``), not per
connection, so the client paces its requests by rate rather than by a connection pool's size.
:class:`AdaptiveRateLimiter` is a token bucket whose rate halves when Alibaba throttles and grows
back by a tenth of the ceiling after each run of successes (additive increase, multiplicative
decrease), never above the configured ceiling.

aiolimiter (a leaky bucket) paces well but has no notion of changing its rate while waiters queue;
the adaptive part is the point here, so this is the small bucket it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["AdaptiveRateLimiter"]

_EPSILON = 1e-9
# Successes in a row before the rate grows again after a throttle.
_RECOVERY_RUN = 20


class AdaptiveRateLimiter:
    """A token bucket shared by all calls of a process: ``await acquire()`` before each request.

    It holds at most one token: requests are paced 1/rate apart, never in bursts.
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
        # Never more than one request's worth saved up: requests are spaced 1/rate apart, so no
        # window of any length sees more than the rate (bursts would break the ceiling).
        self._tokens = 1.0
        self._updated = monotonic()
        self._successes = 0
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """The current rate, in requests per second."""
        return self._rate

    async def acquire(self) -> None:
        """Wait for a request slot; callers are served in arrival order."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0 - _EPSILON:  # floating point: 0.1 s x 10/s may be 0.999…
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                await self._sleep((1.0 - self._tokens) / self._rate)

    def throttled(self) -> None:
        """Alibaba said slow down: halve the rate (not below the floor)."""
        self._refill()
        self._rate = max(self.floor, self._rate / 2)
        self._tokens = min(self._tokens, 0.0)
        self._successes = 0

    def succeeded(self) -> None:
        """A request went through: after a run of them, grow the rate back towards the ceiling."""
        if self._rate >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= _RECOVERY_RUN:
            self._refill()
            self._rate = min(self.ceiling, self._rate + self.ceiling / 10)
            self._successes = 0

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(1.0, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
