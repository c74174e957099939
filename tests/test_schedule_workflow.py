"""Scheduled deletions in the workflow, on both backends: the due pass's compare-and-set, cancel,
the change window's override, and the connection read again at the run time.

Virtual clock (tests/workflow_harness.py): nothing sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fakes import api_error
from workflow_harness import CONFIG, Harness

from bot.domain import (
    SCHEDULE_AT,
    SCHEDULE_WINDOW,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    OpState,
    Scheduled,
    Starting,
)
from bot.errors import ConfirmationClosed, NotAllowed, RetryClass
from bot.schedule import parse_window
from bot.workflow import Workflow


async def _scheduled(h: Harness, wf: Workflow, *, in_minutes: float = 60, vco_id: str = "vco-1") -> str:
    run_at = h.clock.now() + timedelta(minutes=in_minutes)
    op = await wf.request_delete(
        team_id="T0",
        user_id="U0REQ",
        channel_id="C0OPS",
        vco_id=vco_id,
        region="cn-hangzhou",
        response_url=None,
        run_at=run_at,
    )
    approved = await wf.approve(op_id=op.id, user_id="U0APPROVER")
    assert approved.state is OpState.SCHEDULED
    assert approved.run_at == run_at
    assert approved.schedule_kind == SCHEDULE_AT
    return op.id


async def test_approval_schedules_and_holds_nothing(h: Harness) -> None:
    wf = h.workflow()
    op_id = await _scheduled(h, wf)
    assert wf.driving == frozenset()
    assert await h.store.list_resumable(now=h.clock.now() + timedelta(days=1)) == []
    await h.wait_event(op_id, Scheduled)
    await wf.run_once()
    assert (await h.op(op_id)).state is OpState.SCHEDULED
    assert h.vpc.delete_calls == []


async def test_two_replicas_start_it_once_with_the_deadline_from_the_run_time(h: Harness) -> None:
    a, b = h.workflow(instance_id="wf-a"), h.workflow(instance_id="wf-b")
    op_id = await _scheduled(h, a)
    run_at = (await h.op(op_id)).run_at
    assert run_at is not None
    h.clock.set(run_at + timedelta(seconds=3))
    due = await h.op(op_id)
    started = await asyncio.gather(a.start_scheduled(due), b.start_scheduled(due))
    assert sum(s is not None for s in started) == 1
    op = await h.op(op_id)
    assert op.deadline_at == run_at + timedelta(seconds=CONFIG.delete_timeout_s)
    await h.wait_state(op_id, OpState.DELETED)
    assert len(h.vpc.delete_calls) == 1
    assert (await h.audit_actions(op_id)).count("started") == 1
    await h.wait_event(op_id, Starting)


async def test_cancel_works_until_it_starts_and_not_after(h: Harness) -> None:
    wf = h.workflow()
    kept = await _scheduled(h, wf)
    cancelled = await wf.cancel(op_id=kept, user_id="U0REQ")
    assert cancelled.state is OpState.CANCELLED
    h.clock.advance(3600 + 1)
    await wf.run_once()
    assert h.vpc.delete_calls == []

    started = await _scheduled(h, wf, vco_id="vco-2")
    h.clock.advance(3600 + 1)
    await wf.run_once()
    with pytest.raises(ConfirmationClosed):
        await wf.cancel(op_id=started, user_id="U0REQ")


@pytest.mark.parametrize(("gone", "code"), [(True, SCHEDULED_GONE), (False, SCHEDULED_MOVED)])
async def test_gone_or_moved_by_its_time_is_not_deleted(h: Harness, gone: bool, code: str) -> None:
    wf = h.workflow()
    op_id = await _scheduled(h, wf)
    if gone:
        del h.vpc.connections[("cn-hangzhou", "vco-1")]
    else:
        h.vpc.add_connection("vco-1", "vpn-elsewhere")
    h.clock.advance(3600)
    await wf.run_once()
    op = await h.op(op_id)
    assert op.state is OpState.FAILED
    assert op.error_code == code
    assert h.vpc.delete_calls == []


async def test_an_unreadable_connection_waits_then_fails_past_the_deadline(h: Harness) -> None:
    wf = h.workflow()
    op_id = await _scheduled(h, wf)
    real = h.vpc.describe_vpn_connection
    unreadable = api_error("ServiceUnavailable", retry=RetryClass.TRANSIENT, http_status=503)

    async def failing(**kwargs: object) -> object:
        raise unreadable

    h.vpc.describe_vpn_connection = failing  # type: ignore[method-assign,assignment]
    h.clock.advance(3600)
    await wf.run_once()
    assert (await h.op(op_id)).state is OpState.SCHEDULED  # tried again at the next pass
    h.clock.advance(CONFIG.delete_timeout_s)
    await wf.run_once()
    op = await h.op(op_id)
    assert op.state is OpState.FAILED
    assert op.error_code == "ServiceUnavailable"
    h.vpc.describe_vpn_connection = real  # type: ignore[method-assign]
    assert h.vpc.delete_calls == []


async def test_outside_the_window_it_waits_and_a_second_approver_may_override(h: Harness) -> None:
    # The harness clock starts on Wednesday 2025-01-01 12:00 UTC: outside a Saturday window.
    windows = {"*": (parse_window("Sat 01:00-05:00 UTC"),)}
    wf = h.workflow(change_windows=windows)  # type: ignore[arg-type]
    op = await h.request(wf)
    held = await wf.approve(op_id=op.id, user_id="U0APPROVER")
    assert held.state is OpState.SCHEDULED
    assert held.schedule_kind == SCHEDULE_WINDOW
    assert held.run_at == h.clock.now().replace(day=4, hour=1, minute=0)
    with pytest.raises(NotAllowed, match="second approver"):
        await wf.override_window(op_id=op.id, user_id="U0APPROVER")
    await wf.override_window(op_id=op.id, user_id="U0SECOND")
    await h.wait_state(op.id, OpState.DELETED)
    actions = await h.audit_actions(op.id)
    assert "window_override" in actions
    assert "refused" in actions
    # A deletion scheduled at a requested time has no window to override.
    timed = await _scheduled(h, wf, in_minutes=61 * 60, vco_id="vco-2")  # Saturday 01:00 UTC, in the window
    assert (await h.op(timed)).schedule_kind == SCHEDULE_AT
    with pytest.raises(ConfirmationClosed):
        await wf.override_window(op_id=timed, user_id="U0SECOND")
