"""Issue 27 point 4, site decommission, end to end over HTTP: several connections on one card, one
approval, then one deletion each, queued per gateway, a failure of one never stopping the others.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.domain import Operation, OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message, StandinState
from bot.sandbox.slack_user import selected_option
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_GW2,
    SEED_VCO_HANGZHOU_TUNNELS,
    SandboxState,
)
from bot.slack.block_ids import ActionId, BlockId

from .support import ALICE, BOB, CHANNEL, all_text, local_stack, thread_text, wait_confirmation

FAILING_CODE = "VpnGateway.FinancialLocked"
FAILING_REASON = "The VPN gateway is locked because the Alibaba Cloud account has an overdue payment."


def valid_block_kit(message: Message) -> None:
    """Every block parses and validates with slack_sdk's own models, and there is a fallback text."""
    assert message.text
    assert len(message.blocks) <= 50
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()


def has_buttons(message: Message) -> bool:
    """Whether the batch card still asks for a decision (its Delete or Cancel)."""
    decision = {ActionId.BATCH_APPROVE.value, ActionId.BATCH_CANCEL.value}
    return any(
        element.get("action_id") in decision
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    )


def seed_site(vpc: SandboxState, count: int = 5, per_gateway: int = 3) -> list[str]:
    """``count`` connections in the seed region, ``per_gateway`` on each new gateway."""
    return vpc.seed_connections(SEED_REGION, count, per_gateway=per_gateway)


async def wait_batch_card(state: StandinState, needle: str, *, within: float = 15) -> Message:
    """The batch card (the top-level message with a batch Delete button) once it reads ``needle``."""

    def found() -> Message | None:
        for message in state.messages(CHANNEL):
            text = all_text(message)
            if "Batch `" in text and needle in text:
                return message
        return None

    return await state.wait_for(found, timeout=within, what=f"batch card saying {needle!r}")


async def wait_card(state: StandinState, ts: str, needle: str, *, within: float = 30) -> Message:
    def done() -> Message | None:
        message = state.message(CHANNEL, ts)
        return message if message is not None and needle in all_text(message) else None

    return await state.wait_for(done, timeout=within, what=f"batch card saying {needle!r}")


async def request(stack: LocalStack, text: str) -> Message:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
    assert reply.status == 200, reply.body
    card = await wait_batch_card(stack.slack.state, "asks to delete")
    valid_block_kit(card)
    assert has_buttons(card)
    return card


def gateway_turns_never_overlap(ops: list[Operation]) -> None:
    """On each gateway one deletion at a time: its turn from start to end never overlaps another's."""
    by_gateway: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.started_at is not None:
            by_gateway[op.gateway_id].append(op)
    for turns in by_gateway.values():
        turns.sort(key=lambda o: o.started_at or o.created_at)
        for before, after in itertools.pairwise(turns):
            assert before.finished_at is not None
            assert after.started_at is not None
            assert before.finished_at <= after.started_at, (before.vco_id, after.vco_id)


def deletes_per_connection(vpc: SandboxState) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for call in vpc.accepted("DeleteVpnConnection"):
        counts[call.params["VpnConnectionId"]] += 1
    return dict(counts)


async def test_a_batch_of_five_on_two_gateways_with_one_failing(sqlite_url: str) -> None:
    """One card, one click: 4 deleted once each, 1 failed with its reason, one at a time per gateway."""
    async with local_stack(sqlite_url, update_seconds=0.3) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc)
        failing = ids[1]
        vpc.faults.add(action="DeleteVpnConnection", code=FAILING_CODE, params={"VpnConnectionId": failing})
        card = await request(stack, "delete " + " ".join(ids))
        text = all_text(card)
        for vco_id in ids:
            assert vco_id in text
        assert "tunnel" in text
        assert "route" in text

        reply = await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        assert reply.status == 200, reply.body
        state = stack.slack.state
        final = await wait_card(state, card.ts, "4 deleted, 1 failed")
        valid_block_kit(final)
        assert not has_buttons(final)
        assert FAILING_REASON in all_text(final)
        ops = await stack.bot.app.store.list_operations()
        assert len(ops) == 5
        assert {op.batch_id for op in ops} != {None}
        assert len({op.batch_id for op in ops}) == 1
        states = {op.vco_id: op.state for op in ops}
        assert states.pop(failing) is OpState.FAILED
        assert set(states.values()) == {OpState.DELETED}
        # Each deleted exactly once, each with its own ClientToken and snapshot.
        assert deletes_per_connection(vpc) == dict.fromkeys(states, 1)
        assert len({op.client_token for op in ops}) == 5
        assert all(op.snapshot is not None for op in ops)
        gateway_turns_never_overlap(ops)
        # Never a delete sent to a gateway busy with another: Alibaba would have answered VpnTask.CONFLICT.
        assert [c for c in vpc.calls("DeleteVpnConnection") if c.code == "VpnTask.CONFLICT"] == []
        # Every connection's thread replies say whose they are; the card offers Recreate per deleted one.
        thread = "\n".join(all_text(m) for m in state.thread(CHANNEL, card.ts))
        for vco_id in ids:
            assert f"`{vco_id}`:" in thread
        # Condensed: the gateways' comings and goings stay out of a batch's thread.
        assert "is updating" not in thread
        assert "checking that the connection is gone" not in thread
        recreate = [
            b["accessory"]["value"]
            for b in final.blocks
            if isinstance(b.get("accessory"), dict)
            and b["accessory"].get("action_id") == ActionId.RECREATE_OPEN
        ]
        assert len(recreate) == 4


