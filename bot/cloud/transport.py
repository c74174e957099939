"""The VPC client's HTTP transport: httpx's API over aiohttp's connection pool (httpx-aiohttp).

httpcore's pool, httpx's default, walks every pooled connection on every request and asks each
idle one whether its socket is readable (encode/httpcore#1035, still open): in a burst of
commands that cost about 0.4 ms of CPU per Alibaba Cloud call, a fifth of each call, on a bot
that is CPU-bound in a burst. aiohttp's connector does not, and aiohttp is already here for Bolt
and slack_sdk. httpx-aiohttp (by an httpx maintainer; the transport behind the OpenAI and
Anthropic SDKs' aiohttp option) puts it under httpx's API, so the signer (an ``httpx.Auth``),
the event hooks and the tests' ``MockTransport`` stay as they are.

What this module adds is the errors. The client must see only httpx's ``TransportError`` family
(every member of which it treats as an ambiguous outcome), and the same one httpcore gave for the
same failure: an answer that breaks off, never comes or cannot be parsed is a
``RemoteProtocolError`` (``Transport.BadResponse``), as with httpcore, not the ``ConnectTimeout``
or ``ReadError`` httpx-aiohttp maps it to, nor an aiohttp error it leaves unmapped; a refused
connection is a ``ConnectError``, not the ``ConnectTimeout`` it maps that to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["VPC_LIMITS", "VpcTransport"]

# Enough connections never to be the bottleneck below the rate limiter's ceiling.
VPC_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)

# The server answered something (or closed after the request went out): a broken answer.
_BROKEN_ANSWER: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
)


def _translate(exc: Exception, request: httpx.Request) -> Exception:
    """The httpx error for ``exc``, an aiohttp error or httpx-aiohttp's mapping of one."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    if isinstance(cause, _BROKEN_ANSWER):
        return httpx.RemoteProtocolError(f"{type(cause).__name__}: {cause}", request=request)
    if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(cause, TimeoutError):
        return httpx.ConnectError(f"{type(cause).__name__}: {cause}", request=request)
    if isinstance(cause, aiohttp.ClientOSError) and not isinstance(cause, TimeoutError):
        return httpx.ReadError(f"{type(cause).__name__}: {cause}", request=request)
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(f"{type(exc).__name__}: {exc}")
    return exc


class _TranslatedStream(httpx.AsyncByteStream):
    """The response body, with aiohttp's errors while reading it translated too."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class VpcTransport(AiohttpTransport):
    """httpx-aiohttp's transport with the errors the VPC client expects (see the module)."""

    def __init__(self, *, limits: httpx.Limits = VPC_LIMITS) -> None:
        super().__init__(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _translate(exc, request) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)  # noqa: S101 - always, from aiohttp
        response.stream = _TranslatedStream(response.stream, request)
        return response
