"""Logging: structured JSON lines (or plain text), with every known secret masked.

The masking filter is a last line of defence: code never logs secrets on purpose, but a token
that slips into an exception message or a library's debug line is still replaced by ``***``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["RedactingFilter", "configure_logging", "secret_values"]

# Values that look like Slack tokens are masked even when we were not told about them.
_TOKEN_RE = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}")
_MASK = "***"


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
    # httpx logs every request URL at INFO; our client logs each call with its outcome already.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    return handler