async def test_cancel_closes_the_whole_batch(sqlite_url: str) -> None:
    async with local_stack(sqlite_url) as stack:
        ids = seed_site(stack.vpc.state, 3)
        card = await request(stack, "delete " + " ".join(ids))
        state = stack.slack.state
        before = set(state.views)
        reply = await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_CANCEL)
        assert reply.status == 200, reply.body

        def opened() -> dict[str, Any] | None:
            return next((v for k, v in state.views.items() if k not in before), None)

        # The same reason modal as one Cancel, for the whole batch.
        view = await state.wait_for(opened, timeout=10, what="the Cancel modal")
        View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
        assert "these 3 connections" in str(view["blocks"])
        typed = {"type": "plain_text_input", "value": "Site stays open *after all*"}
        done = await stack.agent.submit(
            BOB, view["id"], {BlockId.CANCEL_REASON: {ActionId.CANCEL_REASON: typed}}
        )
        assert done.status == 200, done.body
        closed = await wait_card(stack.slack.state, card.ts, "Cancelled by")
        assert "`Site stays open *after all*`" in all_text(closed)
        # The requester is told once, for the whole batch.
        told = await stack.slack.state.wait_for(
            lambda: (
                [
                    c
                    for c in stack.slack.state.calls("chat.postMessage")
                    if c.ok and "site decommission" in str(c.params.get("text", ""))
                ]
                or None
            ),
            timeout=5,
            what="the requester's direct message",
        )
        assert len(told) == 1
        assert "was denied by" in str(told[0].params["text"])
        valid_block_kit(closed)
        assert not has_buttons(closed)
        ops = await stack.bot.app.store.list_operations()
        assert {op.state for op in ops} == {OpState.CANCELLED}
        assert stack.vpc.state.accepted("DeleteVpnConnection") == []


async def test_more_than_the_maximum_is_refused(sqlite_url: str) -> None:
    """Past VPNBOT_MAX_BATCH: a friendly reply with the limit, nothing recorded or looked up."""
    settings: dict[str, Any] = {"max_batch": 3}
    async with local_stack(sqlite_url, settings=settings) as stack:
        state = stack.slack.state
        ids = seed_site(stack.vpc.state, 4, per_gateway=4)
        reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete " + " ".join(ids))
        assert reply.status == 200
        # Refused on the ack itself: the ids were counted before anything was started.
        assert "That is 4 connections; one request may delete at most 3" in str(reply.body)
        # gateway=… all: counted once the gateway's connections are listed, then refused the same way.
        gateway = stack.vpc.state.connections[ids[0]].gateway_id
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete gateway={gateway} all")
        assert reply.status == 200

        def refused() -> Message | None:
            return next((m for m in state.ephemerals(ALICE, CHANNEL) if "at most 3" in all_text(m)), None)

        refusal = await state.wait_for(refused, timeout=10, what="the refusal")
        valid_block_kit(refusal)
        assert "That is 4 connections" in all_text(refusal)
        assert await stack.bot.app.store.list_operations() == []
        assert stack.vpc.state.calls("DescribeVpnConnection") == []


async def test_gateway_all_asks_for_every_connection_of_the_gateway(sqlite_url: str) -> None:
    async with local_stack(sqlite_url) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc, 5, per_gateway=3)
        gateway = vpc.connections[ids[0]].gateway_id
        mine = [c.id for c in vpc.connections.values() if c.gateway_id == gateway]
        assert len(mine) == 3
        card = await request(stack, f"delete gateway={gateway} all")
        text = all_text(card)
        for vco_id in ids:
            assert (vco_id in text) is (vco_id in mine)
        ops = await stack.bot.app.store.list_operations()
        assert sorted(op.vco_id for op in ops) == sorted(mine)


