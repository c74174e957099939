"""The VPC OpenAPI's wire format, translated once: answers into bodies or our errors, secrets masked.

Pure functions over httpx responses and JSON values; :mod:`bot.cloud.client` sends the requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from bot.cloud.codes import TRANSPORT_BAD_RESPONSE, lookup
from bot.errors import CloudApiError, CloudTransportError, UsageError

__all__ = ["SECRET_KEYS", "parse_retry_after", "redact", "translate_response", "validate_client_token"]

# The SDK caps x-acs-retry-after at 120 s.
_MAX_RETRY_AFTER_S: Final = 120.0

SECRET_KEYS: Final = frozenset({"psk", "authkey", "accesskeysecret", "securitytoken"})
_MASK: Final = "***"


def redact(obj: Any) -> Any:
    """Return a copy of a JSON-like value with Psk, AuthKey, AccessKeySecret and SecurityToken masked at any depth."""
    if isinstance(obj, Mapping):
        return {
            k: (_MASK if str(k).replace("_", "").lower() in SECRET_KEYS else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def parse_retry_after(value: str | None) -> float | None:
    """Return the ``x-acs-retry-after`` hint in seconds (the header is milliseconds, as the SDK reads it)."""
    if not value:
        return None
    try:
        ms = int(value.strip())
    except ValueError:
        return None
    if ms <= 0:
        return None
    return min(ms / 1000.0, _MAX_RETRY_AFTER_S)


def validate_client_token(token: str) -> str:
    """Refuse a ClientToken that Alibaba would refuse: empty, over 64 characters, or not printable ASCII."""
    if not token or len(token) > 64 or not token.isascii() or not token.isprintable():
        raise UsageError("the ClientToken must be 1 to 64 printable ASCII characters")
    return token


def translate_response(
    response: httpx.Response, *, action: str, resource_id: str | None = None
) -> dict[str, Any]:
    """Return the JSON body of a successful answer; raise CloudApiError/CloudTransportError otherwise."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        info = lookup(TRANSPORT_BAD_RESPONSE, http_status=status)
        raise CloudTransportError(
            f"{action}: HTTP {status} with a body that is not JSON",
            info=info,
            request_id=response.headers.get("x-acs-request-id"),
            action=action,
            resource_id=resource_id,
        ) from exc
    if not isinstance(body, dict):
        info = lookup(TRANSPORT_BAD_RESPONSE, http_status=status)
        raise CloudTransportError(
            f"{action}: HTTP {status} with a JSON body that is not an object",
            info=info,
            action=action,
            resource_id=resource_id,
        )
    request_id = body.get("RequestId") or response.headers.get("x-acs-request-id")
    code = body.get("Code")
    if code:
        message = str(body.get("Message") or "")
        raise CloudApiError(
            f"{action} failed: {code}: {message}".rstrip(": "),
            info=lookup(str(code), message=message, http_status=status),
            http_status=status,
            request_id=str(request_id) if request_id else None,
            action=action,
            resource_id=resource_id,
            retry_after=parse_retry_after(response.headers.get("x-acs-retry-after")),
        )
    if response.is_error:
        # An error status without a Code is not Alibaba speaking (a proxy, a wrong endpoint).
        info = lookup(TRANSPORT_BAD_RESPONSE, http_status=status)
        raise CloudTransportError(
            f"{action}: HTTP {status} without an error Code",
            info=info,
            request_id=str(request_id) if request_id else None,
            action=action,
            resource_id=resource_id,
        )
    return body
