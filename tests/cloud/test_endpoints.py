"""Endpoints as the official SDK resolves them: its table, the regional rule, the VPC network.

The installed ``alibabacloud-vpc20160428`` client is the oracle: our copy of its endpoint table
must equal its own, and for every region of the table and some ordinary ones, on both networks,
our host must be the one the SDK client picks when built for that region and network. The SDK
keeps both in attributes without a public getter (``_endpoint_map``, ``_endpoint``); they are
read, never changed.
"""

from __future__ import annotations

import json

import httpx
import pytest
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_vpc20160428.client import Client as SdkClient

from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.endpoints import NETWORKS, SDK_ENDPOINT_MAP, Network, default_host, sts_endpoint
from bot.cloud.signer import Credentials
from bot.config import Settings, explicit_settings
from bot.doctor.alibaba import check_cloud
from bot.doctor.model import Status
from bot.errors import UsageError

ORDINARY = ("cn-shanghai", "cn-beijing", "ap-southeast-1", "eu-central-1", "us-east-1", "cn-hongkong")


def _sdk(region: str, network: Network) -> SdkClient:
    return SdkClient(
        open_api_models.Config(
            access_key_id="oracle", access_key_secret="oracle", region_id=region, network=network
        )
    )


def test_our_table_is_the_installed_sdks() -> None:
    assert dict(SDK_ENDPOINT_MAP) == _sdk("cn-shanghai", "public")._endpoint_map


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("region", [*ORDINARY, *SDK_ENDPOINT_MAP])
def test_we_pick_the_host_the_sdk_picks(region: str, network: Network) -> None:
    assert default_host(region, network) == _sdk(region, network)._endpoint


def test_the_vpc_network_uses_the_vpc_endpoints() -> None:
    assert default_host("cn-shanghai", "vpc") == "vpc-vpc.cn-shanghai.aliyuncs.com"
    assert sts_endpoint(None, "cn-shanghai", "vpc") == "sts-vpc.cn-shanghai.aliyuncs.com"
    # Public: the credentials library's own default (sts.aliyuncs.com); an explicit one always wins.
    assert sts_endpoint(None, "cn-shanghai", "public") is None
    assert sts_endpoint("sts.example:443", "cn-shanghai", "vpc") == "sts.example:443"
    with pytest.raises(UsageError):
        default_host("evil.com/x", "vpc")


async def _hosts_called(settings: Settings, regions: list[str]) -> list[str]:
    """The Host of each call a bot built from ``settings`` makes, through an injected transport."""
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.headers["host"])
        body = {"RequestId": "R", "VpnGatewayId": "vpn-1", "Status": "active", "BusinessStatus": "Normal"}
        return httpx.Response(200, content=json.dumps(body).encode())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = VpcClient.from_settings(
            settings, credentials=StaticCredentialsProvider(Credentials("ak", "sk")), http=http
        )
        for region in regions:
            await client.describe_vpn_gateway_detail(region=region, gateway_id="vpn-1")
    return hosts


async def test_a_bot_on_the_vpc_network_calls_the_vpc_endpoint() -> None:
    settings = explicit_settings(alibaba_network="vpc")
    assert await _hosts_called(settings, ["cn-shanghai", "eu-central-1"]) == [
        "vpc-vpc.cn-shanghai.aliyuncs.com",
        "vpc-vpc.eu-central-1.aliyuncs.com",
    ]
    public = explicit_settings()
    assert await _hosts_called(public, ["cn-shanghai", "cn-hangzhou"]) == [
        "vpc.cn-shanghai.aliyuncs.com",
        "vpc.aliyuncs.com",  # the SDK's table
    ]


async def test_per_region_endpoints_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "VPNBOT_VPC_ENDPOINTS",
        "cn-shanghai-finance-1=vpc.finance.example:8443, cn-beijing=https://vpc.bj.example",
    )
    monkeypatch.setenv("VPNBOT_ALIBABA_NETWORK", "vpc")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.vpc_endpoints == {
        "cn-shanghai-finance-1": "vpc.finance.example:8443",
        "cn-beijing": "https://vpc.bj.example",
    }
    assert await _hosts_called(settings, ["cn-shanghai-finance-1", "cn-beijing", "cn-shanghai"]) == [
        "vpc.finance.example:8443",
        "vpc.bj.example",
        "vpc-vpc.cn-shanghai.aliyuncs.com",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VPNBOT_VPC_ENDPOINTS", "cn-shanghai"),
        ("VPNBOT_VPC_ENDPOINTS", "not a region=vpc.example"),
        ("VPNBOT_VPC_ENDPOINTS", "cn-shanghai=vpc.example/path?x"),
        ("VPNBOT_VPC_ENDPOINTS", "cn-shanghai=a.example,cn-shanghai=b.example"),
        ("VPNBOT_ALIBABA_NETWORK", "intranet"),
    ],
)
def test_bad_endpoint_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.removeprefix("VPNBOT_").lower() + "|" + name):
        Settings(_env_file=None)  # type: ignore[call-arg]


async def test_doctor_shows_the_host_of_each_configured_region() -> None:
    settings = explicit_settings(
        alibaba_network="vpc",
        default_region="cn-shanghai",
        allowed_regions=["cn-shanghai", "cn-hangzhou", "eu-central-1"],
        vpc_endpoints={"cn-shanghai-finance-1": "vpc.finance.example"},
        accounts={"prod": "acs:ram::1234567890123456:role/vpn-bot"},
    )
    rows = await check_cloud(settings, credentials=None, vpc=None)
    (row,) = [r for r in rows if r.name == "Endpoints"]
    assert row.status is Status.PASS
    assert row.detail == (
        "network vpc (VPNBOT_ALIBABA_NETWORK): cn-shanghai: vpc-vpc.cn-shanghai.aliyuncs.com; "
        "cn-hangzhou: vpc.aliyuncs.com; eu-central-1: vpc-vpc.eu-central-1.aliyuncs.com; "
        "cn-shanghai-finance-1: vpc.finance.example; STS: sts-vpc.cn-shanghai.aliyuncs.com."
    )
