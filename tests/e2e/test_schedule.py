"""Scheduled deletions and change windows end to end (issue 27, points 1 and 2).

The real app over signed HTTP with the Slack stand-in and the VPC sandbox, on a controlled Clock:
virtual time is moved, nothing waits for real. Every card and thread reply is checked as Block Kit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import FakeClock, time_passes
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.slack_user import selected_option
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import (
    all_text,
    deny,
    has_buttons,
    local_stack,
    op_id_of,
    thread_text,
    valid_block_kit,
    wait_confirmation,
)

# A Tuesday.
T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running(database_url: str, clock: FakeClock, **settings: Any) -> AsyncIterator[LocalStack]:
    async with local_stack(
        database_url, update_seconds=0.2, clock=clock, settings={"approvers": [BOB, CAROL], **settings}
    ) as stack:
        yield stack


def _deletes(stack: LocalStack) -> list[Any]:
    return stack.vpc.state.accepted("DeleteVpnConnection")


async def _request(stack: LocalStack, text: str, vco_id: str) -> Message:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200, reply.body
    card = await wait_confirmation(stack.slack.state, vco_id)
    valid_block_kit(card)
    return card


async def _card_says(stack: LocalStack, ts: str, needle: str, *, within: float = 20) -> Message:
    state = stack.slack.state

    def found() -> Message | None:
        message = state.message(CHANNEL, ts)
        return message if message is not None and needle in all_text(message) else None

    card = await state.wait_for(found, timeout=within, what=f"the card saying {needle!r}")
    valid_block_kit(card)
    return card


async def _thread_says(stack: LocalStack, ts: str, needle: str) -> None:
    state = stack.slack.state
    await state.wait_for(
        lambda: needle in thread_text(state, ts), timeout=20, what=f"the thread saying {needle!r}"
    )
    for reply in state.thread(CHANNEL, ts):
        valid_block_kit(reply)


async def _state(stack: LocalStack, op_id: str) -> OpState:
    op = await stack.bot.app.store.get_operation(op_id=op_id)
    assert op is not None
    return op.state


async def _stop_replica(stack: LocalStack, index: int) -> None:
    """Stop one bot (as a deploy does), leaving the others and the shared database."""
    replica, agent = stack.replicas.pop(index), stack.agents.pop(index)
    await agent.aclose()
    await replica.aclose()


async def _scheduled_deletion_survives_a_restart_and_runs_once_on_two_replicas(
    database_url: str,
) -> None:
    clock = FakeClock(T0)
    async with running(database_url, clock) as stack:
        card = await _request(
            stack, f"delete {SEED_VCO_HANGZHOU} at 2026-12-08 22:00 Asia/Shanghai", SEED_VCO_HANGZHOU
        )
        op_id = op_id_of(card)
        assert "2026-12-08 14:00 UTC" in all_text(card)  # the requested time, shown before approval
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        scheduled = await _card_says(stack, card.ts, "scheduled to run")
        text = all_text(scheduled)
        # Each reader's own zone (Slack's date formatting) and UTC, written out.
        assert "<!date^1796738400^{date_short_pretty} {time}|2026-12-08 14:00 UTC>" in text
        assert "(2026-12-08 14:00 UTC)" in text
        assert has_buttons(scheduled)
        await _thread_says(stack, card.ts, "scheduled for")
        assert await _state(stack, op_id) is OpState.SCHEDULED

        # A deploy: the bot that took the approval stops; two new replicas share the database.
        await stack.add_replica(clock=clock, instance_id="replica-b")
        await stack.add_replica(clock=clock, instance_id="replica-c")
        await _stop_replica(stack, 0)
        # Not yet: a minute before, both due passes find nothing.
        clock.set(datetime(2026, 12, 8, 13, 59, tzinfo=UTC))
        await asyncio.gather(*(r.app.workflow.run_once() for r in stack.replicas))
        assert await _state(stack, op_id) is OpState.SCHEDULED
        assert _deletes(stack) == []

        # Its time: both replicas' due passes race; one starts it.
        clock.set(datetime(2026, 12, 8, 14, 0, tzinfo=UTC))
        await asyncio.gather(*(r.app.workflow.run_once() for r in stack.replicas))
        async with time_passes(clock):
            await _card_says(stack, card.ts, "and deleted")
            await _thread_says(stack, card.ts, "the scheduled time: starting now")
        assert len(_deletes(stack)) == 1
        assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections
        trail = [e.action for e in await stack.bot.app.store.recent_audit(limit=50) if e.op_id == op_id]
        assert trail.count("started") == 1
        assert "deleted" in trail


async def test_a_scheduled_deletion_runs_at_its_time_after_a_restart_on_another_replica(
    sqlite_url: str,
) -> None:
    await _scheduled_deletion_survives_a_restart_and_runs_once_on_two_replicas(sqlite_url)


async def test_a_scheduled_deletion_runs_once_on_two_replicas_postgres(postgres_url: str) -> None:
    await _scheduled_deletion_survives_a_restart_and_runs_once_on_two_replicas(postgres_url)


async def test_cancel_before_its_time_stops_it(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU} at 2026-12-08T15:00Z", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "scheduled to run")
        # The requester changes their mind: Cancel on the scheduled card, with a reason.
        await deny(stack, ALICE, card.ts, "not tonight")
        cancelled = await _card_says(stack, card.ts, "Cancelled by")
        assert not has_buttons(cancelled)
        clock.set(datetime(2026, 12, 8, 15, 0, 1, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        assert await _state(stack, op_id) is OpState.CANCELLED
        assert _deletes(stack) == []
        assert SEED_VCO_HANGZHOU in stack.vpc.state.connections


async def test_a_connection_gone_by_its_time_is_not_deleted(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU} at 2026-12-08T15:00Z", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "scheduled to run")
        del stack.vpc.state.connections[SEED_VCO_HANGZHOU]  # someone deleted it in the console
        clock.set(datetime(2026, 12, 8, 15, 0, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        await _card_says(stack, card.ts, "no longer existed")
        await _thread_says(stack, card.ts, "Not run")
        # The requester is told in a direct message, not that Alibaba Cloud refused anything.
        dm = await stack.slack.state.wait_for(
            lambda: (
                next(iter(stack.slack.state.messages(f"D{ALICE}")), None)
                if f"D{ALICE}" in stack.slack.state.channels
                else None
            ),
            timeout=10,
            what="Alice's direct message",
        )
        valid_block_kit(dm)
        assert "was not run: at the scheduled time the connection no longer existed" in all_text(dm)
        assert _deletes(stack) == []
        assert await _state(stack, op_id) is OpState.FAILED


@pytest.mark.parametrize(
    ("when", "says"),
    [
        ("at 2026-12-08T11:00Z", "is in the past"),
        ("at 2026-12-30 09:00 Asia/Shanghai", "more than 14 days ahead"),
        ("at 2026-12-10 09:00", "has no time zone"),
        ("at 2026-12-10 09:00 Mars/Base", "is not a time zone"),
        ("at soon", "is not a time"),
    ],
)
async def test_bad_run_times_get_a_friendly_reply(sqlite_url: str, when: str, says: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock) as stack:
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU} {when}")
        assert reply.status == 200
        body = reply.json()
        assert body["response_type"] == "ephemeral"
        assert body["text"].strip()
        assert says in reply.body
        assert "Traceback" not in reply.body
        assert await stack.bot.app.store.list_operations() == []


async def test_an_approval_outside_the_window_runs_at_the_next_opening(sqlite_url: str) -> None:
    clock = FakeClock(T0)  # Tuesday 20:00 in Shanghai
    async with running(sqlite_url, clock, change_windows={"*": ["Sat 01:00-05:00 Asia/Shanghai"]}) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        # The approver knows before clicking: approved now, it waits for the window.
        assert "Outside the change window (`Sat 01:00-05:00 Asia/Shanghai`)" in all_text(card)
        assert "(2026-12-11 17:00 UTC)" in all_text(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        held = await _card_says(stack, card.ts, "outside the change window")
        assert "2026-12-11 17:00 UTC" in all_text(held)  # Saturday 01:00 in Shanghai
        await _thread_says(stack, card.ts, "Sat 01:00-05:00 Asia/Shanghai")
        clock.set(datetime(2026, 12, 11, 16, 59, 59, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        assert _deletes(stack) == []
        assert await _state(stack, op_id) is OpState.SCHEDULED
        clock.set(datetime(2026, 12, 11, 17, 0, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock):
            await _card_says(stack, card.ts, "and deleted")
        assert len(_deletes(stack)) == 1


async def test_the_window_is_overridden_by_a_second_approver_only(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows={"*": ["Sat 01:00-05:00 Asia/Shanghai"]}) as stack:
        state = stack.slack.state
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU_BGP}", SEED_VCO_HANGZHOU_BGP)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "Override window")
        # The approver cannot override alone.
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        refusal = await state.wait_for(
            lambda: next(
                (m for m in state.ephemerals(BOB, CHANNEL) if "second approver" in all_text(m)), None
            ),
            timeout=10,
            what="the refusal of a lone override",
        )
        valid_block_kit(refusal)
        assert await _state(stack, op_id) is OpState.SCHEDULED
        # A second approver does: it runs now, and the audit says who overrode.
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        async with time_passes(clock):
            await _card_says(stack, card.ts, "and deleted")
        await _thread_says(stack, card.ts, "overrode the change window")
        assert len(_deletes(stack)) == 1
        overrides = [
            e for e in await stack.bot.app.store.recent_audit(limit=50) if e.action == "window_override"
        ]
        assert [(e.actor_id, e.op_id) for e in overrides] == [(CAROL, op_id)]


async def test_a_dst_change_between_approval_and_run(sqlite_url: str) -> None:
    """Approved on Saturday 2026-03-07 (EST, -5) for Monday's 09:00 New York window, after the clocks
    went forward on Sunday: it runs at 09:00 EDT, 13:00 UTC, not 14:00 UTC."""
    clock = FakeClock(datetime(2026, 3, 7, 15, 0, tzinfo=UTC))
    async with running(
        sqlite_url, clock, change_windows={"*": ["Mon 09:00-10:00 America/New_York"]}
    ) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        held = await _card_says(stack, card.ts, "outside the change window")
        assert "2026-03-09 13:00 UTC" in all_text(held)
        clock.set(datetime(2026, 3, 9, 12, 59, 59, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        assert await _state(stack, op_id) is OpState.SCHEDULED
        assert _deletes(stack) == []
        clock.set(datetime(2026, 3, 9, 13, 0, tzinfo=UTC))
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock):
            await _card_says(stack, card.ts, "and deleted")
        assert len(_deletes(stack)) == 1
        started = next(e for e in await stack.bot.app.store.recent_audit(limit=50) if e.action == "started")
        assert started.at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


async def test_scheduled_for_a_time_in_the_window_runs_then(sqlite_url: str) -> None:
    """A requested time inside the window runs at that time; one outside moves to the window's opening."""
    clock = FakeClock(T0)
    windows = {"*": ["Sat 01:00-05:00 Asia/Shanghai"]}
    async with running(sqlite_url, clock, change_windows=windows) as stack:
        card = await _request(
            stack, f"delete {SEED_VCO_HANGZHOU} at 2026-12-12 03:00 Asia/Shanghai", SEED_VCO_HANGZHOU
        )
        op_id = op_id_of(card)
        assert "Outside the change window" not in all_text(card)  # the requested time is inside it
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        scheduled = await _card_says(stack, card.ts, "scheduled to run")
        assert "2026-12-11 19:00 UTC" in all_text(scheduled)
        assert "Override window" not in all_text(scheduled)
        stored = await stack.bot.app.store.get_operation(op_id=op_id)
        assert stored is not None
        assert stored.run_at == datetime(2026, 12, 11, 19, 0, tzinfo=UTC)


