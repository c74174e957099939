"""The deletion workflow with Protocol fakes, on SQLite and PostgreSQL: no Slack, no HTTP.

The harness (tests/workflow_harness.py, fixture ``h``) runs on a virtual clock: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from fakes import (
    REGION,
    CountingStore,
    FakePolicy,
    FakeVpc,
    api_error,
    busy_error,
)
from storetools import gateway_holder, lease_of, pending_effects
from workflow_harness import CONFIG, GW, Harness

from bot.domain import (
    Accepted,
    Deleted,
    Delivery,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Operation,
    OpState,
    PostFailed,
    Queued,
    Resumed,
    Retrying,
    StillExists,
    TimedOut,
    VpnGateway,
    client_token_for,
)
from bot.errors import AlreadyRequested, ConfirmationClosed, NotAllowed, SlackError
from bot.slack.blocks import closed_text
from bot.store import Store


# Real-sized timings: the clock is virtual, so nothing here waits for them.
async def test_happy_path_reports_progress_in_order(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    assert op.state is OpState.AWAITING_APPROVAL
    assert op.message_ts == "1700000000.000001"
    assert op.client_token == f"vpnbot-{op.id}-0"
    assert op.client_token.isascii()
    assert len(op.client_token) <= 64
    assert op.expires_at == h.clock.now() + timedelta(seconds=CONFIG.confirmation_ttl_s)
    assert [p.id for p in h.notifier.posted] == [op.id]

    approved = await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert approved.state is OpState.APPROVED
    assert approved.approver_id == "U0BOSS"
    assert approved.deadline_at == h.clock.now() + timedelta(seconds=CONFIG.delete_timeout_s)

    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert done.delete_request_id == "REQ-0001"
    assert done.finished_at is not None
    assert h.notifier.event_types(op.id) == [
        "Accepted",
        "GatewayUpdating",
        "GatewayActive",
        "Deleted",
        "SnapshotTaken",
    ]
    events = h.notifier.events_for(op.id)
    assert events[0] == Accepted(request_id="REQ-0001")
    assert events[1] == GatewayUpdating(gateway_id=GW)
    assert events[2] == GatewayActive(gateway_id=GW)
    assert isinstance(events[3], Deleted)
    # The card is rendered from the state at delivery time: in progress, then deleted.
    in_progress, final = h.parent_states(op.id)
    assert in_progress in {OpState.APPROVED, OpState.DELETING, OpState.WAITING_GATEWAY}
    assert final is OpState.DELETED
    assert [(c.vco_id, c.client_token) for c in h.vpc.delete_calls] == [("vco-1", op.client_token)]
    assert ("cn-hangzhou", "vco-1") not in h.vpc.connections
    assert await gateway_holder(h.store, region=REGION, gateway_id=GW) is None
    assert await h.audit_actions(op.id) == ["requested", "approved", "delete_sent", "deleted"]
    history = await wf.history(limit=1)
    assert (history[0].action, history[0].request_id) == ("deleted", "REQ-0001")


async def test_a_request_costs_three_transactions_the_lookups_move_claims_the_card(h: Harness) -> None:
    # Recorded, looked up (the outbox claimed in the same transaction), posted and recorded: the
    # dispatcher does not claim and read the card again before posting it.
    counting = CountingStore(h.store)
    wf = h.workflow(store=counting)  # type: ignore[arg-type]
    op = await h.request(wf)
    assert [p.id for p in h.notifier.posted] == [op.id]
    assert op.message_ts == "1700000000.000001"
    assert counting.calls == ["create_operation", "transition_and_claim", "confirmation_posted"]
    assert await pending_effects(h.store, op_id=op.id) == []


async def test_a_click_costs_two_transactions_the_move_claims_the_card_update(h: Harness) -> None:
    # The state change takes the outbox claim and reads the card to send; delivering it costs one
    # more write (its completion), not a claim-and-read first.
    counting = CountingStore(h.store)
    wf = h.workflow(store=counting)  # type: ignore[arg-type]
    op = await h.request(wf)
    counting.calls.clear()
    await wf.cancel(op_id=op.id, user_id="U0REQ")
    await h.settle()
    assert counting.calls == ["get_operation", "transition_and_claim", "complete_effects"]
    assert h.parent_states(op.id) == [OpState.CANCELLED]

    other = await h.request(wf, "vco-2")
    h.vpc.held.add(GW)
    counting.calls.clear()
    await wf.approve(op_id=other.id, user_id="U0BOSS")
    await h.eventually_state(other.id, OpState.WAITING_GATEWAY)
    assert counting.calls[:2] == ["get_operation", "transition_and_claim"]
    assert h.parent_states(other.id)[0] is OpState.APPROVED
    # The approval's card went out under the claim its move took: the first claim-and-read is
    # for what the driver wrote after.
    first_delivery = counting.calls.index("complete_effects")
    assert "take_next" not in counting.calls[:first_delivery]


async def test_twenty_clicks_on_two_replicas_approve_once(h: Harness, db_url: str) -> None:
    other_store = await Store.open(db_url)
    try:
        wf_a = h.workflow(instance_id="wf-a")
        wf_b = h.workflow(instance_id="wf-b", store=other_store)
        op = await h.request(wf_a)

        results = await asyncio.gather(
            *((wf_a if i % 2 else wf_b).approve(op_id=op.id, user_id=f"U0CLICK{i}") for i in range(20)),
            return_exceptions=True,
        )
        approved = [r for r in results if isinstance(r, Operation)]
        closed = [r for r in results if isinstance(r, ConfirmationClosed)]
        assert len(approved) == 1
        assert len(closed) == 19
        winner = approved[0].approver_id
        assert all(f"approved by <@{winner}>" in closed_text(c.op) for c in closed)

        await h.wait_state(op.id, OpState.DELETED)
        assert len(h.vpc.delete_calls) == 1
        # One approval: one in-progress card update, then the final one.
        assert len(h.parent_states(op.id)) == 2
        assert (await h.audit_actions(op.id)).count("approved") == 1
    finally:
        for wf in h.workflows:
            await wf.stop()
        await other_store.close()


async def test_cancel_closes_the_confirmation(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    cancelled = await wf.cancel(op_id=op.id, user_id="U0REQ")
    assert (cancelled.state, cancelled.cancelled_by) == (OpState.CANCELLED, "U0REQ")
    await h.settle()
    assert h.parent_states(op.id) == [OpState.CANCELLED]

    with pytest.raises(ConfirmationClosed) as closed:
        await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert "cancelled by <@U0REQ>" in closed_text(closed.value.op)
    with pytest.raises(ConfirmationClosed, match="cancelled"):
        await wf.cancel(op_id=op.id, user_id="U0REQ")
    assert h.vpc.delete_calls == []
    assert await h.audit_actions(op.id) == ["requested", "cancelled"]


async def test_approved_request_cannot_be_cancelled(h: Harness) -> None:
    h.vpc.held.add(GW)
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    with pytest.raises(ConfirmationClosed) as closed:
        await wf.cancel(op_id=op.id, user_id="U0REQ")
    assert "approved by <@U0BOSS>" in closed_text(closed.value.op)


async def test_policy_refusals_are_audited(h: Harness) -> None:
    policy = FakePolicy(requesters={"U0REQ"}, approvers={"U0BOSS"})
    wf = h.workflow(policy=policy)
    with pytest.raises(NotAllowed):
        await h.request(wf, user_id="U0STRANGER")
    assert await h.store.list_operations() == []

    op = await h.request(wf)
    with pytest.raises(NotAllowed, match="may not approve"):
        await wf.approve(op_id=op.id, user_id="U0INTERN")
    with pytest.raises(NotAllowed):
        await wf.cancel(op_id=op.id, user_id="U0INTERN")
    assert (await h.op(op.id)).state is OpState.AWAITING_APPROVAL
    # One person's refused clicks on one card are one row, counted (the latest detail kept).
    assert await h.audit_actions(op.id) == ["requested", "refused"]
    refused = (await h.store.recent_audit(limit=1, op_id=op.id))[0]
    assert (refused.actor_id, refused.times) == ("U0INTERN", 2)
    assert refused.detail.startswith("cancel:")
    with pytest.raises(NotAllowed):
        await wf.approve(op_id=op.id, user_id="U0OTHER")  # another person: a row of their own
    assert await h.audit_actions(op.id) == ["requested", "refused", "refused"]
    assert [e.actor_id for e in await wf.history(limit=10) if e.action == "refused"][-1] == "U0STRANGER"


async def test_one_open_request_per_person_and_connection(h: Harness) -> None:
    """Asking again for a connection one already asked for points at that request; nothing is stored."""
    wf = h.workflow()
    # All at once, with nothing stored yet: the check and the insert share a transaction.
    at_once = await asyncio.gather(*(h.request(wf) for _ in range(6)), return_exceptions=True)
    created = [r for r in at_once if isinstance(r, Operation)]
    assert len(created) == 1, at_once
    first = created[0]
    refused = [r for r in at_once if r is not first]
    assert all(isinstance(r, AlreadyRequested) and r.op.id == first.id for r in refused), at_once
    with pytest.raises(AlreadyRequested):
        await h.request(wf)  # and later, while it is open
    assert [op.id for op in await h.store.list_operations()] == [first.id]
    assert await h.audit_actions(first.id) == ["requested"]
    assert [op.id for op in h.notifier.posted] == [first.id]

    other = await h.request(wf, user_id="U0OTHER")  # someone else may still ask once
    assert other.id != first.id
    await wf.cancel(op_id=first.id, user_id="U0REQ")
    again = await h.request(wf)  # closed: a new request is a new card
    assert again.id not in {first.id, other.id}


async def test_unknown_operation_is_closed(h: Harness) -> None:
    wf = h.workflow()
    with pytest.raises(ConfirmationClosed) as closed:
        await wf.approve(op_id="no-such-op", user_id="U0BOSS")
    assert "not found" in closed_text(closed.value.op)


async def test_sweeper_expires_and_late_click_is_closed(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.run_once()
    assert (await h.op(op.id)).state is OpState.AWAITING_APPROVAL

    h.clock.advance(CONFIG.confirmation_ttl_s + 1)
    await wf.run_once()
    assert (await h.op(op.id)).state is OpState.EXPIRED
    await h.settle()
    assert h.parent_states(op.id) == [OpState.EXPIRED]
    with pytest.raises(ConfirmationClosed, match="expired"):
        await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert h.vpc.delete_calls == []
    assert await h.audit_actions(op.id) == ["requested", "expired"]


async def test_late_click_before_the_sweeper_expires_it(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    h.clock.advance(CONFIG.confirmation_ttl_s)
    with pytest.raises(ConfirmationClosed, match="expired"):
        await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert (await h.op(op.id)).state is OpState.EXPIRED
    await h.settle()
    assert h.parent_states(op.id) == [OpState.EXPIRED]
    assert h.vpc.delete_calls == []


async def test_busy_gateway_is_retried_with_a_new_token_each_time(h: Harness) -> None:
    # Alibaba replays the first answer to a reused token, errors included: after a definite
    # "busy" the same token would be busy forever, so each resend carries a new one.
    h.vpc.delete_script = [busy_error(), busy_error("VpnTask.CONFLICT")]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    tokens = [c.client_token for c in h.vpc.delete_calls]
    assert tokens == [client_token_for(op.id, 0), client_token_for(op.id, 1), client_token_for(op.id, 2)]
    assert done.attempts == 3
    assert (done.token_seq, done.client_token) == (2, tokens[-1])
    retries = [e for e in h.notifier.events_for(op.id) if isinstance(e, Retrying)]
    assert [(r.attempt, r.max_attempts, r.code) for r in retries] == [
        (2, 4, "VpnGateway.Configuring"),
        (3, 4, "VpnTask.CONFLICT"),
    ]
    assert all(0 < r.delay_s <= CONFIG.busy_retry_max_s * 1.2 for r in retries)
    assert h.notifier.event_types(op.id)[2:] == [
        "Accepted",
        "GatewayUpdating",
        "GatewayActive",
        "Deleted",
        "SnapshotTaken",
    ]


async def test_a_reused_token_would_replay_busy_so_the_retry_succeeds_only_with_a_new_one(h: Harness) -> None:
    # The fake, like Alibaba, answers a reused token with its first answer: prove the workflow
    # never resends a token that was refused.
    h.vpc.delete_script = [busy_error()]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    assert (await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)).state is OpState.DELETED
    refused = [t for t, answer in h.vpc.tokens.items() if not isinstance(answer, str)]
    assert refused == [client_token_for(op.id, 0)]
    assert [c.client_token for c in h.vpc.delete_calls].count(refused[0]) == 1


async def test_gateway_busy_too_long_fails(h: Harness) -> None:
    h.vpc.delete_script = [busy_error() for _ in range(CONFIG.busy_retry_attempts)]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.FAILED, OpState.DELETED)
    assert done.state is OpState.FAILED
    assert done.error_code == "VpnGateway.Configuring"
    assert len(h.vpc.delete_calls) == CONFIG.busy_retry_attempts


async def test_final_error_fails_with_friendly_text_and_frees_the_gateway(h: Harness) -> None:
    err = api_error(
        "Forbidden", http_status=403, friendly="The bot's RAM user may not delete VPN connections."
    )
    h.vpc.delete_script = [err]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.FAILED, OpState.DELETED)
    assert done.state is OpState.FAILED
    assert (done.error_code, done.error_text) == ("Forbidden", err.friendly)
    assert h.notifier.events_for(op.id) == [
        Failed(code="Forbidden", reason=err.friendly, request_id="REQ-ERR")
    ]
    assert h.parent_states(op.id)[-1] is OpState.FAILED
    assert len(h.vpc.delete_calls) == 1
    assert await gateway_holder(h.store, region=REGION, gateway_id=GW) is None
    assert (await h.audit_actions(op.id))[-1] == "failed"


async def test_not_found_on_first_send_is_a_failure(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    del h.vpc.connections[(REGION, "vco-1")]  # someone deleted it in the console meanwhile
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.FAILED, OpState.DELETED)
    assert done.state is OpState.FAILED
    assert done.error_code == "InvalidVpnConnectionInstanceId.NotFound"


async def test_not_found_after_a_lost_answer_means_already_deleted(h: Harness) -> None:
    # The request reached Alibaba, the answer was lost, the connection went away meanwhile and
    # the replay says NotFound: that is success, to be verified.
    h.vpc.delete_script = ["lost-answer-then-gone"]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 1
    assert [type(e).__name__ for e in h.notifier.events_for(op.id)] == ["Deleted", "SnapshotTaken"]


async def test_carried_out_but_unanswered_is_verified_and_reported_deleted(h: Harness) -> None:
    # Every answer to the delete was lost, but Alibaba carried it out: never "not deleted".
    h.vpc.delete_script = ["carried-out-unanswered"]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert h.notifier.event_types(op.id)[0] == "Unanswered"
    assert h.notifier.event_types(op.id)[-2:] == ["Deleted", "SnapshotTaken"]
    assert await h.audit_actions(op.id) == ["requested", "approved", "delete_unanswered", "deleted"]


async def test_unanswered_and_never_carried_out_is_verified_still_there(h: Harness) -> None:
    h.vpc.delete_script = ["unanswered"]
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert (done.state, done.error_code) == (OpState.FAILED, "still_exists")
    outcome = h.notifier.events_for(op.id)[-1]
    assert isinstance(outcome, StillExists)
    assert outcome.unanswered
    assert ("cn-hangzhou", "vco-1") in h.vpc.connections


async def test_deletes_on_one_gateway_queue_and_never_overlap(h: Harness) -> None:
    h.vpc.updating_polls = 3
    wf = h.workflow()
    first = await h.request(wf, "vco-1")
    second = await h.request(wf, "vco-2")
    await asyncio.gather(
        wf.approve(op_id=first.id, user_id="U0BOSS"), wf.approve(op_id=second.id, user_id="U0BOSS")
    )
    for op in (first, second):
        assert (await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)).state is OpState.DELETED

    assert h.vpc.overlaps == []
    assert len(h.vpc.delete_calls) == 2
    queued = {op.id for op in (first, second) if "Queued" in h.notifier.event_types(op.id)}
    assert len(queued) == 1
    (later_id,) = queued
    earlier = first if later_id == second.id else second
    assert h.notifier.events_for(later_id)[0] == Queued(blocking_vco_id=earlier.vco_id)
    assert h.notifier.event_types(later_id).count("Queued") == 1
    # The later delete was only sent once the earlier one was confirmed.
    earlier_done, later_done = await h.op(earlier.id), await h.op(later_id)
    assert earlier_done.finished_at is not None
    assert later_done.started_at is not None
    assert later_done.started_at >= earlier_done.finished_at


async def test_deadline_times_out_with_what_to_check(h: Harness) -> None:
    h.vpc.held.add(GW)  # the gateway never comes back to active
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_event(op.id, GatewayUpdating)
    h.clock.advance(CONFIG.delete_timeout_s + 1)
    done = await h.wait_state(op.id, OpState.TIMED_OUT)
    timed_out = h.notifier.events_for(op.id)[-1]
    assert isinstance(timed_out, TimedOut)
    assert (timed_out.phase, timed_out.sent, timed_out.request_id) == ("waiting_gateway", True, "REQ-0001")
    assert timed_out.waited_s >= CONFIG.delete_timeout_s
    assert done.error_code == "timeout"
    assert h.parent_states(op.id)[-1] is OpState.TIMED_OUT
    assert await gateway_holder(h.store, region=REGION, gateway_id=GW) is None
    assert (await h.audit_actions(op.id))[-1] == "timed_out"


async def test_crashed_worker_is_resumed_by_another_with_one_delete(h: Harness) -> None:
    h.vpc.held.add(GW)
    wf1 = h.workflow(instance_id="wf-1")
    op = await h.request(wf1)
    await wf1.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_state(op.id, OpState.WAITING_GATEWAY)
    await h.wait_event(op.id, GatewayUpdating)
    await wf1.stop(release_leases=False)  # a crash: the lease stays until it expires
    owner, until = await lease_of(h.store, op_id=op.id)
    assert owner == "wf-1"
    assert until is not None
    h.clock.set(until - timedelta(seconds=1))  # just before it expires

    wf2 = h.workflow(instance_id="wf-2")
    await wf2.run_once()
    assert wf2.driving == frozenset()  # wf-1's lease is still live
    h.clock.set(until + timedelta(seconds=1))
    h.vpc.held.clear()
    # With its loops running: wf-1 may also have died holding the outbox claim, which the
    # outbox pass takes over once it expires.
    await wf2.start()
    assert wf2.driving == {op.id}
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 1
    assert Resumed(instance="wf-2") in h.notifier.events_for(op.id)
    assert "resumed" in await h.audit_actions(op.id)


async def test_graceful_stop_lets_another_replica_resume_at_once(h: Harness) -> None:
    h.vpc.held.add(GW)
    wf1 = h.workflow(instance_id="wf-1")
    op = await h.request(wf1)
    await wf1.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_state(op.id, OpState.WAITING_GATEWAY)
    await wf1.stop()
    assert await lease_of(h.store, op_id=op.id) == (None, None)

    h.vpc.held.clear()
    wf2 = h.workflow(instance_id="wf-2")
    await wf2.run_once()  # no clock change needed
    assert (await h.wait_state(op.id, OpState.DELETED)).state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 1


async def _crashed_in_deleting(h: Harness) -> Operation:
    """An operation whose worker died after recording the send attempt, before recording the answer."""
    now = h.clock.now()
    conn = h.vpc.connections[(REGION, "vco-1")]
    op = Operation(
        id="op-crashed",
        state=OpState.DELETING,
        region=REGION,
        connection=conn,
        gateway=VpnGateway(id=GW, region=REGION, name="gw", status="active"),
        requester_id="U0REQ",
        channel_id="C0OPS",
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(minutes=10),
        client_token="vpnbot-op-crashed",
        message_ts="1700000000.000009",
        approver_id="U0BOSS",
        approved_at=now,
        started_at=now,
        deadline_at=now + timedelta(minutes=15),
        attempts=1,
    )
    await h.store.create_operation(op=op)
    assert await h.store.acquire_gateway(region=REGION, gateway_id=GW, op_id=op.id, now=now) == op.id
    return op


async def test_resume_in_deleting_resends_the_same_token(h: Harness) -> None:
    op = await _crashed_in_deleting(h)
    # The first send did reach Alibaba before the crash.
    first_request_id = await h.vpc.delete_vpn_connection(
        region=REGION, vco_id="vco-1", client_token=op.client_token
    )

    wf = h.workflow(instance_id="wf-2")
    await wf.run_once()
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert [c.client_token for c in h.vpc.delete_calls] == [op.client_token, op.client_token]
    assert h.vpc.effective_deletes == ["vco-1"]  # the replay had no second effect
    assert done.delete_request_id == first_request_id
    assert h.notifier.event_types(op.id)[:2] == ["Resumed", "Accepted"]


async def test_resume_in_deleting_when_the_connection_is_already_gone(h: Harness) -> None:
    op = await _crashed_in_deleting(h)
    del h.vpc.connections[(REGION, "vco-1")]  # deleted, and Alibaba no longer remembers the token
    wf = h.workflow(instance_id="wf-2")
    await wf.run_once()
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED


async def test_slack_post_failure_fails_the_request_and_tells_the_requester(h: Harness) -> None:
    h.notifier.post_error = SlackError("The bot is not in this channel.", error="not_in_channel")
    wf = h.workflow()
    op = await h.request(wf)
    await wf.wait_idle()
    op = await h.op(op.id)
    assert (op.state, op.error_code) == (OpState.FAILED, "slack:not_in_channel")
    assert await h.audit_actions(op.id) == ["requested", "failed"]
    assert h.notifier.responses == [
        (op.id, PostFailed(error="not_in_channel", reason="The bot is not in this channel."))
    ]


class _BrokenVpc(FakeVpc):
    async def describe_vpn_gateway(self, *, region: str, gateway_id: str, shared: bool = False) -> VpnGateway:
        raise RuntimeError("bug in the client")


async def test_unexpected_errors_in_background_are_logged_with_the_op_id(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    broken = _BrokenVpc()
    broken.connections = h.vpc.connections
    broken.gateway_names = h.vpc.gateway_names
    h.vpc = broken
    created = await _crashed_in_deleting(h)  # resumed, sent, then polling hits the bug
    wf = h.workflow()
    caplog.set_level(logging.ERROR, logger="bot.workflow")
    await wf.run_once()

    async def logged() -> bool:
        return any(getattr(r, "op_id", None) == created.id for r in caplog.records)

    await h.eventually(logged)
    record = next(r for r in caplog.records if getattr(r, "op_id", None) == created.id)
    assert record.exc_info is not None
    assert "bug in the client" in str(record.exc_info[1])


async def test_start_runs_the_loops_in_the_background(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.start()
    h.clock.advance(CONFIG.confirmation_ttl_s + 1)
    assert (await h.wait_state(op.id, OpState.EXPIRED)).state is OpState.EXPIRED
    await wf.stop()


async def test_a_click_before_the_ts_is_recorded_still_updates_the_message_and_thread(h: Harness) -> None:
    """Slack shows the confirmation before chat.postMessage's answer is stored; a fast click must
    still update that message and reply in its thread (the click carries the message's ts)."""
    posted = asyncio.Event()
    release = asyncio.Event()
    real_post = h.notifier.post_confirmation

    async def slow_answer(op: Operation, delivery: Delivery | None = None) -> str:
        ts = await real_post(op, delivery)
        posted.set()
        await release.wait()  # Slack has shown the message; our side has not stored its ts yet
        return ts

    h.notifier.post_confirmation = slow_answer  # type: ignore[method-assign]
    wf = h.workflow()
    requesting = asyncio.create_task(h.request(wf))
    await asyncio.wait_for(posted.wait(), timeout=5)
    op_id = h.notifier.posted[0].id
    approved = await wf.approve(op_id=op_id, user_id="U0BOSS", message_ts="1700000000.000001")
    assert approved.message_ts == "1700000000.000001"
    release.set()
    await requesting

    await h.wait_state(op_id, OpState.DELETED)
    assert all(op.message_ts == "1700000000.000001" for op in h.notifier.parent_updates)
    assert h.parent_states(op_id)[-1] is OpState.DELETED
