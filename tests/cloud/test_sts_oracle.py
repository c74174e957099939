"""The STS sandbox against the official STS SDK (alibabacloud-sts20150401), the oracle of AssumeRole.

The SDK's client (through alibabacloud-tea-openapi 0.4's ``call_api`` -> ``do_request``) signs
with ACS3-HMAC-SHA256 unless ``Config.signature_algorithm`` says ``v2``; the sandbox must accept
that as the real STS does, refuse a wrong secret, and answer what the SDK's AssumeRoleResponse
reads. The RAM-role provider of alibabacloud-credentials (what the bot uses) signs HMAC-SHA1 and
is covered by tests/sandbox/test_sts_sandbox.py.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from alibabacloud_sts20150401 import models as sts_models
from alibabacloud_sts20150401.client import Client as StsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from darabonba.runtime import ExtendsParameters, RuntimeOptions

from bot.cloud.accounts import RoleCredentialsProvider
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import AcsV3Auth, Credentials, canonical_query
from bot.sandbox.sts import IssuedKey, KeyRing, RunningSts, SandboxAccount, SandboxRole, start_sts_sandbox
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from bot.sandbox.vpc_params import STS_PARAMETERS
from bot.sandbox.vpc_state import SandboxState

from .oracle import model_fields

UID = "1111111111111111"
ARN = f"acs:ram::{UID}:role/vpn-bot"


@pytest.fixture
async def sts() -> AsyncIterator[RunningSts]:
    keys = KeyRing()
    # The bot's long-term key, as start_vpc_sandbox registers it for the VPC sandbox.
    keys.add(IssuedKey(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET), may_assume=True))
    accounts = {UID: SandboxAccount(UID, SandboxState(seed=False), {"vpn-bot": SandboxRole("vpn-bot")})}
    running = await start_sts_sandbox(keys=keys, accounts=accounts)
    try:
        yield running
    finally:
        await running.close()


class _CapturingStsClient(StsClient):  # type: ignore[misc]  # the SDK is untyped (Any)
    """The official STS client with its public ``call_api`` capturing instead of calling out."""

    def __init__(self) -> None:
        super().__init__(
            open_api_models.Config(
                access_key_id="oracle", access_key_secret="oracle", endpoint="sts.aliyuncs.com"
            )
        )
        self.sent: list[Any] = []

    def call_api(self, params: Any, request: Any, runtime: Any) -> dict[str, Any]:
        self.sent.append((params, request))
        return {"body": {}, "headers": {}, "statusCode": 200}


def _client(sts: RunningSts, *, secret: str = DEMO_ACCESS_KEY_SECRET, **config: str) -> StsClient:
    # No signature_algorithm: the SDK's default. ca: the sandbox's local CA (TLS verified).
    return StsClient(
        open_api_models.Config(
            access_key_id=DEMO_ACCESS_KEY_ID,
            access_key_secret=secret,
            endpoint=sts.endpoint,
            ca=sts.ca_file,
            **config,
        )
    )


def _request(**extra: str) -> sts_models.AssumeRoleRequest:
    return sts_models.AssumeRoleRequest(
        role_arn=ARN, role_session_name="vpnbot-U0ORACLE", duration_seconds=900, **extra
    )


async def test_the_official_sts_sdk_assumes_a_role_with_its_default_acs3_signature(sts: RunningSts) -> None:
    response = await _client(sts).assume_role_with_options_async(_request(), RuntimeOptions())

    creds = response.body.credentials
    assert creds.access_key_id.startswith("STS.")
    assert creds.access_key_secret
    assert creds.security_token
    assert creds.expiration
    assert response.body.assumed_role_user.arn == f"acs:ram::{UID}:assumed-role/vpn-bot/vpnbot-U0ORACLE"
    (call,) = sts.calls
    # The SDK's default really is ACS3 (what the sandbox saw), and the call was answered.
    assert (call.signature, call.code, call.role_arn) == ("ACS3-HMAC-SHA256", None, ARN)


async def test_the_rpc_signature_the_sdk_makes_when_asked_is_accepted_too(sts: RunningSts) -> None:
    client = _client(sts, signature_algorithm="v2")
    response = await client.assume_role_with_options_async(_request(), RuntimeOptions())

    assert response.body.credentials.access_key_id.startswith("STS.")
    assert [c.signature for c in sts.calls] == ["HMAC-SHA1"]


async def test_a_wrong_secret_is_refused_for_the_acs3_signature(sts: RunningSts) -> None:
    with pytest.raises(ClientException) as caught:
        await _client(sts, secret="not-the-secret").assume_role_with_options_async(
            _request(), RuntimeOptions()
        )

    assert caught.value.code == "SignatureDoesNotMatch"
    assert [c.code for c in sts.calls] == ["SignatureDoesNotMatch"]


async def test_a_parameter_assume_role_does_not_have_is_refused(sts: RunningSts) -> None:
    client = _client(sts)
    runtime = RuntimeOptions()
    # The SDK sends what its model has; an extra query parameter goes through its public extends.
    runtime.extends_parameters = ExtendsParameters(queries={"RoleName": "vpn-bot"})
    with pytest.raises(ClientException) as caught:
        await client.assume_role_with_options_async(_request(), runtime)

    assert caught.value.code == "InvalidParameter"
    assert "RoleName" in str(caught.value.message)


def test_the_sandbox_takes_the_sdks_assume_role_parameters() -> None:
    assert STS_PARAMETERS["AssumeRole"] == set(model_fields(sts_models.AssumeRoleRequest))


async def test_the_bots_assume_role_is_the_official_sdks(
    sts: RunningSts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AssumeRole as the bot makes it (alibabacloud-credentials' RAM-role provider, RPC signature),
    read back through the SDK's AssumeRoleRequest: the same names, with the SDK's types."""
    monkeypatch.setenv("SSL_CERT_FILE", sts.ca_file)
    provider = RoleCredentialsProvider(
        base=StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)),
        account="prod",
        role_arn=ARN,
        session="vpnbot-U0BOB",
        sts_endpoint=sts.endpoint,
        duration_s=900,
    )
    assert (await provider.get()).security_token
    (call,) = sts.calls
    sent = dict(call.params)
    assert call.code is None

    fields = model_fields(sts_models.AssumeRoleRequest)
    assert set(sent) <= set(fields), set(sent) - set(fields)
    typed = {name: int(v) if fields[name].hint is int else v for name, v in sent.items()}
    capturing = _CapturingStsClient()
    capturing.assume_role_with_options(sts_models.AssumeRoleRequest().from_map(typed), RuntimeOptions())
    ((params, request),) = capturing.sent
    assert (params.action, params.version) == ("AssumeRole", "2015-04-01")
    assert dict(request.query) == sent
    assert request.body is None


async def test_the_sandboxs_answer_is_the_official_sdks_response(sts: RunningSts) -> None:
    """The raw AssumeRole answer (signed here with our own ACS3 signer) survives the SDK's model."""
    query = {"RoleArn": ARN, "RoleSessionName": "vpnbot", "DurationSeconds": "900"}
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sts.ca_file)) as http:
        request = http.build_request(
            "POST",
            f"https://{sts.endpoint}/?{canonical_query(query)}",
            headers={"x-acs-action": "AssumeRole", "x-acs-version": "2015-04-01"},
            content=b"",
        )
        response = await http.send(
            request, auth=AcsV3Auth(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
        )
    raw = response.json()
    assert response.status_code == 200, raw
    seen = sts_models.AssumeRoleResponseBody().from_map(json.loads(response.text)).to_map()
    assert seen == raw
    # What alibabacloud-credentials reads from it.
    assert set(seen["Credentials"]) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
