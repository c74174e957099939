"""An approval bound to what was previewed, end to end (issue 26): the real bot over HTTP, the VPC
sandbox and the Slack stand-in.

Just before DeleteVpnConnection the bot reads the connection afresh and holds it against the
preview the approval was given for: a change that matters sends the request back for approval
(with what changed), one that does not never blocks, and a Recreate whose gateway or customer
gateway went away in between creates nothing.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message, message_size_error
from bot.sandbox.vpc_state import (
    SEED_CGW_HANGZHOU,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VPN_HANGZHOU,
    Route,
)
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text, has_buttons, op_id_of, thread_text, wait_confirmation, wait_parent, wait_thread
from .test_recreate import KEY, delete, open_modal, psk_values, recreate_confirmation

MINUS = "\N{MINUS SIGN}"


def _valid(message: Message) -> None:
    """Valid Block Kit with a fallback text, within Slack's size limits: the card and every edit."""
    versions: list[tuple[str, list[dict[str, Any]]]] = [(message.text, list(message.blocks))]
    versions += [(e.text, list(e.blocks)) for e in message.edits]
    for text, blocks in versions:
        assert text.strip()
        assert message_size_error(text, blocks) is None
        for raw in blocks:
            Block.parse(raw).validate_json()  # type: ignore[union-attr]


def _block_text(message: Message, block_id: BlockId) -> str:
    found = [b for b in message.blocks if b.get("block_id") == block_id.value]
    assert len(found) == 1, f"no {block_id.value} block"
    if "elements" in found[0]:  # a context block
        return " ".join(str(e.get("text", "")) for e in found[0]["elements"])
    return str(found[0]["text"]["text"])


def _deletes_of(stack: LocalStack, vco_id: str) -> list[object]:
    return [
        r for r in stack.vpc.state.calls("DeleteVpnConnection") if r.params.get("VpnConnectionId") == vco_id
    ]


async def _ask(stack: LocalStack, vco_id: str) -> Message:
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {vco_id}")
    assert reply.status == 200, reply.body
    return await wait_confirmation(stack.slack.state, vco_id)


async def _asked_again(stack: LocalStack, ts: str) -> Message:
    """The card once it asks for approval again, with what changed."""

    def again() -> Message | None:
        message = stack.slack.state.message(CHANNEL, ts)
        if message is None or not has_buttons(message):
            return None
        return message if any(b.get("block_id") == BlockId.CHANGED.value for b in message.blocks) else None

    return await stack.slack.state.wait_for(again, timeout=20, what="the card asking again")


async def _queued_behind_another_delete(stack: LocalStack) -> tuple[Message, str]:
    """Approve SEED_VCO_HANGZHOU while another deletion holds its gateway: approved, nothing sent yet.

    The sandbox keeps the gateway ``updating`` after the other delete until :func:`_release` says.
    """
    stack.vpc.state.update_seconds = 3600
    other = await _ask(stack, SEED_VCO_HANGZHOU_TUNNELS)
    await stack.agent.click(BOB, CHANNEL, other.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: _deletes_of(stack, SEED_VCO_HANGZHOU_TUNNELS), timeout=10, what="the other delete sent"
    )
    card = await _ask(stack, SEED_VCO_HANGZHOU)
    op_id = op_id_of(card)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    await wait_thread(stack.slack.state, card.ts, "Waiting for")
    return card, op_id


def _release(stack: LocalStack) -> None:
    """Let the other deletion finish now, and later changes take the usual moment."""
    state = stack.vpc.state
    state.update_seconds = 0.3
    state.gateways[SEED_VPN_HANGZHOU].updating_until = state.clock()


