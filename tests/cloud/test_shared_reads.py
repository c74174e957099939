"""Shared reads: callers that only inform a person join an identical read already on the way.

Against the VPC sandbox over loopback, with each read held up long enough that the callers
overlap. A read that is not shared (the check after a delete, gateway polling) always goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import stamina

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.errors import CloudApiError
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU, SEED_VPN_HANGZHOU

SLOW = 0.3  # each sandbox answer takes this long, so callers started together overlap


def _client(sandbox: RunningSandbox) -> VpcClient:
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
    return VpcClient(creds, endpoint=sandbox.url, max_attempts=1, api_deadline_seconds=10)


async def test_a_burst_of_lookups_of_one_connection_reads_it_once(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnConnection", latency=SLOW)
    async with _client(sandbox) as client:
        found = await asyncio.gather(
            *(
                client.describe_vpn_connection_detail(
                    region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True
                )
                for _ in range(20)
            )
        )
    assert [c.vpn_connection_id for c in found] == [SEED_VCO_HANGZHOU] * 20
    assert len(sandbox.state.calls("DescribeVpnConnection")) == 1


async def test_reads_that_are_not_shared_always_go_out(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnGateway", latency=SLOW)
    async with _client(sandbox) as client:
        # One shared read on the way; a poll and a check after a delete must not take its answer.
        await asyncio.gather(
            client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU, shared=True),
            client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU),
            client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU),
        )
    assert len(sandbox.state.calls("DescribeVpnGateway")) == 3


async def test_only_identical_reads_are_joined(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnRouteEntries", latency=SLOW)
    async with _client(sandbox) as client:
        await asyncio.gather(
            *(
                client.describe_vpn_route_entries(
                    region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU, shared=True
                )
                for _ in range(5)
            ),
            *(
                client.describe_vpn_route_entries(
                    region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU, route_entry_type="bgp", shared=True
                )
                for _ in range(5)
            ),
        )
    kinds = sorted(c.params["RouteEntryType"] for c in sandbox.state.calls("DescribeVpnRouteEntries"))
    assert kinds == ["bgp", "custom"]


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnConnection", latency=SLOW)
    async with _client(sandbox) as client:
        first = asyncio.create_task(
            client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True)
        )
        second = asyncio.create_task(
            client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True)
        )
        await asyncio.sleep(0)  # both start: the first sends the read, the second joins it
        first.cancel()  # the caller that started the read gives up (its deadline passed)
        found = await second
        with pytest.raises(asyncio.CancelledError):
            await first
    assert found.vpn_connection_id == SEED_VCO_HANGZHOU
    assert len(sandbox.state.calls("DescribeVpnConnection")) == 1


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition`` holds (plain data: there is no event to await), or fail."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling plain data, bounded by the timeout
            await asyncio.sleep(0.01)


async def test_the_read_stops_when_its_last_caller_gives_up(sandbox: RunningSandbox) -> None:
    # Alibaba is unavailable: an orphaned read would go on retrying for the whole API deadline.
    sandbox.state.faults.add(action="DescribeVpnConnection", code="ServiceUnavailable", http_status=503)
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
    client = VpcClient(
        creds,
        endpoint=sandbox.url,
        max_attempts=1000,
        wait_initial=0.1,
        wait_max=0.1,
        api_deadline_seconds=60,
    )

    def reads_on_the_way() -> list[asyncio.Task[object]]:
        return [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", None) == "VpcClient._get" and not t.done()
        ]

    with stamina.set_testing(False):  # the real back-off: retries for the whole deadline
        async with client:
            caller = asyncio.create_task(
                client.describe_vpn_connection_detail(
                    region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True
                )
            )
            await eventually(lambda: len(sandbox.state.calls("DescribeVpnConnection")) >= 2)  # retrying
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            await eventually(lambda: not reads_on_the_way())
            # A caller that comes afterwards gets a read of its own, not the cancelled one.
            sandbox.state.faults.clear()
            found = await client.describe_vpn_connection_detail(
                region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True
            )
    assert found.vpn_connection_id == SEED_VCO_HANGZHOU


async def test_an_error_reaches_every_caller_and_the_next_read_goes_out_again(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.add(
        action="DescribeVpnConnection", code="Throttling.User", http_status=400, latency=SLOW, times=1
    )
    async with _client(sandbox) as client:
        answers = await asyncio.gather(
            *(
                client.describe_vpn_connection_detail(
                    region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True
                )
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(a, CloudApiError) and a.code == "Throttling.User" for a in answers)
        # Nothing is kept once a read has landed: the next one asks Alibaba again.
        again = await client.describe_vpn_connection_detail(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True
        )
    assert again.vpn_connection_id == SEED_VCO_HANGZHOU
    assert len(sandbox.state.calls("DescribeVpnConnection")) == 2


async def test_two_accounts_never_share_a_read(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnConnection", latency=SLOW)
    async with _client(sandbox) as client:
        # Another account's client (here with the same key, as the sandbox knows only one).
        other = client.with_credentials(
            StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
        )
        await asyncio.gather(
            client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True),
            other.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, shared=True),
        )
    assert len(sandbox.state.calls("DescribeVpnConnection")) == 2
