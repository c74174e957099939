"""The VPC client's transport (httpx over aiohttp) against raw loopback servers that misbehave.

Every failure must reach the client as the ``Transport.*`` code httpcore gave it: an answer that
breaks off, never comes or cannot be parsed is a broken answer, a port nobody listens on is a
connection error. All of them are ambiguous: the client never takes them for a refusal.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.cloud.client import VpcClient
from bot.cloud.codes import TRANSPORT_BAD_RESPONSE, TRANSPORT_CONNECT_ERROR
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.errors import CloudTransportError
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")  # our requests have an empty body


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


async def truncated_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"Req')
    await writer.drain()
    writer.close()


async def garbage_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 two hundred\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> str:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _client(endpoint: str) -> VpcClient:
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
    # One attempt: each case is about what a single answer becomes.
    return VpcClient(creds, endpoint=endpoint, max_attempts=1, api_deadline_seconds=5)


@pytest.mark.parametrize("answer", [close_at_once, truncated_body, garbage_status])
async def test_a_broken_answer_is_a_bad_response(
    serve: Callable[[Answer], Awaitable[str]], answer: Answer
) -> None:
    async with _client(await serve(answer)) as client:
        with pytest.raises(CloudTransportError) as caught:
            await client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
    assert caught.value.code == TRANSPORT_BAD_RESPONSE
    assert not caught.value.definite


async def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(CloudTransportError) as caught:
            await client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
    assert caught.value.code == TRANSPORT_CONNECT_ERROR
    assert not caught.value.definite
