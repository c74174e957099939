"""The VPC client against the local sandbox over loopback: real signing, real wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.errors import CloudApiError, RetryClass
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_LOCKED,
    SEED_VPN_HANGZHOU,
    SandboxState,
)


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start_vpc_sandbox(state=SandboxState(update_seconds=0.2))
    try:
        yield running
    finally:
        await running.close()


def _client(sandbox: RunningSandbox, *, secret: str = DEMO_ACCESS_KEY_SECRET) -> VpcClient:
    creds = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, secret))
    return VpcClient(creds, endpoint=sandbox.url, wait_initial=0.01, wait_max=0.05, api_deadline_seconds=5)


async def test_reads_connection_gateway_and_regions(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        connection = await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        gateway = await client.describe_vpn_gateway(region=SEED_REGION, gateway_id=connection.gateway_id)
        regions = await client.list_regions()
        pages = await client.describe_vpn_connections(region=SEED_REGION)
    assert connection.gateway_id == SEED_VPN_HANGZHOU
    assert gateway.status == "active"
    assert SEED_REGION in regions
    assert SEED_VCO_HANGZHOU in {c.vpn_connection_id for c in pages}


async def test_delete_then_gateway_updates_and_connection_is_gone(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        request_id = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="vpnbot-test-1"
        )
        gateway = await client.describe_vpn_gateway(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU)
        assert request_id
        assert gateway.status == "updating"
        # A replay of the same token answers like the first call and deletes nothing more.
        again = await client.delete_vpn_connection(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU, client_token="vpnbot-test-1"
        )
        assert again == request_id


async def test_wrong_secret_is_signature_does_not_match(sandbox: RunningSandbox) -> None:
    async with _client(sandbox, secret="not-the-secret") as client:
        with pytest.raises(CloudApiError) as caught:
            await client.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.retry is RetryClass.NEVER


async def test_business_errors_are_not_retried(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        with pytest.raises(CloudApiError) as caught:
            await client.delete_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_LOCKED, client_token="t-2")
    assert caught.value.code == "VpnGateway.FinancialLocked"
    assert len(sandbox.state.calls("DeleteVpnConnection")) == 1


async def test_transient_errors_are_retried_with_fresh_signatures(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeVpnGateway", code="ServiceUnavailable", times=2)
    async with _client(sandbox) as client:
        gateway = await client.describe_vpn_gateway(region=SEED_REGION, gateway_id=SEED_VPN_HANGZHOU)
    assert gateway.status == "active"
    calls = sandbox.state.calls("DescribeVpnGateway")
    assert len(calls) == 3
    assert len({c.nonce for c in calls}) == 3
