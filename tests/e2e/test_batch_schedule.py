"""Site decommissions with change windows, quorums and freezes, end to end over HTTP (issues 26 and 27).

A batch approved outside its account's change window is scheduled whole (one transaction) for the
window's next opening and run then by the due pass, each member once, one per gateway at a time; its
card keeps a Cancel until then and offers a second approver *Override window*. Under a quorum rule
each approval counts for the whole batch and the last one needed approves (or schedules) all of it,
once; under a freeze the click is refused (audited), nothing moves.
The Clock is controlled: virtual time is moved, nothing waits for real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import FakeClock, time_passes

from bot.domain import SCHEDULE_WINDOW, OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.slack_user import selected_option
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_GW2
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, local_stack
from .test_batch import (
    deletes_per_connection,
    gateway_turns_never_overlap,
    request,
    seed_site,
    valid_block_kit,
    wait_batch_card,
    wait_card,
)

# A Tuesday: 20:00 in Shanghai, outside the Saturday window.
T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
WINDOWS = {"*": ["Sat 01:00-05:00 Asia/Shanghai"]}
OPENING = datetime(2026, 12, 11, 17, 0, tzinfo=UTC)  # Saturday 01:00 in Shanghai
# Long enough for a gateway's turns while virtual time runs ahead of the sandbox's real answers.
DELETE_TIMEOUT_S = 3600.0
DAVE = "U0DAVE"


@contextlib.asynccontextmanager
async def running(
    database_url: str, clock: FakeClock | None, *, replicas: int = 1, **settings: Any
) -> AsyncIterator[LocalStack]:
    async with local_stack(
        database_url,
        replicas=replicas,
        # The sandbox's gateways update in real time and the bot waits in virtual time: at once keeps
        # a gateway's turns within their deadlines however fast virtual time runs.
        update_seconds=0.0,
        clock=clock,
        settings={"approvers": [BOB, CAROL], "delete_timeout_seconds": DELETE_TIMEOUT_S, **settings},
    ) as stack:
        yield stack


def buttons(message: Message) -> set[str]:
    return {
        str(element.get("action_id"))
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    }


async def states(stack: LocalStack) -> dict[str, OpState]:
    return {op.vco_id: op.state for op in await stack.bot.app.store.list_operations()}


async def ephemeral(stack: LocalStack, user: str, *needles: str) -> Message:
    """The ephemeral reply to ``user`` saying any of ``needles`` (valid Block Kit)."""
    state = stack.slack.state

    def found() -> Message | None:
        return next(
            (m for m in state.ephemerals(user, CHANNEL) if any(n in all_text(m) for n in needles)), None
        )

    message = await state.wait_for(found, timeout=10, what=f"an ephemeral to {user} with {needles!r}")
    valid_block_kit(message)
    return message


async def schedule_a_batch(stack: LocalStack, ids: list[str]) -> Message:
    """Request ``ids`` on one card and approve it (Bob) outside the window: the card once scheduled."""
    card = await request(stack, "delete " + " ".join(ids))
    text = all_text(card)
    # The approver knows before clicking: approved now, the batch waits for the window.
    assert "Outside the change window (`Sat 01:00-05:00 Asia/Shanghai`)" in text
    assert "(2026-12-11 17:00 UTC)" in text
    reply = await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
    assert reply.status == 200, reply.body
    scheduled = await wait_card(stack.slack.state, card.ts, "scheduled for its next opening")
    valid_block_kit(scheduled)
    return scheduled


async def test_a_batch_approved_outside_the_window_runs_at_the_next_opening(sqlite_url: str) -> None:
    """Scheduled whole in one click; at the opening each member deleted once, one per gateway at a time,
    each with a deadline that counts its gateway's turns."""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows=WINDOWS) as stack:
        vpc, state = stack.vpc.state, stack.slack.state
        ids = seed_site(vpc, 4, per_gateway=2)
        card = await schedule_a_batch(stack, ids)
        text = all_text(card)
        # Each reader's own zone (Slack's date formatting), and UTC written out.
        assert (
            f"<!date^{int(OPENING.timestamp())}^{{date_short_pretty}} {{time}}|2026-12-11 17:00 UTC>" in text
        )
        assert "(2026-12-11 17:00 UTC)" in text
        assert "Scheduled: delete 4 VPN connections" in text
        assert text.count(":calendar: scheduled") == 4
        # Cancel stays until it starts, and a second approver may override the window.
        assert buttons(card) == {ActionId.BATCH_CANCEL.value, ActionId.BATCH_OVERRIDE_WINDOW.value}
        ops = await stack.bot.app.store.list_operations()
        assert {op.state for op in ops} == {OpState.SCHEDULED}
        assert {(op.run_at, op.schedule_kind, op.approver_id) for op in ops} == {
            (OPENING, SCHEDULE_WINDOW, BOB)
        }
        # The thread hears of it once, for the whole batch (not once per connection).
        told = await state.wait_for(
            lambda: [m for m in state.thread(CHANNEL, card.ts) if "change window" in all_text(m)] or None,
            timeout=10,
            what="the scheduled reply",
        )
        assert len(told) == 1
        valid_block_kit(told[0])
        approved = [e for e in await stack.bot.app.store.recent_audit(limit=50) if e.action == "approved"]
        assert len(approved) == 4

        # A second before the opening nothing starts.
        clock.set(OPENING - timedelta(seconds=1))
        await stack.bot.app.workflow.run_once()
        assert set((await states(stack)).values()) == {OpState.SCHEDULED}
        assert vpc.accepted("DeleteVpnConnection") == []

        clock.set(OPENING)
        await stack.bot.app.workflow.run_once()
        started = {op.vco_id: op for op in await stack.bot.app.store.list_operations()}
        # Two per gateway: each member's deadline leaves time for its gateway's two turns.
        for op in started.values():
            assert op.deadline_at == OPENING + timedelta(seconds=2 * DELETE_TIMEOUT_S), op.vco_id
        async with time_passes(clock, tick=0.02):
            final = await wait_card(state, card.ts, "4 deleted")
        valid_block_kit(final)
        assert buttons(final) <= {ActionId.RECREATE_OPEN.value}
        assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
        ops = await stack.bot.app.store.list_operations()
        assert {op.state for op in ops} == {OpState.DELETED}
        gateway_turns_never_overlap(ops)
        assert [c for c in vpc.calls("DeleteVpnConnection") if c.code == "VpnTask.CONFLICT"] == []
        trail = [e.action for e in await stack.bot.app.store.recent_audit(limit=100)]
        assert trail.count("started") == 4


