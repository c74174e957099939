"""What people see converges to what happened: Slack outages, hangs, crashes and kills (issue 11).

The workflow runs on a real store (SQLite and PostgreSQL) with the Protocol fakes and a virtual
clock; "killing" a worker cancels all its tasks at once without releasing anything, as kill -9
would leave the database.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
from fakes import FakeVpc
from storetools import pending_effects
from workflow_harness import CONFIG, GW, Harness

from bot.domain import (
    Crashed,
    LookupFailed,
    Operation,
    OpState,
    Resumed,
    VpnConnection,
    VpnGateway,
    client_token_for,
)
from bot.errors import SlackError, StoreUnavailable
from bot.store import Store
from bot.workflow import Workflow

OUTAGE = SlackError("Slack is down.", error="http_503", transient=True)


async def _told(h: Harness, op_id: str) -> None:
    async def drained() -> bool:
        return not await pending_effects(h.store, op_id=op_id)

    await h.eventually(drained)


async def _kill(wf: Workflow, own_store: Store | None = None) -> None:
    """Stop a worker the way kill -9 would: nothing finishes, nothing is released.

    Its tasks are cancelled wherever they are; a store transaction under way ends as the
    database would end it for a dead process (the store shields transactions from cancellation).
    With ``own_store``, the worker's connections are closed too, as a dead process's are.
    """
    await wf.stop(release_leases=False, grace_s=0)
    if own_store is not None:
        await own_store.close()


async def test_a_slack_outage_after_approval_delays_but_never_loses_the_card_or_thread(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.start()
    h.notifier.fail_with = OUTAGE  # Slack answers 503 to everything from the approval on
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.eventually_state(op.id, OpState.DELETED)
    assert h.vpc.effective_deletes == ["vco-1"]  # the deletion did not wait for Slack
    assert h.notifier.parent_updates == []
    assert h.notifier.events_for(op.id) == []
    started = h.clock.now()

    h.clock.advance(20)  # twenty seconds later Slack is back
    h.notifier.fail_with = None
    await _told(h, op.id)
    assert (h.clock.now() - started).total_seconds() < 600  # retried within minutes, not hours
    assert h.parent_states(op.id)[-1] is OpState.DELETED
    assert h.notifier.event_types(op.id) == [
        "Accepted",
        "GatewayUpdating",
        "GatewayActive",
        "Deleted",
        "SnapshotTaken",
    ]
    assert await h.audit_actions(op.id) == ["requested", "approved", "delete_sent", "deleted"]
    assert done.state is OpState.DELETED


async def test_a_kill_right_after_the_final_commit_still_updates_the_card(h: Harness) -> None:
    wf1 = h.workflow(instance_id="wf-1")
    op = await h.request(wf1)
    h.notifier.fail_with = OUTAGE  # nothing reaches Slack before the kill
    await wf1.approve(op_id=op.id, user_id="U0BOSS")
    await h.eventually_state(op.id, OpState.DELETED)
    await _kill(wf1)
    assert h.notifier.parent_updates == []

    h.notifier.fail_with = None
    wf2 = h.workflow(instance_id="wf-2")
    await wf2.start()
    await _told(h, op.id)
    assert h.parent_states(op.id) == [OpState.DELETED]  # collapsed to the latest state
    assert h.notifier.event_types(op.id)[-2:] == ["Deleted", "SnapshotTaken"]
    assert len(h.vpc.delete_calls) == 1


async def test_slack_hanging_never_delays_the_delete(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    h.notifier.hang = asyncio.Event()  # every Slack call from now on waits
    await wf.approve(op_id=op.id, user_id="U0BOSS")

    async def sent() -> bool:
        return bool(h.vpc.delete_calls)

    await h.eventually(sent)
    assert h.notifier.parent_updates == []  # the card update is still hanging
    h.notifier.hang.set()
    done = await h.wait_state(op.id, OpState.DELETED)
    assert done.state is OpState.DELETED
    assert h.parent_states(op.id)[-1] is OpState.DELETED


async def test_an_operation_that_keeps_crashing_fails_with_an_error_id(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FakeVpc):
        """Polling the gateway hits a bug; the lookup (the first call) still works."""

        calls = 0

        async def describe_vpn_gateway(
            self, *, region: str, gateway_id: str, shared: bool = False
        ) -> VpnGateway:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("bug in the client")
            return await super().describe_vpn_gateway(region=region, gateway_id=gateway_id)

    broken = Broken()
    broken.connections = h.vpc.connections
    broken.gateway_names = h.vpc.gateway_names
    broken.tokens = h.vpc.tokens
    h.vpc = broken
    wf = h.workflow()
    op = await h.request(wf)
    await wf.start()
    await wf.approve(op_id=op.id, user_id="U0BOSS")  # sent, then polling the gateway crashes
    done = await h.wait_state(op.id, OpState.FAILED, within=30)
    assert done.error_code is not None
    assert done.error_code.startswith("crash:")
    assert done.crashes == wf._config.crash_budget
    error_id = done.error_code.removeprefix("crash:")
    assert Crashed(error_id=error_id) in h.notifier.events_for(op.id)
    resumed = [e for e in h.notifier.events_for(op.id) if isinstance(e, Resumed)]
    assert len(resumed) == wf._config.crash_budget - 1
    assert any(getattr(r, "error_id", None) == error_id for r in caplog.records)


async def test_finishing_is_not_cut_off_by_a_lease_that_ended_with_the_operation(h: Harness) -> None:
    # A short lease makes the heartbeat run between the final commit and what follows it.
    wf = h.workflow(lease_s=3, poll_interval_s=5)
    for i in range(3, 15):
        h.vpc.add_connection(f"vco-{i}", f"vpn-gw{i}")
    ops = [await h.request(wf, f"vco-{i}") for i in range(3, 15)]
    await wf.start()
    for op in ops:
        await wf.approve(op_id=op.id, user_id="U0BOSS")
    for op in ops:
        await h.wait_state(op.id, OpState.DELETED)
        assert (await h.audit_actions(op.id))[-1] == "deleted"
        assert h.parent_states(op.id)[-1] is OpState.DELETED
        assert h.notifier.event_types(op.id)[-2:] == ["Deleted", "SnapshotTaken"]


async def _recorded_lookup(h: Harness, op_id: str, vco_id: str) -> Operation:
    """A request recorded before its lookup by a worker that died then (its lease is left behind)."""
    now = h.clock.now()
    return await h.store.create_operation(
        op=Operation(
            id=op_id,
            state=OpState.LOOKING_UP,
            region="cn-hangzhou",
            connection=VpnConnection(vco_id, "cn-hangzhou", "", "", "", "", "", ""),
            gateway=VpnGateway("", "cn-hangzhou", "", ""),
            requester_id="U0REQ",
            channel_id="C0OPS",
            created_at=now,
            updated_at=now,
            expires_at=now,
            client_token=client_token_for(op_id),
            response_url="https://hooks.slack.test/r",
        ),
        lease=("wf-dead", now),
    )


class _DiesAfterTheLookup:
    """The store, except that the process stops dead right after the lookup's move (and claim) commits."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.committed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def transition_and_claim(self, op_id: str, **kwargs: Any) -> Any:
        taken = await self._inner.transition_and_claim(op_id, **kwargs)
        self.committed.set()
        await asyncio.Event().wait()  # nothing after the commit runs: the kill comes here
        return taken