async def test_the_picker_multi_select_asks_for_several_on_one_card(sqlite_url: str) -> None:
    """The picker's "more connections" (a multi_external_select) turns one pick into a batch."""
    async with local_stack(sqlite_url, settings={"max_batch": 3}) as stack:
        state = stack.slack.state
        reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        assert reply.status == 200, reply.body

        def opened() -> dict[str, Any] | None:
            return next(iter(state.views.values()), None)

        view = await state.wait_for(opened, timeout=10, what="the picker modal")
        View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
        more = next(b for b in view["blocks"] if b["block_id"] == BlockId.PICK_MORE)
        assert more["element"]["type"] == "multi_external_select"
        assert more["element"]["max_selected_items"] == 2
        found = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_MORE, "")
        options = found.json()["options"]
        by_id = {o["value"]: o for o in options}
        first, *rest = SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VCO_HANGZHOU_GW2

        def values(more_ids: list[str]) -> dict[str, dict[str, Any]]:
            return {
                BlockId.PICK_REGION: {
                    ActionId.PICK_REGION: selected_option({"text": {}, "value": SEED_REGION})
                },
                BlockId.PICK_CONNECTION: {
                    ActionId.PICK_CONNECTION: selected_option(by_id[first], "external_select")
                },
                BlockId.PICK_MORE: {
                    ActionId.PICK_MORE: {
                        "type": "multi_external_select",
                        "selected_options": [by_id[v] for v in more_ids],
                    }
                },
            }

        # Over the maximum (3 with the first): the modal says so under the field, nothing is asked.
        too_many = await stack.agent.submit(ALICE, view["id"], values([*rest, SEED_VCO_HANGZHOU_TUNNELS]))
        assert too_many.status == 200
        assert BlockId.PICK_MORE in too_many.json()["errors"]
        # The first picked again among the more is counted once.
        done = await stack.agent.submit(ALICE, view["id"], values([*rest, first]))
        assert done.status == 200, done.body
        card = await wait_batch_card(state, "asks to delete")
        valid_block_kit(card)
        ops = await stack.bot.app.store.list_operations()
        assert [
            op.vco_id for op in await stack.bot.app.store.batch_operations(batch_id=ops[0].batch_id or "")
        ] == [
            first,
            *rest,
        ]


async def test_the_pre_flight_table_leaves_out_what_cannot_be_deleted(sqlite_url: str) -> None:
    """Not found, or being deleted by another request: a line each, left out of the one approval."""
    async with local_stack(sqlite_url, update_seconds=2.0) as stack:
        state = stack.slack.state
        ids = seed_site(stack.vpc.state, 3, per_gateway=3)
        # Another request is deleting the first one (approved, its gateway updating).
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {ids[0]}")
        assert reply.status == 200, reply.body
        single = await wait_confirmation(state, ids[0])
        await stack.agent.click(BOB, CHANNEL, single.ts, ActionId.APPROVE)
        await state.wait_for(
            lambda: "is updating" in thread_text(state, single.ts) or None, timeout=10, what="updating"
        )
        missing = "vco-bp1n0t4h3r3at4ll"
        card = await request(stack, f"delete {ids[0]} {missing} {ids[1]}")
        text = all_text(card)
        assert "already being deleted by another request; left out" in text
        assert f"`{missing}`" in text
        assert "not found in `cn-hangzhou` (gone, or in another region); left out" in text
        assert "[Delete 1]" in str(card.blocks) or "Delete 1" in text
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        final = await wait_card(state, card.ts, "1 deleted, 2 failed")
        valid_block_kit(final)
        # Each connection deleted once: the first by its own request, the third by the batch.
        assert deletes_per_connection(stack.vpc.state) == {ids[0]: 1, ids[1]: 1}


async def test_an_unapproved_batch_expires_whole(sqlite_url: str) -> None:
    settings: dict[str, Any] = {"confirmation_ttl_seconds": 0.5, "lease_seconds": 0.6}
    async with local_stack(sqlite_url, settings=settings) as stack:
        ids = seed_site(stack.vpc.state, 3)
        card = await request(stack, "delete " + " ".join(ids))
        closed = await wait_card(stack.slack.state, card.ts, "Expired", within=10)
        valid_block_kit(closed)
        assert not has_buttons(closed)
        assert "Nothing was deleted" in all_text(closed)
        ops = await stack.bot.app.store.list_operations()
        assert {op.state for op in ops} == {OpState.EXPIRED}
        # A late click changes nothing and says so, privately.
        reply = await stack.agent.click(
            BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE, ops[0].batch_id, require_button=False
        )
        assert reply.status == 200
        await stack.slack.state.wait_for(
            lambda: next((m for m in stack.slack.state.ephemerals(BOB) if "expired" in all_text(m)), None),
            timeout=5,
            what="the late click's answer",
        )
        assert stack.vpc.state.calls("DeleteVpnConnection") == []


