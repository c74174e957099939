"""The STS sandbox: AssumeRole over TLS, driven by the official libraries, and per-account VPC state.

The official ``alibabacloud_credentials`` RAM-role provider assumes a role (it signs the RPC way
and always speaks HTTPS, trusting the sandbox CA through SSL_CERT_FILE); the official VPC SDK then
calls the VPC sandbox with the temporary credentials, which open that account only.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.provider import RamRoleArnCredentialsProvider, StaticAKCredentialsProvider
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client

from bot.sandbox.sts import KeyRing, RunningSts, SandboxAccount, SandboxRole, rpc_signature, start_sts_sandbox
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, RunningSandbox, start_vpc_sandbox
from bot.sandbox.vpc_state import SEED_REGION, SEED_VCO_HANGZHOU, SandboxState

PROD = "1111111111111111"
STAGING = "2222222222222222"


@dataclass
class World:
    vpc: RunningSandbox
    sts: RunningSts
    staging_vco: str

    def arn(self, uid: str, role: str = "vpn-bot") -> str:
        return f"acs:ram::{uid}:role/{role}"


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    keys = KeyRing()
    staging_state = SandboxState(seed=False)
    (staging_vco,) = staging_state.seed_connections(SEED_REGION, 1)
    accounts = {
        PROD: SandboxAccount(PROD, SandboxState(), {"vpn-bot": SandboxRole("vpn-bot")}),
        STAGING: SandboxAccount(
            STAGING,
            staging_state,
            {"vpn-bot": SandboxRole("vpn-bot"), "closed": SandboxRole("closed", False)},
        ),
    }
    vpc = await start_vpc_sandbox(keys=keys, accounts={uid: a.state for uid, a in accounts.items()})
    sts = await start_sts_sandbox(keys=keys, accounts=accounts)
    monkeypatch.setenv("SSL_CERT_FILE", sts.ca_file)
    try:
        yield World(vpc, sts, staging_vco)
    finally:
        await sts.close()
        await vpc.close()


def _provider(world: World, arn: str, session: str = "vpnbot-U0BOB") -> RamRoleArnCredentialsProvider:
    return RamRoleArnCredentialsProvider(
        credentials_provider=StaticAKCredentialsProvider(
            access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=DEMO_ACCESS_KEY_SECRET
        ),
        role_arn=arn,
        role_session_name=session,
        sts_endpoint=world.sts.endpoint,
    )


def _vpc_client(world: World, creds: Any) -> Client:
    return Client(
        open_api_models.Config(
            access_key_id=creds.get_access_key_id(),
            access_key_secret=creds.get_access_key_secret(),
            security_token=creds.get_security_token(),
            endpoint=world.vpc.endpoint,
            protocol="http",
            region_id=SEED_REGION,
        )
    )


async def _describe(client: Client, vco_id: str) -> str:
    request = vpc_models.DescribeVpnConnectionRequest(region_id=SEED_REGION, vpn_connection_id=vco_id)
    return str((await client.describe_vpn_connection_async(request)).body.vpn_connection_id)


async def test_official_libraries_assume_a_role_and_reach_only_that_account(world: World) -> None:
    staging = await _provider(world, world.arn(STAGING)).get_credentials_async()
    assert staging.get_access_key_id().startswith("STS.")
    assert staging.get_security_token()
    client = _vpc_client(world, staging)
    assert await _describe(client, world.staging_vco) == world.staging_vco
    # prod's connection does not exist for staging's credentials.
    with pytest.raises(ClientException) as missing:
        await _describe(client, SEED_VCO_HANGZHOU)
    assert missing.value.code == "InvalidVpnConnectionInstanceId.NotFound"

    prod = await _provider(world, world.arn(PROD)).get_credentials_async()
    assert await _describe(_vpc_client(world, prod), SEED_VCO_HANGZHOU) == SEED_VCO_HANGZHOU
    (issued,) = world.sts.assumed(role_arn=world.arn(STAGING))
    assert issued.session == "vpnbot-U0BOB"
    assert issued.caller == DEMO_ACCESS_KEY_ID


@pytest.mark.parametrize(
    ("uid", "role", "code"),
    [
        (STAGING, "no-such-role", "EntityNotExist.Role"),
        ("3333333333333333", "vpn-bot", "EntityNotExist.Role"),
        (STAGING, "closed", "NoPermission"),
    ],
)
async def test_roles_that_cannot_be_assumed_are_refused_with_sts_codes(
    world: World, uid: str, role: str, code: str
) -> None:
    with pytest.raises(CredentialException) as refused:
        await _provider(world, world.arn(uid, role)).get_credentials_async()
    assert f'"Code": "{code}"' in refused.value.message or f'"Code":"{code}"' in refused.value.message
    assert not world.sts.assumed()


async def test_issued_credentials_stop_working_when_they_expire(world: World) -> None:
    world.sts.set_lifetime(300.0)
    creds = await _provider(world, world.arn(STAGING)).get_credentials_async()
    assert await _describe(_vpc_client(world, creds), world.staging_vco) == world.staging_vco
    # Six minutes later (still inside the 15-minute date window) the 5-minute credentials are dead.
    world.vpc.state.clock = lambda: datetime.now(UTC) + timedelta(minutes=6)
    with pytest.raises(ClientException) as expired:
        await _describe(_vpc_client(world, creds), world.staging_vco)
    assert expired.value.code == "InvalidSecurityToken.Expired"


def _signed_query(params: dict[str, str], secret: str) -> str:
    params = {**params, "Signature": rpc_signature("GET", params, secret)}
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def _base_params(**extra: str) -> dict[str, str]:
    return {
        "Action": "AssumeRole",
        "Version": "2015-04-01",
        "Format": "JSON",
        "AccessKeyId": DEMO_ACCESS_KEY_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": extra.pop("SignatureNonce", "nonce-1"),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "RoleArn": f"acs:ram::{STAGING}:role/vpn-bot",
        "RoleSessionName": "vpnbot",
        **extra,
    }


async def _get(world: World, query: str) -> httpx.Response:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=world.sts.ca_file)) as http:
        return await http.get(f"https://{world.sts.endpoint}/?{query}")


async def test_the_signature_is_checked_like_the_real_sts(world: World) -> None:
    """A wrong secret, a replayed nonce and a bad session name are refused; the library's own
    signing function agrees with the sandbox's (cross-check against the official code)."""
    from alibabacloud_credentials.utils import parameter_helper as ph

    params = _base_params()
    ours = rpc_signature("GET", params, DEMO_ACCESS_KEY_SECRET)
    theirs = ph.sign_string(ph.compose_string_to_sign("GET", params), DEMO_ACCESS_KEY_SECRET + "&")
    assert ours == theirs

    bad = await _get(world, _signed_query(_base_params(SignatureNonce="n-bad"), "wrong-secret"))
    assert (bad.status_code, bad.json()["Code"]) == (400, "SignatureDoesNotMatch")
    ok = await _get(world, _signed_query(_base_params(SignatureNonce="n-ok"), DEMO_ACCESS_KEY_SECRET))
    assert ok.status_code == 200
    assert set(ok.json()["Credentials"]) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
    again = await _get(world, _signed_query(_base_params(SignatureNonce="n-ok"), DEMO_ACCESS_KEY_SECRET))
    assert again.json()["Code"] == "SignatureNonceUsed"
    session = await _get(
        world,
        _signed_query(_base_params(SignatureNonce="n-s", RoleSessionName="a b"), DEMO_ACCESS_KEY_SECRET),
    )
    assert session.json()["Code"] == "InvalidParameter.RoleSessionName"


async def test_plain_http_is_not_served(world: World) -> None:
    """TLS only, as the real STS and the credentials library expect."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"http://{world.sts.endpoint}/")