async def test_a_kill_after_the_lookup_claimed_the_card_posts_it_once_the_claim_runs_out(
    h: Harness, db_url: str
) -> None:
    own_store = await Store.open(db_url)  # the killed worker's own connections, as in its own process
    dying = _DiesAfterTheLookup(own_store)
    wf1 = h.workflow(instance_id="wf-1", store=dying)  # type: ignore[arg-type]
    claimed_until = h.clock.now() + timedelta(seconds=CONFIG.lease_s)  # the outbox's claim_s
    request = asyncio.create_task(h.request(wf1))
    async with asyncio.timeout(10):
        await dying.committed.wait()
    request.cancel()  # the request handler dies with its process
    await asyncio.gather(request, return_exceptions=True)
    await _kill(wf1, own_store)
    (op,) = await h.store.list_operations()
    assert op.state is OpState.AWAITING_APPROVAL

    wf2 = h.workflow(instance_id="wf-2")
    await wf2.start()
    # While the dead worker's claim lasts nobody posts: it might still have been posting.
    assert h.notifier.posted == []

    async def posted() -> bool:
        return bool(h.notifier.posted)

    await h.eventually(posted)
    await _told(h, op.id)
    assert h.clock.now() > claimed_until  # taken over once the claim ran out
    assert [p.id for p in h.notifier.posted] == [op.id]  # once
    stored = await h.op(op.id)
    assert stored.message_ts == "1700000000.000001"
    assert await h.audit_actions(op.id) == ["requested"]


