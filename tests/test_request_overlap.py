"""The request path reads the connection while it records the request (issue 24).

Recording first put a store transaction (a queue of them, in a burst of commands) in front of
the first Alibaba round trip. The lookup still goes on only once the request is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import REGION, FakeVpc
from workflow_harness import Harness

from bot.domain import OpState, VpnConnection
from bot.errors import CloudError, StoreUnavailable


class GatedStore:
    """The real store, with ``create_operation`` held until the test opens the gate (or failing)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.recorded = asyncio.Event()
        self.fail: Exception | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_operation(self, **kwargs: Any) -> Any:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        created = await self._inner.create_operation(**kwargs)
        self.recorded.set()
        return created


class WatchedVpc(FakeVpc):
    """The fake VPC API, saying when the connection is first asked for and holding the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def describe_vpn_connection(
        self, *, region: str, vco_id: str, shared: bool = False
    ) -> VpnConnection:
        self.asked.set()
        await self.answer.wait()
        return await super().describe_vpn_connection(region=region, vco_id=vco_id, shared=shared)


def _request(h: Harness, store: GatedStore, vco_id: str = "vco-1") -> asyncio.Task[Any]:
    wf = h.workflow(store=store)  # type: ignore[arg-type]
    return asyncio.create_task(
        wf.request_delete(
            team_id="T0",
            user_id="U0REQ",
            channel_id="C0OPS",
            vco_id=vco_id,
            region=REGION,
            response_url="https://hooks.slack.test/r",
        )
    )


@pytest.fixture
def watched(h: Harness) -> WatchedVpc:
    vpc = WatchedVpc()
    vpc.add_connection("vco-1")
    h.vpc = vpc
    return vpc


async def test_the_connection_is_asked_for_while_the_request_is_recorded(
    h: Harness, watched: WatchedVpc
) -> None:
    store = GatedStore(h.store)
    request = _request(h, store)
    # The store has not recorded anything yet, and the connection is already asked for.
    await asyncio.wait_for(watched.asked.wait(), timeout=5)
    assert not store.recorded.is_set()

    watched.answer.set()
    await asyncio.sleep(0)
    assert not request.done()  # the lookup waits for the record before it goes on
    store.gate.set()
    op = await asyncio.wait_for(request, timeout=5)
    assert op.state is OpState.AWAITING_APPROVAL
    assert [p.id for p in h.notifier.posted] == [op.id]


async def test_a_request_the_store_cannot_record_leaves_the_read_and_changes_nothing(
    h: Harness, watched: WatchedVpc
) -> None:
    store = GatedStore(h.store)
    store.fail = StoreUnavailable("the database is down")
    request = _request(h, store)
    await asyncio.wait_for(watched.asked.wait(), timeout=5)
    store.gate.set()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(request, timeout=5)
    assert await h.store.list_operations() == []
    assert h.notifier.posted == []


async def test_a_connection_that_is_not_there_fails_the_recorded_request(h: Harness) -> None:
    store = GatedStore(h.store)
    store.gate.set()
    request = _request(h, store, "vco-missing")
    with pytest.raises(CloudError):
        await asyncio.wait_for(request, timeout=5)
    (op,) = await h.store.list_operations()
    assert op.state is OpState.FAILED
