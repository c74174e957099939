"""ACS3-HMAC-SHA256 (Alibaba Cloud signature V3) as an ``httpx.Auth``.

The pure functions here are shared by the client (to sign) and the local VPC sandbox (to
verify), so both sides agree on one canonical form:

- parameters in the query string, RFC 3986 encoded (space ``%20``, ``*`` ``%2A``, ``~`` kept),
  sorted by name; an empty value still gets ``=``;
- canonical headers are ``host``, ``content-type`` (if present) and every ``x-acs-*`` header,
  lower-cased, trimmed and sorted;
- ``StringToSign = "ACS3-HMAC-SHA256\\n" + hex(sha256(CanonicalRequest))`` and the signature is
  ``hex(HMAC-SHA256(AccessKeySecret, StringToSign))``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "AcsV3Auth",
    "Credentials",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "encode",
    "format_date",
    "sign",
    "string_to_sign",
]

ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AccessKey pair, optionally with an STS security token. ``repr`` hides the secrets."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        sts = ", security_token=***" if self.security_token else ""
        return f"Credentials(access_key_id={self.access_key_id!r}, access_key_secret=***{sts})"

    __str__ = __repr__


def encode(value: str) -> str:
    """Percent-encode per RFC 3986 as Alibaba canonicalises: only ``A-Za-z0-9-_.~`` stay."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Return the canonical query string: encoded ``name=value`` pairs sorted by encoded name."""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = sorted((encode(k), encode(v)) for k, v in items)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str] | None = None) -> tuple[str, str]:
    """Return ``(CanonicalHeaders, SignedHeaders)``.

    With ``signed`` (the verifier's case) exactly those header names are used; otherwise
    ``host``, ``content-type`` and every ``x-acs-*`` header present.
    """
    lowered: dict[str, list[str]] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), []).append(value.strip())
    if signed is None:
        names = sorted(n for n in lowered if n in ("host", "content-type") or n.startswith("x-acs-"))
    else:
        names = sorted(n.lower() for n in signed)
    lines = "".join(f"{n}:{','.join(sorted(lowered.get(n, [''])))}\n" for n in names)
    return lines, ";".join(names)


def canonical_request(
    *, method: str, path: str, query: str, headers: str, signed_headers: str, payload_hash: str
) -> str:
    """Join the parts of the canonical request (``headers`` already ends in a newline)."""
    return f"{method.upper()}\n{path}\n{query}\n{headers}\n{signed_headers}\n{payload_hash}"


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def sign(secret: str, canonical: str) -> str:
    """Return the hex signature of a canonical request."""
    return hmac.new(secret.encode(), string_to_sign(canonical).encode(), hashlib.sha256).hexdigest()


def format_date(when: datetime) -> str:
    """Format ``x-acs-date``: UTC, ISO 8601, no fractional seconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _default_nonce() -> str:
    return secrets.token_hex(16)


def _default_clock() -> datetime:
    return datetime.now(UTC)


class AcsV3Auth(httpx.Auth):
    """Sign each request with ACS3-HMAC-SHA256.

    The request's URL must already carry the parameters in canonical form (see
    :func:`canonical_query`); this auth adds the ``x-acs-*`` headers and ``Authorization``.
    ``x-acs-action`` and ``x-acs-version`` are set by the caller. Every call of the flow takes a
    fresh nonce and date, so a retried request is signed anew.

    ``credentials`` may be a :class:`Credentials` or a zero-argument callable returning one (for
    refreshed STS credentials; an async provider resolves before the request is built).
    """

    requires_request_body = True

    def __init__(
        self,
        credentials: Credentials | Callable[[], Credentials],
        *,
        clock: Callable[[], datetime] = _default_clock,
        nonce: Callable[[], str] = _default_nonce,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._nonce = nonce

    def _current(self) -> Credentials:
        creds = self._credentials
        return creds if isinstance(creds, Credentials) else creds()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self._current()
        body = request.content
        payload_hash = hashlib.sha256(body).hexdigest()
        request.headers["x-acs-date"] = format_date(self._clock())
        request.headers["x-acs-signature-nonce"] = self._nonce()
        request.headers["x-acs-content-sha256"] = payload_hash
        if creds.security_token:
            request.headers["x-acs-security-token"] = creds.security_token
        elif "x-acs-security-token" in request.headers:
            del request.headers["x-acs-security-token"]
        headers = {k: v for k, v in request.headers.items()}
        headers["host"] = request.url.netloc.decode("ascii")
        canon_headers, signed = canonical_headers(headers)
        query = request.url.query.decode("ascii")
        canonical = canonical_request(
            method=request.method,
            path=request.url.raw_path.split(b"?", 1)[0].decode("ascii") or "/",
            query=query,
            headers=canon_headers,
            signed_headers=signed,
            payload_hash=payload_hash,
        )
        signature = sign(creds.access_key_secret, canonical)
        request.headers["Authorization"] = (
            f"{ALGORITHM} Credential={creds.access_key_id},SignedHeaders={signed},Signature={signature}"
        )
        yield request
