"""Per-account credentials: the RAM-role provider over the bot's own key, against the STS sandbox.

Loopback only: the STS sandbox serves TLS with a local CA trusted through SSL_CERT_FILE; the VPC
sandbox accepts the issued keys for their account only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bot.cloud.accounts import READ_SESSION, AccountClients, RoleCredentialsProvider, session_name
from bot.cloud.client import VpcClient
from bot.cloud.codes import ACCOUNT_NOT_CONFIGURED, CREDENTIALS_UNAVAILABLE, STS_UNREACHABLE, lookup
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import Credentials
from bot.errors import CloudError, RetryClass, RoleNotAssumed
from bot.sandbox.sts import KeyRing, RunningSts, SandboxAccount, SandboxRole, start_sts_sandbox
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU, RecordedRequest, SandboxState

UID = "2222222222222222"
ARN = f"acs:ram::{UID}:role/vpn-bot"
BASE = StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))


@dataclass
class World:
    vpc: RunningSandbox
    sts: RunningSts
    vco: str


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    keys = KeyRing()
    state = SandboxState(seed=False)
    (vco,) = state.seed_connections(SEED_REGION, 1)
    account = SandboxAccount(UID, state, {"vpn-bot": SandboxRole("vpn-bot")})
    vpc = await start_vpc_sandbox(keys=keys, accounts={UID: state})
    sts = await start_sts_sandbox(keys=keys, accounts={UID: account})
    monkeypatch.setenv("SSL_CERT_FILE", sts.ca_file)
    try:
        yield World(vpc, sts, vco)
    finally:
        await sts.close()
        await vpc.close()


def test_session_names_carry_the_acting_user_within_sts_rules() -> None:
    assert session_name(None) == READ_SESSION == "vpnbot"
    assert session_name("U012ABC") == "vpnbot-U012ABC"
    assert session_name("W" + "A" * 80) == ("vpnbot-W" + "A" * 80)[:64]
    assert session_name("U0 <evil>") == "vpnbot"  # never a name STS would refuse


class Wall:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def test_credentials_are_kept_for_their_lifetime(world: World) -> None:
    wall = Wall(time.time())
    seen: list[tuple[str, str]] = []
    provider = RoleCredentialsProvider(
        base=BASE,
        account="staging",
        role_arn=ARN,
        session="vpnbot-U0BOB",
        sts_endpoint=world.sts.endpoint,
        wall=wall,
        on_assume=lambda account, code: seen.append((account, code)),
    )
    first = await provider.get()
    assert first.security_token
    for _ in range(5):
        assert await provider.get() == first
    assert len(world.sts.assumed(role_arn=ARN, session="vpnbot-U0BOB")) == 1
    # 3600 s credentials are kept until 15 minutes before they expire; then the library is asked
    # again, which (on its own, real clock) still holds them: no AssumeRole just for asking.
    wall.now += 3600 - 15 * 60 + 5
    assert await provider.get() == first
    assert len(world.sts.assumed(role_arn=ARN)) == 1
    assert seen == [("staging", "ok")]


async def test_short_lived_credentials_are_not_assumed_on_every_call(world: World) -> None:
    """The library would call STS each time for credentials shorter than 15 minutes; we keep them
    until a quarter of their life is left (the e2e test sees them replaced across expiry)."""
    world.sts.set_lifetime(60.0)
    provider = RoleCredentialsProvider(
        base=BASE, account="staging", role_arn=ARN, session="vpnbot", sts_endpoint=world.sts.endpoint
    )
    keys = {(await provider.get()).access_key_id for _ in range(10)}
    assert len(keys) == 1
    assert len(world.sts.assumed()) == 1


@pytest.mark.parametrize(
    ("arn", "code"),
    [
        (f"acs:ram::{UID}:role/missing", "EntityNotExist.Role"),
        ("acs:ram::9999999999999999:role/x", "EntityNotExist.Role"),
    ],
)
async def test_a_role_that_cannot_be_assumed_names_the_account(world: World, arn: str, code: str) -> None:
    seen: list[tuple[str, str]] = []
    provider = RoleCredentialsProvider(
        base=BASE,
        account="staging",
        role_arn=arn,
        session="vpnbot",
        sts_endpoint=world.sts.endpoint,
        on_assume=lambda account, c: seen.append((account, c)),
    )
    with pytest.raises(RoleNotAssumed) as refused:
        await provider.get()
    err = refused.value
    assert err.code == code
    assert err.definite  # nothing was sent to the VPC API
    assert err.retry is RetryClass.NEVER
    assert err.request_id
    assert err.friendly.startswith(f"Account `staging` (`{arn}`): ")
    assert lookup(code).action in err.friendly
    assert seen == [("staging", code)]


async def test_an_unreachable_sts_is_transient_and_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = RoleCredentialsProvider(
        base=BASE, account="prod", role_arn=ARN, session="vpnbot", sts_endpoint=f"127.0.0.1:{port}"
    )
    with pytest.raises(RoleNotAssumed) as refused:
        await provider.get()
    assert refused.value.code == STS_UNREACHABLE
    assert refused.value.retry is RetryClass.TRANSIENT


async def test_missing_base_credentials_are_reported_for_the_account() -> None:
    class NoCredentials:
        async def get(self) -> Credentials:
            raise CloudError("none", info=lookup(CREDENTIALS_UNAVAILABLE))

    provider = RoleCredentialsProvider(base=NoCredentials(), account="prod", role_arn=ARN, session="vpnbot")
    with pytest.raises(RoleNotAssumed) as refused:
        await provider.get()
    assert refused.value.code == CREDENTIALS_UNAVAILABLE
    assert "Account `prod`" in refused.value.friendly


async def test_account_clients_sign_with_the_role_per_account_and_user(world: World) -> None:
    async with VpcClient(BASE, endpoint=world.vpc.url) as base:
        clients = AccountClients(
            base=base, base_credentials=BASE, roles={"staging": ARN}, sts_endpoint=world.sts.endpoint
        )
        reader = clients.for_account("staging")
        assert reader is clients.for_account("staging")
        assert clients.for_account("staging", acting_user="U0BOB") is not reader
        found = await reader.describe_vpn_connection(region=SEED_REGION, vco_id=world.vco)
        assert found.id == world.vco
        # The home account's seeded connection is not visible through staging's role.
        with pytest.raises(CloudError) as missing:
            await reader.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        assert missing.value.code == "InvalidVpnConnectionInstanceId.NotFound"
        reached: list[RecordedRequest | None] = [
            r for r in world.vpc.state.requests if r.action == "DescribeVpnConnection"
        ]
        (request,) = reached or [None]
        assert request is None  # nothing reached the home account's state
        with pytest.raises(RoleNotAssumed) as gone:
            await clients.for_account("retired").describe_vpn_connection(region=SEED_REGION, vco_id=world.vco)
        assert gone.value.code == ACCOUNT_NOT_CONFIGURED
        assert "`retired`" in gone.value.friendly


async def test_a_refused_role_is_logged_once_by_us_without_the_library_traceback(
    world: World, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    provider = RoleCredentialsProvider(
        base=BASE,
        account="staging",
        role_arn=f"acs:ram::{UID}:role/missing",
        session="vpnbot",
        sts_endpoint=world.sts.endpoint,
    )
    with caplog.at_level("INFO"), pytest.raises(RoleNotAssumed):
        await provider.get()
    assert "Traceback" not in capfd.readouterr().err
    (ours,) = [r for r in caplog.records if r.name == "bot.cloud"]
    assert ours.getMessage() == "could not assume the role"
    assert ours.__dict__["code"] == "EntityNotExist.Role"
    assert not [r for r in caplog.records if r.name == "credentials"]