async def test_a_scheduled_batch_starts_once_on_two_replicas(db_url: str) -> None:
    """Approved on one replica outside the window; at the opening both replicas' due passes race
    (SQLite and PostgreSQL): each member started once and deleted once."""
    clock = FakeClock(T0)
    async with running(db_url, clock, replicas=2, change_windows=WINDOWS) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc, 3, per_gateway=2)
        card = await schedule_a_batch(stack, ids)
        clock.set(OPENING)
        await asyncio.gather(*(r.app.workflow.run_once() for r in stack.replicas))
        async with time_passes(clock, tick=0.02):
            final = await wait_card(stack.slack.state, card.ts, "3 deleted")
        valid_block_kit(final)
        assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
        ops = await stack.bot.app.store.list_operations()
        gateway_turns_never_overlap(ops)
        trail = [e for e in await stack.bot.app.store.recent_audit(limit=100) if e.action == "started"]
        assert sorted(e.op_id or "" for e in trail) == sorted(op.id for op in ops)


async def test_cancel_stops_a_scheduled_batch_before_it_starts(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows=WINDOWS) as stack:
        state = stack.slack.state
        ids = seed_site(stack.vpc.state, 3)
        card = await schedule_a_batch(stack, ids)
        before = set(state.views)
        reply = await stack.agent.click(ALICE, CHANNEL, card.ts, ActionId.BATCH_CANCEL)
        assert reply.status == 200, reply.body
        view = await state.wait_for(
            lambda: next((v for k, v in state.views.items() if k not in before), None),
            timeout=10,
            what="the Cancel modal",
        )
        assert "these 3 connections" in str(view["blocks"])
        typed = {"type": "plain_text_input", "value": "site stays open"}
        done = await stack.agent.submit(
            ALICE, view["id"], {BlockId.CANCEL_REASON: {ActionId.CANCEL_REASON: typed}}
        )
        assert done.status == 200, done.body
        closed = await wait_card(state, card.ts, "Cancelled by")
        valid_block_kit(closed)
        assert "Cancelled: delete 3 VPN connections" in all_text(closed)
        assert "`site stays open`" in all_text(closed)
        assert buttons(closed) == set()
        clock.set(OPENING + timedelta(minutes=1))
        await stack.bot.app.workflow.run_once()
        assert set((await states(stack)).values()) == {OpState.CANCELLED}
        assert stack.vpc.state.accepted("DeleteVpnConnection") == []
        assert all(vco_id in stack.vpc.state.connections for vco_id in ids)


