"""The site decommission card: valid Block Kit in every state, names inert at Alibaba's length limits,
within Slack's limits at the largest batch, and a line per problem found."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slackfakes import T0, make_op
from test_blocks import walk_limits

from bot.domain import SCHEDULE_AT, SCHEDULE_WINDOW, Impact, ImpactTunnel, Operation, OpState, VpnConnection
from bot.slack.block_ids import ActionId
from bot.slack.blocks.batch import LINES_MAX, build_batch_card
from bot.slack.parsing import BatchDeleteCommand, DeleteCommand, parse_command

NAME_MAX = 128  # Alibaba: connection and gateway names are at most 128 characters
HOSTILE = ("*_~`<@U0EVIL>&<!channel>:x:" * 10)[:NAME_MAX]


def member(index: int, **overrides: Any) -> Operation:
    conn = VpnConnection(
        id=f"vco-bp1batch{index:010d}",
        region="cn-hangzhou",
        name=HOSTILE,
        gateway_id=f"vpn-bp1gateway{index % 2:08d}",
        customer_gateway_id="cgw-bp1cgw0001",
        status="ipsec_sa_established",
        local_subnet="10.0.0.0/24",
        remote_subnet="192.168.0.0/16",
    )
    impact = Impact(
        status="ipsec_sa_established",
        tunnels=(ImpactTunnel(index=1, role="master", state="active", status="ipsec_sa_established"),),
        attach_type="CEN",
        attach_instance_id="cen-" + "x" * 60,
        route_count=3,
    )
    base = make_op(id=f"{index:032x}", connection=conn, impact=impact, batch_id="b" * 32)
    return replace(base, **overrides)


def valid(message: dict[str, Any]) -> None:
    walk_limits(message)
    for raw in message["blocks"]:
        parsed = Block.parse(raw)
        assert parsed is not None
        parsed.validate_json()


def decided(op: Operation, state: OpState, **fields: Any) -> Operation:
    return replace(op, state=state, approver_id="U0BOB", approved_at=T0, **fields)


@pytest.mark.parametrize("count", [2, 20, 40, LINES_MAX + 5])
def test_every_state_is_valid_block_kit_with_hostile_names_at_the_largest_batch(count: int) -> None:
    ops = [member(i) for i in range(count)]
    waiting = build_batch_card(ops, now=T0, approval_rule="*Approval:* <@U0BOB>")
    valid(waiting)
    counted = build_batch_card(
        ops, now=T0, approval_rule="*Approval:* <@U0BOB>", progress="*1 of 2 approvals*: <@U0BOB> ✓"
    )
    valid(counted)
    assert "*1 of 2 approvals*" in str(counted)
    assert "<@U0EVIL>" not in str(waiting)
    assert "<!channel>" not in str(waiting)
    outcomes = [OpState.DELETED, OpState.FAILED, OpState.APPROVED, OpState.DELETING, OpState.TIMED_OUT]
    after = [
        decided(op, outcomes[i % len(outcomes)], error_text="x" * 500, undo_until=T0 + timedelta(days=1))
        for i, op in enumerate(ops)
    ]
    valid(build_batch_card(after, now=T0))
    closed = [replace(op, state=OpState.CANCELLED, cancelled_by="U0BOB", cancel_reason=HOSTILE) for op in ops]
    valid(build_batch_card(closed, now=T0))
    for kind in (SCHEDULE_WINDOW, SCHEDULE_AT):
        later = [
            decided(
                op, OpState.SCHEDULED, run_at=T0 + timedelta(days=3), schedule_kind=kind, account="a" * 40
            )
            for op in ops
        ]
        card = build_batch_card(later, now=T0)
        valid(card)
        buttons = {e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]}
        assert ActionId.BATCH_CANCEL in buttons
        assert (ActionId.BATCH_OVERRIDE_WINDOW in buttons) is (kind == SCHEDULE_WINDOW)
    if count > LINES_MAX:
        assert f"and {count - LINES_MAX} more" in str(build_batch_card(after, now=T0))


def test_the_pre_flight_table_says_each_problem() -> None:
    ok = member(0)
    gone = replace(
        member(1), state=OpState.FAILED, impact=None, error_code="InvalidVpnConnectionInstanceId.NotFound"
    )
    elsewhere = replace(member(2), state=OpState.FAILED, impact=None, error_code="already_deleting")
    card = build_batch_card([ok, gone, elsewhere], now=T0)
    valid(card)
    text = str(card)
    assert "tunnel up: traffic flows through it now" in text
    assert "1 of 1 tunnels up · 3 routes" in text
    assert "(a wider blast radius)" in text
    assert "not found in `cn-hangzhou`" in text
    assert "already being deleted by another request" in text
    approve = next(b for b in card["blocks"] if b["type"] == "actions")["elements"][0]
    assert approve["action_id"] == ActionId.BATCH_APPROVE
    assert approve["text"]["text"] == "Delete 1"  # the two left out are not counted


def test_the_card_shows_each_outcome_with_its_reason_and_recreate() -> None:
    ops = [
        decided(member(0), OpState.DELETED, undo_until=T0 + timedelta(hours=1)),
        decided(member(1), OpState.FAILED, error_text="The VPN gateway is locked."),
        decided(member(2), OpState.APPROVED),
        decided(member(3), OpState.WAITING_GATEWAY),
    ]
    card = build_batch_card(ops, now=T0)
    valid(card)
    text = str(card)
    for expected in (
        ":white_check_mark: deleted",
        ":x: failed: The VPN gateway is locked.",
        "waiting for its gateway",
        "deleting…",
    ):
        assert expected in text
    recreate = [b["accessory"]["value"] for b in card["blocks"] if "accessory" in b]
    assert recreate == [ops[0].id]
    assert "1 deleted, 1 failed, 1 waiting for their gateway, 1 deleting" in card["text"]


def test_parsing_the_batch_forms() -> None:
    a, b = "vco-bp1aaaa1111", "vco-bp1bbbb2222"
    assert parse_command(
        f"delete {a} {b} {a} cn-shanghai", default_region="cn-hangzhou"
    ) == BatchDeleteCommand(vco_ids=(a, b), region="cn-shanghai")
    # The same id twice is one connection: the single request.
    assert parse_command(f"delete {a} {a}", default_region="cn-hangzhou") == DeleteCommand(
        vco_id=a, region="cn-hangzhou"
    )
    assert parse_command(
        "delete gateway=vpn-bp1gw0001 all", default_region="cn-hangzhou"
    ) == BatchDeleteCommand(vco_ids=(), region="cn-hangzhou", gateway_id="vpn-bp1gw0001")
    # ``at …``: every connection runs then, once approved.
    at = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
    assert parse_command(
        f"delete {a} {b} cn-shanghai at 2026-12-10T02:00Z", default_region="cn-hangzhou"
    ) == BatchDeleteCommand(vco_ids=(a, b), region="cn-shanghai", run_at=at)
    assert parse_command(
        "delete gateway=vpn-bp1gw0001 all at 2026-12-10 10:00 Asia/Shanghai", default_region="cn-hangzhou"
    ) == BatchDeleteCommand(vco_ids=(), region="cn-hangzhou", gateway_id="vpn-bp1gw0001", run_at=at)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("delete gateway=vpn-bp1gw0001", "add `all`"),
        ("delete gateway=nope all", "is not a VPN gateway id"),
        ("delete vco-bp1aaaa1111 vco-B@D", "is not a VPN connection id"),
        ("delete vco-bp1aaaa1111 vco-bp1bbbb2222 cn-hangzhou extra", "Too many words"),
    ],
)
def test_a_bad_batch_command_gets_a_friendly_usage_error(text: str, says: str) -> None:
    from bot.errors import UsageError

    with pytest.raises(UsageError) as info:
        parse_command(text, default_region="cn-hangzhou")
    assert says in info.value.friendly


def test_help_lists_the_batch_forms() -> None:
    from bot.slack.blocks import build_usage

    message = build_usage()
    valid(message)
    text = str(message)
    assert "/vpn delete vco-a vco-b vco-c [region]" in text
    assert "/vpn delete gateway=vpn-… all [region]" in text