async def _picker(stack: LocalStack) -> dict[str, Any]:
    state = stack.slack.state
    reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete")
    assert reply.status == 200, reply.body
    view: dict[str, Any] = await state.wait_for(
        lambda: next(iter(state.views.values()), None), timeout=5, what="the picker"
    )
    View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
    return view


def _picked(run_at: int | None) -> dict[str, dict[str, Any]]:
    return {
        BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": "cn-hangzhou"})},
        BlockId.PICK_CONNECTION: {
            ActionId.PICK_CONNECTION: selected_option({"value": SEED_VCO_HANGZHOU}, "external_select")
        },
        BlockId.PICK_RUN_AT: {ActionId.PICK_RUN_AT: {"type": "datetimepicker", "selected_date_time": run_at}},
    }


async def test_the_picker_takes_a_run_time(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock) as stack:
        view = await _picker(stack)
        field = next(b for b in view["blocks"] if b.get("block_id") == BlockId.PICK_RUN_AT)
        assert field["optional"] is True
        assert field["element"]["type"] == "datetimepicker"
        # Too far ahead, then in the past: the error stays in the modal, on the time field.
        for bad, says in (
            (T0.timestamp() + 15 * 86400, "more than 14 days"),
            (T0.timestamp() - 60, "in the past"),
        ):
            refused = await stack.agent.submit(ALICE, view["id"], _picked(int(bad)))
            assert refused.json()["response_action"] == "errors"
            assert says in refused.json()["errors"][BlockId.PICK_RUN_AT]
        run_at = datetime(2026, 12, 9, 1, 30, tzinfo=UTC)
        done = await stack.agent.submit(ALICE, view["id"], _picked(int(run_at.timestamp())))
        assert done.status == 200, done.body
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        assert "Once approved, it runs" in all_text(card)
        assert "(2026-12-09 01:30 UTC)" in all_text(card)
        op = await stack.bot.app.store.get_operation(op_id=op_id_of(card))
        assert op is not None
        assert op.run_at == run_at
