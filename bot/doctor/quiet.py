"""Keep library chatter off the terminal while the doctor runs: its table reports the same failures.

``alibabacloud_credentials`` logs to the ``credentials`` logger through stream handlers of its own,
bound to stderr when it is imported (50-60 lines of tracebacks when the chain finds no key), and
its ECS metadata provider starts APScheduler, which logs at INFO. A filter on the ``credentials``
logger drops each record before any handler sees it (the library's own included) and, at DEBUG,
hands it to the doctor's log instead, where the usual secret masking applies.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final

__all__ = ["quiet_libraries"]

log = logging.getLogger("bot.doctor")

# Loggers with stream handlers of their own: silenced by a filter, whatever handlers they gain later.
_OWN_HANDLERS: Final = ("credentials",)
# Loggers that go through ours: raised above their warnings (the table says the same, readably).
_CHATTY: Final = ("bot.cloud", "bot.store", "httpx", "slack_sdk")
# APScheduler runs only the credential library's refresher, which outlives the block and says
# "Scheduler has been shut down" at exit: its INFO lines stay off for the rest of the process.
_SCHEDULER: Final = "apscheduler"


class _ToDebugLog(logging.Filter):
    """Reject every record; at DEBUG, log it again under ``bot.doctor``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", record.name, record.getMessage(), exc_info=record.exc_info)
        return False


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the credential library and the clients' warnings for the ``with`` block."""
    catcher = _ToDebugLog()
    own = [logging.getLogger(name) for name in _OWN_HANDLERS]
    chatty = [] if log.isEnabledFor(logging.DEBUG) else [logging.getLogger(name) for name in _CHATTY]
    saved = [lg.level for lg in chatty]
    for lg in own:
        lg.addFilter(catcher)
    scheduler = logging.getLogger(_SCHEDULER)
    scheduler.setLevel(max(scheduler.getEffectiveLevel(), logging.WARNING))
    for lg in chatty:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg in own:
            lg.removeFilter(catcher)
        for lg, level in zip(chatty, saved, strict=True):
            lg.setLevel(level)
