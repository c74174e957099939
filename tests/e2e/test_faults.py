"""Issue 11 end to end: what Slack and the audit show stays as reliable as the deletion itself
when the VPC endpoint swallows answers, Slack hangs or fails, or the database goes away.

The real bot serves HTTP; the VPC sandbox and the Slack stand-in speak the real protocols; the
database faults go through :class:`netproxy.TcpProxy` in front of the test PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from netproxy import TcpProxy, running_proxy
from pgtools import PG_URL

from bot.domain import OpState
from bot.errors import StoreUnavailable
from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId

from .support import (
    ALICE,
    BOB,
    CHANNEL,
    all_text,
    fresh_postgres_database,
    has_buttons,
    local_stack,
    op_id_of,
    parent_updates,
    thread_text,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

# A short lease makes the background loops (resume, outbox) come around every second.
FAST = {"lease_seconds": 3.0}
UNREACHABLE = StoreUnavailable("").friendly
SLACK_WRITES = ("chat.update", "chat.postMessage")


def running_stack(database_url: str, **settings: Any) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(database_url, update_seconds=0.3, settings={**FAST, **settings})


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable, pausable TCP proxy in front of the test PostgreSQL."""
    target = urlsplit(PG_URL)
    async with running_proxy(target.hostname or "127.0.0.1", target.port or 5432) as running:
        yield running


async def _request(stack: LocalStack) -> Message:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
    assert reply.status == 200, reply.body
    return await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)


async def _final_state(stack: LocalStack, op_id: str, *, within: float = 30) -> OpState:
    """Wait until the operation reaches a final state; return it."""

    async def finished() -> OpState | None:
        op = await stack.bot.app.store.get_operation(op_id=op_id)
        return op.state if op is not None and op.is_terminal else None

    return await stack.slack.state.wait_for(finished, timeout=within, what="a final state")


async def _card_recorded(stack: LocalStack, op_id: str, ts: str) -> None:
    async def recorded() -> bool:
        op = await stack.bot.app.store.get_operation(op_id=op_id)
        return op is not None and op.message_ts == ts

    await stack.slack.state.wait_for(recorded, timeout=10, what="the card's ts in the store")
    await stack.bot.app.workflow.outbox.wait_idle()


def _everything_shown(stack: LocalStack, ts: str) -> str:
    """Every version the card ever had and the whole thread: nothing may have said "not deleted"."""
    card = stack.slack.state.message(CHANNEL, ts)
    assert card is not None
    versions = [all_text(card), *parent_updates(stack.slack.state, ts)]
    versions += [edit.text for edit in card.edits]
    return "\n".join([*versions, thread_text(stack.slack.state, ts)])


async def _audit_actions(stack: LocalStack, op_id: str) -> list[str]:
    entries = await stack.bot.app.store.recent_audit(limit=50, op_id=op_id)
    return [e.action for e in sorted(entries, key=lambda e: e.at)]


# --- the VPC endpoint swallows answers -------------------------------------------------------------


async def test_swallowed_delete_answers_end_deleted_after_verification(sqlite_url: str) -> None:
    """Every DeleteVpnConnection is carried out but its answer lost: verified gone, shown deleted."""
    async with running_stack(sqlite_url) as stack:
        stack.vpc.state.faults.add(action="DeleteVpnConnection", drop_after=True)
        confirmation = await _request(stack)
        op_id = op_id_of(confirmation)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)

        assert await _final_state(stack, op_id, within=60) is OpState.DELETED
        parent = await wait_parent(stack.slack.state, confirmation.ts, "Deleted", within=30)
        assert not has_buttons(parent)
        await wait_thread(stack.slack.state, confirmation.ts, "Deleted in", within=30)

        sent = stack.vpc.state.calls("DeleteVpnConnection")
        assert len(sent) >= 2, "the lost answer should have been retried"
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1
        assert {r.client_token for r in sent} == {sent[0].client_token}
        # Deleted was concluded from DescribeVpnConnection saying NotFound after the last send.
        last_send = max(
            i for i, r in enumerate(stack.vpc.state.requests) if r.action == "DeleteVpnConnection"
        )
        looks_after = [
            r for r in stack.vpc.state.requests[last_send + 1 :] if r.action == "DescribeVpnConnection"
        ]
        assert any(r.code == "InvalidVpnConnectionInstanceId.NotFound" for r in looks_after)
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
        assert "not deleted" not in _everything_shown(stack, confirmation.ts).lower()