async def test_a_batch_across_two_replicas_deletes_each_once(db_url: str) -> None:
    """Asked on one replica, approved on the other (SQLite and PostgreSQL): each deleted once."""
    async with local_stack(db_url, update_seconds=0.3, replicas=2) as stack:
        vpc = stack.vpc.state
        ids = seed_site(vpc)
        reply = await stack.agents[0].slash_command(ALICE, CHANNEL, "delete " + " ".join(ids))
        assert reply.status == 200, reply.body
        card = await wait_batch_card(stack.slack.state, "asks to delete")
        reply = await stack.agents[1].click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        assert reply.status == 200, reply.body
        final = await wait_card(stack.slack.state, card.ts, "5 deleted")
        valid_block_kit(final)
        assert deletes_per_connection(vpc) == dict.fromkeys(ids, 1)
        gateway_turns_never_overlap(await stack.bot.app.store.list_operations())


@pytest.mark.parametrize("first_missing", [False, True], ids=["all-found", "first-not-found"])
async def test_a_batch_card_slack_refuses_fails_every_connection_and_says_so_once(
    sqlite_url: str, first_missing: bool
) -> None:
    """The card cannot be posted: nobody can approve, so every connection fails; the requester is told once
    (also when the card's own member, the first, had failed its lookup already)."""
    async with local_stack(sqlite_url) as stack:
        state = stack.slack.state
        ids = seed_site(stack.vpc.state, 3)
        if first_missing:
            ids[0] = "vco-bp1n0t4h3r3at4ll"
        state.fail("chat.postMessage", "not_in_channel")
        reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete " + " ".join(ids))
        assert reply.status == 200, reply.body

        async def all_failed() -> bool:
            ops = await stack.bot.app.store.list_operations()
            return len(ops) == 3 and all(op.state is OpState.FAILED for op in ops)

        assert await state.wait_for(all_failed, timeout=10, what="every connection failed")
        told = await state.wait_for(
            lambda: [r for r in state.responses() if "channel" in str(r)] or None,
            timeout=10,
            what="the requester told",
        )
        assert len(told) == 1
        assert stack.vpc.state.calls("DeleteVpnConnection") == []


async def test_a_single_delete_button_cannot_decide_one_of_a_batch(sqlite_url: str) -> None:
    """A forged Delete click naming one connection of a batch is refused: the batch is decided whole."""
    async with local_stack(sqlite_url) as stack:
        ids = seed_site(stack.vpc.state, 2)
        card = await request(stack, "delete " + " ".join(ids))
        ops = await stack.bot.app.store.list_operations()
        reply = await stack.agent.click(
            BOB, CHANNEL, card.ts, ActionId.APPROVE, ops[0].id, require_button=False
        )
        assert reply.status == 200
        await stack.slack.state.wait_for(
            lambda: next(
                (m for m in stack.slack.state.ephemerals(BOB) if "does not belong" in all_text(m)), None
            ),
            timeout=5,
            what="the refusal",
        )
        assert {op.state for op in await stack.bot.app.store.list_operations()} == {OpState.AWAITING_APPROVAL}


async def test_recreate_from_a_batch_line(sqlite_url: str) -> None:
    """Each deleted connection keeps its own Recreate…: its line's button, its snapshot, in the batch's thread."""
    async with local_stack(sqlite_url, update_seconds=0.3) as stack:
        state = stack.slack.state
        ids = seed_site(stack.vpc.state, 2)
        card = await request(stack, "delete " + " ".join(ids))
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        await wait_card(state, card.ts, "2 deleted")
        ops = await stack.bot.app.store.list_operations()
        second = next(op for op in ops if op.vco_id == ids[1])
        before = set(state.views)
        reply = await stack.agent.click(ALICE, CHANNEL, card.ts, ActionId.RECREATE_OPEN, second.id)
        assert reply.status == 200, reply.body

        def opened() -> dict[str, Any] | None:
            return next((v for k, v in state.views.items() if k not in before), None)

        view = await state.wait_for(opened, timeout=10, what="the Recreate modal")
        typed = {"type": "plain_text_input", "value": "batch-Key_only-in-memory"}
        await stack.agent.submit(ALICE, view["id"], {BlockId.RECREATE_PSK: {ActionId.RECREATE_PSK: typed}})

        def confirmation() -> Message | None:
            return next(
                (
                    m
                    for m in state.thread(CHANNEL, card.ts)
                    if any(b.get("type") == "actions" for b in m.blocks)
                ),
                None,
            )

        posted = await state.wait_for(confirmation, timeout=10, what="the recreate confirmation")
        await stack.agent.click(BOB, CHANNEL, posted.ts, ActionId.APPROVE)
        final = await wait_card(state, card.ts, "recreated as")
        valid_block_kit(final)
        assert ids[1] not in stack.vpc.state.connections
        assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1
