"""Logging: structured JSON lines (or plain text), with every known secret masked.

The masking filter is a last line of defence: code never logs secrets on purpose, but a token
that slips into an exception message or a library's debug line is still replaced by ``***``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["QUIET_LOGGERS", "LogThrottle", "RedactingFilter", "configure_logging", "secret_values"]

# Values that look like Slack tokens are masked even when we were not told about them.
_TOKEN_RE = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}")
_MASK = "***"

# Database drivers log every statement with its parameters (a Slack response_url, user text) at
# INFO or DEBUG: never below WARNING, whatever VPNBOT_LOG_LEVEL says.
QUIET_LOGGERS = ("sqlalchemy", "asyncpg", "aiosqlite")


class RedactingFilter(logging.Filter):
    """Replace known secret values (and anything shaped like a Slack token) in log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return _TOKEN_RE.sub(_MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, cleaned, so the handler never prints the raw one.
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "exc_text") and not key.startswith("_"):
                cleaned_value = self._clean(value)
                if cleaned_value != value:
                    setattr(record, key, cleaned_value)
        return True


def secret_values(settings: Any) -> list[str]:
    """Every SecretStr value set on the settings object."""
    from pydantic import SecretStr

    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
    return values


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = (), stream: Any = None
) -> logging.Handler:
    """Send all logs to one handler on stderr (or ``stream``) with secrets masked; return it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter that would otherwise log request bodies at DEBUG.
    for noisy in ("slack_sdk", "slack_bolt", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
    for driver in QUIET_LOGGERS:
        logging.getLogger(driver).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # httpx logs every request URL at INFO; our client logs each call with its outcome already.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    return handler


class LogThrottle:
    """At most one log line per kind of event per interval; the next one says how many were left out.

    For events an outsider can cause at will (refused connections, replayed requests, failing
    probes): a flood of them must not become a flood of log lines.
    """

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object, **extra: Any) -> bool:
        """Log ``message % args`` unless a line of this ``kind`` was logged within the interval.

        Returns whether the line was written. ``extra`` is passed on as the record's extra fields.
        """
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        self._next[kind] = now + self._interval
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += " (%d more since the last such line)"
            args = (*args, left_out)
        self._logger.log(level, message, *args, extra={"kind": kind, **extra})
        return True
