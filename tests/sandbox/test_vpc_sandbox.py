"""The VPC sandbox over real loopback HTTP, driven by httpx + our ACS3 signer."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from vpc_sandbox_support import DEMO, UPDATE_SECONDS, Caller, eventually

from bot.cloud.codes import ERROR_TABLE
from bot.cloud.signer import AcsV3Auth, Credentials, canonical_query
from bot.sandbox.vpc import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    RunningSandbox,
    load_faults_file,
    serve_forever,
    start_vpc_sandbox,
)
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_REGION_OTHER,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_GW2,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VCO_LOCKED,
    SEED_VCO_SHANGHAI,
    SEED_VPN_HANGZHOU,
    SEED_VPN_HANGZHOU_2,
    SEED_VPN_LOCKED,
    SEED_VPN_SHANGHAI,
    SandboxState,
)

HZ = {"RegionId": SEED_REGION}
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


def delete_params(vco: str = SEED_VCO_HANGZHOU, token: str | None = None) -> dict[str, str]:
    params = {"RegionId": SEED_REGION, "VpnConnectionId": vco}
    if token is not None:
        params["ClientToken"] = token
    return params


def assert_error(response: httpx.Response, code: str, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["Code"] == code
    assert body["Message"]
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    assert f"q={code}&product=Vpc&requestId={body['RequestId']}" in body["Recommend"]
    return body


async def gateway_status(caller: Caller, gateway_id: str = SEED_VPN_HANGZHOU) -> str:
    body = await caller.ok("DescribeVpnGateway", {**HZ, "VpnGatewayId": gateway_id})
    return str(body["Status"])


# --- signature verification -------------------------------------------------------------------------


async def test_good_signature_is_accepted_and_recorded(caller: Caller, sandbox: RunningSandbox) -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    response = await caller.call("DescribeRegions", nonce=lambda: nonce)

    assert response.status_code == 200
    body = response.json()
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    [seen] = sandbox.state.requests
    assert (seen.action, seen.nonce, seen.access_key_id, seen.outcome) == (
        "DescribeRegions",
        nonce,
        DEMO_ACCESS_KEY_ID,
        "ok",
    )
    assert seen.request_id == body["RequestId"]


async def test_tampered_signature_is_rejected(caller: Caller) -> None:
    def flip_last_hex_digit(request: httpx.Request) -> None:
        auth = request.headers["Authorization"]
        request.headers["Authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")

    response = await caller.call("DescribeRegions", tamper=flip_last_hex_digit)

    body = assert_error(response, "SignatureDoesNotMatch", 400)
    # Like the real gateway, the message shows the server's string to sign (a hash, no secret).
    assert "ACS3-HMAC-SHA256" in body["Message"]


async def test_parameter_changed_after_signing_is_rejected(caller: Caller) -> None:
    def swap_connection(request: httpx.Request) -> None:
        request.url = request.url.copy_with(
            query=canonical_query(delete_params(SEED_VCO_HANGZHOU_GW2)).encode()
        )

    response = await caller.call("DescribeVpnConnection", delete_params(), tamper=swap_connection)

    assert_error(response, "SignatureDoesNotMatch", 400)


async def test_wrong_secret_is_rejected(caller: Caller, sandbox: RunningSandbox) -> None:
    response = await caller.call(
        "DescribeRegions", credentials=Credentials(DEMO_ACCESS_KEY_ID, "not-the-secret")
    )

    assert_error(response, "SignatureDoesNotMatch", 400)
    assert sandbox.state.requests[-1].code == "SignatureDoesNotMatch"


async def test_unknown_access_key_is_rejected(caller: Caller) -> None:
    response = await caller.call("DescribeRegions", credentials=Credentials("LTAI5tNobodyKnowsMe0000", "x"))

    assert_error(response, "InvalidAccessKeyId.NotFound", 404)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "garbage",
        "ACS3-HMAC-SHA256 Credential=x",
        "HMAC-SHA1 Credential=a,SignedHeaders=host,Signature=ab",
        "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=ab",
    ],
)
async def test_missing_or_garbled_authorization_is_incomplete(
    caller: Caller, authorization: str | None
) -> None:
    def replace(request: httpx.Request) -> None:
        del request.headers["Authorization"]
        if authorization is not None:
            request.headers["Authorization"] = authorization

    response = await caller.call("DescribeRegions", tamper=replace)

    assert_error(response, "IncompleteSignature", 400)


async def test_non_ascii_signature_is_a_mismatch_not_a_crash(caller: Caller) -> None:
    def garble(request: httpx.Request) -> None:
        raw = [(k, v) for k, v in request.headers.raw if k.lower() != b"authorization"]
        garbled = request.headers["Authorization"][:-2].encode() + "é".encode()
        request.headers = httpx.Headers([*raw, (b"Authorization", garbled)])

    response = await caller.call("DescribeRegions", tamper=garble)

    assert_error(response, "SignatureDoesNotMatch", 400)


async def test_x_acs_header_left_unsigned_is_incomplete(caller: Caller) -> None:
    def add_header(request: httpx.Request) -> None:
        request.headers["x-acs-extra"] = "smuggled"

    response = await caller.call("DescribeRegions", tamper=add_header)

    body = assert_error(response, "IncompleteSignature", 400)
    assert "x-acs-extra" in body["Message"]


async def test_body_hash_mismatch_is_rejected(caller: Caller) -> None:
    def add_body(request: httpx.Request) -> None:
        request.stream = httpx.ByteStream(b"RegionId=cn-hangzhou")
        request.headers["content-length"] = "20"

    response = await caller.call("DescribeRegions", tamper=add_body)

    body = assert_error(response, "SignatureDoesNotMatch", 400)
    assert "x-acs-content-sha256" in body["Message"]


async def test_reused_nonce_is_rejected(caller: Caller) -> None:
    first = await caller.call("DescribeRegions", nonce=lambda: "same-nonce")
    second = await caller.call("DescribeRegions", nonce=lambda: "same-nonce")

    assert first.status_code == 200
    assert_error(second, "SignatureNonceUsed", 400)


@pytest.mark.parametrize("skew", [timedelta(minutes=-16), timedelta(minutes=16)])
async def test_date_outside_fifteen_minutes_is_expired(caller: Caller, skew: timedelta) -> None:
    response = await caller.call("DescribeRegions", clock=lambda: datetime.now(UTC) + skew)

    assert_error(response, "InvalidTimeStamp.Expired", 400)


async def test_date_within_window_is_accepted(caller: Caller) -> None:
    response = await caller.call("DescribeRegions", clock=lambda: datetime.now(UTC) - timedelta(minutes=14))

    assert response.status_code == 200


async def test_query_in_another_wire_encoding_verifies_from_decoded_values(caller: Caller) -> None:
    # The official SDK sends an unsorted urlencode ('+' for space) but signs the RFC 3986 form.
    # OwnerAccount: a free-text parameter DescribeVpnConnection has (the sandbox refuses others).
    params = {"VpnConnectionId": SEED_VCO_HANGZHOU, "RegionId": SEED_REGION, "OwnerAccount": "a b*c~/é+x"}

    def reencode(request: httpx.Request) -> None:
        request.url = request.url.copy_with(query=urlencode(params).encode())

    response = await caller.call("DescribeVpnConnection", params, tamper=reencode)

    assert response.status_code == 200, response.text


async def test_form_body_parameters_are_accepted(sandbox: RunningSandbox) -> None:
    form = urlencode({"RegionId": SEED_REGION, "VpnConnectionId": SEED_VCO_HANGZHOU}).encode()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox.url}/",
            content=form,
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-acs-action": "DescribeVpnConnection",
                "x-acs-version": "2016-04-28",
            },
            auth=AcsV3Auth(DEMO),
        )

    assert response.status_code == 200, response.text
    assert response.json()["VpnConnectionId"] == SEED_VCO_HANGZHOU


async def test_sts_token_is_required_when_configured() -> None:
    sts = Credentials("STS.sandboxid", "sts-secret", security_token="CAIS-token+/=")
    async with (
        await start_vpc_sandbox(
            access_key_id=sts.access_key_id,
            access_key_secret=sts.access_key_secret,
            security_token=sts.security_token,
        ) as sandbox,
        httpx.AsyncClient() as http,
    ):
        caller = Caller(http, sandbox.url, sts)
        good = await caller.call("DescribeRegions")
        no_token = await caller.call(
            "DescribeRegions", credentials=Credentials("STS.sandboxid", "sts-secret")
        )

    assert good.status_code == 200
    assert_error(no_token, "InvalidSecurityToken.MismatchWithAccessKey", 400)


async def test_unknown_action_wrong_version_and_missing_parameter(caller: Caller) -> None:
    unknown = await caller.call("DescribeEverything", HZ)
    old_version = await caller.call("DescribeRegions", version="2014-05-26")
    no_region = await caller.call("DescribeVpnGateway", {"VpnGatewayId": SEED_VPN_HANGZHOU})

    assert_error(unknown, "InvalidAction.NotFound", 404)
    assert_error(old_version, "InvalidVersion", 400)
    body = assert_error(no_region, "MissingParameter", 400)
    assert '"RegionId"' in body["Message"]


async def test_unknown_region_is_not_found(caller: Caller) -> None:
    response = await caller.call("DescribeVpnConnections", {"RegionId": "mars-north-1"})

    assert_error(response, "InvalidRegionId.NotFound", 404)


# --- the JSON shapes of each operation ---------------------------------------------------------------


async def test_describe_regions_shape(caller: Caller) -> None:
    default = await caller.ok("DescribeRegions")
    english = await caller.ok("DescribeRegions", {"AcceptLanguage": "en-US"})

    regions = {r["RegionId"]: r for r in default["Regions"]["Region"]}
    assert {SEED_REGION, SEED_REGION_OTHER} <= set(regions)
    assert regions[SEED_REGION] == {
        "RegionId": SEED_REGION,
        "LocalName": "华东1（杭州）",
        "RegionEndpoint": "vpc.cn-hangzhou.aliyuncs.com",
    }
    assert english["Regions"]["Region"][0]["LocalName"] == "China (Hangzhou)"


async def test_describe_vpn_connection_shape_carries_secrets_like_the_real_api(caller: Caller) -> None:
    plain = await caller.ok("DescribeVpnConnection", delete_params())
    bgp = await caller.ok("DescribeVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP))

    assert plain["VpnConnectionId"] == SEED_VCO_HANGZHOU
    assert plain["VpnGatewayId"] == SEED_VPN_HANGZHOU
    assert plain["CustomerGatewayId"].startswith("cgw-bp1")
    assert plain["Status"] == "ipsec_sa_established"
    assert isinstance(plain["CreateTime"], int)
    assert plain["IkeConfig"]["Psk"]
    assert plain["IkeConfig"]["IkeLifetime"] == 86400
    assert plain["IpsecConfig"]["IpsecLifetime"] == 86400
    assert plain["VpnBgpConfig"]["EnableBgp"] == "false"
    assert plain["Tags"] == {"Tag": [{"Key": "team", "Value": "netops"}]}
    assert bgp["VpnBgpConfig"]["EnableBgp"] == "true"
    assert bgp["VpnBgpConfig"]["AuthKey"]
    assert bgp["VpnBgpConfig"]["LocalAsn"] == 45104


async def test_dual_tunnel_connection_uses_tunnel_options(caller: Caller) -> None:
    body = await caller.ok("DescribeVpnConnection", delete_params(SEED_VCO_HANGZHOU_TUNNELS))

    tunnels = body["TunnelOptionsSpecification"]["TunnelOptions"]
    assert [t["Role"] for t in tunnels] == ["master", "slave"]
    # Inside TunnelOptions lifetimes and ASNs are strings (reference §3.2).
    assert tunnels[0]["TunnelIkeConfig"]["IkeLifetime"] == "86400"
    assert tunnels[0]["TunnelIkeConfig"]["Psk"]
    assert "IkeConfig" not in body


async def test_describe_vpn_connection_in_other_region_is_not_found(caller: Caller) -> None:
    response = await caller.call("DescribeVpnConnection", delete_params(SEED_VCO_SHANGHAI))

    assert_error(response, "InvalidVpnConnectionInstanceId.NotFound", 404)


async def test_describe_vpn_connections_pages_and_filters(caller: Caller) -> None:
    first = await caller.ok("DescribeVpnConnections", {**HZ, "PageSize": "2"})
    total = first["TotalCount"]
    seen: list[str] = []
    for page in range(1, total // 2 + 2):
        body = await caller.ok("DescribeVpnConnections", {**HZ, "PageSize": "2", "PageNumber": str(page)})
        assert (body["PageNumber"], body["PageSize"]) == (page, 2)
        seen += [c["VpnConnectionId"] for c in body["VpnConnections"]["VpnConnection"]]
    by_gateway = await caller.ok("DescribeVpnConnections", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU_2})
    by_id = await caller.ok("DescribeVpnConnections", {**HZ, "VpnConnectionId": SEED_VCO_HANGZHOU_BGP})
    by_tag = await caller.ok("DescribeVpnConnections", {**HZ, "Tag.1.Key": "team", "Tag.1.Value": "netops"})
    shanghai = await caller.ok("DescribeVpnConnections", {"RegionId": SEED_REGION_OTHER})

    assert total >= 4
    assert len(seen) == total == len(set(seen))
    assert SEED_VCO_SHANGHAI not in seen
    assert [c["VpnConnectionId"] for c in by_gateway["VpnConnections"]["VpnConnection"]] == [
        SEED_VCO_HANGZHOU_GW2
    ]
    assert [c["VpnConnectionId"] for c in by_tag["VpnConnections"]["VpnConnection"]] == [SEED_VCO_HANGZHOU]
    [listed] = by_id["VpnConnections"]["VpnConnection"]
    # The list spells tags ``Tag.Tag`` and its BGP block has no EnableBgp (reference §3.3).
    assert "Tag" in listed
    assert "Tags" not in listed
    assert "EnableBgp" not in listed["VpnBgpConfig"]
    assert listed["VpnBgpConfig"]["AuthKey"]
    assert SEED_VCO_SHANGHAI in [c["VpnConnectionId"] for c in shanghai["VpnConnections"]["VpnConnection"]]


@pytest.mark.parametrize("size", ["0", "51", "ten"])
async def test_describe_vpn_connections_rejects_bad_page_size(caller: Caller, size: str) -> None:
    response = await caller.call("DescribeVpnConnections", {**HZ, "PageSize": size})

    assert_error(response, "InvalidParameter", 400)


async def test_describe_vpn_gateway_shape(caller: Caller) -> None:
    body = await caller.ok("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})
    locked = await caller.ok("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_LOCKED})
    reserved = await caller.ok(
        "DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU, "IncludeReservationData": "true"}
    )
    missing = await caller.call("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_SHANGHAI})

    assert (body["VpnGatewayId"], body["Status"], body["BusinessStatus"]) == (
        SEED_VPN_HANGZHOU,
        "active",
        "Normal",
    )
    assert body["VpcId"].startswith("vpc-bp1")
    assert isinstance(body["Tag"], str)
    assert body["Tags"]["Tag"] == [{"Key": "env", "Value": "prod"}]
    assert body["EniInstanceIds"]["EniInstanceId"]
    assert "ReservationData" not in body
    assert "ReservationData" in reserved
    assert locked["BusinessStatus"] == "FinancialLocked"
    assert_error(missing, "InvalidVpnGatewayInstanceId.NotFound", 400)


async def test_describe_vpn_route_entries_shape(caller: Caller) -> None:
    custom = await caller.ok("DescribeVpnRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})
    bgp = await caller.ok(
        "DescribeVpnRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU, "RouteEntryType": "bgp"}
    )

    entries = custom["VpnRouteEntries"]["VpnRouteEntry"]
    assert custom["TotalCount"] == len(entries) == 3
    assert {e["RouteEntryType"] for e in entries} == {"custom"}
    assert {e["NextHop"] for e in entries} == {SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_TUNNELS}
    assert {"RouteDest", "Weight", "State", "CreateTime", "VpnInstanceId"} <= set(entries[0])
    assert {e["NextHop"] for e in bgp["VpnRouteEntries"]["VpnRouteEntry"]} == {SEED_VCO_HANGZHOU_BGP}
    counts = {c["RouteEntryType"]: c["RouteCount"] for c in custom["VpnRouteCounts"]["VpnRouteCount"]}
    assert counts == {"custom": 3, "bgp": 2}


async def test_describe_vpn_pbr_route_entries_shape(caller: Caller) -> None:
    body = await caller.ok("DescribeVpnPbrRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})

    entries = body["VpnPbrRouteEntries"]["VpnPbrRouteEntry"]
    assert body["TotalCount"] == len(entries) == 3
    assert set(entries[0]) >= {"RouteSource", "RouteDest", "NextHop", "Priority", "Weight", "State"}
    assert {e["NextHop"] for e in entries} == {
        SEED_VCO_HANGZHOU,
        SEED_VCO_HANGZHOU_TUNNELS,
        SEED_VCO_HANGZHOU_BGP,
    }


# --- DeleteVpnConnection -------------------------------------------------------------------------------


async def test_delete_updates_gateway_then_connection_and_routes_are_gone(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    body = await caller.ok("DeleteVpnConnection", delete_params(token="tok-1"))

    assert set(body) == {"RequestId"}
    assert await gateway_status(caller) == "updating"
    # While updating the connection is still there (the deletion is in progress).
    await caller.ok("DescribeVpnConnection", delete_params())

    async def active() -> bool:
        return await gateway_status(caller) == "active"

    await eventually(active)
    gone = await caller.call("DescribeVpnConnection", delete_params())
    assert_error(gone, "InvalidVpnConnectionInstanceId.NotFound", 404)
    routes = await caller.ok("DescribeVpnRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})
    pbr = await caller.ok("DescribeVpnPbrRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})
    assert SEED_VCO_HANGZHOU not in {e["NextHop"] for e in routes["VpnRouteEntries"]["VpnRouteEntry"]}
    assert SEED_VCO_HANGZHOU not in {e["NextHop"] for e in pbr["VpnPbrRouteEntries"]["VpnPbrRouteEntry"]}
    # Other connections on the same gateway stay.
    await caller.ok("DescribeVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP))
    assert [r.request_id for r in sandbox.state.accepted("DeleteVpnConnection")] == [body["RequestId"]]


async def test_updating_time_follows_the_injected_clock() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    state = SandboxState(update_seconds=600, clock=lambda: now[0])
    async with await start_vpc_sandbox(state=state) as sandbox, httpx.AsyncClient() as http:
        caller = Caller(http, sandbox.url)

        async def call(action: str, params: dict[str, str]) -> httpx.Response:
            return await caller.call(action, params, clock=lambda: now[0])

        assert (await call("DeleteVpnConnection", delete_params())).status_code == 200
        now[0] += timedelta(seconds=599)
        still = (await call("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})).json()
        now[0] += timedelta(seconds=2)
        done = (await call("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})).json()

    assert still["Status"] == "updating"
    assert done["Status"] == "active"
    assert SEED_VCO_HANGZHOU not in state.connections


async def test_delete_while_gateway_updating_conflicts(caller: Caller) -> None:
    await caller.ok("DeleteVpnConnection", delete_params())
    second = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP))
    same_again = await caller.call("DeleteVpnConnection", delete_params())
    other_gateway = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_GW2))

    assert_error(second, "VpnTask.CONFLICT", 400)
    assert_error(same_again, "VpnTask.CONFLICT", 400)
    assert other_gateway.status_code == 200


async def test_delete_on_financially_locked_gateway_is_refused(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    response = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_LOCKED))

    assert_error(response, "VpnGateway.FinancialLocked", 400)
    assert SEED_VCO_LOCKED in sandbox.state.connections
    assert await gateway_status(caller, SEED_VPN_LOCKED) == "active"


async def test_delete_unknown_connection_is_not_found(caller: Caller) -> None:
    response = await caller.call("DeleteVpnConnection", delete_params("vco-bp1doesnotexist000000"))

    assert_error(response, "InvalidVpnConnectionInstanceId.NotFound", 404)


async def test_client_token_replay_answers_the_first_success(caller: Caller, sandbox: RunningSandbox) -> None:
    first = await caller.call("DeleteVpnConnection", delete_params(token="tok-replay"))
    replay = await caller.call("DeleteVpnConnection", delete_params(token="tok-replay"))
    await eventually(lambda: SEED_VCO_HANGZHOU not in sandbox.state.snapshot()["gateways"][0]["connections"])
    after_done = await caller.call("DeleteVpnConnection", delete_params(token="tok-replay"))

    assert first.status_code == replay.status_code == after_done.status_code == 200
    assert first.json() == replay.json() == after_done.json()
    assert len(sandbox.state.accepted("DeleteVpnConnection")) == 1
    assert [r.outcome for r in sandbox.state.calls("DeleteVpnConnection")] == ["ok", "replayed", "replayed"]


async def test_client_token_with_other_parameters_mismatches(caller: Caller, sandbox: RunningSandbox) -> None:
    await caller.ok("DeleteVpnConnection", delete_params(token="tok-x"))
    other = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_GW2, token="tok-x"))

    assert_error(other, "IdempotentParameterMismatch", 400)
    assert SEED_VCO_HANGZHOU_GW2 in sandbox.state.connections
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU_2].status == "active"


async def test_busy_answer_is_replayed_under_its_token_and_a_fresh_token_goes_through(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", code="VpnTask.CONFLICT", times=1)

    busy = await caller.call("DeleteVpnConnection", delete_params(token="tok-busy"))
    replayed = await caller.call("DeleteVpnConnection", delete_params(token="tok-busy"))
    fresh = await caller.call("DeleteVpnConnection", delete_params(token="tok-busy-2"))

    first = assert_error(busy, "VpnTask.CONFLICT", 400)
    # The documented rule: the same token gets the first answer again, error and RequestId included.
    assert assert_error(replayed, "VpnTask.CONFLICT", 400) == first
    assert fresh.status_code == 200
    assert [r.outcome for r in sandbox.state.calls("DeleteVpnConnection")] == ["fault", "replayed", "ok"]
    assert len(sandbox.state.accepted("DeleteVpnConnection")) == 1


async def test_real_busy_gateway_answer_stays_replayed_after_the_gateway_is_free(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    await caller.ok("DeleteVpnConnection", delete_params(token="tok-first"))
    busy = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP, token="tok-second"))

    async def active() -> bool:
        return await gateway_status(caller) == "active"

    await eventually(active)
    same_token = await caller.call(
        "DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP, token="tok-second")
    )
    new_token = await caller.call(
        "DeleteVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP, token="tok-third")
    )

    body = assert_error(busy, "VpnTask.CONFLICT", 400)
    assert assert_error(same_token, "VpnTask.CONFLICT", 400)["RequestId"] == body["RequestId"]
    assert new_token.status_code == 200
    assert await gateway_status(caller) == "updating"


async def test_server_errors_are_not_kept_under_a_token(caller: Caller, sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", code="InternalError", times=1)

    failed = await caller.call("DeleteVpnConnection", delete_params(token="tok-5xx"))
    retried = await caller.call("DeleteVpnConnection", delete_params(token="tok-5xx"))

    # A 5xx says nothing about what was done: the documented advice is to retry with the same token.
    assert_error(failed, "InternalError", 500)
    assert retried.status_code == 200
    assert len(sandbox.state.accepted("DeleteVpnConnection")) == 1


async def test_operation_errors_are_replayed_and_a_mismatch_is_still_a_mismatch(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    locked = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_LOCKED, token="tok-locked"))
    sandbox.state.gateways[SEED_VPN_LOCKED].business_status = "Normal"  # paid meanwhile
    again = await caller.call("DeleteVpnConnection", delete_params(SEED_VCO_LOCKED, token="tok-locked"))
    other = await caller.call("DeleteVpnConnection", delete_params(token="tok-locked"))

    assert assert_error(again, "VpnGateway.FinancialLocked", 400) == locked.json()
    assert_error(other, "IdempotentParameterMismatch", 400)
    assert SEED_VCO_LOCKED in sandbox.state.connections
    assert sandbox.state.gateways[SEED_VPN_LOCKED].status == "active"


@pytest.mark.parametrize("token", ["x" * 65, "tök"])
async def test_client_token_must_be_short_ascii(caller: Caller, token: str) -> None:
    response = await caller.call("DeleteVpnConnection", delete_params(token=token))

    assert_error(response, "InvalidParameter", 400)


# --- fault injection --------------------------------------------------------------------------------


async def test_fault_code_fires_the_given_number_of_times(caller: Caller, sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", code="VpnTask.CONFLICT", times=2)

    answers = [await caller.call("DeleteVpnConnection", delete_params()) for _ in range(3)]
    described = await caller.call("DescribeVpnGateway", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU})

    assert [a.status_code for a in answers] == [400, 400, 200]
    assert_error(answers[0], "VpnTask.CONFLICT", 400)
    assert described.status_code == 200  # other actions untouched
    assert [r.outcome for r in sandbox.state.calls("DeleteVpnConnection")] == ["fault", "fault", "ok"]


# Codes with no API message are the client's own (no answer, no credentials): nothing to send.
@pytest.mark.parametrize("code", sorted(c for c, info in ERROR_TABLE.items() if info.api_message))
async def test_every_table_code_can_be_injected(caller: Caller, sandbox: RunningSandbox, code: str) -> None:
    sandbox.state.faults.add(code=code, times=1)

    response = await caller.call("DescribeRegions")

    expected = ERROR_TABLE[code].http_status or 500
    body = assert_error(response, code, expected)
    assert body["Message"] == ERROR_TABLE[code].api_message


async def test_fault_can_override_status_message_and_send_retry_after(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    sandbox.state.faults.add(
        code="Throttling.User", http_status=429, message="slow down", retry_after_ms=1500, times=1
    )

    response = await caller.call("DescribeRegions")

    body = assert_error(response, "Throttling.User", 429)
    assert body["Message"] == "slow down"
    assert response.headers["x-acs-retry-after"] == "1500"


async def test_raw_status_fault_answers_without_json(caller: Caller, sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(http_status=503, times=1)

    response = await caller.call("DescribeRegions")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_non_json_fault(caller: Caller, sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(non_json=True, times=1)

    response = await caller.call("DescribeRegions")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("spec", [{"drop": True}, {"code": "Transport.ConnectError"}])
async def test_drop_fault_closes_the_connection(
    caller: Caller, sandbox: RunningSandbox, spec: dict[str, Any]
) -> None:
    sandbox.state.faults.add(times=1, **spec)

    with pytest.raises(httpx.RemoteProtocolError):
        await caller.call("DescribeRegions")
    assert (await caller.call("DescribeRegions")).status_code == 200
    assert sandbox.state.requests[0].status == 0


async def test_latency_fault_delays_then_answers_normally(caller: Caller, sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(action="DescribeRegions", latency=0.3, times=1)

    started = time.monotonic()
    response = await caller.call("DescribeRegions")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


async def test_latency_fault_times_out_a_short_client(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.add(latency=0.4, times=1)
    async with httpx.AsyncClient(timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await Caller(http, sandbox.url).call("DescribeRegions")


@pytest.mark.parametrize("spec", [{"drop_after": True}, {"drop": True, "after_processing": True}])
async def test_answer_lost_after_processing_then_token_retry_gets_first_answer(
    caller: Caller, sandbox: RunningSandbox, spec: dict[str, Any]
) -> None:
    created = await caller.http.post(
        f"{sandbox.url}/_sandbox/faults", json={"action": "DeleteVpnConnection", "times": 1, **spec}
    )
    assert created.status_code == 201

    with pytest.raises(httpx.RemoteProtocolError):
        await caller.call("DeleteVpnConnection", delete_params(token="tok-lost"))
    retry = await caller.ok("DeleteVpnConnection", delete_params(token="tok-lost"))

    lost, replayed = sandbox.state.calls("DeleteVpnConnection")
    assert (lost.outcome, lost.status, replayed.outcome) == ("ok", 0, "replayed")
    assert retry["RequestId"] == lost.request_id
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU].status == "updating"


async def test_fault_matches_params_and_skips_the_first_matches(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    sandbox.state.faults.add(
        action="DescribeVpnConnection",
        params={"VpnConnectionId": SEED_VCO_HANGZHOU},
        code="InternalError",
        after=1,
    )

    first = await caller.call("DescribeVpnConnection", delete_params())
    second = await caller.call("DescribeVpnConnection", delete_params())
    other = await caller.call("DescribeVpnConnection", delete_params(SEED_VCO_HANGZHOU_BGP))

    assert first.status_code == 200
    assert_error(second, "InternalError", 500)
    assert other.status_code == 200


@pytest.mark.parametrize(
    "spec",
    [{}, {"drop": True, "non_json": True}, {"code": "X", "latency": -1}, {"bogus": 1}, {"http_status": 42}],
)
def test_invalid_fault_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"fault|latency|unknown|status"):
        SandboxState().faults.add_from_mapping(spec)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
async def test_faults_file_loads_json_and_yaml(
    caller: Caller, sandbox: RunningSandbox, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"faults{suffix}"
    if suffix == ".json":
        path.write_text(
            json.dumps({"faults": [{"action": "DescribeRegions", "code": "Throttling.User", "times": 1}]})
        )
    else:
        path.write_text("- action: DescribeRegions\n  code: Throttling.User\n  times: 1\n")

    sandbox.state.faults.load(load_faults_file(str(path)))

    assert_error(await caller.call("DescribeRegions"), "Throttling.User", 400)
    assert (await caller.call("DescribeRegions")).status_code == 200


# --- the HTTP control endpoints --------------------------------------------------------------------


async def test_control_faults_over_http(caller: Caller, sandbox: RunningSandbox) -> None:
    http, base = caller.http, sandbox.url

    created = await http.post(
        f"{base}/_sandbox/faults", json=[{"action": "DeleteVpnConnection", "code": "VpnTask.CONFLICT"}]
    )
    listed = (await http.get(f"{base}/_sandbox/faults")).json()
    conflict = await caller.call("DeleteVpnConnection", delete_params())
    removed = await http.delete(f"{base}/_sandbox/faults/{created.json()[0]['id']}")
    accepted = await caller.call("DeleteVpnConnection", delete_params())
    bad = await http.post(f"{base}/_sandbox/faults", json=[{"latency": 1}, {"code": "X", "drop": True}])
    not_json = await http.post(f"{base}/_sandbox/faults", content=b"{nope")

    assert created.status_code == 201
    assert [f["code"] for f in listed] == ["VpnTask.CONFLICT"]
    assert_error(conflict, "VpnTask.CONFLICT", 400)
    assert removed.status_code == 200
    assert accepted.status_code == 200
    assert bad.status_code == 400
    assert "one way" in bad.json()["error"]
    assert [f.code for f in sandbox.state.faults.rules] == []  # all or nothing
    assert not_json.status_code == 400
    await http.post(f"{base}/_sandbox/faults", json={"latency": 9})
    assert (await http.delete(f"{base}/_sandbox/faults")).status_code == 200
    assert sandbox.state.faults.rules == []


async def test_control_state_requests_reset_and_settings(caller: Caller, sandbox: RunningSandbox) -> None:
    http, base = caller.http, sandbox.url
    await caller.ok("DeleteVpnConnection", delete_params(token="tok-state"))

    state_response = await http.get(f"{base}/_sandbox/state")
    requests = (await http.get(f"{base}/_sandbox/requests", params={"action": "DeleteVpnConnection"})).json()
    settings = (await http.post(f"{base}/_sandbox/settings", json={"update_seconds": 7})).json()
    refused = await http.post(f"{base}/_sandbox/settings", json={"update_seconds": "soon"})
    reset = await http.post(f"{base}/_sandbox/reset", json={"update_seconds": 0.5})
    after = (await http.get(f"{base}/_sandbox/state")).json()

    state = state_response.json()
    gateways = {g["id"]: g for g in state["gateways"]}
    assert gateways[SEED_VPN_HANGZHOU]["status"] == "updating"
    assert gateways[SEED_VPN_HANGZHOU]["pending_delete"] == SEED_VCO_HANGZHOU
    assert gateways[SEED_VPN_LOCKED]["business_status"] == "FinancialLocked"
    # Secrets never leave through the control API.
    assert "sandbox-psk" not in state_response.text
    assert "sandbox-bgp" not in state_response.text
    assert [(r["action"], r["client_token"], r["outcome"]) for r in requests] == [
        ("DeleteVpnConnection", "tok-state", "ok")
    ]
    assert settings == {"update_seconds": 7.0}
    assert refused.status_code == 400
    assert reset.status_code == 200
    assert after["update_seconds"] == 0.5
    assert after["requests"] == []
    assert {g["status"] for g in after["gateways"]} == {"active"}
    assert SEED_VCO_HANGZHOU in {c["id"] for c in after["connections"]}
    # A reset forgets tokens too: the same token runs again.
    assert (await caller.ok("DeleteVpnConnection", delete_params(token="tok-state")))["RequestId"]
    assert len(sandbox.state.accepted("DeleteVpnConnection")) == 1


# --- secrets, lifecycle and the CLI entry point ---------------------------------------------------


def test_reprs_hide_secrets(sandbox: RunningSandbox) -> None:
    conn = sandbox.state.connections[SEED_VCO_HANGZHOU_BGP]
    assert conn.bgp is not None

    shown = repr(conn) + repr(sandbox)

    assert conn.psk not in shown
    assert conn.bgp.auth_key not in shown
    assert DEMO_ACCESS_KEY_SECRET not in shown


def test_seed_ids_look_real() -> None:
    state = SandboxState()
    ids = [*state.gateways, *state.connections, *(c.customer_gateway_id for c in state.connections.values())]

    assert all(re.fullmatch(r"(vpn|vco|cgw)-(bp1|uf6)[a-z0-9]{18}", i) for i in ids), ids
    assert len(state.gateways) >= 3
    assert {g.region for g in state.gateways.values()} == {SEED_REGION, SEED_REGION_OTHER}


async def test_close_does_not_wait_for_injected_latency() -> None:
    sandbox = await start_vpc_sandbox()
    sandbox.state.faults.add(latency=60)
    async with httpx.AsyncClient(timeout=10.0) as http:
        pending = asyncio.create_task(Caller(http, sandbox.url).call("DescribeRegions"))
        await eventually(lambda: sandbox.state.faults.rules[0].fired == 1)
        # Closing does not wait out the 60 s latency of the request in flight.
        await asyncio.wait_for(sandbox.close(), timeout=10)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def test_serve_forever_prints_demo_keys_and_loads_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", raising=False)
    faults = tmp_path / "faults.yaml"
    faults.write_text(
        "seed_connections: 60\nfaults:\n  - {action: DescribeRegions, code: Throttling.User, times: 1}\n"
    )
    printed: list[str] = []

    def banner() -> bool:
        printed.append(capsys.readouterr().out)
        return "listening on" in "".join(printed)

    task = asyncio.create_task(serve_forever("127.0.0.1", 0, str(faults), UPDATE_SECONDS))
    try:
        await eventually(banner)
        out = "".join(printed)
        url = re.search(r"listening on (http://\S+)", out)
        assert url is not None
        assert DEMO_ACCESS_KEY_ID in out
        assert DEMO_ACCESS_KEY_SECRET in out
        assert "1 fault(s), 67 connection(s) in all" in out  # 7 seeded + 60 from the file
        async with httpx.AsyncClient() as http:
            caller = Caller(http, url.group(1))
            throttled = await caller.call("DescribeRegions")
            fine = await caller.call("DescribeRegions")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert_error(throttled, "Throttling.User", 400)
    assert fine.status_code == 200


@pytest.mark.parametrize("code", ["Throttling.User", "SignatureNonceUsed", "InvalidTimeStamp.Expired"])
async def test_api_gateway_refusals_are_not_kept_under_a_token(
    caller: Caller, sandbox: RunningSandbox, code: str
) -> None:
    sandbox.state.faults.add(action="DeleteVpnConnection", code=code, times=1)

    refused = await caller.call("DeleteVpnConnection", delete_params(token="tok-gateway"))
    retried = await caller.call("DeleteVpnConnection", delete_params(token="tok-gateway"))

    # The API gateway answered before the VPC service saw the token: the retry runs.
    assert_error(refused, code, 400)
    assert retried.status_code == 200
    assert [r.outcome for r in sandbox.state.calls("DeleteVpnConnection")] == ["fault", "ok"]
