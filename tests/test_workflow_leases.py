"""One lease keeper per instance renews the leases of every operation it drives, on both backends.

Virtual clock (tests/workflow_harness.py): nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from fakes import CountingStore
from storetools import lease_of
from workflow_harness import CONFIG, GW, Harness

from bot.domain import OpState, Resumed
from bot.store import Store

GW2, GW3 = "vpn-gw2", "vpn-gw3"


class _RenewalsFail:
    """The store, except that renewing leases fails while ``failing`` (a database hiccup)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.failing = False
        self.renewals = 0
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def renew_leases(self, *, op_ids: Collection[str], owner: str, until: datetime) -> set[str]:
        self.renewals += 1
        if self.failing:
            self.failures += 1
            raise ConnectionError("the database went away")
        return await self._inner.renew_leases(op_ids=op_ids, owner=owner, until=until)


async def test_one_renewal_per_period_covers_every_operation_driven(h: Harness) -> None:
    h.vpc.add_connection("vco-3", GW2)
    h.vpc.add_connection("vco-4", GW3)
    h.vpc.held.update({GW, GW2, GW3})
    counting = CountingStore(h.store)
    wf = h.workflow(store=counting)  # type: ignore[arg-type]
    ops = [await h.request(wf, vco) for vco in ("vco-1", "vco-3", "vco-4")]
    for op in ops:
        await wf.approve(op_id=op.id, user_id="U0BOSS")
    for op in ops:
        await h.eventually_state(op.id, OpState.WAITING_GATEWAY)
    owners = [await lease_of(h.store, op_id=op.id) for op in ops]
    start = h.clock.now()
    so_far = counting.calls.count("renew_leases")

    async def renewed_twice() -> bool:
        return counting.calls.count("renew_leases") >= so_far + 2

    await h.eventually(renewed_twice)
    # One statement for the three: the renewals are the periods, not the operations.
    assert counting.calls.count("renew_leases") <= so_far + 3
    for op, (owner, before) in zip(ops, owners, strict=True):
        owner_now, until = await lease_of(h.store, op_id=op.id)
        assert owner_now == owner == "wf-1"
        assert before is not None
        assert until is not None
        assert until > before
        assert until > start
    h.vpc.held.clear()
    for op in ops:
        assert (await h.wait_state(op.id, OpState.DELETED)).state is OpState.DELETED


async def test_a_lease_lost_while_renewals_failed_stops_the_driver_and_the_new_owner_deletes_once(
    h: Harness, db_url: str
) -> None:
    own = await Store.open(db_url)
    try:
        flaky = _RenewalsFail(own)
        h.vpc.held.add(GW)
        wf1 = h.workflow(instance_id="wf-1", store=flaky)  # type: ignore[arg-type]
        op = await h.request(wf1)
        await wf1.approve(op_id=op.id, user_id="U0BOSS")
        await h.eventually_state(op.id, OpState.WAITING_GATEWAY)
        assert len(h.vpc.delete_calls) == 1

        flaky.failing = True

        async def a_renewal_failed() -> bool:
            return flaky.failures > 0

        # The keeper renews one period after another: once one has failed, none that succeeds is
        # still on its way, so the lease read now is the last one renewed.
        await h.eventually(a_renewal_failed)
        _owner, until = await lease_of(h.store, op_id=op.id)
        assert until is not None

        async def expired() -> bool:
            return h.clock.now() > until

        await h.eventually(expired)
        assert wf1.driving == {op.id}  # failed renewals alone do not stop it

        wf2 = h.workflow(instance_id="wf-2")
        await wf2.run_once()  # takes the expired lease
        assert wf2.driving == {op.id}
        flaky.failing = False

        async def wf1_let_go() -> bool:
            return op.id not in wf1.driving

        await h.eventually(wf1_let_go)  # its next renewal found the lease gone
        h.vpc.held.clear()
        done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
        assert done.state is OpState.DELETED
        assert len(h.vpc.delete_calls) == 1
        assert Resumed(instance="wf-2") in h.notifier.events_for(op.id)
        await wf1.stop()
    finally:
        await own.close()


async def test_the_keeper_stops_when_nothing_is_driven_and_starts_again_with_the_next(h: Harness) -> None:
    counting = CountingStore(h.store)
    wf = h.workflow(store=counting)  # type: ignore[arg-type]
    first = await h.request(wf, "vco-1")
    await wf.approve(op_id=first.id, user_id="U0BOSS")
    assert (await h.wait_state(first.id, OpState.DELETED)).state is OpState.DELETED
    h.clock.advance(CONFIG.lease_s)  # the keeper's next period: nothing to renew, so it ends
    await h.settle()
    calls = len(counting.calls)
    h.clock.advance(CONFIG.lease_s * 3)
    await h.settle()
    assert "renew_leases" not in counting.calls[calls:]  # nothing driven: no renewals

    h.vpc.held.add(GW)
    second = await h.request(wf, "vco-2")
    await wf.approve(op_id=second.id, user_id="U0BOSS")
    await h.eventually_state(second.id, OpState.WAITING_GATEWAY)
    _owner, before = await lease_of(h.store, op_id=second.id)

    async def renewed() -> bool:
        _o, until = await lease_of(h.store, op_id=second.id)
        return until is not None and before is not None and until > before

    await h.eventually(renewed)
    h.vpc.held.clear()
    assert (await h.wait_state(second.id, OpState.DELETED)).state is OpState.DELETED