async def test_a_kill_after_the_approval_claimed_the_card_update_still_deletes_once_and_updates_it(
    h: Harness, db_url: str
) -> None:
    op = await h.request(h.workflow(instance_id="wf-0"))
    own_store = await Store.open(db_url)
    dying = _DiesAfterTheLookup(own_store)  # dies after its first move that claims the outbox
    wf1 = h.workflow(instance_id="wf-1", store=dying)  # type: ignore[arg-type]
    click = asyncio.create_task(wf1.approve(op_id=op.id, user_id="U0BOSS"))
    async with asyncio.timeout(10):
        await dying.committed.wait()
    click.cancel()
    await asyncio.gather(click, return_exceptions=True)
    await _kill(wf1, own_store)
    assert (await h.op(op.id)).state is OpState.APPROVED
    assert h.parent_states(op.id) == []  # the card still says "awaiting approval"

    wf2 = h.workflow(instance_id="wf-2")
    await wf2.start()
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED, within=20)
    assert done.state is OpState.DELETED
    assert len(h.vpc.delete_calls) == 1
    assert h.parent_states(op.id)[-1] is OpState.DELETED
    assert await pending_effects(h.store, op_id=op.id) == []


async def test_a_lookup_cut_short_by_a_crash_is_finished_by_another_worker(h: Harness) -> None:
    created = await _recorded_lookup(h, "op-lookup", "vco-1")
    wf = h.workflow(instance_id="wf-2")
    h.clock.advance(1)
    await wf.start()
    op = await h.eventually_state(created.id, OpState.AWAITING_APPROVAL)
    await _told(h, op.id)
    assert [p.id for p in h.notifier.posted] == [op.id]
    assert (op.vco_id, op.gateway_id) == ("vco-1", GW)


async def test_a_resumed_lookup_that_fails_answers_the_requester(h: Harness) -> None:
    await _recorded_lookup(h, "op-gone", "vco-404")
    wf = h.workflow()
    h.clock.advance(1)
    await wf.start()
    op = await h.eventually_state("op-gone", OpState.FAILED)
    await _told(h, op.id)
    ((op_id, event),) = h.notifier.responses
    assert op_id == "op-gone"
    assert isinstance(event, LookupFailed)
    assert event.code == "InvalidVpnConnectionInstanceId.NotFound"


@pytest.mark.parametrize("seed", range(20))
async def test_a_kill_at_a_random_moment_never_deletes_twice_and_always_converges(
    h: Harness, db_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    h.vpc.updating_polls = rng.randint(0, 3)
    own_store = await Store.open(db_url)  # the killed worker's own connections, as in its own process
    wf1 = h.workflow(instance_id="wf-1", store=own_store)
    op = await h.request(wf1)
    await wf1.start()
    await wf1.approve(op_id=op.id, user_id="U0BOSS")
    # Let it run for a random number of virtual steps and real moments, then kill it.
    for _ in range(rng.randint(0, 12)):
        h.clock.step()
        await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002]))
    await _kill(wf1, own_store)

    wf2 = h.workflow(instance_id="wf-2")
    await wf2.start()
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED, OpState.TIMED_OUT, within=30)
    assert done.state is OpState.DELETED
    assert h.vpc.effective_deletes == ["vco-1"]  # exactly one accepted delete
    assert h.parent_states(op.id)[-1] is OpState.DELETED  # a final card
    assert h.notifier.event_types(op.id)[-2:] == ["Deleted", "SnapshotTaken"]
    actions = await h.audit_actions(op.id)
    assert actions.count("requested") == actions.count("approved") == actions.count("deleted") == 1
    assert actions[-1] == "deleted"
    assert await pending_effects(h.store, op_id=op.id) == []  # Slack was told everything


class _ReadsFail:
    """The store, except that reading an operation back fails as if the database just dropped."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_operation(self, *, op_id: str) -> Operation | None:
        raise StoreUnavailable("connection reset")


async def test_a_database_drop_after_the_post_does_not_tell_the_requester_nothing_changed(h: Harness) -> None:
    wf = h.workflow(store=_ReadsFail(h.store))  # type: ignore[arg-type]
    op = await h.request(wf)  # no StoreUnavailable: the request exists and its card was posted
    assert op.state is OpState.AWAITING_APPROVAL
    assert [p.id for p in h.notifier.posted] == [op.id]
