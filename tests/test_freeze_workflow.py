"""Freezes in the workflow: recreations are refused and held like deletions (real store, fakes, virtual clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr
from workflow_harness import Harness

from bot.domain import Held, OpState
from bot.errors import Frozen

KEY = SecretStr("fresh-Key_123")
ADMIN = "U0ADMIN"


async def _recreation(h: Harness) -> tuple[str, str]:
    """A deleted connection and a recreation of it awaiting approval (its key held by ``wf-1``)."""
    deleting = h.workflow(instance_id="wf-del")
    op = await h.request(deleting)
    await deleting.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_state(op.id, OpState.DELETED)
    holder = h.workflow(instance_id="wf-1")
    recreation = await holder.request_recreate(op_id=op.id, user_id="U0REQ", channel_id="C0OPS", psk=KEY)
    return op.id, recreation.id


async def test_a_freeze_refuses_a_recreation_approval(h: Harness) -> None:
    _, recreation_id = await _recreation(h)
    wf = h.workflows[-1]
    freeze, _ = await wf.freeze(user_id=ADMIN, duration=timedelta(hours=1), account=None, reason="INC-42")
    assert await wf.frozen("", h.clock.now()) == freeze
    with pytest.raises(Frozen) as info:
        await wf.approve(op_id=recreation_id, user_id="U0BOSS")
    assert info.value.freeze == freeze
    assert (await h.op(recreation_id)).state is OpState.AWAITING_APPROVAL
    assert "recreate_refused" in await h.audit_actions(recreation_id)

    assert [f.id for f in await wf.unfreeze(user_id=ADMIN, account=None, everything=True)] == [freeze.id]
    await wf.approve(op_id=recreation_id, user_id="U0BOSS")
    done = await h.wait_state(recreation_id, OpState.RECREATED, OpState.FAILED)
    assert done.state is OpState.RECREATED


async def test_an_approved_recreation_waits_for_the_freeze_to_end(h: Harness) -> None:
    """Approved on another replica (left to the key's holder), then frozen: the holder holds it, tells the
    thread once, creates nothing; after the freeze's end it recreates."""
    _, recreation_id = await _recreation(h)
    holder = h.workflows[-1]
    other = h.workflow(instance_id="wf-2")
    await other.approve(op_id=recreation_id, user_id="U0BOSS")
    freeze, _ = await other.freeze(
        user_id=ADMIN, duration=timedelta(minutes=30), account=None, reason="INC-42"
    )

    await holder.run_once()
    await h.wait_event(recreation_id, Held)
    h.clock.advance(20 * 60)  # most of the freeze: still held, polling

    async def nearly_over() -> bool:
        return h.clock.now() >= freeze.until - timedelta(minutes=5)

    await h.eventually(nearly_over)
    held = await h.op(recreation_id)
    assert held.state is OpState.APPROVED
    assert held.held_at is not None
    assert h.vpc.created_keys == []

    done = await h.wait_state(recreation_id, OpState.RECREATED, OpState.FAILED, within=20)
    assert done.state is OpState.RECREATED
    assert done.held_at is None
    assert done.started_at is not None
    assert done.started_at >= freeze.until
    assert h.vpc.created_keys == ["fresh-Key_123"]
    assert [type(e) for e in h.notifier.events_for(recreation_id)].count(Held) == 1