async def test_the_window_of_a_batch_is_overridden_by_a_second_approver_only(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows=WINDOWS) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc, 3, per_gateway=3)
        card = await schedule_a_batch(stack, ids)
        # The approver cannot override alone; nothing starts.
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_OVERRIDE_WINDOW)
        await ephemeral(stack, BOB, "second approver")
        assert set((await states(stack)).values()) == {OpState.SCHEDULED}
        # Neither can the requester, who may not approve at all.
        await stack.agent.click(ALICE, CHANNEL, card.ts, ActionId.BATCH_OVERRIDE_WINDOW)
        await ephemeral(stack, ALICE, "approve")
        assert set((await states(stack)).values()) == {OpState.SCHEDULED}
        # Nor anyone during a freeze: running it now is a change now, as an approval would be.
        workflow = stack.bot.app.workflow
        await workflow.freeze(user_id=DAVE, duration=timedelta(hours=1), account=None, reason="INC-7")
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.BATCH_OVERRIDE_WINDOW)
        await ephemeral(stack, CAROL, "frozen")
        assert set((await states(stack)).values()) == {OpState.SCHEDULED}
        await workflow.unfreeze(user_id=DAVE, account=None, everything=True)
        # A second approver does: all of it starts now, each member's override audited.
        reply = await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.BATCH_OVERRIDE_WINDOW)
        assert reply.status == 200, reply.body

        async def all_started() -> bool:
            return OpState.SCHEDULED not in (await states(stack)).values()

        # Virtual time stands still until every member started: none can finish its turn before.
        await stack.slack.state.wait_for(all_started, timeout=10, what="every member started")
        ops = await stack.bot.app.store.list_operations()
        # Three on one gateway, started now: each deadline leaves time for the three turns.
        turns = {(op.deadline_at or T0) - (op.run_at or T0) for op in ops}
        assert turns == {timedelta(seconds=3 * DELETE_TIMEOUT_S)}
        async with time_passes(clock, tick=0.02):
            final = await wait_card(stack.slack.state, card.ts, "3 deleted")
        valid_block_kit(final)
        assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
        ops = await stack.bot.app.store.list_operations()
        gateway_turns_never_overlap(ops)
        overrides = [
            e for e in await stack.bot.app.store.recent_audit(limit=100) if e.action == "window_override"
        ]
        assert sorted(e.op_id or "" for e in overrides) == sorted(op.id for op in ops)
        assert {e.actor_id for e in overrides} == {CAROL}


