"""The audit trail end to end: every step recorded with who, when and what; /vpn history; JSON logs by op_id."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import FakeClock, time_passes

from bot.domain import AuditEntry
from bot.logs import configure_logging
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VCO_SHANGHAI
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text as _all_text
from .support import deny, local_stack

SYSTEM = "vpn-bot"


def running(
    sqlite_url: str, clock: FakeClock | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings, clock=clock)


@contextlib.contextmanager
def json_logs(level: str = "INFO") -> Iterator[io.StringIO]:
    """The bot's real logging setup writing into a buffer; the previous setup is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.Logger.manager.loggerDict}
    stream = io.StringIO()
    handler = configure_logging(fmt="json", stream=stream, level=level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for old in saved_handlers:
            root.addHandler(old)
        root.setLevel(saved_level)
        for name, old_level in saved_levels.items():
            logging.getLogger(name).setLevel(old_level)


async def _confirmation(stack: LocalStack, vco_id: str) -> Message:
    def found() -> Message | None:
        return next(
            (
                m
                for m in stack.slack.state.messages(CHANNEL)
                if vco_id in _all_text(m) and any(b.get("type") == "actions" for b in m.blocks)
            ),
            None,
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id}")


async def _request(stack: LocalStack, text: str, *, user: str = ALICE) -> None:
    reply = await stack.agent.slash_command(user, CHANNEL, text)
    assert reply.status == 200, reply.body


async def _parent_says(stack: LocalStack, ts: str, needle: str) -> None:
    def done() -> bool:
        message = stack.slack.state.message(CHANNEL, ts)
        return message is not None and needle in _all_text(message)

    await stack.slack.state.wait_for(done, timeout=15, what=f"parent saying {needle!r}")


async def _audit_has(stack: LocalStack, action: str, count: int = 1) -> list[AuditEntry]:
    async def found() -> list[AuditEntry]:
        entries = await stack.bot.app.store.recent_audit(limit=100)
        matching = [e for e in entries if e.action == action]
        return matching if len(matching) >= count else []

    return await stack.slack.state.wait_for(found, timeout=10, what=f"{count} audit entries {action!r}")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def test_every_step_is_audited_with_who_when_and_what(sqlite_url: str) -> None:  # noqa: PLR0915 - one story end to end, asserted step by step
    """Request, refusals, approval, deletion, cancellation and expiry each leave one audit entry."""
    clock = FakeClock()
    async with running(sqlite_url, clock, approvers=[BOB], requesters=[ALICE]) as stack:
        store = stack.bot.app.store

        # A refused request (carol may not request).
        t_refused_request = clock.advance(60)
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}", user=CAROL)
        await _audit_has(stack, "refused")

        # Request, a refused approval, the approval and the deletion.
        t_requested = clock.advance(60)
        await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
        deleted_msg = await _confirmation(stack, SEED_VCO_HANGZHOU)
        await _audit_has(stack, "requested")
        t_refused_click = clock.advance(60)
        await stack.agent.click(CAROL, CHANNEL, deleted_msg.ts, ActionId.APPROVE)
        await _audit_has(stack, "refused", 2)
        t_approved = clock.advance(60)
        await stack.agent.click(BOB, CHANNEL, deleted_msg.ts, ActionId.APPROVE)
        # The click is handled after its ack: let the approval land before time starts to pass.
        await _audit_has(stack, "approved")
        async with time_passes(clock):  # the workflow polls the gateway on this clock
            await _parent_says(stack, deleted_msg.ts, "eleted")
            await _audit_has(stack, "deleted")

        # A cancellation.
        t_cancel_requested = clock.advance(60)
        await _request(stack, f"delete {SEED_VCO_HANGZHOU_BGP}")
        cancelled_msg = await _confirmation(stack, SEED_VCO_HANGZHOU_BGP)
        await _audit_has(stack, "requested", 2)
        t_cancelled = clock.advance(60)
        await deny(stack, ALICE, cancelled_msg.ts)
        await _parent_says(stack, cancelled_msg.ts, "ancelled")
        await _audit_has(stack, "cancelled")

        # An expiry: nobody acts before the confirmation's TTL.
        t_expiry_requested = clock.advance(60)
        await _request(stack, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
        expired_msg = await _confirmation(stack, SEED_VCO_SHANGHAI)
        await _audit_has(stack, "requested", 3)
        t_expired = clock.advance(stack.settings.confirmation_ttl_seconds + 1)
        await stack.bot.app.workflow.run_once()
        await _parent_says(stack, expired_msg.ts, "xpired")
        await _audit_has(stack, "expired")

        entries = list(reversed(await store.recent_audit(limit=100)))  # oldest first
        ops = {op.vco_id: op for op in await store.list_operations()}
        deleted_op = ops[SEED_VCO_HANGZHOU]
        delete_calls = [
            r for r in stack.vpc.state.requests if r.action == "DeleteVpnConnection" and r.outcome == "ok"
        ]
        assert len(delete_calls) == 1
        alibaba_request_id = delete_calls[0].request_id
        assert alibaba_request_id

        seen = [(e.action, e.actor_id, e.vco_id, e.op_id, _utc(e.at)) for e in entries]
        by_action = {e.action: e for e in entries}
        assert (
            t_approved
            <= _utc(by_action["delete_sent"].at)
            <= _utc(by_action["deleted"].at)
            < t_cancel_requested
        )
        assert seen == [
            ("refused", CAROL, SEED_VCO_HANGZHOU, None, t_refused_request),
            ("requested", ALICE, SEED_VCO_HANGZHOU, deleted_op.id, t_requested),
            ("refused", CAROL, SEED_VCO_HANGZHOU, deleted_op.id, t_refused_click),
            ("approved", BOB, SEED_VCO_HANGZHOU, deleted_op.id, t_approved),
            # The workflow's own steps happen as (virtual) time passes after the approval.
            ("delete_sent", SYSTEM, SEED_VCO_HANGZHOU, deleted_op.id, _utc(by_action["delete_sent"].at)),
            ("deleted", SYSTEM, SEED_VCO_HANGZHOU, deleted_op.id, _utc(by_action["deleted"].at)),
            ("requested", ALICE, SEED_VCO_HANGZHOU_BGP, ops[SEED_VCO_HANGZHOU_BGP].id, t_cancel_requested),
            ("cancelled", ALICE, SEED_VCO_HANGZHOU_BGP, ops[SEED_VCO_HANGZHOU_BGP].id, t_cancelled),
            ("requested", ALICE, SEED_VCO_SHANGHAI, ops[SEED_VCO_SHANGHAI].id, t_expiry_requested),
            ("expired", SYSTEM, SEED_VCO_SHANGHAI, ops[SEED_VCO_SHANGHAI].id, t_expired),
        ]
        by_action = {e.action: e for e in entries}
        # The delete carries Alibaba Cloud's RequestId, the one the sandbox answered with.
        assert by_action["delete_sent"].request_id == alibaba_request_id
        assert by_action["deleted"].request_id == alibaba_request_id
        assert deleted_op.delete_request_id == alibaba_request_id
        # Refusals say what was refused and why.
        refusals = [e for e in entries if e.action == "refused"]
        assert refusals[0].detail.startswith("request: ")
        assert "VPNBOT_REQUESTERS" in refusals[0].detail
        assert refusals[1].detail.startswith("approve: ")
        assert refusals[0].region == "cn-hangzhou"
        assert by_action["expired"].region == "cn-shanghai"

        # /vpn history 5: ephemeral, the five newest entries, newest first.
        reply = await stack.agent.slash_command(BOB, CHANNEL, "history 5")
        assert reply.status == 200

        def history() -> Message | None:
            return next(
                (
                    m
                    for m in stack.slack.state.ephemerals(BOB, CHANNEL)
                    if any(b.get("block_id") == BlockId.HISTORY for b in m.blocks)
                ),
                None,
            )

        shown = await stack.slack.state.wait_for(history, timeout=5, what="history reply")
        assert shown.visible_to == BOB
        assert "Last 5 action" in _all_text(shown)
        lines = [
            line
            for block in shown.blocks
            if block.get("type") == "section" and block.get("block_id") != BlockId.HISTORY
            for line in block["text"]["text"].splitlines()
        ]
        newest = list(reversed(entries))[:5]
        assert len(lines) == 5
        for line, entry in zip(lines, newest, strict=True):
            assert f"*{entry.action}*" in line
            assert f"`{entry.vco_id}`" in line
        assert "2025-01-01" in lines[0]  # when, from the bot's clock
        assert "<@U0ALICE>" in lines[1]  # who: the cancelling requester, as a mention
        # History is read-only and private: nothing new in the channel.
        assert all(not m.is_ephemeral for m in stack.slack.state.messages(CHANNEL))
        assert len(stack.slack.state.messages(CHANNEL)) == 3


@pytest.mark.parametrize("text", ["history 0", "history 51", "history five", "history 5 6", "history -3"])
async def test_history_with_a_bad_count_gets_usage(sqlite_url: str, text: str) -> None:
    async with running(sqlite_url) as stack:
        reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
        assert reply.status == 200
        body = reply.json()
        assert body["response_type"] == "ephemeral"
        assert "/vpn history [count]" in json.dumps(body)
        assert any(b.get("block_id") == BlockId.USAGE for b in body["blocks"])
        assert not any(b.get("block_id") == BlockId.HISTORY for b in body["blocks"])


async def test_json_logs_carry_the_operation_id(sqlite_url: str) -> None:
    """With the real logging setup, every line about the operation is JSON and names its op_id."""
    with json_logs() as stream:
        async with running(sqlite_url, approvers=[BOB]) as stack:
            await _request(stack, f"delete {SEED_VCO_HANGZHOU}")
            confirmation = await _confirmation(stack, SEED_VCO_HANGZHOU)
            await stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE)
            await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
            await _parent_says(stack, confirmation.ts, "eleted")
            await _audit_has(stack, "deleted")
            op_id = (await stack.bot.app.store.list_operations())[0].id

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    ours = [line for line in lines if line.get("op_id") == op_id]
    actions = [line.get("action") for line in ours]
    for step in ("requested", "refused", "approved", "delete_sent", "deleted"):
        assert step in actions, f"no log line for {step}: {actions}"
    for line in ours:
        assert line["vco_id"] == SEED_VCO_HANGZHOU
        if line.get("action") not in (None, "refused"):
            assert line["state"], line
    assert next(line for line in ours if line.get("action") == "deleted")["state"] == "deleted"
    assert next(line for line in ours if line.get("action") == "delete_sent")["request_id"]
    # Any line of ours that mentions the operation by id carries it as the op_id field too.
    for line in lines:
        if line["logger"].startswith("bot.") and op_id in json.dumps(line):
            assert line.get("op_id") == op_id, line
