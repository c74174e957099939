"""Listening for HTTP so that idle or slow clients cannot take the server down.

aiohttp reads request heads and bodies without a deadline of their own and accepts every
connection it is offered, so ``serve`` adds, with public APIs only:

- a **header timeout**: aiohttp's ``keepalive_timeout`` starts when a connection opens (and again
  after each response) and closes the connection if no complete request head has arrived by then,
  however slowly bytes trickle in; we set it to ``VPNBOT_HEADER_TIMEOUT_SECONDS``;
- a **body timeout**: the Slack handler reads the body within
  :data:`bot.slack.http.BODY_TIMEOUT_SECONDS` (408 otherwise);
- a **connection cap**: the listening socket's protocol factory wraps aiohttp's and closes a new
  connection at once while ``max_connections`` are open, so file descriptors never run out;
- **one log line per kind of refusal per interval**: refused connections, and the event loop's
  accept failures (``EMFILE`` and the like) if they still happen, go through a
  :class:`bot.logs.LogThrottle`.

What aiohttp cannot do: a cap per client address, or buffering a slow client's whole request
before the application sees it. Where that matters, put a buffering proxy in front (README,
"Security").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.logs import LogThrottle

__all__ = ["Listener", "fit_connection_caps", "listen", "quiet_accept_errors"]

log = logging.getLogger(__name__)

# File descriptors kept free for everything else: the database pool, Slack and cloud clients, logs.
_FD_RESERVE = 128
# How long cleanup lets requests under way finish.
_SHUTDOWN_TIMEOUT_S = 10.0


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed at once, before any byte is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


@dataclass
class Listener:
    """One listening socket serving an aiohttp application, with the cap applied."""

    name: str
    runner: web.AppRunner
    server: asyncio.Server
    max_connections: int

    @property
    def port(self) -> int:
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else 0

    @property
    def open_connections(self) -> int:
        return len(self.runner.server.connections) if self.runner.server is not None else 0

    async def close(self) -> None:
        """Stop accepting, let requests under way finish, close every connection."""
        self.server.close()
        await self.runner.cleanup()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT_S):
                await self.server.wait_closed()


async def listen(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    max_connections: int,
    header_timeout_s: float,
    throttle: LogThrottle,
) -> Listener:
    """Serve ``app`` on ``host:port`` with the header timeout and the connection cap.

    Raises OSError when the address cannot be bound (after cleaning up).
    """
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=header_timeout_s,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    http = runner.server
    assert http is not None  # noqa: S101 - set up just above

    def protocol() -> asyncio.BaseProtocol:
        if len(http.connections) < max_connections:
            return http()
        throttle.log(
            logging.WARNING,
            f"{name}: connection cap",
            "%s listener: refused a connection, %d are open (VPNBOT_MAX_CONNECTIONS)",
            name,
            len(http.connections),
        )
        return _Refused()

    try:
        server = await asyncio.get_running_loop().create_server(protocol, host, port, reuse_address=True)
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(name=name, runner=runner, server=server, max_connections=max_connections)


def fit_connection_caps(*caps: int) -> tuple[int, ...]:
    """The caps, lowered if together they would not fit under this process's file descriptor limit.

    The soft limit is raised to the hard one first where that is needed and allowed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = sum(caps) + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return caps
    room = max(soft - _FD_RESERVE, 2 * len(caps))
    fitted = tuple(max(1, cap * room // sum(caps)) for cap in caps)
    log.warning(
        "the file descriptor limit (%d) is too low for VPNBOT_MAX_CONNECTIONS; accepting at most %s",
        soft,
        "/".join(str(c) for c in fitted),
    )
    return fitted


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, throttle: LogThrottle) -> None:
    """Log the event loop's accept failures once per kind per interval, not once per failure.

    asyncio reports a failed ``accept()`` (out of file descriptors, out of memory) through the
    loop's exception handler each time it retries; every other report goes where it went before.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        exc = context.get("exception")
        if "accept" in message:
            kind = f"accept: {type(exc).__name__}:{getattr(exc, 'errno', '')}"
            throttle.log(logging.ERROR, kind, "cannot accept connections: %s (%s)", message, exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
