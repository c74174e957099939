"""Transactions that a cancelled caller cannot cut off halfway."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["shielded"]

P = ParamSpec("P")
T = TypeVar("T")


def shielded(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a store method to its end (commit or rollback) even if its caller is cancelled.

    A transaction cancelled halfway can leave its connection detached from the pool with the
    transaction still open; on SQLite that keeps the database locked for every other caller.
    The caller still sees its cancellation at once; the work finishes in the background.
    """

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(*args, **kwargs))
        # The store (args[0]) keeps its transactions in flight, so close() can let them end.
        inflight: set[asyncio.Future[Any]] | None = getattr(args[0], "_inflight", None)
        if inflight is not None:
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        return await asyncio.shield(task)

    return run
