"""VpcClient over httpx.MockTransport: request layout, error translation, retries, pagination."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stamina
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from bot.cloud.adapter import VpcAdapter
from bot.cloud.client import VpcClient, parse_retry_after, redact, translate_response
from bot.cloud.codes import ERROR_TABLE
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.endpoints import EndpointResolver, default_host, vpc_base_url
from bot.cloud.signer import Credentials, canonical_query
from bot.config import Settings
from bot.domain import VpnConnection, VpnGateway
from bot.errors import CloudApiError, CloudTransportError, RetryClass, UsageError
from bot.ports import VpcApi

from .fakes import AK, FakeVpc, error_reply, json_reply, params_of, verify_signature

MakeClient = Callable[..., VpcClient]

CONNECTION = {
    "RequestId": "REQ-D",
    "VpnConnectionId": "vco-1",
    "VpnGatewayId": "vpn-1",
    "CustomerGatewayId": "cgw-1",
    "Name": "hq",
    "Status": "ipsec_sa_established",
    "LocalSubnet": "10.0.0.0/8",
    "RemoteSubnet": "192.168.0.0/16",
    "CreateTime": 1700000000000,
    "IkeConfig": {"Psk": "psk-NEVER-LOGGED"},
    "VpnBgpConfig": {"AuthKey": "authkey-NEVER-LOGGED"},
}
GATEWAY = {
    "RequestId": "REQ-G",
    "VpnGatewayId": "vpn-1",
    "Name": "gw",
    "Status": "active",
    "BusinessStatus": "Normal",
}


@pytest.fixture
def retries() -> Iterator[list[RetryDetails]]:
    """Every retry stamina schedules, through its own instrumentation hooks."""
    seen: list[RetryDetails] = []
    before = get_on_retry_hooks()

    def record(details: RetryDetails) -> None:
        seen.append(details)

    set_on_retry_hooks([record])
    yield seen
    set_on_retry_hooks(before)


# --- the request on the wire ---------------------------------------------------------------------------


async def test_request_layout_and_signature(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply(CONNECTION)]
    client = make_client()
    await client.describe_vpn_connection_detail(region="cn-shanghai", vco_id="vco-1")
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.url.host == "vpc.cn-shanghai.aliyuncs.com"
    assert request.url.scheme == "https"
    assert request.url.raw_path == b"/?RegionId=cn-shanghai&VpnConnectionId=vco-1"
    assert request.content == b""
    assert request.headers["x-acs-action"] == "DescribeVpnConnection"
    assert request.headers["x-acs-version"] == "2016-04-28"
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=testid,")
    assert "x-acs-security-token" not in request.headers
    assert verify_signature(request)


async def test_query_is_canonical_byte_for_byte(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply({"RequestId": "R", "TotalCount": 0, "PageNumber": 1, "PageSize": 50})]
    await make_client().describe_vpn_connections(region="cn-shanghai", vpn_gateway_id="vpn a*b~")
    (request,) = fake.requests
    expected = canonical_query(
        {"RegionId": "cn-shanghai", "VpnGatewayId": "vpn a*b~", "PageNumber": "1", "PageSize": "50"}
    )
    assert request.url.query.decode() == expected
    assert "vpn%20a%2Ab~" in expected
    assert verify_signature(request)


async def test_sts_token_is_sent_and_signed(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply(GATEWAY)]
    creds = StaticCredentialsProvider(Credentials("STS.id", "testsecret", "sts-token"))
    await make_client(credentials=creds).describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    (request,) = fake.requests
    assert request.headers["x-acs-security-token"] == "sts-token"
    assert "x-acs-security-token" in request.headers["authorization"]
    assert verify_signature(request)


async def test_endpoint_override_wins_for_every_region(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply(GATEWAY)]
    client = make_client(endpoint="http://127.0.0.1:9000")
    for region in ("cn-shanghai", "eu-central-1"):
        await client.describe_vpn_gateway_detail(region=region, gateway_id="vpn-1")
    assert [str(r.url).split("?")[0] for r in fake.requests] == ["http://127.0.0.1:9000/"] * 2
    assert [params_of(r)["RegionId"] for r in fake.requests] == ["cn-shanghai", "eu-central-1"]
    assert all(verify_signature(r) for r in fake.requests)


def test_endpoints() -> None:
    # cn-hangzhou is in the official SDK's endpoint table (tests/cloud/test_endpoints.py).
    assert default_host("cn-hangzhou") == "vpc.aliyuncs.com"
    assert vpc_base_url("ap-southeast-1") == "https://vpc.ap-southeast-1.aliyuncs.com"
    assert vpc_base_url("cn-hangzhou", override="http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    resolver = EndpointResolver(per_region={"cn-shanghai-finance-1": "vpc.aliyuncs.com"})
    assert resolver.base_url("cn-shanghai-finance-1") == "https://vpc.aliyuncs.com"
    assert resolver.base_url("us-east-1") == "https://vpc.us-east-1.aliyuncs.com"


@pytest.mark.parametrize("region", ["evil.com/x", "cn-hangzhou.attacker", "", "CN-HANGZHOU"])
async def test_a_region_that_is_not_one_never_becomes_a_host(
    fake: FakeVpc, make_client: MakeClient, region: str
) -> None:
    with pytest.raises(UsageError):
        await make_client().describe_vpn_gateway_detail(region=region, gateway_id="vpn-1")
    assert fake.requests == []


# --- operations and VpcApi -----------------------------------------------------------------------------


async def test_vpc_api_operations_return_domain_records(fake: FakeVpc, make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        action = request.headers["x-acs-action"]
        if action == "DescribeVpnConnection":
            return json_reply(CONNECTION)
        if action == "DescribeVpnGateway":
            return json_reply(GATEWAY)
        if action == "DescribeRegions":
            regions = [{"RegionId": "cn-hangzhou", "LocalName": "Hangzhou"}, {"RegionId": "eu-central-1"}]
            return json_reply({"RequestId": "R", "Regions": {"Region": regions}})
        if action == "DeleteVpnConnection":
            return json_reply({"RequestId": "606998F0-B94D"})
        return error_reply("InvalidAction.NotFound", 404)

    fake.handler = handler
    api: VpcApi = VpcAdapter(make_client(default_region="ap-southeast-1"))  # mypy: it satisfies VpcApi
    connection = await api.describe_vpn_connection(region="cn-shanghai", vco_id="vco-1")
    assert connection == VpnConnection(
        id="vco-1",
        region="cn-shanghai",
        name="hq",
        gateway_id="vpn-1",
        customer_gateway_id="cgw-1",
        status="ipsec_sa_established",
        local_subnet="10.0.0.0/8",
        remote_subnet="192.168.0.0/16",
        created_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    )
    gateway = await api.describe_vpn_gateway(region="cn-shanghai", gateway_id="vpn-1")
    assert gateway == VpnGateway(id="vpn-1", region="cn-shanghai", name="gw", status="active")
    assert await api.list_regions() == ["cn-hangzhou", "eu-central-1"]
    assert (
        await api.delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok-1")
        == "606998F0-B94D"
    )
    regions_request = fake.requests[2]
    # DescribeRegions takes no RegionId and is asked at the default region's endpoint.
    assert regions_request.url.host == "vpc.ap-southeast-1.aliyuncs.com"
    assert params_of(regions_request) == {"AcceptLanguage": "en-US"}
    assert params_of(fake.requests[3]) == {
        "RegionId": "cn-shanghai",
        "VpnConnectionId": "vco-1",
        "ClientToken": "tok-1",
    }


def _connections_page(request: httpx.Request, total: int) -> httpx.Response:
    params = params_of(request)
    number, size = int(params["PageNumber"]), int(params["PageSize"])
    ids = range((number - 1) * size, min(number * size, total))
    items = [{"VpnConnectionId": f"vco-{i}", "VpnGatewayId": "vpn-1"} for i in ids]
    return json_reply(
        {
            "RequestId": "R",
            "TotalCount": total,
            "PageNumber": number,
            "PageSize": size,
            "VpnConnections": {"VpnConnection": items},
        }
    )


async def test_describe_vpn_connections_reads_every_page(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.handler = lambda request: _connections_page(request, 120)
    connections = await make_client().describe_vpn_connections(region="cn-shanghai", vpn_gateway_id="vpn-1")
    assert [c.vpn_connection_id for c in connections] == [f"vco-{i}" for i in range(120)]
    assert [(params_of(r)["PageNumber"], params_of(r)["PageSize"]) for r in fake.requests] == [
        ("1", "50"),
        ("2", "50"),
        ("3", "50"),
    ]
    assert all(params_of(r)["VpnGatewayId"] == "vpn-1" for r in fake.requests)


async def test_pagination_stops_on_an_empty_page(fake: FakeVpc, make_client: MakeClient) -> None:
    # A server that overstates TotalCount must not make the client loop.
    fake.replies = [
        json_reply(
            {
                "TotalCount": 999,
                "PageNumber": 1,
                "PageSize": 50,
                "VpnConnections": {"VpnConnection": [{"VpnConnectionId": "vco-1"}]},
            }
        ),
        json_reply(
            {"TotalCount": 999, "PageNumber": 2, "PageSize": 50, "VpnConnections": {"VpnConnection": []}}
        ),
    ]
    assert len(await make_client().describe_vpn_connections(region="cn-shanghai")) == 1
    assert len(fake.requests) == 2


async def test_route_entries_read_every_page(fake: FakeVpc, make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        params = params_of(request)
        number = int(params["PageNumber"])
        if request.headers["x-acs-action"] == "DescribeVpnRouteEntries":
            assert params["RouteEntryType"] == "custom"
            entries = [
                {"RouteDest": f"10.{number}.{i}.0/24", "NextHop": "vco-1"}
                for i in range(50 if number == 1 else 3)
            ]
            return json_reply(
                {
                    "TotalCount": 53,
                    "PageNumber": number,
                    "PageSize": 50,
                    "VpnRouteEntries": {"VpnRouteEntry": entries},
                }
            )
        pbr_entries: list[dict[str, Any]] = [
            {"RouteSource": "10.0.0.0/8", "RouteDest": "192.168.0.0/24", "NextHop": "vco-1", "Priority": 1}
        ]
        return json_reply(
            {
                "TotalCount": 1,
                "PageNumber": number,
                "PageSize": 50,
                "VpnPbrRouteEntries": {"VpnPbrRouteEntry": pbr_entries},
            }
        )

    fake.handler = handler
    client = make_client()
    routes = await client.describe_vpn_route_entries(region="cn-shanghai", gateway_id="vpn-1")
    assert len(routes) == 53
    assert {r.next_hop for r in routes} == {"vco-1"}
    pbr = await client.describe_vpn_pbr_route_entries(region="cn-shanghai", gateway_id="vpn-1")
    assert [(r.route_source, r.priority) for r in pbr] == [("10.0.0.0/8", 1)]
    assert fake.actions == [
        "DescribeVpnRouteEntries",
        "DescribeVpnRouteEntries",
        "DescribeVpnPbrRouteEntries",
    ]


# --- errors ------------------------------------------------------------------------------------------------

API_CODES = sorted(c for c in ERROR_TABLE if not c.startswith(("Transport.", "Credentials.")))


@pytest.mark.parametrize("code", API_CODES)
async def test_every_code_of_the_table_through_the_client(
    fake: FakeVpc, make_client: MakeClient, code: str
) -> None:
    info = ERROR_TABLE[code]
    status = info.http_status or 500
    fake.replies = [error_reply(code, status, message=f"{code} message")]
    client = make_client(max_attempts=3)
    with pytest.raises(CloudApiError) as caught:
        await client.delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok")
    err = caught.value
    assert err.code == code
    assert err.retry is info.retry
    assert err.http_status == status
    assert err.request_id == f"req-{code}"
    assert err.action == "DeleteVpnConnection"
    assert err.resource_id == "vco-1"
    assert err.info.api_message == f"{code} message"
    assert f"req-{code}" in err.friendly
    # A token-bound call is retried here only after an ambiguous failure (a 5xx): a definite
    # rejection would be replayed for the same token, so it is the workflow's to handle.
    ambiguous = info.retry is RetryClass.TRANSIENT and status >= 500
    assert len(fake.requests) == (3 if ambiguous else 1)
    assert err.definite is (status < 500)


@pytest.mark.parametrize("code", sorted(c for c in API_CODES if ERROR_TABLE[c].retry is RetryClass.TRANSIENT))
async def test_every_transient_code_is_retried_on_a_call_without_a_token(
    fake: FakeVpc, make_client: MakeClient, code: str
) -> None:
    fake.replies = [error_reply(code, ERROR_TABLE[code].http_status or 500)]
    with pytest.raises(CloudApiError):
        await make_client(max_attempts=3).describe_vpn_gateway_detail(
            region="cn-shanghai", gateway_id="vpn-1"
        )
    assert len(fake.requests) == 3


async def test_dispatch_is_on_code_not_status(fake: FakeVpc, make_client: MakeClient) -> None:
    # A 200 carrying a Code is an error; a 500 carrying a NEVER code is not retried.
    fake.replies = [error_reply("InvalidVpnConnectionInstanceId.NotFound", 200)]
    client = make_client()
    with pytest.raises(CloudApiError) as caught:
        await client.describe_vpn_connection_detail(region="cn-shanghai", vco_id="vco-1")
    assert caught.value.code == "InvalidVpnConnectionInstanceId.NotFound"
    assert caught.value.http_status == 200
    fake.requests.clear()
    fake.replies = [error_reply("Forbidden.RAM", 500)]
    with pytest.raises(CloudApiError) as caught:
        await client.describe_vpn_connection_detail(region="cn-shanghai", vco_id="vco-1")
    assert caught.value.retry is RetryClass.NEVER
    assert len(fake.requests) == 1


async def test_unknown_code_keeps_alibaba_message(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [error_reply("Vpc.Brand.New", 400, message="Something new.")]
    with pytest.raises(CloudApiError) as caught:
        await make_client().describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert caught.value.code == "Vpc.Brand.New"
    assert "Something new." in caught.value.friendly
    assert len(fake.requests) == 1


async def test_non_json_body_is_a_transport_error_and_retried(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [
        httpx.Response(502, content=b"<html>Bad Gateway</html>", headers={"content-type": "text/html"}),
        json_reply(GATEWAY),
    ]
    client = make_client()
    gateway = await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert gateway.status == "active"
    assert len(fake.requests) == 2
    fake.requests.clear()
    fake.replies = [httpx.Response(200, content=b"not json")]
    client = make_client(max_attempts=2)
    with pytest.raises(CloudTransportError) as caught:
        await client.delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="t")
    assert caught.value.code == "Transport.BadResponse"
    assert isinstance(caught.value.__cause__, ValueError)
    assert len(fake.requests) == 2


async def test_error_status_without_code_is_a_bad_response(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply({"message": "proxy says no"}, 403)]
    with pytest.raises(CloudTransportError) as caught:
        await make_client(max_attempts=1).describe_vpn_gateway_detail(
            region="cn-shanghai", gateway_id="vpn-1"
        )
    assert caught.value.code == "Transport.BadResponse"
    assert caught.value.info.http_status == 403


async def test_unexpected_shape_is_not_retried(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply({"RequestId": "R-shape", "Name": "no id"})]
    with pytest.raises(CloudTransportError) as caught:
        await make_client().describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert caught.value.code == "Transport.BadResponse"
    assert caught.value.retry is RetryClass.NEVER
    assert caught.value.request_id == "R-shape"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("read timed out"), "Transport.Timeout"),
        (httpx.ConnectTimeout("connect timed out"), "Transport.Timeout"),
        (httpx.ConnectError("connection refused"), "Transport.ConnectError"),
        (httpx.RemoteProtocolError("peer closed"), "Transport.BadResponse"),
    ],
)
async def test_transport_failures(
    fake: FakeVpc, make_client: MakeClient, exc: Exception, code: str, retries: list[RetryDetails]
) -> None:
    fake.replies = [exc]
    with pytest.raises(CloudTransportError) as caught:
        await make_client(max_attempts=3).delete_vpn_connection(
            region="cn-shanghai", vco_id="vco-1", client_token="tok"
        )
    assert caught.value.code == code
    assert caught.value.__cause__ is exc
    assert caught.value.retry is RetryClass.TRANSIENT
    assert not caught.value.definite
    assert len(fake.requests) == 3
    assert [d.caused_by.code for d in retries] == [code, code]  # type: ignore[attr-defined]


async def test_timeout_then_success(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [httpx.ReadTimeout("slow"), json_reply({"RequestId": "R-ok"})]
    request_id = await make_client().delete_vpn_connection(
        region="cn-shanghai", vco_id="vco-1", client_token="tok"
    )
    assert request_id == "R-ok"
    assert len(fake.requests) == 2


def test_translate_response_reads_retry_after() -> None:
    response = httpx.Response(
        400, json={"Code": "Throttling.User", "Message": "m"}, headers={"x-acs-retry-after": "2500"}
    )
    with pytest.raises(CloudApiError) as caught:
        translate_response(response, action="DescribeVpnGateway")
    assert caught.value.retry_after == 2.5
    assert caught.value.request_id is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), ("0", None), ("-5", None), ("abc", None), ("1500", 1.5), ("999999", 120.0)],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


# --- retries -----------------------------------------------------------------------------------------------


async def test_throttle_then_success_without_a_token(
    fake: FakeVpc, make_client: MakeClient, retries: list[RetryDetails]
) -> None:
    fake.replies = [error_reply("Throttling.User"), json_reply(GATEWAY)]
    client = make_client(max_attempts=4)
    gateway = await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert gateway.status == "active"
    ((details,),) = [retries]
    assert details.caused_by.code == "Throttling.User"  # type: ignore[attr-defined]
    assert details.retry_num == 1


async def test_a_throttled_delete_is_not_resent_with_the_same_token(
    fake: FakeVpc, make_client: MakeClient
) -> None:
    # Alibaba would replay "throttled" for the same token: the workflow resends with a new one.
    fake.replies = [error_reply("Throttling.User"), json_reply({"RequestId": "R-ok"})]
    with pytest.raises(CloudApiError) as caught:
        await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok")
    assert caught.value.code == "Throttling.User"
    assert caught.value.definite
    assert len(fake.requests) == 1


async def test_not_found_after_a_lost_answer_says_so(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [httpx.ReadTimeout("lost"), error_reply("InvalidVpnConnectionInstanceId.NotFound", 404)]
    with pytest.raises(CloudApiError) as caught:
        await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok")
    assert caught.value.after_ambiguous
    fake.requests.clear()
    fake.replies = [error_reply("InvalidVpnConnectionInstanceId.NotFound", 404)]
    with pytest.raises(CloudApiError) as first_answer:
        await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok")
    assert not first_answer.value.after_ambiguous


async def test_stamina_owns_the_backoff_and_its_settings_apply(
    fake: FakeVpc, make_client: MakeClient, retries: list[RetryDetails]
) -> None:
    fake.replies = [error_reply("ServiceUnavailable", 503)]
    client = make_client(max_attempts=5, wait_initial=0.001, wait_max=0.004, wait_jitter=0.0)
    with stamina.set_testing(False), pytest.raises(CloudApiError):
        await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert [d.wait_for for d in retries] == pytest.approx([0.001, 0.002, 0.004, 0.004], abs=1e-9)


async def test_retry_after_header_is_the_delay(
    fake: FakeVpc, make_client: MakeClient, retries: list[RetryDetails]
) -> None:
    fake.replies = [
        error_reply("Throttling.Api", headers={"x-acs-retry-after": "15"}),
        error_reply("Throttling.Api", headers={"x-acs-retry-after": "27"}),
        json_reply(GATEWAY),
    ]
    client = make_client(wait_initial=5.0)
    with stamina.set_testing(False):
        await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    assert [d.wait_for for d in retries] == pytest.approx([0.015, 0.027])
    assert [d.caused_by.retry_after for d in retries] == [0.015, 0.027]  # type: ignore[attr-defined]


async def test_deadline_is_respected(fake: FakeVpc, make_client: MakeClient) -> None:
    # Each answer takes 0.4 s on a fake monotonic clock; the server asks for 0.1 s pauses.
    now = [0.0]

    def slow_throttle(request: httpx.Request) -> httpx.Response:
        now[0] += 0.4
        return error_reply("Throttling", headers={"x-acs-retry-after": "100"})

    fake.handler = slow_throttle
    client = make_client(api_deadline_seconds=1.0, max_attempts=50, monotonic=lambda: now[0])
    with pytest.raises(CloudApiError) as caught:
        await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    # Answers at 0.4 and 0.8 leave room for a pause; at 1.2 the deadline has passed: the
    # server's own error is reported, not a timeout.
    assert caught.value.code == "Throttling"
    assert len(fake.requests) == 3


async def test_retry_after_beyond_the_deadline_fails_at_once(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [
        error_reply("Throttling.User", headers={"x-acs-retry-after": "30000"}),
        json_reply(GATEWAY),
    ]
    with pytest.raises(CloudApiError):
        await make_client(api_deadline_seconds=5.0).describe_vpn_gateway_detail(
            region="cn-shanghai", gateway_id="vpn-1"
        )
    assert len(fake.requests) == 1


async def test_each_retry_is_signed_afresh_with_the_same_client_token(
    fake: FakeVpc, make_client: MakeClient
) -> None:
    fake.replies = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        error_reply("InternalError", 500),
        json_reply({"RequestId": "R-ok"}),
    ]
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ticks = iter(range(100))
    client = make_client(clock=lambda: base + timedelta(seconds=next(ticks)))
    await client.delete_vpn_connection(
        region="cn-shanghai", vco_id="vco-1", client_token="slack-T1-vco-1-123.456"
    )
    assert len(fake.requests) == 4
    nonces = {r.headers["x-acs-signature-nonce"] for r in fake.requests}
    dates = {r.headers["x-acs-date"] for r in fake.requests}
    signatures = {r.headers["authorization"] for r in fake.requests}
    assert len(nonces) == len(dates) == len(signatures) == 4
    assert {params_of(r)["ClientToken"] for r in fake.requests} == {"slack-T1-vco-1-123.456"}
    assert all(verify_signature(r) for r in fake.requests)


@pytest.mark.parametrize("code", ["VpnGateway.Configuring", "VpnTask.CONFLICT", "VpnGateway.FinancialLocked"])
async def test_busy_and_never_raise_at_once(
    fake: FakeVpc, make_client: MakeClient, code: str, retries: list[RetryDetails]
) -> None:
    fake.replies = [error_reply(code), json_reply({"RequestId": "R"})]
    with pytest.raises(CloudApiError) as caught:
        await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="tok")
    assert caught.value.code == code
    assert len(fake.requests) == 1
    assert retries == []


@pytest.mark.parametrize("token", ["", "x" * 65, "tök", "tab\there"])
async def test_client_token_must_be_short_ascii(fake: FakeVpc, make_client: MakeClient, token: str) -> None:
    with pytest.raises(UsageError):
        await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token=token)
    assert fake.requests == []


async def test_client_token_of_64_ascii_is_accepted(fake: FakeVpc, make_client: MakeClient) -> None:
    fake.replies = [json_reply({"RequestId": "R"})]
    await make_client().delete_vpn_connection(region="cn-shanghai", vco_id="vco-1", client_token="a" * 64)
    assert params_of(fake.requests[0])["ClientToken"] == "a" * 64


# --- logging and secrets --------------------------------------------------------------------------------


def test_redact_masks_secrets_at_any_depth() -> None:
    body = {
        "Psk": "p1",
        "IkeConfig": {"Psk": "p2", "IkeMode": "main"},
        "TunnelOptionsSpecification": {
            "TunnelOptions": [{"TunnelIkeConfig": {"psk": "p3"}, "TunnelBgpConfig": {"AuthKey": "a1"}}]
        },
        "Credentials": {
            "AccessKeyId": "id",
            "AccessKeySecret": "s1",
            "SecurityToken": "t1",
            "access_key_secret": "s2",
        },
    }
    cleaned = redact(body)
    text = repr(cleaned)
    for secret in ("p1", "p2", "p3", "a1", "s1", "t1", "s2"):
        assert f"'{secret}'" not in text
    assert cleaned["IkeConfig"]["IkeMode"] == "main"
    assert cleaned["Credentials"]["AccessKeyId"] == "id"
    assert body["Psk"] == "p1"  # the original is untouched


async def test_logs_name_the_call_but_never_a_secret(
    fake: FakeVpc, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.replies = [error_reply("Throttling", message="slow down"), json_reply(CONNECTION)]
    caplog.set_level(logging.DEBUG, logger="bot.cloud")
    await make_client().describe_vpn_connection_detail(region="cn-shanghai", vco_id="vco-1")
    records = [r for r in caplog.records if r.name == "bot.cloud"]
    assert any(
        getattr(r, "code", None) == "Throttling" and getattr(r, "request_id", None) == "req-Throttling"
        for r in records
    )
    ok = [r for r in records if r.getMessage() == "vpc call"]
    assert [(r.action, r.region, r.status, r.request_id) for r in ok] == [  # type: ignore[attr-defined]
        ("DescribeVpnConnection", "cn-shanghai", 200, "REQ-D")
    ]
    dumped = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "psk-NEVER-LOGGED" not in dumped
    assert "authkey-NEVER-LOGGED" not in dumped
    assert AK.access_key_secret not in dumped
    assert any("DescribeVpnConnection" in r.getMessage() and "***" in r.getMessage() for r in records)


def test_repr_hides_credentials() -> None:
    client = VpcClient(StaticCredentialsProvider(Credentials("id", "super-secret-value", "tok-secret-value")))
    assert "super-secret-value" not in repr(client)
    assert "tok-secret-value" not in repr(client)


async def test_from_settings(fake: FakeVpc) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ALIBABA_CLOUD_ACCESS_KEY_ID="sid",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET="ssecret",
        VPNBOT_VPC_ENDPOINT="http://127.0.0.1:9000",
        VPNBOT_API_DEADLINE_SECONDS=7,
    )
    fake.replies = [json_reply(GATEWAY)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        client = VpcClient.from_settings(settings, http=http)
        await client.describe_vpn_gateway_detail(region="cn-hangzhou", gateway_id="vpn-1")
    (request,) = fake.requests
    assert str(request.url).startswith("http://127.0.0.1:9000/?")
    assert "Credential=sid," in request.headers["authorization"]
    assert verify_signature(request, "ssecret")


async def test_owned_http_client_is_closed() -> None:
    async with VpcClient(StaticCredentialsProvider(AK)) as client:
        http: Any = client._http
        assert not http.is_closed
    assert http.is_closed
