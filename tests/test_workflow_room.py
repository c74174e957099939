"""How many operations one instance drives at once (VPNBOT_MAX_DRIVEN_OPERATIONS), on both backends.

Past the limit an approval is recorded but left unleased, with a note in the thread; the first
resume pass with room, on this instance once a driver ends or on any other replica, takes it.
Virtual clock (tests/workflow_harness.py): nothing sleeps.
"""

from __future__ import annotations

import asyncio

from storetools import lease_of
from workflow_harness import GW, Harness

from bot.domain import Deferred, Deleted, Operation, OpState, Resumed

GW2, GW3 = "vpn-gw2", "vpn-gw3"


def _more_gateways(h: Harness) -> None:
    h.vpc.add_connection("vco-3", GW2)
    h.vpc.add_connection("vco-4", GW3)


async def _deleted(h: Harness, op: Operation) -> Operation:
    return await h.wait_state(op.id, OpState.DELETED, OpState.FAILED, within=20)


async def test_an_approval_past_the_limit_waits_unleased_and_starts_as_soon_as_a_driver_ends(
    h: Harness,
) -> None:
    _more_gateways(h)
    h.vpc.held.update({GW, GW2})
    # The periodic resume pass is ten virtual minutes away: only a driver ending can start the
    # waiting operation without the clock moving. (Virtual time runs ahead while the database
    # works, so the deadline is far off.)
    wf = h.workflow(max_driven=1, loop_interval_s=600, delete_timeout_s=86400)
    first = await h.request(wf, "vco-1")
    waiting = await h.request(wf, "vco-3")
    await wf.start()

    await wf.approve(op_id=first.id, user_id="U0BOSS")
    approved = await wf.approve(op_id=waiting.id, user_id="U0BOSS")
    assert approved.state is OpState.APPROVED
    assert approved.approver_id == "U0BOSS"
    assert wf.driving == {first.id}
    # Recorded with no live lease, and the thread says why nothing happens yet.
    _owner, until = await lease_of(h.store, op_id=waiting.id)
    assert until is not None
    assert until <= h.clock.now()
    await h.eventually_state(first.id, OpState.WAITING_GATEWAY)
    assert wf.driving == {first.id}

    h.vpc.held.discard(GW)
    await h.eventually_state(first.id, OpState.DELETED)
    at = h.clock.now()
    async with asyncio.timeout(5):
        while waiting.id not in wf.driving:  # noqa: ASYNC110 - real time passes, the virtual clock must not
            await asyncio.sleep(0.005)
    assert h.clock.now() == at  # woken by the ended driver, not by the periodic pass
    assert len(wf.driving) == 1

    h.vpc.held.discard(GW2)
    done = await h.eventually_state(waiting.id, OpState.DELETED, OpState.FAILED, OpState.TIMED_OUT, within=20)
    assert done.state is OpState.DELETED
    await h.wait_event(waiting.id, Deleted, within=20)
    # Told why it waited; then, nothing having been sent, that it started (not "picked up again").
    assert h.notifier.events_for(waiting.id)[:2] == [
        Deferred(driving=1),
        Resumed(instance="wf-1", fresh=True),
    ]
    assert [c.vco_id for c in h.vpc.delete_calls] == ["vco-1", "vco-3"]
    assert "resumed" in await h.audit_actions(waiting.id)


async def test_a_full_instance_leaves_the_approval_to_a_replica_with_room(h: Harness) -> None:
    _more_gateways(h)
    h.vpc.held.add(GW)
    full = h.workflow(instance_id="wf-full", max_driven=1)
    busy = await h.request(full, "vco-1")
    other = await h.request(full, "vco-3")
    await full.approve(op_id=busy.id, user_id="U0BOSS")
    await full.approve(op_id=other.id, user_id="U0BOSS")
    assert full.driving == {busy.id}

    h.clock.advance(1)  # the deferred approval's lease ended at the approval
    spare = h.workflow(instance_id="wf-spare")
    await spare.run_once()
    assert spare.driving == {other.id}
    done = await _deleted(h, other)
    assert done.state is OpState.DELETED
    assert (await h.op(busy.id)).state is not OpState.DELETED  # its gateway is still held
    assert Resumed(instance="wf-spare", fresh=True) in h.notifier.events_for(other.id)
    assert [c.vco_id for c in h.vpc.delete_calls] == ["vco-1", "vco-3"]


async def test_the_resume_pass_claims_no_more_than_the_limit(h: Harness) -> None:
    _more_gateways(h)
    h.vpc.held.update({GW, GW2, GW3})
    crashed = h.workflow(instance_id="wf-old")
    ops = [await h.request(crashed, vco) for vco in ("vco-1", "vco-3", "vco-4")]
    for op in ops:
        await crashed.approve(op_id=op.id, user_id="U0BOSS")
    for op in ops:
        await h.wait_state(op.id, OpState.WAITING_GATEWAY)
    await crashed.stop(release_leases=False)
    h.clock.advance(31)  # the leases expire

    most = 0
    wf = h.workflow(instance_id="wf-new", max_driven=2)
    await wf.run_once()
    assert len(wf.driving) == 2
    (left,) = [op for op in ops if op.id not in wf.driving]
    owner, _until = await lease_of(h.store, op_id=left.id)
    assert owner == "wf-old"  # still the crashed one's expired lease: nobody claimed it
    await wf.start()
    h.vpc.held.clear()

    async def all_deleted() -> bool:
        nonlocal most
        most = max(most, len(wf.driving))
        states = {(await h.op(op.id)).state for op in ops}
        return states == {OpState.DELETED}

    await h.eventually(all_deleted, within=20)
    assert most <= 2
    assert sorted(c.vco_id for c in h.vpc.delete_calls) == ["vco-1", "vco-3", "vco-4"]
    for op in ops:
        # Each had sent its delete before the crash: picked up again, not started.
        assert Resumed(instance="wf-new") in h.notifier.events_for(op.id)
