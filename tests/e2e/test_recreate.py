"""Recreate end to end: the real bot over HTTP, Slack-signed requests, the VPC sandbox, the Slack stand-in.

After a deletion the card offers Recreate…; the modal asks for the pre-shared key; a confirmation
with a Recreate button goes to approvers in the card's thread; approving it creates the connection
exactly once (double clicks included), waits for the gateway and puts each route back on the new
connection. The key never reaches a Slack message or call, a log line or a database row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message, StandinState
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VPN_HANGZHOU
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import (
    all_logs,
    all_text,
    local_stack,
    offers_recreate,
    wait_confirmation,
    wait_parent,
    wait_thread,
)

KEY = "Rebuilt-Key_7f3a9c!"


def psk_values(key: str | None) -> dict[str, dict[str, Any]]:
    """The modal's state as Slack sends it when ``key`` was typed (None: left empty)."""
    return {BlockId.RECREATE_PSK: {ActionId.RECREATE_PSK: {"type": "plain_text_input", "value": key}}}


async def delete(stack: LocalStack, vco_id: str = SEED_VCO_HANGZHOU) -> str:
    """Delete ``vco_id`` through the bot; return the card's ts once it says deleted."""
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {vco_id}")
    assert reply.status == 200, reply.body
    card = await wait_confirmation(stack.slack.state, vco_id)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")
    return card.ts


async def open_modal(stack: LocalStack, ts: str, user: str = ALICE) -> dict[str, Any]:
    """Click Recreate… on the deleted card and return the modal it opens."""
    state = stack.slack.state
    before = set(state.views)
    reply = await stack.agent.click(user, CHANNEL, ts, ActionId.RECREATE_OPEN)
    assert reply.status == 200, reply.body

    def opened() -> dict[str, Any] | None:
        return next((v for k, v in state.views.items() if k not in before), None)

    view: dict[str, Any] = await state.wait_for(opened, timeout=10, what="the Recreate modal")
    return view


async def recreate_confirmation(state: StandinState, ts: str) -> Message:
    """The recreation's confirmation in the card's thread, once posted."""

    def posted() -> Message | None:
        return next(
            (
                m
                for m in state.thread(CHANNEL, ts)
                if "Recreate VPN connection" in m.text or "asks to recreate" in m.text
            ),
            None,
        )

    found: Message = await state.wait_for(posted, timeout=10, what="the recreate confirmation")
    return found


def routes_to(stack: LocalStack, vco_id: str) -> set[tuple[str, str]]:
    vpc = stack.vpc.state
    found = {("custom", r.dest) for r in vpc.routes if r.next_hop == vco_id}
    found |= {(f"policy from {r.source}", r.dest) for r in vpc.pbr_routes if r.next_hop == vco_id}
    return found


