"""Per-person limits on what reaches the cloud and the channel: a token bucket per Slack user.

In process memory: with several replicas each one counts on its own, so a person may get up to the
rate times the number of replicas (Slack spreads requests over them). That bounds a runaway script or a
stuck key well enough; a shared counter would cost a database write per command.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from bot.errors import TooManyRequests

__all__ = ["UserRate"]

# People tracked at once; past it the least recently seen (whose buckets are full again) are dropped.
_PEOPLE_MAX = 10_000


class UserRate:
    """``per_minute`` commands and lookups per person, refilled evenly, bursts up to ``per_minute``.

    ``per_minute=0`` turns the limit off.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        people_max: int = _PEOPLE_MAX,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._people_max = people_max
        # user id -> (tokens left, when they were counted), least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, user_id: str) -> None:
        """Spend one of ``user_id``'s tokens; raise TooManyRequests if none is left (nothing spent)."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.pop(user_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            raise TooManyRequests(per_minute=self.per_minute, retry_s=(1.0 - tokens) / rate)
        self._buckets[user_id] = (tokens - 1.0, now)
        while len(self._buckets) > self._people_max:
            self._buckets.popitem(last=False)