async def _quorum_on_two_replicas(stack: LocalStack) -> None:
    """*=2: Bob's approval counts for the whole batch (the card shows it); then five clicks at once on
    two replicas: the last approval needed approves every member once, each deleted once."""
    state, vpc = stack.slack.state, stack.vpc.state
    state.add_user(DAVE, "dave")
    ids = seed_site(vpc, 3, per_gateway=2)
    card = await request(stack, "delete " + " ".join(ids))
    assert "*0 of 2 approvals*" in all_text(card)
    batch_id = (await stack.bot.app.store.list_operations())[0].batch_id or ""

    reply = await stack.agents[1].click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
    assert reply.status == 200, reply.body
    counted = await wait_card(state, card.ts, f"1 of 2 approvals*: <@{BOB}> ✓")
    valid_block_kit(counted)
    assert "waiting for one more from" in all_text(counted)
    assert ActionId.BATCH_APPROVE.value in buttons(counted)
    ops = await stack.bot.app.store.list_operations()
    assert {op.state for op in ops} == {OpState.AWAITING_APPROVAL}
    assert {tuple(a.user_id for a in op.approvals) for op in ops} == {(BOB,)}
    assert vpc.accepted("DeleteVpnConnection") == []

    # Five clicks at once on both replicas: Bob again, Carol twice, Dave, and Alice (the requester).
    clicks = [(BOB, 0), (CAROL, 1), (DAVE, 0), (CAROL, 0), (ALICE, 1)]
    await asyncio.gather(
        *(
            stack.agents[r].click(
                user, CHANNEL, card.ts, ActionId.BATCH_APPROVE, batch_id, require_button=False
            )
            for user, r in clicks
        )
    )
    final = await wait_card(state, card.ts, "3 deleted")
    valid_block_kit(final)
    assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
    ops = await stack.bot.app.store.list_operations()
    gateway_turns_never_overlap(ops)
    seconds = {op.approver_id for op in ops}
    assert len(seconds) == 1
    [second] = seconds
    assert second in (CAROL, DAVE)
    assert {tuple(a.user_id for a in op.approvals) for op in ops} == {(BOB, second)}
    for op in ops:
        audit = await stack.bot.app.store.recent_audit(op_id=op.id, limit=50)
        approved = sorted((e for e in audit if e.action == "approved"), key=lambda e: e.at)
        assert [(e.actor_id, e.detail.split(";")[0]) for e in approved] == [
            (BOB, "1 of 2"),
            (second, "2 of 2"),
        ]
    # Alice (the requester): refused as such or, handled after the last approval, as approved already.
    await ephemeral(stack, ALICE, "never counts", "approved by")
    # Bob's second click: refused as a repeat or, handled after the last approval, as approved already
    # (in progress, or finished by then); the loser's likewise.
    await ephemeral(stack, BOB, "already approved", "approved by")
    loser = DAVE if second == CAROL else CAROL
    await ephemeral(stack, loser, f"approved by <@{second}>")


async def test_a_batch_collects_its_quorum_on_two_replicas_sqlite(sqlite_url: str) -> None:
    async with running(
        sqlite_url, None, replicas=2, approvers=[BOB, CAROL, DAVE], approval_rules="*=2"
    ) as stack:
        await _quorum_on_two_replicas(stack)


@pytest.mark.postgres
async def test_a_batch_collects_its_quorum_on_two_replicas_postgres(postgres_url: str) -> None:
    async with running(
        postgres_url, None, replicas=2, approvers=[BOB, CAROL, DAVE], approval_rules="*=2"
    ) as stack:
        await _quorum_on_two_replicas(stack)