async def test_recreate_with_the_key_from_the_modal_once_across_a_double_click(stack: LocalStack) -> None:  # noqa: PLR0915 - one story end to end, asserted step by step
    state = stack.slack.state
    ts = await delete(stack)
    card = await wait_parent(state, ts, "Recreate")
    assert any(
        e.get("action_id") == ActionId.RECREATE_OPEN and "Recreate" in e["text"]["text"]
        for b in card.blocks
        if b["type"] == "actions"
        for e in b["elements"]
    )
    for raw in card.blocks:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]

    view = await open_modal(stack, ts)
    View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
    labels = [b["label"]["text"] for b in view["blocks"] if b["type"] == "input"]
    assert any("pre-shared key" in label.lower() for label in labels)
    shown = json.dumps(view)
    assert "192.168.10.128/25" in shown
    assert "vpn-bp1q8bgx4xnkm2ogj3pnb" in shown

    # Bad keys stay in the modal with a reason, and change nothing.
    for bad in (None, "has a space", "x" * 101, "naïve-key"):
        reply = await stack.agent.submit(ALICE, view["id"], psk_values(bad))
        assert reply.status == 200, reply.body
        answer = reply.json()
        assert answer["response_action"] == "errors", (bad, answer)
        assert BlockId.RECREATE_PSK in answer["errors"]
        if bad:
            assert bad not in json.dumps(answer)
    assert len(await stack.bot.app.store.list_operations()) == 1

    reply = await stack.agent.submit(ALICE, view["id"], psk_values(KEY))
    assert reply.status == 200, reply.body
    confirmation = await recreate_confirmation(state, ts)
    for raw in confirmation.blocks:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]
    assert "Recreate VPN connection office-beijing?" in all_text(confirmation)

    # Two approvers' clicks at once: one approval, one CreateVpnConnection.
    state.add_user(CAROL, "carol")
    replies = await asyncio.gather(
        stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE),
        stack.agent.click(CAROL, CHANNEL, confirmation.ts, ActionId.APPROVE),
    )
    assert [r.status for r in replies] == [200, 200]
    thread = await wait_thread(state, ts, "Recreated in", within=20)
    assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1

    ops = await stack.bot.app.store.list_operations()
    recreation = next(op for op in ops if op.is_recreate)
    assert recreation.state is OpState.RECREATED
    assert recreation.requester_id == ALICE
    new_id = recreation.new_vco_id
    assert new_id
    assert new_id != SEED_VCO_HANGZHOU
    assert f"`{new_id}`" in thread
    created = stack.vpc.state.connections[new_id]
    assert created.psk == KEY  # the key from the modal, not a random one
    assert created.gateway_id == SEED_VPN_HANGZHOU
    assert created.name == "office-beijing"
    assert routes_to(stack, new_id) == {
        ("custom", "192.168.10.0/24"),
        ("custom", "192.168.11.0/24"),
        ("policy from 10.10.1.0/24", "192.168.10.128/25"),
    }
    assert "3 of 3 routes back on it" in thread
    # The deleted card says what it was recreated as, and offers Recreate… no more.
    parent = await wait_parent(state, ts, f"Recreated as `{new_id}`")
    assert not offers_recreate(parent)
    done = await wait_parent(state, confirmation.ts, "Recreated VPN connection")
    assert new_id in all_text(done)

    audit = await stack.bot.app.store.recent_audit(op_id=recreation.id, limit=50)
    actions = [e.action for e in audit]
    for action in ("recreate_requested", "recreate_approved", "recreate_sent", "recreated"):
        assert action in actions, actions
    reply = await stack.agent.slash_command(ALICE, CHANNEL, "history 20")
    assert reply.status == 200
    history = await state.wait_for(
        lambda: next(
            (m for m in state.ephemerals(ALICE) if "*recreated*" in m.text or "recreated" in all_text(m)),
            None,
        ),
        timeout=10,
        what="history with the recreation",
    )
    assert "recreate_requested" in all_text(history)

    # A second click on the card's (stale) Recreate… says it was recreated already.
    await stack.agent.click(ALICE, CHANNEL, ts, ActionId.RECREATE_OPEN, value=ops[0].id, require_button=False)
    await state.wait_for(
        lambda: any("already recreated" in m.text for m in state.ephemerals(ALICE)),
        timeout=10,
        what="an 'already recreated' note",
    )


