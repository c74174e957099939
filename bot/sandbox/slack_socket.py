"""Socket Mode on the Slack stand-in: the WebSocket side of Slack, as slack_sdk's clients expect it.

``apps.connections.open`` (served by :mod:`bot.sandbox.slack_api` with the app-level token) hands out
a URL from :meth:`SocketModeServer.open_url`; the client connects to :data:`SOCKET_MODE_PATH` and::

    server → client  {"type": "hello", "num_connections": 1, "connection_info": {...}, "debug_info": {...}}
    server → client  {"envelope_id": …, "type": "slash_commands" | "interactive", "payload": {...},
                      "accepts_response_payload": true | false}
    client → server  {"envelope_id": …, "payload"?: {...}}          the ack, due within 3 seconds
    either way       ping frames, answered by a pong with the same data (slack_sdk sends
                     "sdk-ping-pong:<unix time>" and reads the time back from the pong)
    server → client  {"type": "disconnect", "reason": "refresh_requested", ...}: open a new connection

Each envelope goes to one open connection (Slack picks one; here they take turns). Where Slack's
behaviour is not documented the stand-in is stricter: a URL is good for one connection only.
This module knows nothing of the workspace; the user side lives in :mod:`bot.sandbox.slack_user`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "ACK_TIMEOUT_SECONDS",
    "SOCKET_MODE_PATH",
    "Envelope",
    "EnvelopeType",
    "SocketAck",
    "SocketConnection",
    "SocketModeServer",
]

Json = dict[str, Any]
EnvelopeType = Literal["slash_commands", "interactive", "events_api"]

SOCKET_MODE_PATH = "/socket-mode/link"
ACK_TIMEOUT_SECONDS = 3.0  # Slack shows the person an error when the app has not acked by then
_DEBUG_INFO = {"host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One envelope the server sent, and the connection it went to."""

    envelope_id: str
    type: str
    payload: Json
    accepts_response_payload: bool
    connection: int

    def to_wire(self) -> Json:
        """Return the JSON Slack sends."""
        return {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
        }


@dataclass(frozen=True, slots=True)
class SocketAck:
    """A client's acknowledgement of an envelope; ``payload`` is the optional response payload."""

    envelope_id: str
    payload: Json | None
    connection: int
    seconds: float  # from sending the envelope to receiving the ack


@dataclass(slots=True)
class SocketConnection:
    """One WebSocket connection from an app, with the control frames it exchanged."""

    id: int
    ws: web.WebSocketResponse = field(repr=False)
    pings: list[bytes] = field(default_factory=list)  # ping data the client sent (each one ponged)
    pongs: list[bytes] = field(default_factory=list)  # pong data the client answered our pings with
    closed: bool = False


class SocketModeServer:
    """The Socket Mode endpoint: hands out URLs, keeps connections, delivers envelopes, collects acks."""

    def __init__(self, *, app_id: str) -> None:
        self.app_id = app_id
        self.all_connections: list[SocketConnection] = []
        self.envelopes: list[Envelope] = []
        self.acks: list[SocketAck] = []
        self.unexpected: list[str] = []  # client messages that acked nothing pending (late, unknown, garbled)
        self.refused = 0  # connection attempts with an unknown or used ticket
        self._tickets: set[str] = set()
        self._pending: dict[str, tuple[asyncio.Future[SocketAck], float]] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()

    def __repr__(self) -> str:
        return f"SocketModeServer(app_id={self.app_id!r}, open={len(self.connections)})"

    @property
    def connections(self) -> list[SocketConnection]:
        """The connections open now, oldest first."""
        return [c for c in self.all_connections if not c.closed]

    def open_url(self, origin: str) -> str:
        """Return a fresh WebSocket URL on ``origin`` (``http://host:port``), good for one connection."""
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        ws_origin = "ws" + origin.removeprefix("http")  # http→ws, https→wss
        return f"{ws_origin}{SOCKET_MODE_PATH}?ticket={ticket}&app_id={self.app_id}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one Socket Mode connection (the aiohttp handler for :data:`SOCKET_MODE_PATH`)."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            self.refused += 1
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        self._tickets.discard(ticket)
        # autoping off: pings and pongs reach the loop below, so they can be answered and recorded.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = SocketConnection(next(self._ids), ws)
        self.all_connections.append(conn)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self.connections),
                    "debug_info": _DEBUG_INFO,
                    "connection_info": {"app_id": self.app_id},
                }
            )
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_text(conn, str(msg.data))
                elif msg.type is WSMsgType.PING:
                    conn.pings.append(bytes(msg.data))
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.pongs.append(bytes(msg.data))
                else:
                    self.unexpected.append(repr(msg.data))
        except ConnectionError:
            pass  # the client went away mid-write; the connection is simply over
        finally:
            conn.closed = True
        return ws

    def _on_text(self, conn: SocketConnection, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        pending = self._pending.pop(str(envelope_id), None) if envelope_id else None
        if message is None or pending is None:
            self.unexpected.append(data)
            return
        future, sent_at = pending
        payload = message.get("payload")
        ack = SocketAck(
            envelope_id=str(envelope_id),
            payload=payload if isinstance(payload, dict) else None,
            connection=conn.id,
            seconds=time.monotonic() - sent_at,
        )
        self.acks.append(ack)
        if not future.done():
            future.set_result(ack)

    async def wait_connected(self, count: int = 1, *, timeout: float = 5.0) -> list[SocketConnection]:  # noqa: ASYNC109  # a plain deadline reads better here
        """Wait until at least ``count`` connections are open; return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.connections) < count:
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{count} Socket Mode connection(s) not open within {timeout}s "
                    f"({len(self.connections)} open, {self.refused} refused)"
                )
            await asyncio.sleep(0.01)
        return self.connections

    async def deliver(
        self,
        kind: EnvelopeType,
        payload: Json,
        *,
        accepts_response_payload: bool,
        ack_timeout: float = ACK_TIMEOUT_SECONDS,
        connect_timeout: float = 5.0,
    ) -> SocketAck:
        """Send a ``kind`` envelope to one open connection; return its ack, TimeoutError if none comes."""
        connections = await self.wait_connected(timeout=connect_timeout)
        conn = connections[next(self._turn) % len(connections)]
        envelope = Envelope(str(uuid.uuid4()), kind, payload, accepts_response_payload, conn.id)
        future: asyncio.Future[SocketAck] = asyncio.get_running_loop().create_future()
        self._pending[envelope.envelope_id] = (future, time.monotonic())
        self.envelopes.append(envelope)
        try:
            await conn.ws.send_json(envelope.to_wire())
            return await asyncio.wait_for(future, ack_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {kind} envelope {envelope.envelope_id} within {ack_timeout}s"
            ) from None
        finally:
            self._pending.pop(envelope.envelope_id, None)

    async def ping(self, data: bytes = b"standin-ping", *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Ping every open connection and wait until each answers with a pong carrying ``data``."""
        targets = self.connections
        for conn in targets:
            await conn.ws.ping(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(data in c.pongs for c in targets):
            if loop.time() >= deadline:
                raise TimeoutError(f"no pong for {data!r} within {timeout}s")
            await asyncio.sleep(0.01)

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every open connection to reconnect, as Slack does before it recycles a server."""
        for conn in self.connections:
            with contextlib.suppress(ConnectionError):
                await conn.ws.send_json({"type": "disconnect", "reason": reason, "debug_info": _DEBUG_INFO})

    async def close(self) -> None:
        """Close every open connection (the stand-in is going away)."""
        for conn in self.connections:
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
