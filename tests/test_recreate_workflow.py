"""Recreate in the workflow, on a real store with Protocol fakes and a virtual clock.

The key lives only in the memory of the workflow that took it; these tests restart workflows
(a new Workflow on the same store has an empty memory) at the points that matter.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from fakes import api_error, busy_error, transport_error
from pydantic import SecretStr
from workflow_harness import Harness

from bot.domain import (
    CUSTOMER_GATEWAY_GONE,
    OPERATION_TAG,
    ConnectionReady,
    Created,
    Failed,
    KeyLost,
    Operation,
    OpState,
    Recreated,
    Snapshot,
)
from bot.errors import RecreateRefused

KEY = SecretStr("fresh-Key_123")


async def _deleted(h: Harness) -> Operation:
    wf = h.workflow(instance_id="wf-del")
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED)
    assert done.undo_until is not None
    return done


async def _asked(h: Harness, instance_id: str = "wf-1") -> tuple[Operation, Operation]:
    parent = await _deleted(h)
    wf = h.workflow(instance_id=instance_id)
    recreation = await wf.request_recreate(op_id=parent.id, user_id="U0REQ", channel_id="C0OPS", psk=KEY)
    return parent, recreation


async def test_recreate_creates_once_follows_the_gateway_and_puts_the_routes_back(h: Harness) -> None:
    parent, recreation = await _asked(h)
    assert recreation.state is OpState.AWAITING_APPROVAL
    assert recreation.key_holder == "wf-1"
    assert recreation.requester_id == "U0REQ"
    wf = h.workflows[-1]
    await wf.approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.RECREATED)
    assert h.vpc.created_keys == ["fresh-Key_123"]
    assert done.new_vco_id is not None
    assert [(dest, hop) for dest, hop, _ in h.vpc.routes_created] == [("192.168.0.0/24", done.new_vco_id)]
    kinds = [type(e) for e in h.notifier.events_for(recreation.id)]
    assert kinds.index(Created) < kinds.index(ConnectionReady) < kinds.index(Recreated)
    assert (await h.op(parent.id)).new_vco_id == done.new_vco_id
    actions = await h.audit_actions(recreation.id)
    assert actions[:3] == ["recreate_requested", "recreate_approved", "recreate_sent"]
    assert actions[-1] == "recreated"


async def test_busy_create_is_sent_again_with_a_new_token(h: Harness) -> None:
    _, recreation = await _asked(h)
    h.vpc.create_script.append(busy_error())
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.RECREATED, within=120)
    assert done.token_seq == 1
    assert h.vpc.created_keys == ["fresh-Key_123"]


async def test_a_restart_before_the_create_asks_for_the_key_again(h: Harness) -> None:
    parent, recreation = await _asked(h, instance_id="wf-gone")
    # The key holder is gone (its memory with it); a new workflow under the same name starts.
    await h.workflows[-1].stop()
    h.workflows.pop()
    wf = h.workflow(instance_id="wf-gone")
    await wf.approve(op_id=recreation.id, user_id="U0BOSS")
    await wf.run_once()
    failed = await h.wait_state(recreation.id, OpState.FAILED, within=60)
    assert failed.error_code == "key_lost"
    assert KeyLost(sent=False) in h.notifier.events_for(recreation.id)
    assert h.vpc.created_keys == []
    # The deleted card still offers Recreate…, to give the key again.
    assert (await wf.recreate_target(op_id=parent.id, user_id="U0REQ", channel_id="C0OPS")).id == parent.id


async def test_resumed_after_the_send_finds_the_connection_and_never_resends(h: Harness) -> None:
    _, recreation = await _asked(h, instance_id="wf-crash")
    wf = h.workflows[-1]
    # The create reaches Alibaba, but its answer never comes back before the process dies.
    real = h.vpc.recreate_connection
    created = asyncio.Event()

    async def create_then_hang(**kwargs: Any) -> tuple[str, str]:
        await real(**kwargs)
        created.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    h.vpc.recreate_connection = create_then_hang  # type: ignore[method-assign]
    await wf.approve(op_id=recreation.id, user_id="U0BOSS")

    async def sent() -> bool:
        return created.is_set()

    await h.eventually(sent)
    await wf.stop(release_leases=False, grace_s=0.1)  # like kill -9: the lease stays until it expires
    h.workflows.remove(wf)
    h.vpc.recreate_connection = real  # type: ignore[method-assign]

    other = h.workflow(instance_id="wf-other")
    h.clock.advance(120)  # the lease and the holder's heartbeat expire
    await other.run_once()
    done = await h.wait_state(recreation.id, OpState.RECREATED, within=60)
    assert len(h.vpc.created_keys) == 1  # one create, by the first workflow
    assert Created(new_vco_id=done.new_vco_id or "", found=True) in h.notifier.events_for(recreation.id)


async def test_recreate_is_refused_once_recreated_and_after_the_window(h: Harness) -> None:
    parent, recreation = await _asked(h)
    wf = h.workflows[-1]
    with pytest.raises(RecreateRefused) as refused:
        await wf.request_recreate(op_id=parent.id, user_id="U0REQ", channel_id="C0OPS", psk=KEY)
    assert refused.value.reason == "in_progress"
    await wf.cancel(op_id=recreation.id, user_id="U0REQ")
    h.clock.advance(86400 + 1)
    with pytest.raises(RecreateRefused) as closed:
        await wf.recreate_target(op_id=parent.id, user_id="U0REQ", channel_id="C0OPS")
    assert closed.value.reason == "window_closed"


async def test_a_route_refused_but_on_the_new_connection_counts_as_put_back_by_the_route_tables(
    h: Harness,
) -> None:
    # No error code is trusted to mean "already there": the refusal is checked against the tables.
    _, recreation = await _asked(h)
    real = h.vpc.create_route

    async def made_then_refused(**kwargs: Any) -> str:
        await real(**kwargs)
        raise api_error("SomeUndocumented.Code", friendly="Refused for a reason nobody documented.")

    h.vpc.create_route = made_then_refused  # type: ignore[method-assign]
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.RECREATED)
    assert [r.ok for r in done.route_results] == [True]
    assert len(h.vpc.routes_created) == 1


async def test_a_route_refused_and_not_on_the_new_connection_is_reported(h: Harness) -> None:
    _, recreation = await _asked(h)
    h.vpc.route_script.append(api_error("SomeUndocumented.Code", friendly="Refused."))
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.RECREATED)
    assert [(r.ok, r.code) for r in done.route_results] == [(False, "SomeUndocumented.Code")]
    assert h.vpc.routes_created == []


async def test_the_create_carries_the_operation_tag(h: Harness) -> None:
    _, recreation = await _asked(h)
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.RECREATED)
    assert done.new_vco_id is not None
    assert h.vpc.connection_tags[(done.region, done.new_vco_id)][OPERATION_TAG] == recreation.id


async def test_a_look_alike_without_the_tag_is_not_taken_for_what_the_create_made(h: Harness) -> None:
    parent, recreation = await _asked(h, instance_id="wf-crash")
    wf = h.workflows[-1]
    sent = asyncio.Event()

    async def lost_on_the_way(**kwargs: Any) -> tuple[str, str]:
        sent.set()  # recorded as sent, but it never reaches Alibaba
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    real = h.vpc.recreate_connection
    h.vpc.recreate_connection = lost_on_the_way  # type: ignore[method-assign]
    await wf.approve(op_id=recreation.id, user_id="U0BOSS")

    async def was_sent() -> bool:
        return sent.is_set()

    await h.eventually(was_sent)
    await wf.stop(release_leases=False, grace_s=0.1)
    h.workflows.remove(wf)
    h.vpc.recreate_connection = real  # type: ignore[method-assign]
    # Someone made a connection just like it by hand, just now: same name, gateway and subnets.
    twin = h.vpc.add_connection("vco-twin", parent.gateway_id)
    h.vpc.connections[(parent.region, "vco-twin")] = replace(
        twin, name=parent.connection.name, created_at=h.clock.now()
    )

    other = h.workflow(instance_id="wf-other")
    h.clock.advance(120)
    await other.run_once()
    failed = await h.wait_state(recreation.id, OpState.FAILED, within=60)
    assert failed.error_code == "key_lost"
    assert failed.new_vco_id is None
    assert KeyLost(sent=True) in h.notifier.events_for(recreation.id)


async def test_a_customer_gateway_gone_since_the_request_fails_the_recreation_and_creates_nothing(
    h: Harness,
) -> None:
    _, recreation = await _asked(h)
    assert recreation.snapshot is not None
    (cgw_id,) = recreation.snapshot.customer_gateway_ids
    h.vpc.gone_customer_gateways.add(cgw_id)
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    done = await h.wait_state(recreation.id, OpState.FAILED)
    assert done.error_code == CUSTOMER_GATEWAY_GONE
    assert cgw_id in (done.error_text or "")
    assert h.vpc.customer_gateway_reads == [cgw_id]  # read afresh once, just before the create
    assert h.vpc.created_keys == []
    assert done.attempts == 0  # nothing was sent
    failed = [e for e in h.notifier.events_for(recreation.id) if isinstance(e, Failed)]
    assert [f.code for f in failed] == [CUSTOMER_GATEWAY_GONE]
    assert (await h.audit_actions(recreation.id))[-1] == "recreate_failed"


async def test_a_customer_gateway_that_cannot_be_read_lets_the_create_go(h: Harness) -> None:
    _, recreation = await _asked(h)
    h.vpc.customer_gateway_script.append(transport_error())
    await h.workflows[-1].approve(op_id=recreation.id, user_id="U0BOSS")
    await h.wait_state(recreation.id, OpState.RECREATED)
    assert len(h.vpc.customer_gateway_reads) == 1
    assert h.vpc.created_keys == ["fresh-Key_123"]


def test_the_customer_gateways_a_recreation_uses_are_the_connections_or_each_tunnels() -> None:
    single = Snapshot(vco_id="vco-1", region="cn-hangzhou", config={"customer_gateway_id": "cgw-a"})
    dual = Snapshot(
        vco_id="vco-2",
        region="cn-hangzhou",
        config={
            "tunnel_options_specification": [
                {"customer_gateway_id": "cgw-b", "role": "master"},
                {"customer_gateway_id": "cgw-c", "role": "slave"},
                {"customer_gateway_id": "cgw-b", "role": "slave"},
            ]
        },
    )
    assert single.customer_gateway_ids == ("cgw-a",)
    assert dual.customer_gateway_ids == ("cgw-b", "cgw-c")
    assert Snapshot(vco_id="vco-3", region="cn-hangzhou").customer_gateway_ids == ()