async def test_the_key_is_in_no_slack_message_log_line_or_database_row(
    stack: LocalStack, sqlite_url: str
) -> None:
    state = stack.slack.state
    with all_logs() as logs:
        ts = await delete(stack)
        view = await open_modal(stack, ts)
        assert (await stack.agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
        confirmation = await recreate_confirmation(state, ts)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await wait_thread(state, ts, "Recreated in", within=20)
        await stack.bot.app.workflow.wait_idle()
    assert stack.vpc.state.connections  # the create happened with the key
    slack = [json.dumps({"text": m.text, "blocks": m.blocks}) for m in state.all_messages(CHANNEL)]
    slack += [json.dumps(c.params, default=str) for c in state.api_calls]
    slack += [json.dumps(v) for v in state.views.values()]
    assert sum("Recreated" in s for s in slack) >= 1
    assert not [s for s in slack if KEY in s]
    assert logs.lines
    assert not [line for line in logs.lines if KEY in line]
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [repr(row) for t in tables for row in db.execute(f"SELECT * FROM {t}")]  # noqa: S608
    assert any("recreated" in r for r in rows)
    assert not [r for r in rows if KEY in r]


async def test_after_the_window_the_button_goes_and_a_click_says_why(sqlite_url: str) -> None:
    async with local_stack(
        database_url=sqlite_url,
        update_seconds=0.3,
        settings={"undo_window_seconds": 0.5, "lease_seconds": 0.6},
    ) as stack:
        state = stack.slack.state
        ts = await delete(stack)
        [op] = await stack.bot.app.store.list_operations()
        assert op.undo_until is not None

        # The expiry pass takes the button away once the window has closed.
        def button_gone() -> bool | None:
            card = state.message(CHANNEL, ts)
            assert card is not None
            return not offers_recreate(card) or None

        await state.wait_for(
            button_gone,
            timeout=10,
            what="the button to go",
        )
        await stack.agent.click(ALICE, CHANNEL, ts, ActionId.RECREATE_OPEN, value=op.id, require_button=False)
        await state.wait_for(
            lambda: any("time to recreate" in m.text for m in state.ephemerals(ALICE)),
            timeout=10,
            what="why the click does nothing",
        )
        assert not state.views
        assert len(await stack.bot.app.store.list_operations()) == 1


async def test_undo_window_zero_turns_recreate_off(sqlite_url: str) -> None:
    async with local_stack(
        database_url=sqlite_url, update_seconds=0.3, settings={"undo_window_seconds": 0}
    ) as stack:
        ts = await delete(stack)
        card = await wait_parent(stack.slack.state, ts, "Deleted VPN connection")
        assert not offers_recreate(card)
        assert "Recreate" not in all_text(card)


async def test_a_route_that_fails_is_listed_with_its_reason_and_the_rest_go_on(stack: LocalStack) -> None:
    state = stack.slack.state
    ts = await delete(stack)
    view = await open_modal(stack, ts)
    assert (await stack.agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
    confirmation = await recreate_confirmation(state, ts)
    stack.vpc.state.faults.add(action="CreateVpnPbrRouteEntry", code="Forbidden", times=1)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    thread = await wait_thread(state, ts, "Recreated in", within=20)
    assert "2 of 3 routes back on it. Not recreated:" in thread
    assert "`192.168.10.128/25` from `10.10.1.0/24`" in thread
    assert "`Forbidden`" in thread
    [recreation] = [op for op in await stack.bot.app.store.list_operations() if op.is_recreate]
    assert recreation.new_vco_id is not None
    assert routes_to(stack, recreation.new_vco_id) == {
        ("custom", "192.168.10.0/24"),
        ("custom", "192.168.11.0/24"),
    }


async def test_a_slack_outage_delays_what_people_see_never_the_recreation(sqlite_url: str) -> None:
    # A short lease brings the outbox's pass around every second: what failed after the last state
    # change is tried again then, not ten seconds later.
    async with local_stack(sqlite_url, update_seconds=0.3, settings={"lease_seconds": 3.0}) as stack:
        state = stack.slack.state
        ts = await delete(stack)
        view = await open_modal(stack, ts)
        assert (await stack.agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
        confirmation = await recreate_confirmation(state, ts)
        # slack_sdk retries a 5xx once, so these outlast several of the outbox's own attempts.
        state.server_error("chat.update", times=4, status=500)
        state.server_error("chat.postMessage", times=4, status=500)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)

        async def recreated() -> bool:
            ops = await stack.bot.app.store.list_operations()
            return any(op.is_recreate and op.state is OpState.RECREATED for op in ops)

        assert await state.wait_for(recreated, timeout=20, what="the recreation to finish")
        assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1
        await wait_thread(state, ts, "Recreated in", within=60)
        await wait_parent(state, confirmation.ts, "Recreated VPN connection", within=60)


async def test_a_modal_slack_cannot_open_is_explained_and_changes_nothing(stack: LocalStack) -> None:
    state = stack.slack.state
    ts = await delete(stack)
    state.fail("views.open", "internal_error")
    reply = await stack.agent.click(ALICE, CHANNEL, ts, ActionId.RECREATE_OPEN)
    assert reply.status == 200
    await state.wait_for(lambda: state.ephemerals(ALICE) or None, timeout=10, what="the explanation")
    assert not state.views
    assert "Traceback" not in json.dumps([m.text for m in state.ephemerals(ALICE)])
    assert len(await stack.bot.app.store.list_operations()) == 1
    # Slack is back: the same button works.
    assert (await open_modal(stack, ts))["blocks"]


async def test_four_eyes_the_modal_submitter_is_the_requester(sqlite_url: str) -> None:
    async with local_stack(
        database_url=sqlite_url,
        update_seconds=0.3,
        settings={"approvers": [ALICE, BOB], "require_second_approver": True},
    ) as stack:
        state = stack.slack.state
        ts = await delete(stack)  # asked by Alice, approved by Bob
        view = await open_modal(stack, ts, user=BOB)
        assert (await stack.agent.submit(BOB, view["id"], psk_values(KEY))).status == 200
        confirmation = await recreate_confirmation(state, ts)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await state.wait_for(
            lambda: any("You requested this recreation" in m.text for m in state.ephemerals(BOB)),
            timeout=10,
            what="the four-eyes refusal",
        )
        assert not stack.vpc.state.accepted("CreateVpnConnection")
        await stack.agent.click(ALICE, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await wait_thread(state, ts, "Recreated in", within=20)
        [recreation] = [op for op in await stack.bot.app.store.list_operations() if op.is_recreate]
        assert (recreation.requester_id, recreation.approver_id) == (BOB, ALICE)


async def test_someone_who_may_not_request_cannot_open_the_modal(sqlite_url: str) -> None:
    async with local_stack(
        database_url=sqlite_url, update_seconds=0.3, settings={"approvers": [BOB], "requesters": [ALICE]}
    ) as stack:
        state = stack.slack.state
        state.add_user(CAROL, "carol")
        ts = await delete(stack)
        await stack.agent.click(CAROL, CHANNEL, ts, ActionId.RECREATE_OPEN)
        await state.wait_for(lambda: state.ephemerals(CAROL) or None, timeout=10, what="the refusal")
        assert not state.views
        assert len(await stack.bot.app.store.list_operations()) == 1
