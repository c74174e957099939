"""One request rate for every Alibaba Cloud call a process makes, slowed down by throttling.

Alibaba Cloud throttles per account and per API (``Throttling.User``, ``Throttling.Api``), counting
requests per second, not per connection, so the client limits its requests by rate rather than
by a connection pool's size. :class:`AdaptiveRateLimiter` lets up to ``rate`` requests go at once
and no more than that in any one second (a sliding window, a little longer than a second: see
``_GUARD_S``); its rate halves when Alibaba throttles and grows back by a tenth of the ceiling after
each run of successes (additive increase, multiplicative decrease), never above the ceiling.

The calls behind a confirmation come in bursts (the connection, then its gateway and three route
lists at once, for every command of a burst): spacing them 1/rate apart made the tenth command of
a burst wait for the ninety calls before it although the second held far fewer than the ceiling.

aiolimiter (a leaky bucket) has no notion of changing its rate while waiters queue, and a token
bucket would let a burst and a full second's refill through in the same second; the adaptive,
never-above-the-ceiling window is the point here, so this is the small limiter it needs.
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
# How much longer than its nominal length the window is. Alibaba counts a request when it arrives,
# some milliseconds after it left and not evenly; the guard keeps a burst that arrives late from
# being counted in the same second as the next one (and any 10 s at the receiver within ten times the
# rate, for network jitter under 0.5 s). It costs 5 % of the rate only while requests queue.
_GUARD_S = 0.05


class AdaptiveRateLimiter:
    """At most ``rate`` requests in any one second, shared by all calls of a process.

    ``await acquire()`` before each request. Up to ``n = floor(rate)`` requests (at least one) go
    at once; the next waits until the n-th before it is one window old, the window being ``n /
    rate`` seconds (one second from a rate of 1/s up) plus ``_GUARD_S``. Waiters queue in arrival
    order and one pacer lets them go, judging by the times requests actually went (not by a
    schedule made in advance): a busy event loop that wakes the pacer late delays the queue, it
    never lets more than ``n`` through in one window to catch up. Idle time is not saved up
    beyond one window's worth. An uncontended call goes straight through without touching the
    event loop.
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
        # When the last requests went, newest last: as many as the ceiling lets go in one window.
        self._sent: deque[float] = deque(maxlen=self._allowance(rate_per_second))
        self._hold_until = -math.inf  # after a throttle, nothing goes before this
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._successes = 0

    @staticmethod
    def _allowance(rate: float) -> int:
        return max(1, math.floor(rate + _EPSILON))

    @property
    def rate(self) -> float:
        """The current rate, in requests per second."""
        return self._rate

    @property
    def window(self) -> float:
        """How long the window is at the current rate, in seconds (guard included)."""
        return self._allowance(self._rate) / self._rate + _GUARD_S

    def _free_at(self) -> float:
        """When the next request may go: its place in the window is free and no throttle holds it."""
        n = self._allowance(self._rate)
        if len(self._sent) < n:
            return self._hold_until
        return max(self._hold_until, self._sent[-n] + self.window)

    async def acquire(self) -> None:
        """Wait for this request's turn; turns go in arrival order."""
        now = self._monotonic()
        if not self._waiters and now >= self._free_at() - _EPSILON:
            self._sent.append(now)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace(), name="vpnbot-rate-limiter")
        await turn  # a cancelled waiter's turn is cancelled with it, and skipped

    async def _pace(self) -> None:
        while self._waiters:
            wait = self._free_at() - self._monotonic()
            if wait > _EPSILON:
                await self._sleep(wait)
                continue  # the rate may have changed meanwhile (a throttle): look again
            turn = self._waiters.popleft()
            if turn.done():
                continue
            self._sent.append(self._monotonic())
            turn.set_result(None)

    def throttled(self) -> None:
        """Alibaba said slow down: halve the rate (not below the floor); nothing goes for a full window."""
        self._rate = max(self.floor, self._rate / 2)
        self._hold_until = max(self._hold_until, self._monotonic() + self.window)
        self._successes = 0

    def succeeded(self) -> None:
        """A request went through: after a run of them, grow the rate back towards the ceiling."""
        if self._rate >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= _RECOVERY_RUN:
            self._rate = min(self.ceiling, self._rate + self.ceiling / 10)
            self._successes = 0