async def test_an_approval_of_a_batch_is_withdrawn_from_every_connection(sqlite_url: str) -> None:
    """*=2: Bob approves, then withdraws: it comes off every connection; Carol and Dave then approve it."""
    async with running(sqlite_url, None, approvers=[BOB, CAROL, DAVE], approval_rules="*=2") as stack:
        state = stack.slack.state
        state.add_user(DAVE, "dave")
        ids = seed_site(stack.vpc.state, 2)
        card = await request(stack, "delete " + " ".join(ids))
        assert ActionId.BATCH_WITHDRAW.value not in buttons(card)  # nothing to withdraw yet
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        counted = await wait_card(state, card.ts, f"1 of 2 approvals*: <@{BOB}> ✓")
        assert ActionId.BATCH_WITHDRAW.value in buttons(counted)
        # Carol has nothing to withdraw: told so, nothing changes.
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.BATCH_WITHDRAW)
        await ephemeral(stack, CAROL, "no approval of yours to withdraw")
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_WITHDRAW)
        withdrawn = await wait_card(state, card.ts, "*0 of 2 approvals*")
        valid_block_kit(withdrawn)
        assert ActionId.BATCH_WITHDRAW.value not in buttons(withdrawn)
        ops = await stack.bot.app.store.list_operations()
        assert {op.approvals for op in ops} == {()}
        audit = [
            e for e in await stack.bot.app.store.recent_audit(limit=50) if e.action == "approval_withdrawn"
        ]
        assert sorted(e.op_id or "" for e in audit) == sorted(op.id for op in ops)
        assert {e.detail for e in audit} == {"0 of 2 left"}
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        await wait_card(state, card.ts, f"1 of 2 approvals*: <@{CAROL}> ✓")
        await stack.agent.click(DAVE, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        final = await wait_card(state, card.ts, "2 deleted")
        valid_block_kit(final)
        assert deletes_per_connection(stack.vpc.state) == dict.fromkeys(ids, 1)
        # Once met, an approval is no longer withdrawn.
        batch_id = ops[0].batch_id or ""
        await stack.agent.click(
            CAROL, CHANNEL, card.ts, ActionId.BATCH_WITHDRAW, batch_id, require_button=False
        )
        await ephemeral(stack, CAROL, "can no longer be withdrawn")


async def test_a_quorum_batch_outside_its_window_is_scheduled_by_the_last_approval(sqlite_url: str) -> None:
    """*=2 outside the window: the second approval schedules every member for the opening, once."""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows=WINDOWS, approval_rules="*=2") as stack:
        ids = seed_site(stack.vpc.state, 2)
        card = await request(stack, "delete " + " ".join(ids))
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        await wait_card(stack.slack.state, card.ts, f"1 of 2 approvals*: <@{BOB}> ✓")
        assert set((await states(stack)).values()) == {OpState.AWAITING_APPROVAL}
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        scheduled = await wait_card(stack.slack.state, card.ts, "scheduled for its next opening")
        valid_block_kit(scheduled)
        ops = await stack.bot.app.store.list_operations()
        assert {(op.state, op.run_at, op.approver_id) for op in ops} == {(OpState.SCHEDULED, OPENING, CAROL)}
        clock.set(OPENING)
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock, tick=0.02):
            await wait_card(stack.slack.state, card.ts, "2 deleted")
        assert deletes_per_connection(stack.vpc.state) == dict.fromkeys(ids, 1)


async def test_a_batch_is_refused_under_a_freeze(sqlite_url: str) -> None:
    """Frozen: the one click is refused with the freeze's end and reason, audited; nothing moves."""
    async with running(sqlite_url, None, admins=[CAROL]) as stack:
        reply = await stack.agent.slash_command(CAROL, CHANNEL, 'freeze 2h reason="INC-7 core"')
        assert reply.status == 200, reply.body
        await stack.slack.state.wait_for(
            lambda: (
                any("froze VPN changes" in all_text(m) for m in stack.slack.state.messages(CHANNEL)) or None
            ),
            timeout=10,
            what="the freeze announced",
        )
        ids = seed_site(stack.vpc.state, 2)
        card = await request(stack, "delete " + " ".join(ids))
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        refusal = await ephemeral(stack, BOB, "frozen")
        assert "INC-7 core" in all_text(refusal)
        assert set((await states(stack)).values()) == {OpState.AWAITING_APPROVAL}
        current = stack.slack.state.message(CHANNEL, card.ts)
        assert current is not None
        assert ActionId.BATCH_APPROVE.value in buttons(current)
        refused = [e for e in await stack.bot.app.store.recent_audit(limit=50) if e.action == "refused"]
        assert [e.actor_id for e in refused] == [BOB]
        assert "approve: approvals are frozen" in refused[0].detail
        assert stack.vpc.state.calls("DeleteVpnConnection") == []