# --- Slack hangs or fails ------------------------------------------------------------------------


async def test_hanging_slack_does_not_hold_up_the_delete(sqlite_url: str) -> None:
    """Slack answers card updates and posts only after seconds: the delete goes out meanwhile."""
    # A lease longer than Slack's delay: no resume pass may step in and send the delete for a
    # click handler that is still waiting on Slack.
    async with running_stack(sqlite_url, lease_seconds=30.0) as stack:
        confirmation = await _request(stack)
        op_id = op_id_of(confirmation)
        for method in SLACK_WRITES:
            stack.slack.state.set_latency(8.0, method)
        answered_before = len(stack.slack.state.api_calls)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)

        def delete_seen() -> bool:
            return bool(stack.vpc.state.calls("DeleteVpnConnection"))

        await stack.slack.state.wait_for(delete_seen, timeout=8, what="DeleteVpnConnection")
        # The stand-in records a call when it answers: none of the Slack writes the approval
        # caused has been answered yet, so the delete did not wait for them.
        answered = [c.method for c in stack.slack.state.api_calls[answered_before:]]
        assert not [m for m in answered if m in SLACK_WRITES], answered

        # The card update that was pending when the delete went out is answered after it.
        def card_update_answered() -> bool:
            return any(c.method == "chat.update" for c in stack.slack.state.api_calls[answered_before:])

        await stack.slack.state.wait_for(card_update_answered, timeout=20, what="the pending card update")
        for method in SLACK_WRITES:
            stack.slack.state.set_latency(0.0, method)
        assert await _final_state(stack, op_id) is OpState.DELETED
        parent = await wait_parent(stack.slack.state, confirmation.ts, "Deleted", within=30)
        assert not has_buttons(parent)
        await wait_thread(stack.slack.state, confirmation.ts, "Deleted in", within=30)
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1


async def test_slack_outage_after_approval_converges_once_slack_is_back(sqlite_url: str) -> None:
    """chat.update and chat.postMessage answer 500 for several of the outbox's rounds after the click."""
    async with running_stack(sqlite_url) as stack:
        confirmation = await _request(stack)
        op_id = op_id_of(confirmation)
        # slack_sdk retries a 5xx once, so each of these outlasts the outbox's own attempts twice or more.
        stack.slack.state.server_error("chat.update", times=6, status=500)
        stack.slack.state.server_error("chat.postMessage", times=4, status=500)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)

        assert await _final_state(stack, op_id) is OpState.DELETED
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1

        parent = await wait_parent(stack.slack.state, confirmation.ts, "Deleted", within=60)
        assert not has_buttons(parent)
        await wait_thread(stack.slack.state, confirmation.ts, "Deleted in", within=60)
        failed = [c for c in stack.slack.state.api_calls if c.method in SLACK_WRITES and c.status == 500]
        assert len(failed) == 10, "the outage did not last as long as the test meant it to"
        actions = await _audit_actions(stack, op_id)
        assert actions[:2] == ["requested", "approved"]
        assert actions[-1] == "deleted"
        assert "delete_sent" in actions
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1


# --- the database goes away (PostgreSQL behind a proxy) --------------------------------------------


