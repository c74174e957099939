"""The HTTP front under attack: the real app over HTTP, requests signed with the app's secret.

What an adversarial review of the running bot found, each checked here end to end:

- a captured signed request replayed within Slack's 5-minute window made a card per replay;
- a deeply nested signed JSON body was an HTTP 500 with a traceback;
- idle and slow-header connections held the server (no header timeout, no connection cap) and
  every refused accept was a log line;
- ``/metrics`` was served on the Slack port, and ``/healthz`` showed the host name, the pid and
  the database driver's error text;
- at DEBUG the database driver logged each statement with its parameters (Slack response_urls).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from netproxy import TcpProxy, running_proxy
from pgtools import PG_URL
from slack_sdk.signature import SignatureVerifier

from bot.logs import configure_logging
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET, LocalStack, start_local_stack
from bot.sandbox.slack import start_slack_standin
from bot.sandbox.slack_user import (
    block_actions_payload,
    button_action,
    clickable_message,
    slash_command_payload,
)
from bot.sandbox.vpc import DEMO_ACCESS_KEY_SECRET, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SandboxState
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    BotProcess,
    all_text,
    bot_env,
    fresh_postgres_database,
    has_buttons,
    logging_restored,
    ops_listener,
    wait_confirmation,
    wait_parent,
    wait_thread,
)


def _signed_headers(body: str, content_type: str, *, timestamp: int | None = None) -> dict[str, str]:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(LOCAL_SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


async def _post(url: str, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        return await http.post(url, content=body, headers=headers)


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        return await http.get(url)


def _delete_command(stack: LocalStack, vco_id: str) -> str:
    """The form body Slack sends for ``/vpn delete <vco_id>``, as captured on the wire."""
    state = stack.slack.state
    fields = slash_command_payload(
        state,
        user_id=ALICE,
        channel_id=CHANNEL,
        text=f"delete {vco_id}",
        command="/vpn",
        response_url=state.new_response_url(channel=CHANNEL, user=ALICE),
    )
    return urlencode(fields)


def _cards(stack: LocalStack, vco_id: str) -> list[str]:
    return [m.ts for m in stack.slack.state.messages(CHANNEL) if vco_id in all_text(m) and has_buttons(m)]


async def _acks(stack: LocalStack, replica: int = 0) -> float:
    """How many slash commands the replica dispatched (its /metrics counter)."""
    async with ops_listener(stack.replicas[replica].app) as url:
        text = (await _get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("vpnbot_slash_command_ack_seconds_count"):
            return float(line.split()[-1])
    return 0.0


# --- replays ---------------------------------------------------------------------------------------


@pytest.fixture
async def two_replicas(sqlite_url: str) -> AsyncIterator[LocalStack]:
    running = await start_local_stack(database_url=sqlite_url, update_seconds=0.3, replicas=2)
    try:
        yield running
    finally:
        await running.aclose()


async def test_a_replayed_slash_command_makes_one_card_on_any_replica(two_replicas: LocalStack) -> None:
    """The same signed request sent three times (twice to another replica): one card, no effect after."""
    stack = two_replicas
    body = _delete_command(stack, SEED_VCO_HANGZHOU)
    headers = _signed_headers(body, "application/x-www-form-urlencoded")

    first = await _post(stack.replicas[0].events_url, body, headers)
    assert first.status_code == 200, first.text
    await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)

    same_replica = await _post(stack.replicas[0].events_url, body, headers)
    other_replica = await _post(stack.replicas[1].events_url, body, headers)
    # Acknowledged the way Slack expects a delivery it already made: 200, nothing in the body.
    assert (same_replica.status_code, same_replica.text) == (200, "")
    assert (other_replica.status_code, other_replica.text) == (200, "")
    # Never handed to Bolt: no slash command was dispatched by either replica for the replays.
    assert await _acks(stack, 0) == 1
    assert await _acks(stack, 1) == 0
    assert len(_cards(stack, SEED_VCO_HANGZHOU)) == 1
    assert len(await stack.bot.app.store.list_operations()) == 1

    # A fresh request (a new timestamp or body, so a new signature) is still served.
    other = _delete_command(stack, SEED_VCO_HANGZHOU_BGP)
    assert (
        await _post(stack.replicas[1].events_url, other, _signed_headers(other, headers["Content-Type"]))
    ).is_success
    await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU_BGP)


async def test_a_replayed_approval_click_is_ignored(stack: LocalStack) -> None:
    """A captured Delete click replayed after the deletion finished changes nothing and says nothing."""
    assert (await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")).status == 200
    card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
    state = stack.slack.state
    message = clickable_message(state, BOB, CHANNEL, card.ts)
    _, action = button_action(state, message, ActionId.APPROVE, None, require_button=True)
    body = urlencode({"payload": json.dumps(block_actions_payload(state, BOB, message, action))})
    headers = _signed_headers(body, "application/x-www-form-urlencoded")

    assert (await _post(stack.bot.events_url, body, headers)).status_code == 200
    await wait_thread(state, card.ts, "Deleted in")
    told_bob = len(state.ephemerals(BOB, CHANNEL))
    replay = await _post(stack.bot.events_url, body, headers)
    assert (replay.status_code, replay.text) == (200, "")
    # A click on a finished card would be answered (an ephemeral to bob): a later request's answer
    # arrives, the replay's never does.
    assert (await stack.agent.slash_command(BOB, CHANNEL, "help")).status == 200
    await state.wait_for(lambda: len(state.ephemerals(BOB, CHANNEL)) > told_bob, timeout=10, what="help")
    later = state.ephemerals(BOB, CHANNEL)[told_bob:]
    assert len(later) == 1, [all_text(m)[:80] for m in later]
    assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1


# --- unreadable bodies -----------------------------------------------------------------------------

_DEEP = "[" * 100_000 + "]" * 100_000
_DEEP_OBJECT = '{"a":' * 60 + "1" + "}" * 60  # under the interpreter's limit, over any real payload


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param('{"type":"event_callback","event":' + _DEEP + "}", "application/json", id="deep-json"),
        pytest.param(
            urlencode({"payload": "[" * 20_000 + "]" * 20_000}),
            "application/x-www-form-urlencoded",
            id="deep-payload",
        ),
        pytest.param(_DEEP_OBJECT, "application/json", id="deep-object"),
        pytest.param('{"type": "block_actions", ', "application/json", id="bad-json"),
        pytest.param("payload=%7B%22type%22%3A", "application/x-www-form-urlencoded", id="bad-payload-json"),
        pytest.param(
            "command=%2Fvpn&text=%ff%fe", "application/x-www-form-urlencoded", id="bad-percent-utf8"
        ),
        pytest.param("command=/vpn&&&=&text", "application/x-www-form-urlencoded", id="bad-form-fields"),
        pytest.param("command=/vpn&text=help", "text/plain", id="wrong-content-type"),
        pytest.param("command=/vpn&text=help", "multipart/form-data; boundary=x", id="multipart"),
        pytest.param(
            '{"type":"event_callback","event":{"text":"\\ud800"}}', "application/json", id="surrogate"
        ),
        pytest.param("[1, 2, 3]", "application/json", id="not-an-object"),
        pytest.param('{"n": ' + "9" * 5000 + "}", "application/json", id="huge-integer"),
    ],
)
async def test_every_unreadable_signed_body_is_a_400_without_a_traceback(
    stack: LocalStack, body: str, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        reply = await _post(stack.bot.events_url, body, _signed_headers(body, content_type))
    assert reply.status_code == 400, reply.text[:500]
    assert reply.json() == {"error": "unreadable body"}
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The bot is still there.
    assert (await _get(f"{stack.bot.url}/livez")).status_code == 200


# --- probes and what they show ---------------------------------------------------------------------


def _identifying(bodies: list[str]) -> list[str]:
    """Everything identifying in probe bodies: host name, pid, addresses, the driver's words."""
    needles = [socket.gethostname(), str(os.getpid()), "127.0.0.1", "sqlite", "postgres", "instance"]
    return [n for body in bodies for n in needles if n.lower() in body.lower()]


