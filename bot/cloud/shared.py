"""Shared reads: callers that only inform a person join an identical read already on the way.

:class:`bot.cloud.client.VpcClient` keys a read by what goes on the wire (action, region and
parameters) and hands :class:`SharedReads` the coroutine that would make it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ReadKey", "SharedReads"]

# A read as the wire sees it: action, region and parameters.
ReadKey = tuple[str, str, tuple[tuple[str, str], ...]]

_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class _SharedRead:
    """A read on the way, and how many callers wait for it."""

    task: asyncio.Task[Any]
    waiters: int = 0


class SharedReads:
    """The reads on the way, by key, that other callers may join."""

    def __init__(self) -> None:
        self._in_flight: dict[ReadKey, _SharedRead] = {}

    async def join(self, key: ReadKey, start: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """The answer of the read ``key`` on the way, or of the one ``start()`` makes if none is.

        For reads that only inform a person (a confirmation and its preview): a burst of
        commands on one gateway then costs one call per distinct read, not one per command,
        which is what Alibaba's per-API throttling wants too. The answer is as fresh as the
        caller's own would be, give or take the read's round trip, so a read that must follow a
        change (the check after a delete, gateway polling) never joins one: it is not shared.
        Each caller waits on its own: one that gives up (its deadline) leaves the read to the
        others, and the read (with its retries) stops when the last one has gone. The shared read
        logs under the context of the caller that started it.
        """
        read = self._in_flight.get(key)
        if read is None:
            task = asyncio.ensure_future(start())
            read = self._in_flight[key] = _SharedRead(task)
            task.add_done_callback(functools.partial(self._landed, key))
        read.waiters += 1
        try:
            answer: _T = await asyncio.shield(read.task)
        finally:
            read.waiters -= 1
            if read.waiters == 0 and not read.task.done():
                # Nobody wants the answer any more; a caller that comes now starts a read of its own.
                if self._in_flight.get(key) is read:
                    del self._in_flight[key]
                read.task.cancel()
        return answer

    def _landed(self, key: ReadKey, task: asyncio.Task[Any]) -> None:
        read = self._in_flight.get(key)
        if read is not None and read.task is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # every waiter got it already; nobody is left to be told twice
