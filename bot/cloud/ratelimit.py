"""One request rate for every Alibaba Cloud call a process makes, slowed down by throttling.

Alibaba Cloud throttles per account and per API (``Throttling.User``, ``Throttling.Api``), not per
connection, so the client paces its requests by rate rather than by a connection pool's size.
:class:`AdaptiveRateLimiter` hands out request slots 1/rate apart; its rate halves when Alibaba
throttles and grows back by a tenth of the ceiling after each run of successes (additive increase,
multiplicative decrease), never above the configured ceiling.

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
    """Slots 1/rate apart, shared by all calls of a process: ``await acquire()`` before each request.

    Each caller reserves the next free slot and sleeps until it, once; there is no lock to hand
    over, so a burst of waiters costs one timer each. Nothing is saved up while idle: requests are
    paced 1/rate apart, never in bursts, so no window of any length sees more than the rate.
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
        self._next = monotonic()  # the earliest free slot
        # Bumped by a throttle: slots handed out before it are void, their holders reserve again.
        self._epoch = 0
        self._successes = 0

    @property
    def rate(self) -> float:
        """The current rate, in requests per second."""
        return self._rate

    async def acquire(self) -> None:
        """Wait for this request's slot; slots go out in arrival order."""
        while True:
            now = self._monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self._rate
            if slot - now <= _EPSILON:
                return
            epoch = self._epoch
            await self._sleep(slot - now)
            if epoch == self._epoch:
                return
            # Alibaba throttled while this request waited: its slot was at the old rate.

    def throttled(self) -> None:
        """Alibaba said slow down: halve the rate (not below the floor) and start the slots again."""
        self._rate = max(self.floor, self._rate / 2)
        self._epoch += 1
        self._next = self._monotonic() + 1.0 / self._rate
        self._successes = 0

    def succeeded(self) -> None:
        """A request went through: after a run of them, grow the rate back towards the ceiling."""
        if self._rate >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= _RECOVERY_RUN:
            self._rate = min(self.ceiling, self._rate + self.ceiling / 10)
            self._successes = 0