async def test_a_batch_with_a_run_time_runs_then(sqlite_url: str) -> None:
    """``/vpn delete vco-a vco-b … at TIME``: approved, all of it waits for that time, then each runs once."""
    clock = FakeClock(T0)
    runs = datetime(2026, 12, 8, 15, 0, tzinfo=UTC)
    async with running(sqlite_url, clock) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc, 3, per_gateway=2)
        card = await request(stack, "delete " + " ".join(ids) + " at 2026-12-08 23:00 Asia/Shanghai")
        assert "Once approved, they run" in all_text(card)
        assert "(2026-12-08 15:00 UTC)" in all_text(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        scheduled = await wait_card(stack.slack.state, card.ts, "are scheduled for")
        valid_block_kit(scheduled)
        assert "(2026-12-08 15:00 UTC)" in all_text(scheduled)
        # No change window holds it back: Cancel only.
        assert buttons(scheduled) == {ActionId.BATCH_CANCEL.value}
        ops = await stack.bot.app.store.list_operations()
        assert {(op.state, op.run_at) for op in ops} == {(OpState.SCHEDULED, runs)}
        clock.set(runs - timedelta(seconds=1))
        await stack.bot.app.workflow.run_once()
        assert vpc.accepted("DeleteVpnConnection") == []
        clock.set(runs)
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock, tick=0.02):
            final = await wait_card(stack.slack.state, card.ts, "3 deleted")
        valid_block_kit(final)
        assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
        gateway_turns_never_overlap(await stack.bot.app.store.list_operations())


async def test_a_batch_run_time_in_the_past_is_refused(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    async with running(sqlite_url, clock) as stack:
        ids = seed_site(stack.vpc.state, 2)
        reply = await stack.agent.slash_command(
            ALICE, CHANNEL, "delete " + " ".join(ids) + " at 2026-12-08T11:00Z"
        )
        assert reply.status == 200
        assert "is in the past" in reply.body
        assert await stack.bot.app.store.list_operations() == []


async def test_the_picker_takes_a_run_time_for_several_connections(sqlite_url: str) -> None:
    """The picker's time field with "more connections": one batch card, every member to run then."""
    clock = FakeClock(T0)
    runs = datetime(2026, 12, 9, 1, 30, tzinfo=UTC)
    async with running(sqlite_url, clock) as stack:
        state = stack.slack.state
        reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        assert reply.status == 200, reply.body
        view: dict[str, Any] = await state.wait_for(
            lambda: next(iter(state.views.values()), None), timeout=10, what="the picker"
        )
        found = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_MORE, "")
        by_id = {o["value"]: o for o in found.json()["options"]}
        values: dict[str, dict[str, Any]] = {
            BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": SEED_REGION})},
            BlockId.PICK_CONNECTION: {
                ActionId.PICK_CONNECTION: selected_option(by_id[SEED_VCO_HANGZHOU], "external_select")
            },
            BlockId.PICK_MORE: {
                ActionId.PICK_MORE: {
                    "type": "multi_external_select",
                    "selected_options": [by_id[SEED_VCO_HANGZHOU_GW2]],
                }
            },
            BlockId.PICK_RUN_AT: {
                ActionId.PICK_RUN_AT: {"type": "datetimepicker", "selected_date_time": int(runs.timestamp())}
            },
        }
        done = await stack.agent.submit(ALICE, view["id"], values)
        assert done.status == 200, done.body
        card = await wait_batch_card(state, "asks to delete")
        valid_block_kit(card)
        assert "Once approved, they run" in all_text(card)
        assert "(2026-12-09 01:30 UTC)" in all_text(card)
        ops = await stack.bot.app.store.list_operations()
        assert sorted(op.vco_id for op in ops) == sorted([SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_GW2])
        assert {op.run_at for op in ops} == {runs}
