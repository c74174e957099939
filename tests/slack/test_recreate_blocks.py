"""Recreate's Block Kit: the deleted card's offer, the modal, the recreation's card in every state, replies."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slackfakes import T0, make_op
from test_blocks import walk_limits

from bot.domain import (
    CUSTOMER_GATEWAY_GONE,
    KIND_RECREATE,
    ConnectionReady,
    Created,
    KeyLost,
    Operation,
    OpState,
    Progress,
    Recreated,
    RouteResult,
    Snapshot,
    SnapshotRoute,
    TimedOut,
    VpnConnection,
    event_from_json,
    event_to_json,
)
from bot.errors import RecreateRefused
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks import build_confirmation, build_parent, build_progress, build_recreate_modal
from bot.slack.blocks.find import build_operation_status
from bot.slack.blocks.recreate import recreate_refused_text

LONG_NAME = "n" * 100  # Alibaba's longest connection name
ROUTES = (
    SnapshotRoute(kind="custom", destination="192.168.10.0/24", weight=100),
    SnapshotRoute(
        kind="policy", destination="192.168.10.128/25", source="10.10.1.0/24", priority=5, published=False
    ),
    SnapshotRoute(kind="bgp", destination="10.200.0.0/16"),
)
SNAPSHOT = Snapshot(
    vco_id="vco-bp1abc2def3gh",
    region="cn-hangzhou",
    name=LONG_NAME,
    gateway_id="vpn-bp1gw0001",
    customer_gateway_id="cgw-bp1cgw0001",
    local_subnet="10.0.0.0/24",
    remote_subnet="192.168.0.0/16",
    config={
        "vpn_gateway_id": "vpn-bp1gw0001",
        "local_subnet": "10.0.0.0/24",
        "remote_subnet": "192.168.0.0/16",
        "name": LONG_NAME,
        "customer_gateway_id": "cgw-bp1cgw0001",
        "ike_config": {"ike_version": "ikev2"},
        "bgp_config": {"enable_bgp": True, "local_asn": 65001},
    },
    routes=ROUTES,
)
CONN = VpnConnection(
    id="vco-bp1abc2def3gh",
    region="cn-hangzhou",
    name=LONG_NAME,
    gateway_id="vpn-bp1gw0001",
    customer_gateway_id="cgw-bp1cgw0001",
    status="",
    local_subnet="10.0.0.0/24",
    remote_subnet="192.168.0.0/16",
)


def valid(message: dict[str, Any]) -> None:
    walk_limits(message)
    for raw in message["blocks"]:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]


def recreation(**overrides: Any) -> Operation:
    return make_op(
        kind=KIND_RECREATE,
        connection=CONN,
        snapshot=SNAPSHOT,
        parent_op_id="op-0",
        thread_ts="1700000000.000001",
        requester_id="U0REQUEST",
        **overrides,
    )


def test_the_deleted_card_offers_recreate_until_the_window_closes() -> None:
    deleted = make_op(
        state=OpState.DELETED,
        connection=CONN,
        approver_id="U0APPROVER",
        approved_at=T0,
        finished_at=T0 + timedelta(seconds=5),
        undo_until=T0 + timedelta(hours=24),
    )
    open_card = build_parent(deleted, now=T0 + timedelta(hours=1))
    valid(open_card)
    buttons = [e for b in open_card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["text"]["text"], b["value"]) for b in buttons] == [
        (ActionId.RECREATE_OPEN, "Recreate…", deleted.id)
    ]
    closed = build_parent(deleted, now=T0 + timedelta(hours=25))
    assert all(b["type"] != "actions" for b in closed["blocks"])
    assert all(b["type"] != "actions" for b in build_parent(replace(deleted, undo_until=None))["blocks"])
    recreated = build_parent(replace(deleted, new_vco_id="vco-bp1new"), now=T0)
    assert "Recreated as `vco-bp1new`" in json.dumps(recreated)
    assert all(b["type"] != "actions" for b in recreated["blocks"])


def test_the_modal_shows_what_is_created_and_asks_only_for_the_pre_shared_key() -> None:
    deleted = make_op(state=OpState.DELETED, connection=CONN, snapshot=SNAPSHOT)
    view = build_recreate_modal(deleted)
    View(**view).validate_json()
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    # One key only: CreateVpnConnection takes no BGP key (the customer gateway keeps it).
    assert list(inputs) == [BlockId.RECREATE_PSK]
    assert "pre-shared key" in inputs[BlockId.RECREATE_PSK]["label"]["text"].lower()
    assert inputs[BlockId.RECREATE_PSK]["element"]["type"] == "plain_text_input"
    text = json.dumps(view)
    assert "BGP authentication* is not asked for" in text
    assert "customer gateway" in text
    for shown in ("vpn-bp1gw0001", "cgw-bp1cgw0001", "192.168.10.128/25", "10.10.1.0/24", "BGP-learned"):
        assert shown in text
    assert "AutoConfigRoute=false" in text
    assert "`192.168.10.128/25` from `10.10.1.0/24` (policy-based, not published to the VPC)" in text
    assert "`192.168.10.0/24` (destination-based)" in text
    assert view["private_metadata"] == deleted.id
    # No BGP: nothing said of BGP authentication.
    plain = replace(SNAPSHOT, config={k: v for k, v in (SNAPSHOT.config or {}).items() if k != "bgp_config"})
    view = build_recreate_modal(replace(deleted, snapshot=plain))
    assert "BGP authentication" not in json.dumps(view)


def test_the_modal_lists_what_cannot_be_carried_before_the_key_input() -> None:
    lossy = replace(
        SNAPSHOT,
        resource_group_id="rg-team-net",
        health_check_policy="reserve_route",
        skipped_tags=("acs:rm:rgId", "aliyun-owner"),
        over_limit_tags=("zz-last",),
    )
    view = build_recreate_modal(make_op(state=OpState.DELETED, connection=CONN, snapshot=lossy))
    View(**view).validate_json()
    ids = [b.get("block_id") for b in view["blocks"]]
    assert ids.index(BlockId.RECREATE_NOT_CARRIED) < ids.index(BlockId.RECREATE_PSK)
    lost = next(b for b in view["blocks"] if b.get("block_id") == BlockId.RECREATE_NOT_CARRIED)["text"][
        "text"
    ]
    for shown in (
        "rg-team-net",
        "reserve_route",
        "acs:rm:rgId",
        "aliyun-owner",
        "zz-last",
        "Route descriptions",
    ):
        assert shown in lost
    # And once done, the thread says it again.
    done = build_progress(
        Recreated(new_vco_id="vco-bp1new", elapsed_s=60, routes=(), not_carried=lossy.not_carried)
    )
    assert "Not carried over" in done
    assert "rg-team-net" in done
    assert "reserve_route" in done


def test_the_recreation_confirmation_has_recreate_and_cancel() -> None:
    msg = build_confirmation(recreation(), now=T0)
    valid(msg)
    buttons = [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["text"]["text"] for b in buttons] == ["Recreate", "Cancel"]
    assert [b["action_id"] for b in buttons] == [ActionId.APPROVE, ActionId.CANCEL]
    assert "asks to recreate" in msg["text"]


LATER = {
    OpState.APPROVED: ["creating the connection"],
    OpState.CREATING: ["creating the connection"],
    OpState.WAITING_GATEWAY: ["waiting for gateway `vpn-bp1gw0001`"],
    OpState.ROUTING: ["putting the routes back"],
    OpState.RECREATED: ["recreated in 1 min 12 s as `vco-bp1new`", "1 of 2 routes back on it", "`Forbidden`"],
    OpState.FAILED: ["The connection was not recreated. The gateway is busy."],
    OpState.TIMED_OUT: ["`vco-bp1new` was created, but not every route was put back"],
    OpState.CANCELLED: ["Nothing was created."],
    OpState.EXPIRED: ["Nothing was created; click *Recreate…*"],
}


@pytest.mark.parametrize("state", list(LATER))
def test_the_recreation_card_in_every_later_state(state: OpState) -> None:
    op = recreation(
        state=state,
        approver_id="U0APPROVER",
        approved_at=T0 + timedelta(minutes=3),
        finished_at=T0 + timedelta(minutes=4, seconds=12),
        cancelled_by="U0CANCEL",
        error_text="The gateway is busy.",
        new_vco_id="vco-bp1new",
        route_results=(
            RouteResult(kind="custom", destination="192.168.10.0/24"),
            RouteResult(
                kind="policy",
                destination="192.168.10.128/25",
                source="10.10.1.0/24",
                ok=False,
                code="Forbidden",
                reason="Not allowed.",
            ),
            RouteResult(kind="bgp", destination="10.200.0.0/16", code="bgp"),
        ),
    )
    msg = build_parent(op)
    valid(msg)
    assert all(b["type"] != "actions" for b in msg["blocks"])
    status = next(b for b in msg["blocks"] if b.get("block_id") == BlockId.STATUS)["text"]["text"]
    for fragment in LATER[state]:
        assert fragment in status


def test_a_lost_key_asks_for_it_again() -> None:
    msg = build_parent(recreation(state=OpState.FAILED, error_code="key_lost", approver_id="U0A"))
    assert "give the key again" in msg["text"]
    assert "give the key again" in build_progress(KeyLost())
    assert "after sending the create" in build_progress(KeyLost(sent=True))


def test_a_customer_gateway_gone_before_the_create_says_which_and_that_nothing_was_created() -> None:
    op = recreation(
        state=OpState.FAILED,
        approver_id="U0A",
        error_code=CUSTOMER_GATEWAY_GONE,
        error_text="Customer gateway cgw-bp1cgw0001 no longer exists (checked just before CreateVpnConnection).",
    )
    msg = build_parent(op)
    valid(msg)
    status = next(b for b in msg["blocks"] if b.get("block_id") == BlockId.STATUS)["text"]["text"]
    assert "customer gateway `cgw-bp1cgw0001` is gone" in status
    assert "nothing was sent and nothing was created" in status
    # Without the id in the stored reason, the card still says what happened.
    vague = build_parent(replace(op, error_text=None))
    valid(vague)
    assert "customer gateway it uses is gone" in json.dumps(vague["blocks"])


def test_recreation_events_survive_the_outbox_json() -> None:
    events: list[Progress] = [
        Created(new_vco_id="vco-bp1new", request_id="R-1"),
        ConnectionReady(gateway_id="vpn-1", new_vco_id="vco-bp1new", routes=2),
        Recreated(
            new_vco_id="vco-bp1new",
            elapsed_s=3.0,
            routes=(RouteResult(kind="custom", destination="1.0.0.0/8"),),
        ),
        KeyLost(sent=True),
        TimedOut(phase="creating", waited_s=9, sent=True, change=KIND_RECREATE),
    ]
    for event in events:
        assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_thread_replies() -> None:
    assert "`vco-bp1new`" in build_progress(Created(new_vco_id="vco-bp1new", request_id="R-1"))
    assert "already made" in build_progress(Created(new_vco_id="vco-bp1new", found=True))
    assert "Putting 2 routes back" in build_progress(
        ConnectionReady(gateway_id="vpn-1", new_vco_id="vco-bp1new", routes=2)
    )
    done = build_progress(Recreated(new_vco_id="vco-bp1new", elapsed_s=3.0, routes=()))
    assert "Recreated in 3 s as `vco-bp1new`. No routes to put back." in done
    assert "the create was never sent" in build_progress(
        TimedOut(phase="approved", waited_s=9, sent=False, change=KIND_RECREATE)
    )


@pytest.mark.parametrize("reason", ["off", "not_deleted", "no_snapshot", "window_closed", "recreated"])
def test_every_refusal_says_nothing_changed(reason: str) -> None:
    text = recreate_refused_text(RecreateRefused(reason, make_op()), now=T0)
    assert "Nothing was changed" in text


def test_vpn_status_of_a_recreation_and_of_a_recreated_deletion() -> None:
    text = json.dumps(build_operation_status(recreation(new_vco_id="vco-bp1new"), permalink=None, now=T0))
    assert "Recreation of deleted connection `vco-bp1abc2def3gh`" in text
    assert "New connection `vco-bp1new`" in text
    deleted = make_op(state=OpState.DELETED, new_vco_id="vco-bp1new")
    assert "Recreated as `vco-bp1new`" in json.dumps(build_operation_status(deleted, permalink=None, now=T0))
