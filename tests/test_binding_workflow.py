"""The approval's binding in the workflow (issue 26): asked again once, never after a possible send."""

from __future__ import annotations

import dataclasses

from fakes import REGION
from storetools import gateway_holder, lease_of
from workflow_harness import Harness

from bot.domain import ChangedSinceApproval, OpState


def _change(h: Harness, vco_id: str = "vco-1") -> None:
    """The connection's remote subnets change after its card was posted."""
    key = (REGION, vco_id)
    h.vpc.connections[key] = dataclasses.replace(h.vpc.connections[key], remote_subnet="10.99.0.0/16")


async def test_a_changed_connection_is_asked_again_and_its_gateway_turn_given_back(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    queued = await h.request(wf, vco_id="vco-2")  # the same gateway
    _change(h)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    again = await h.eventually_state(op.id, OpState.AWAITING_APPROVAL, OpState.DELETED)
    await h.settle()
    assert again.state is OpState.AWAITING_APPROVAL
    assert h.vpc.delete_calls == []
    assert (again.approver_id, again.attempts, again.snapshot) == (None, 0, None)
    assert again.expires_at > op.expires_at  # a fresh expiry
    assert again.preview_fingerprint != op.preview_fingerprint
    assert any("remote subnets" in line for line in again.preview_changes)
    assert await lease_of(h.store, op_id=op.id) == (None, None)
    assert await gateway_holder(h.store, region=op.region, gateway_id=op.gateway_id) is None
    events = [e for e in h.notifier.events_for(op.id) if isinstance(e, ChangedSinceApproval)]
    assert len(events) == 1
    assert events[0].approver_id == "U0BOSS"
    assert (await h.audit_actions(op.id)).count("changed_since_approval") == 1
    assert h.parent_states(op.id)[-1] is OpState.AWAITING_APPROVAL

    # Another deletion on the gateway gets its turn; approving again deletes, once.
    await wf.approve(op_id=queued.id, user_id="U0BOSS")
    await h.wait_state(queued.id, OpState.DELETED)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED)
    assert done.snapshot is not None
    assert [c.vco_id for c in h.vpc.delete_calls].count("vco-1") == 1
    assert (await h.audit_actions(op.id)).count("changed_since_approval") == 1


async def test_a_send_that_may_have_gone_out_is_never_asked_again(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    # A previous worker recorded a send, then crashed: the delete may have reached Alibaba Cloud.
    await h.store.set_fields(op.id, now=h.clock.now(), attempts=1)
    _change(h)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.AWAITING_APPROVAL, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert not any(isinstance(e, ChangedSinceApproval) for e in h.notifier.events_for(op.id))