@pytest.mark.postgres
async def test_click_while_the_database_is_cut_is_answered_plainly_and_works_after(
    postgres_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Delete clicked with the database cut off: "nothing was changed"; the same button works after."""
    caplog.set_level(logging.INFO)
    async with running_stack(proxy.url_for(postgres_url)) as stack:
        confirmation = await _request(stack)
        op_id = op_id_of(confirmation)
        # Cut only once the bot has recorded where its card is (a cut between chat.postMessage
        # and that write would make it post the card again, which is not what this test is about).
        await _card_recorded(stack, op_id, confirmation.ts)

        proxy.cut()
        cut_at = len(caplog.records)
        reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
        assert reply.status == 200

        def told() -> Message | None:
            return next((m for m in stack.slack.state.ephemerals(BOB) if UNREACHABLE in m.text), None)

        answer = await stack.slack.state.wait_for(told, timeout=20, what="the database-unreachable reply")

        def loops_met_the_outage() -> bool:
            return any(r.name == "bot.workflow" and "loop" in r.getMessage() for r in caplog.records[cut_at:])

        # The background passes (resume, expiry, outbox) meet the outage too, and say so plainly.
        await stack.slack.state.wait_for(
            loops_met_the_outage, timeout=10, what="a background pass in the outage"
        )
        assert "error id" not in all_text(answer).lower()
        outage = [r for r in caplog.records if "database is unreachable" in r.getMessage()]
        assert outage
        assert {r.levelno for r in outage} == {logging.WARNING}
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("bot")]
        assert stack.vpc.state.calls("DeleteVpnConnection") == []
        card = stack.slack.state.message(CHANNEL, confirmation.ts)
        assert card is not None
        assert has_buttons(card)

        proxy.restore()
        reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
        assert reply.status == 200
        assert await _final_state(stack, op_id) is OpState.DELETED
        parent = await wait_parent(stack.slack.state, confirmation.ts, "Deleted", within=30)
        assert not has_buttons(parent)
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1


async def _healthz(stack: LocalStack) -> httpx.Response:
    # The bot's own health timeout is short; this generous one only keeps a hang from hanging the test.
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        return await client.get(f"{stack.bot.url}/healthz")


@pytest.mark.postgres
async def test_healthz_answers_503_while_the_database_hangs(postgres_url: str, proxy: TcpProxy) -> None:
    """The database accepts connections but never answers: /healthz says so instead of hanging."""
    async with running_stack(proxy.url_for(postgres_url)) as stack:
        assert (await _healthz(stack)).status_code == 200
        proxy.pause()
        try:
            hung = await _healthz(stack)
        finally:
            proxy.resume()
        assert hung.status_code == 503
        assert hung.json() == {"status": "not ok", "reason": "database_timeout"}
        assert (await _healthz(stack)).status_code == 200


@pytest.mark.postgres
async def test_healthz_answers_503_with_the_reason_on_a_read_only_database(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database still answers reads but refuses writes: /healthz says 503, the log says why."""
    # A database of its own: the test makes it read-only (a setting of the database, not of a table).
    async with fresh_postgres_database() as postgres_url, running_stack(postgres_url) as stack:
        assert (await _healthz(stack)).status_code == 200
        name = urlsplit(postgres_url).path.lstrip("/")
        admin = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            # The setting applies to new sessions: make the bot's pool reconnect.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            with caplog.at_level(logging.WARNING, logger="bot.app"):
                refused = await _healthz(stack)
            assert refused.status_code == 503
            # The reason code only: the driver's text (host, port, user) stays in the log.
            assert refused.json() == {"status": "not ok", "reason": "database_unreachable"}
            assert "read-only" in caplog.text
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
            await admin.close()


async def test_an_outage_mid_deletion_resumes_here_at_once_when_the_database_returns(
    postgres_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver meets the outage; when the database is back the same process continues within
    seconds (not a whole lease later), and the thread never says it was picked up after a restart."""
    caplog.set_level(logging.INFO)
    # A long lease: the operation must not wait for it to run out. Polls every 0.2 s meet the cut.
    settings = {"lease_seconds": 60.0, "poll_interval_seconds": 0.2}
    async with contextlib.AsyncExitStack() as cleanup:
        stack = await start_local_stack(
            database_url=proxy.url_for(postgres_url), update_seconds=4.0, settings=settings
        )
        cleanup.push_async_callback(stack.aclose)
        confirmation = await _request(stack)
        op_id = op_id_of(confirmation)
        reply = await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE, None)
        assert reply.status == 200

        async def waiting() -> bool:
            op = await stack.bot.app.store.get_operation(op_id=op_id)
            return op is not None and op.state is OpState.WAITING_GATEWAY

        await stack.slack.state.wait_for(waiting, timeout=20, what="waiting_gateway")
        proxy.cut()

        def interrupted() -> bool:
            return any("resumes once it is back" in r.getMessage() for r in caplog.records)

        await stack.slack.state.wait_for(interrupted, timeout=20, what="the driver meeting the outage")
        proxy.restore()
        # Within seconds of the database's return (a pass at most 5 s apart, then the gateway's
        # 4 s), far inside the 60 s lease.
        assert await _final_state(stack, op_id, within=30) is OpState.DELETED
        await wait_parent(stack.slack.state, confirmation.ts, "Deleted", within=20)
        await stack.bot.app.workflow.outbox.wait_idle()
        shown = _everything_shown(stack, confirmation.ts)
        assert "after a restart" not in shown
        assert any("the database is back" in r.getMessage() for r in caplog.records)
        assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1