async def test_a_route_added_after_approval_blocks_the_delete_and_asks_again(stack: LocalStack) -> None:
    card, _ = await _queued_behind_another_delete(stack)
    first_print = _block_text(card, BlockId.FOOTER)
    assert "preview `" in first_print
    # Between the approval and the delete: a route through the connection comes, another goes.
    state = stack.vpc.state
    state.routes.append(Route(SEED_VPN_HANGZHOU, "10.2.0.0/16", SEED_VCO_HANGZHOU))
    state.routes = [r for r in state.routes if r.dest != "192.168.11.0/24"]
    _release(stack)

    again = await _asked_again(stack, card.ts)
    changed = _block_text(again, BlockId.CHANGED)
    assert "Changed since it was approved" in changed
    assert f"`routes: +10.2.0.0/16, {MINUS}192.168.11.0/24`" in changed
    assert "`10.2.0.0/16` (destination-based)" in _block_text(again, BlockId.ROUTES)  # the new preview
    assert _block_text(again, BlockId.FOOTER) != first_print  # bound to the new preview now
    assert "Changed since it was approved" in again.text
    thread = await wait_thread(stack.slack.state, card.ts, "Not deleted")
    assert f"since <@{BOB}> approved it" in thread
    assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []  # nothing was sent
    op = await stack.bot.app.store.get_operation(op_id=op_id_of(again))
    assert op is not None
    assert op.state is OpState.AWAITING_APPROVAL
    assert (op.approver_id, op.approved_at, op.snapshot, op.attempts) == (None, None, None, 0)
    entries = await stack.bot.app.store.recent_audit(op_id=op.id, limit=20)
    changed_entries = [e for e in entries if e.action == "changed_since_approval"]
    assert len(changed_entries) == 1
    assert changed_entries[0].detail == f"routes: +10.2.0.0/16, {MINUS}192.168.11.0/24"

    # Approving again deletes it, once.
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    done = await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")
    assert len([r for r in _deletes_of(stack, SEED_VCO_HANGZHOU) if r.outcome == "ok"]) == 1  # type: ignore[attr-defined]
    assert SEED_VCO_HANGZHOU not in state.connections
    _valid(done)
    for reply in stack.slack.state.thread(CHANNEL, card.ts):
        _valid(reply)
    assert thread_text(stack.slack.state, card.ts).count("Not deleted") == 1


async def test_changes_that_do_not_matter_never_block(stack: LocalStack) -> None:
    card, op_id = await _queued_behind_another_delete(stack)
    state = stack.vpc.state
    # The routes come in another order with other timestamps, the health check's own status and
    # the connection's timestamps change, the gateway is busy: none of it is in what was approved.
    state.routes.reverse()
    state.pbr_routes.reverse()
    for route in state.routes:
        route.create_time_ms += 60_000
    connection = state.connections[SEED_VCO_HANGZHOU]
    connection.create_time_ms += 60_000
    if connection.health_check is not None:
        connection.health_check.status = "failed"
    _release(stack)

    done = await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")
    assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1
    assert "Not deleted" not in thread_text(stack.slack.state, card.ts)
    entries = await stack.bot.app.store.recent_audit(op_id=op_id, limit=20)
    assert "changed_since_approval" not in {e.action for e in entries}
    _valid(done)


async def test_a_tunnel_that_came_up_is_a_change(stack: LocalStack) -> None:
    state = stack.vpc.state
    state.connections[SEED_VCO_HANGZHOU].status = "ike_sa_not_established"
    card, _ = await _queued_behind_another_delete(stack)
    state.connections[SEED_VCO_HANGZHOU].status = "ipsec_sa_established"
    _release(stack)

    again = await _asked_again(stack, card.ts)
    assert "`tunnel: down → up`" in _block_text(again, BlockId.CHANGED)
    assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []
    _valid(again)


async def test_a_read_that_fails_once_is_read_again_not_taken_as_unchanged(stack: LocalStack) -> None:
    card = await _ask(stack, SEED_VCO_HANGZHOU)
    op_id = op_id_of(card)
    # The next DescribeVpnConnection is the one just before the delete: it fails once, is read again.
    stack.vpc.state.faults.add(action="DescribeVpnConnection", code="Forbidden", times=1)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")
    op = await stack.bot.app.store.get_operation(op_id=op_id)
    assert op is not None
    assert op.snapshot is not None
    assert op.snapshot.taken  # from the second read
    faults = [r for r in stack.vpc.state.calls("DescribeVpnConnection") if r.outcome == "fault"]
    assert len(faults) == 1