async def test_probes_answer_ok_and_nothing_else_and_metrics_stay_off_the_slack_port(
    stack: LocalStack,
) -> None:
    async with ops_listener(stack.bot.app) as ops:
        bodies = []
        for base in (stack.bot.url, ops):
            for path in ("/livez", "/readyz", "/healthz"):
                reply = await _get(f"{base}{path}")
                assert (reply.status_code, reply.json()) == (200, {"status": "ok"}), (base, path)
                bodies.append(reply.text)
        assert _identifying(bodies) == []
        assert (await _get(f"{ops}/metrics")).status_code == 200
    assert (await _get(f"{stack.bot.url}/metrics")).status_code == 404


async def test_readiness_says_slack_and_only_a_reason_code(sqlite_url: str) -> None:
    """Slack refuses the token: /readyz is 503 with a reason code; /livez never asks Slack."""
    stack = await start_local_stack(database_url=sqlite_url)
    try:
        stack.slack.state.fail("auth.test", "invalid_auth", times=10)
        ready = await _get(f"{stack.bot.url}/readyz")
        assert (ready.status_code, ready.json()) == (
            503,
            {"status": "not ok", "reason": "slack_token_refused"},
        )
        live = await _get(f"{stack.bot.url}/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
    finally:
        await stack.aclose()


@pytest.fixture
async def pg_proxy() -> AsyncIterator[TcpProxy]:
    target = urlsplit(PG_URL)
    async with running_proxy(target.hostname or "127.0.0.1", target.port or 5432) as running:
        yield running


@pytest.mark.postgres
async def test_an_unreachable_database_is_a_reason_code_and_the_details_stay_in_the_log(
    pg_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    async with fresh_postgres_database() as url:
        stack = await start_local_stack(database_url=pg_proxy.url_for(url))
        try:
            assert (await _get(f"{stack.bot.url}/readyz")).status_code == 200
            pg_proxy.cut()
            with caplog.at_level(logging.WARNING, logger="bot.app"):
                bodies = []
                for path in ("/readyz", "/healthz"):
                    reply = await _get(f"{stack.bot.url}{path}")
                    assert reply.status_code == 503
                    assert reply.json() in (
                        {"status": "not ok", "reason": "database_unreachable"},
                        {"status": "not ok", "reason": "database_timeout"},
                    )
                    bodies.append(reply.text)
                live = await _get(f"{stack.bot.url}/livez")  # never looks at the database
                assert (live.status_code, live.json()) == (200, {"status": "ok"})
            assert _identifying(bodies) == []
            assert "not ready" in caplog.text  # the details are in the log
            pg_proxy.restore()
        finally:
            await stack.aclose()


# --- idle and slow connections against `vpn-bot serve` ---------------------------------------------

# Runs the bot under a file descriptor limit lower than the number of connections an attacker opens.
_LIMITED = [
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


async def _hold(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            held.append(await asyncio.open_connection("127.0.0.1", port))
    return held


async def _closed_by_server(reader: asyncio.StreamReader, *, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1024) == b""
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


async def _trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """A slowloris: a request head one byte at a time, never finished."""
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\n")
    with contextlib.suppress(ConnectionError, OSError):
        while not stop.is_set():
            writer.write(b"X")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path, **settings: str) -> AsyncIterator[BotProcess]:
    vpc = await start_vpc_sandbox(state=SandboxState(update_seconds=0.3))
    slack = await start_slack_standin(bot_token=LOCAL_BOT_TOKEN)
    env = bot_env(tmp_path, database_url=f"sqlite:///{tmp_path / 'bot.db'}", vpc=vpc, slack=slack, **settings)
    process = BotProcess(env=env, cwd=tmp_path, log_path=tmp_path / "bot.log", wrap=_LIMITED)
    try:
        await process.wait_healthy()
        yield process
    finally:
        process.close()
        await slack.close()
        await vpc.close()


async def test_idle_and_slow_connections_do_not_starve_the_probes_or_flood_the_log(tmp_path: Path) -> None:
    async with _serving(tmp_path, VPNBOT_MAX_CONNECTIONS="64", VPNBOT_HEADER_TIMEOUT_SECONDS="2") as bot:
        lines_before = len(bot.log().splitlines())
        held = await _hold(bot.port, 300)  # more than the cap, and than the process's 256 descriptors
        stop = asyncio.Event()
        slow = [asyncio.create_task(_trickle(writer, stop)) for _, writer in held[:5]]
        try:
            started = time.monotonic()
            # The operations port answers at once: its own listener, its own cap.
            live = await _get(f"{bot.metrics_url}/livez")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            assert time.monotonic() - started < 2
            # Idle and slow connections are closed after the header timeout (2 s), trickling or not.
            closed = await asyncio.gather(*(_closed_by_server(r, within=8) for r, _ in held[:64]))
            assert all(closed), f"{closed.count(False)} of 64 held connections still open"
            # ... and the Slack port serves again.
            assert (await _get(f"{bot.url}/livez")).status_code == 200
        finally:
            stop.set()
            await asyncio.gather(*slow, return_exceptions=True)
            for _, writer in held:
                writer.close()
        log = bot.log().splitlines()[lines_before:]
        assert not any("Too many open files" in line for line in log)
        refusals = [line for line in log if "refused a connection" in line]
        assert 1 <= len(refusals) <= 2, log[:20]  # one line per kind per minute, not one per connection
        assert len(log) < 20, log[:40]
        assert bot.proc.poll() is None


async def test_metrics_listen_on_loopback_on_their_own_port(tmp_path: Path) -> None:
    async with _serving(tmp_path) as bot:
        assert (await _get(f"{bot.url}/metrics")).status_code == 404  # not on the Slack port
        scraped = await _get(f"{bot.metrics_url}/metrics")
        assert scraped.status_code == 200
        assert "vpnbot_" in scraped.text
        [serving] = [r for r in bot.records() if "serving Slack" in str(r["message"])]
        assert f"on http://127.0.0.1:{bot.metrics_port}" in str(serving["message"])  # the default host


# --- quiet logs ------------------------------------------------------------------------------------


async def test_debug_logs_of_a_whole_delete_flow_hold_no_url_token_or_secret(sqlite_url: str) -> None:
    """VPNBOT_LOG_LEVEL=DEBUG, nothing masked: no response_url, token, key or statement in the log."""
    stream = io.StringIO()
    with logging_restored():
        stack = await start_local_stack(database_url=sqlite_url, update_seconds=0.3)
        try:
            secrets = {
                "signing secret": LOCAL_SIGNING_SECRET,
                "AccessKey secret": DEMO_ACCESS_KEY_SECRET,
                **{f"Psk of {c.id}": c.psk for c in stack.vpc.state.connections.values()},
            }
            # No secrets handed to the masking filter: what is not logged needs no mask.
            configure_logging(level="DEBUG", fmt="json", secrets=(), stream=stream)
            assert (
                await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
            ).status == 200
            card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
            assert (await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)).status == 200
            await wait_parent(stack.slack.state, card.ts, "Deleted")
        finally:
            await stack.aclose()
    lines = stream.getvalue().splitlines()
    assert any(json.loads(line)["level"] == "DEBUG" for line in lines)  # DEBUG really was on
    response_urls = f"{stack.slack.url}/response/"
    needles = {
        **secrets,
        "hooks.slack.com": "hooks.slack.com",
        "a response_url": response_urls,
        "a bot token": "xoxb-",
        "an app token": "xapp-",
        "an SQL statement": "INSERT INTO",
    }
    leaks = [(name, line[:200]) for line in lines for name, value in needles.items() if value in line]
    assert leaks == []