async def test_a_connection_that_cannot_be_read_before_the_delete_is_asked_again(stack: LocalStack) -> None:
    card = await _ask(stack, SEED_VCO_HANGZHOU)
    stack.vpc.state.faults.add(action="DescribeVpnConnection", code="Forbidden")
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    again = await _asked_again(stack, card.ts)
    assert "could not be read now" in _block_text(again, BlockId.CHANGED)
    assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []
    _valid(again)


async def _ask_recreate(stack: LocalStack) -> tuple[str, Message]:
    """Delete the connection, ask to recreate it (the modal, a key): its card's ts and the confirmation."""
    ts = await delete(stack)
    view = await open_modal(stack, ts)
    reply = await stack.agent.submit(ALICE, view["id"], psk_values(KEY))
    assert reply.status == 200, reply.body
    return ts, await recreate_confirmation(stack.slack.state, ts)


async def _recreate_failed(stack: LocalStack, ts: str) -> Message:
    """The recreate confirmation at ``ts`` once it says the recreation failed."""

    def failed() -> Message | None:
        message = stack.slack.state.message(CHANNEL, ts)
        return message if message is not None and "Could not recreate" in all_text(message) else None

    return await stack.slack.state.wait_for(failed, timeout=15, what="the recreation failed")


async def test_a_recreate_whose_gateway_was_deleted_creates_nothing(stack: LocalStack) -> None:
    _, confirmation = await _ask_recreate(stack)
    # Between the request and its approval, the gateway is deleted.
    state = stack.vpc.state
    state.settle()
    del state.gateways[SEED_VPN_HANGZHOU]
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    done = await _recreate_failed(stack, confirmation.ts)
    assert "is gone or being deleted" in all_text(done)
    assert "nothing was sent" in all_text(done)
    assert state.calls("CreateVpnConnection") == []
    _valid(done)


async def test_a_recreate_whose_customer_gateway_was_deleted_creates_nothing(stack: LocalStack) -> None:
    ts, confirmation = await _ask_recreate(stack)
    # Between the request and its approval, the customer gateway is deleted (the gateway stays).
    state = stack.vpc.state
    del state.customer_gateways[SEED_CGW_HANGZHOU]
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    done = await _recreate_failed(stack, confirmation.ts)
    text = all_text(done)
    assert f"customer gateway `{SEED_CGW_HANGZHOU}` is gone" in text
    assert "nothing was sent and nothing was created" in text
    assert state.calls("CreateVpnConnection") == []
    reads = state.calls("DescribeCustomerGateway")
    assert [(r.params["CustomerGatewayId"], r.code) for r in reads] == [
        (SEED_CGW_HANGZHOU, "InvalidCustomerGatewayInstanceId.NotFound")
    ]
    # The thread says it stopped, with the code; the card above says why.
    await wait_thread(stack.slack.state, ts, "customer_gateway_gone")
    _valid(done)


async def test_a_customer_gateway_that_cannot_be_read_does_not_stop_the_recreation(stack: LocalStack) -> None:
    ts, confirmation = await _ask_recreate(stack)
    # Denied (not NotFound): the read says nothing about the customer gateway, so the create goes.
    stack.vpc.state.faults.add(action="DescribeCustomerGateway", code="Forbidden")
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await wait_thread(stack.slack.state, ts, "Recreated in", within=20)
    done = await wait_parent(stack.slack.state, confirmation.ts, "Recreated VPN connection")
    assert [r.outcome for r in stack.vpc.state.calls("DescribeCustomerGateway")] == ["fault"]
    assert len(stack.vpc.state.accepted("CreateVpnConnection")) == 1
    _valid(done)
