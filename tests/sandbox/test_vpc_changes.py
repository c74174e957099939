"""The VPC sandbox's create operations, routes and bulk seeding, over real loopback HTTP."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from vpc_sandbox_support import DEMO, Caller, eventually

from bot.cloud.codes import ERROR_TABLE
from bot.cloud.signer import AcsV3Auth, canonical_query
from bot.sandbox.vpc import RunningSandbox, load_faults_file, start_vpc_sandbox
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_REGION_OTHER,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_GW2,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VPN_HANGZHOU,
    SEED_VPN_HANGZHOU_2,
    SEED_VPN_LOCKED,
    SandboxState,
)

HZ = {"RegionId": SEED_REGION}
GW2 = {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU_2}


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def single_tunnel(**extra: str) -> dict[str, str]:
    return {
        **GW2,
        "CustomerGatewayId": "cgw-bp1n3wn3wn3wn3wn3wn3wa",
        "Name": "office-recreated",
        "LocalSubnet": "10.30.0.0/16,10.31.0.0/16",
        "RemoteSubnet": "192.168.30.0/24",
        "EffectImmediately": "true",
        "IkeConfig": _json(
            {"Psk": "new-key-42!", "IkeVersion": "ikev2", "IkeEncAlg": "aes256", "IkeLifetime": 28800}
        ),
        "IpsecConfig": _json({"IpsecEncAlg": "aes256", "IpsecAuthAlg": "sha256", "IpsecPfs": "disabled"}),
        "HealthCheckConfig": _json(
            {"enable": "true", "dip": "10.30.0.1", "sip": "169.254.31.1", "retry": "5"}
        ),
        "BgpConfig": _json({"EnableBgp": "true", "LocalAsn": "65100", "TunnelCidr": "169.254.31.0/30"}),
        "Tags.1.Key": "team",
        "Tags.1.Value": "netops",
        **extra,
    }


def dual_tunnel() -> dict[str, str]:
    params = {**GW2, "LocalSubnet": "0.0.0.0/0", "RemoteSubnet": "0.0.0.0/0", "EnableTunnelsBgp": "true"}
    for index, role in ((1, "master"), (2, "slave")):
        prefix = f"TunnelOptionsSpecification.{index}"
        params |= {
            f"{prefix}.CustomerGatewayId": f"cgw-bp1dua1tunne1{index}xxxxxa",
            f"{prefix}.Role": role,
            f"{prefix}.EnableDpd": "false",
            f"{prefix}.TunnelIkeConfig.Psk": f"tunnel-key-{index}",
            f"{prefix}.TunnelIkeConfig.IkeVersion": "ikev2",
            f"{prefix}.TunnelIpsecConfig.IpsecLifetime": "3600",
            f"{prefix}.TunnelBgpConfig.LocalAsn": "65200",
            f"{prefix}.TunnelBgpConfig.TunnelCidr": f"169.254.4{index}.0/30",
        }
    return params


def route(**extra: str) -> dict[str, str]:
    return {
        **HZ,
        "VpnGatewayId": SEED_VPN_HANGZHOU,
        "RouteDest": "192.168.99.0/24",
        "NextHop": SEED_VCO_HANGZHOU,
        "PublishVpc": "true",
        "Weight": "100",
        "Description": "recreated",
        **extra,
    }


def assert_code(response: httpx.Response, code: str) -> None:
    """The error answer for ``code``, with the status from the bot's error table (400 otherwise)."""
    info = ERROR_TABLE.get(code)
    assert response.status_code == (info.http_status if info and info.http_status else 400), response.text
    assert response.json()["Code"] == code


async def settled(caller: Caller, gateway_id: str) -> None:
    async def active() -> bool:
        body = await caller.ok("DescribeVpnGateway", {**HZ, "VpnGatewayId": gateway_id})
        return bool(body["Status"] == "active")

    await eventually(active)


async def all_pages(caller: Caller, action: str, params: dict[str, str], list_key: str) -> list[Any]:
    """Page through ``action`` 50 at a time, checking TotalCount, PageNumber and PageSize."""
    items: list[Any] = []
    number = 1
    while True:
        body = await caller.ok(action, {**params, "PageNumber": str(number), "PageSize": "50"})
        assert (body["PageNumber"], body["PageSize"]) == (number, 50)
        [inner] = body[list_key].values()
        items += inner
        if number * 50 >= body["TotalCount"]:
            assert len(items) == body["TotalCount"]
            return items
        assert len(inner) == 50
        number += 1


# --- CreateVpnConnection ------------------------------------------------------------------------


async def test_create_single_tunnel_connection_is_asynchronous_and_keeps_its_settings(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    created = await caller.ok("CreateVpnConnection", single_tunnel(ClientToken="tok-create"))
    status_after = (await caller.ok("DescribeVpnGateway", GW2))["Status"]
    busy = await caller.call("CreateVpnConnection", single_tunnel(Name="second"))
    await settled(caller, SEED_VPN_HANGZHOU_2)
    described = await caller.ok(
        "DescribeVpnConnection", {**HZ, "VpnConnectionId": created["VpnConnectionId"]}
    )

    assert set(created) == {"RequestId", "VpnConnectionId", "Name", "CreateTime"}
    assert created["VpnConnectionId"].startswith("vco-bp1")
    assert created["Name"] == "office-recreated"
    assert status_after == "updating"
    assert_code(busy, "VpnGateway.Configuring")
    assert described["VpnGatewayId"] == SEED_VPN_HANGZHOU_2
    assert described["LocalSubnet"] == "10.30.0.0/16,10.31.0.0/16"
    assert described["EffectImmediately"] is True
    assert described["IkeConfig"] | {"LocalId": "", "RemoteId": ""} == {
        "IkeVersion": "ikev2",
        "IkeMode": "main",
        "IkeEncAlg": "aes256",
        "IkeAuthAlg": "md5",
        "IkePfs": "group2",
        "IkeLifetime": 28800,
        "LocalId": "",
        "RemoteId": "",
        "Psk": "new-key-42!",
    }
    assert described["IpsecConfig"]["IpsecPfs"] == "disabled"
    assert described["VcoHealthCheck"]["Enable"] == "true"
    assert (described["VcoHealthCheck"]["Dip"], described["VcoHealthCheck"]["Retry"]) == ("10.30.0.1", 5)
    bgp = described["VpnBgpConfig"]
    assert (bgp["EnableBgp"], bgp["LocalAsn"], bgp["LocalBgpIp"], bgp["PeerBgpIp"]) == (
        "true",
        65100,
        "169.254.31.1",
        "169.254.31.2",
    )
    assert described["Tags"] == {"Tag": [{"Key": "team", "Value": "netops"}]}
    assert len(sandbox.state.accepted("CreateVpnConnection")) == 1


async def test_create_dual_tunnel_connection_from_a_form_body(sandbox: RunningSandbox) -> None:
    # As the official SDK sends it: TunnelOptionsSpecification in a signed form body.
    params = dual_tunnel()
    query = {k: v for k, v in params.items() if not k.startswith("TunnelOptions")}
    body = urlencode({k: v for k, v in params.items() if k.startswith("TunnelOptions")}).encode()
    async with httpx.AsyncClient() as http:
        request = http.build_request(
            "POST",
            f"{sandbox.url}/?{canonical_query(query)}",
            headers={
                "x-acs-action": "CreateVpnConnection",
                "x-acs-version": "2016-04-28",
                "content-type": "application/x-www-form-urlencoded",
            },
            content=body,
        )
        created = (await http.send(request, auth=AcsV3Auth(DEMO))).json()
        described = await Caller(http, sandbox.url).ok(
            "DescribeVpnConnection", {**HZ, "VpnConnectionId": created["VpnConnectionId"]}
        )

    tunnels = described["TunnelOptionsSpecification"]["TunnelOptions"]
    assert [t["Role"] for t in tunnels] == ["master", "slave"]
    assert [t["TunnelIkeConfig"]["Psk"] for t in tunnels] == ["tunnel-key-1", "tunnel-key-2"]
    assert tunnels[0]["EnableDpd"] == "false"
    assert tunnels[0]["TunnelIpsecConfig"]["IpsecLifetime"] == "3600"
    assert tunnels[1]["TunnelBgpConfig"] | {"BgpStatus": ""} == {
        "BgpStatus": "",
        "LocalAsn": "65200",
        "LocalBgpIp": "169.254.42.1",
        "PeerAsn": "",
        "PeerBgpIp": "169.254.42.2",
        "TunnelCidr": "169.254.42.0/30",
    }
    assert described["EnableTunnelsBgp"] is True
    assert "IkeConfig" not in described


async def test_auto_config_route_adds_a_published_route_per_remote_subnet_unless_false(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    subnets = "192.168.30.0/24,192.168.31.0/24"
    auto = await caller.ok("CreateVpnConnection", single_tunnel(RemoteSubnet=subnets))
    await settled(caller, SEED_VPN_HANGZHOU_2)
    manual = await caller.ok(
        "CreateVpnConnection",
        single_tunnel(
            RemoteSubnet=subnets,
            AutoConfigRoute="false",
            BgpConfig=_json({"EnableBgp": "true", "TunnelCidr": "169.254.32.0/30"}),
        ),
    )
    await settled(caller, SEED_VPN_HANGZHOU_2)

    def through(vco_id: str) -> set[tuple[str, str]]:
        return {(r.dest, r.state) for r in sandbox.state.routes if r.next_hop == vco_id}

    # The default (true): Alibaba adds the routes itself once the connection is set up.
    assert through(auto["VpnConnectionId"]) == {
        ("192.168.30.0/24", "published"),
        ("192.168.31.0/24", "published"),
    }
    assert through(manual["VpnConnectionId"]) == set()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"LocalSubnet": ""}, "MissingParameter"),
        ({"CustomerGatewayId": ""}, "MissingParameter"),
        ({"LocalSubnet": "10.0.0.0/33"}, "IllegalParam.LocalSubnet"),
        ({"RemoteSubnet": "not-a-cidr"}, "IllegalParam.RemoteSubnet"),
        ({"IkeConfig": '{"Psk": "has space"}'}, "InvalidParameter"),
        ({"IkeConfig": '{"IkeVersion": "ikev3"}'}, "InvalidParameter"),
        ({"IkeConfig": '{"Bogus": 1}'}, "InvalidParameter"),
        ({"IkeConfig": "{not json"}, "InvalidParameter"),
        ({"IpsecConfig": '{"IpsecLifetime": 90000}'}, "InvalidParameter"),
        ({"BgpConfig": '{"EnableBgp": "true", "TunnelCidr": "10.0.0.0/30"}'}, "InvalidParameter"),
        ({"HealthCheckConfig": '{"enable": "true"}'}, "InvalidParameter"),
        # Keys CreateVpnConnection's docstring (SDK 7.2.x) does not document are refused.
        (
            {"BgpConfig": '{"EnableBgp": "true", "TunnelCidr": "169.254.31.0/30", "AuthKey": "k"}'},
            "InvalidParameter",
        ),
        (
            {"HealthCheckConfig": '{"enable": "true", "dip": "10.30.0.1", "policy": "reserve_route"}'},
            "InvalidParameter",
        ),
        ({"EnableDpd": "yes"}, "InvalidParameter"),
        ({"Name": "https://example.com"}, "InvalidParameter"),
        ({"VpnGatewayId": "vpn-bp1doesnotexist0000000"}, "InvalidVpnGatewayInstanceId.NotFound"),
        ({"VpnGatewayId": SEED_VPN_LOCKED}, "VpnGateway.FinancialLocked"),
        ({"DryRun": "true"}, "DryRunOperation"),
    ],
)
async def test_create_connection_refusals_change_nothing(
    caller: Caller, sandbox: RunningSandbox, change: dict[str, str], code: str
) -> None:
    before = set(sandbox.state.connections)

    response = await caller.call("CreateVpnConnection", single_tunnel(**change))

    assert_code(response, code)
    assert set(sandbox.state.connections) == before
    assert {g.status for g in sandbox.state.gateways.values()} == {"active"}


async def test_create_replays_under_its_token(caller: Caller, sandbox: RunningSandbox) -> None:
    first = await caller.ok("CreateVpnConnection", single_tunnel(ClientToken="tok-once"))
    await settled(caller, SEED_VPN_HANGZHOU_2)
    again = await caller.ok("CreateVpnConnection", single_tunnel(ClientToken="tok-once"))
    other = await caller.call("CreateVpnConnection", single_tunnel(ClientToken="tok-once", Name="other"))

    assert again == first
    assert_code(other, "IdempotentParameterMismatch")
    names = [c.name for c in sandbox.state.connections.values() if c.gateway_id == SEED_VPN_HANGZHOU_2]
    assert names.count("office-recreated") == 1


async def test_create_answer_lost_then_retry_with_the_token_gets_the_new_id(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    # Long enough that the gateway is still updating at the last assertion, however busy the machine.
    sandbox.state.update_seconds = 30.0
    sandbox.state.faults.add(action="CreateVpnConnection", drop_after=True, times=1)

    with pytest.raises(httpx.RemoteProtocolError):
        await caller.call("CreateVpnConnection", single_tunnel(ClientToken="tok-lost-create"))
    retry = await caller.ok("CreateVpnConnection", single_tunnel(ClientToken="tok-lost-create"))

    assert retry["VpnConnectionId"] in sandbox.state.connections
    assert [c.outcome for c in sandbox.state.calls("CreateVpnConnection")] == ["ok", "replayed"]
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU_2].pending_create == retry["VpnConnectionId"]


# --- routes ---------------------------------------------------------------------------------------


async def test_create_route_entries_then_they_are_listed_and_go_with_their_connection(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    created = await caller.ok("CreateVpnRouteEntry", route(ClientToken="tok-route"))
    busy = await caller.call("CreateVpnPbrRouteEntry", route(RouteSource="10.10.9.0/24"))
    await settled(caller, SEED_VPN_HANGZHOU)
    pbr = await caller.ok(
        "CreateVpnPbrRouteEntry", route(RouteSource="10.10.9.0/24", Priority="7", Weight="0")
    )
    await settled(caller, SEED_VPN_HANGZHOU)
    listed = await all_pages(
        caller, "DescribeVpnRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU}, "VpnRouteEntries"
    )
    listed_pbr = await all_pages(
        caller, "DescribeVpnPbrRouteEntries", {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU}, "VpnPbrRouteEntries"
    )
    await caller.ok("DeleteVpnConnection", {**HZ, "VpnConnectionId": SEED_VCO_HANGZHOU})
    await settled(caller, SEED_VPN_HANGZHOU)

    assert created | {"RequestId": "", "CreateTime": 0} == {
        "RequestId": "",
        "VpnInstanceId": SEED_VPN_HANGZHOU,
        "RouteDest": "192.168.99.0/24",
        "NextHop": SEED_VCO_HANGZHOU,
        "Weight": 100,
        "OverlayMode": "Ipsec",
        "Description": "recreated",
        "CreateTime": 0,
        "State": "published",
    }
    assert_code(busy, "VpnGateway.Configuring")
    assert (pbr["RouteSource"], pbr["Priority"], pbr["Weight"]) == ("10.10.9.0/24", 7, 0)
    assert ("192.168.99.0/24", SEED_VCO_HANGZHOU) in {(r["RouteDest"], r["NextHop"]) for r in listed}
    assert ("10.10.9.0/24", SEED_VCO_HANGZHOU) in {(r["RouteSource"], r["NextHop"]) for r in listed_pbr}
    # Deleting the connection took every route whose next hop it was, the new ones included.
    assert {r.next_hop for r in sandbox.state.routes + sandbox.state.pbr_routes}.isdisjoint(
        {SEED_VCO_HANGZHOU}
    )
    assert any(r.next_hop == SEED_VCO_HANGZHOU_BGP for r in sandbox.state.pbr_routes)


@pytest.mark.parametrize(
    ("action", "change", "code"),
    [
        ("CreateVpnRouteEntry", {"RouteDest": "0.0.0.0/0"}, "InvalidParameter"),
        ("CreateVpnRouteEntry", {"RouteDest": "100.64.1.0/24"}, "InvalidParameter"),
        ("CreateVpnRouteEntry", {"Weight": "50"}, "InvalidParameter"),
        ("CreateVpnRouteEntry", {"PublishVpc": ""}, "MissingParameter"),
        (
            "CreateVpnRouteEntry",
            {"NextHop": SEED_VCO_HANGZHOU_GW2},
            "InvalidVpnConnectionInstanceId.NotFound",
        ),
        ("CreateVpnRouteEntry", {"RouteDest": "192.168.10.0/24"}, "Sandbox.RouteEntryExists"),
        ("CreateVpnRouteEntry", {"DryRun": "true"}, "DryRunOperation"),
        ("CreateVpnPbrRouteEntry", {}, "MissingParameter"),
        ("CreateVpnPbrRouteEntry", {"RouteSource": "10.0.0.0/8", "Priority": "0"}, "InvalidParameter"),
        (
            "CreateVpnPbrRouteEntry",
            {"RouteSource": "10.10.1.0/24", "RouteDest": "192.168.10.128/25"},
            "Sandbox.RouteEntryExists",
        ),
    ],
)
async def test_route_refusals_change_nothing(
    caller: Caller, sandbox: RunningSandbox, action: str, change: dict[str, str], code: str
) -> None:
    before = (list(sandbox.state.routes), list(sandbox.state.pbr_routes))

    response = await caller.call(action, route(**change))

    assert_code(response, code)
    assert (sandbox.state.routes, sandbox.state.pbr_routes) == before
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU].status == "active"


async def test_route_entries_page_with_total_count(caller: Caller) -> None:
    params = {**HZ, "VpnGatewayId": SEED_VPN_HANGZHOU, "RouteEntryType": "bgp", "PageSize": "1"}
    first = await caller.ok("DescribeVpnRouteEntries", params)
    second = await caller.ok("DescribeVpnRouteEntries", {**params, "PageNumber": "2"})
    past = await caller.ok("DescribeVpnRouteEntries", {**params, "PageNumber": "3"})

    assert first["TotalCount"] == second["TotalCount"] == 2
    [a], [b] = first["VpnRouteEntries"]["VpnRouteEntry"], second["VpnRouteEntries"]["VpnRouteEntry"]
    assert a["RouteDest"] != b["RouteDest"]
    assert past["VpnRouteEntries"]["VpnRouteEntry"] == []


# --- seeded connections, for paging -----------------------------------------------------------------


async def test_reset_with_seed_connections_pages_fifty_at_a_time(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    reset = await caller.http.post(f"{sandbox.url}/_sandbox/reset", json={"seed_connections": 500})
    listed = await all_pages(caller, "DescribeVpnConnections", HZ, "VpnConnections")
    one_gateway = await caller.ok(
        "DescribeVpnConnections", {**HZ, "VpnGatewayId": listed[-1]["VpnGatewayId"], "PageSize": "50"}
    )
    one = await caller.ok("DescribeVpnConnections", {**HZ, "VpnConnectionId": listed[200]["VpnConnectionId"]})
    shanghai = await caller.ok("DescribeVpnConnections", {"RegionId": SEED_REGION_OTHER})

    ids = [c["VpnConnectionId"] for c in listed]
    assert reset.status_code == 200
    assert len(ids) == len(set(ids)) == 500 + 5  # the five seeded Hangzhou connections stay
    assert {SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_TUNNELS} <= set(ids)
    assert one_gateway["TotalCount"] == 50
    assert [c["VpnConnectionId"] for c in one["VpnConnections"]["VpnConnection"]] == [ids[200]]
    assert shanghai["TotalCount"] == 2
    assert sum("office" in c["Name"] for c in listed) > 50  # names to filter on


@pytest.mark.parametrize("value", [-1, "many", {"mars-1": 3}, True])
async def test_bad_seed_connections_are_refused_and_change_nothing(
    caller: Caller, sandbox: RunningSandbox, value: Any
) -> None:
    await caller.ok("DeleteVpnConnection", {**HZ, "VpnConnectionId": SEED_VCO_HANGZHOU})

    refused = await caller.http.post(f"{sandbox.url}/_sandbox/reset", json={"seed_connections": value})

    assert refused.status_code == 400
    assert "seed_connections" in refused.json()["error"]
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU].status == "updating"  # no reset happened


def test_sandbox_file_seeds_connections_and_loads_faults(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.yaml"
    path.write_text(
        "seed_connections: {cn-hangzhou: 120, cn-shanghai: 3}\n"
        "faults:\n  - {action: DeleteVpnConnection, drop_after: true, times: 1}\n"
    )
    state = SandboxState()

    state.load_config(load_faults_file(str(path)))

    regions = [c.region for c in state.connections.values()]
    assert (regions.count(SEED_REGION), regions.count(SEED_REGION_OTHER)) == (5 + 120, 2 + 3)
    [fault] = state.faults.rules
    assert (fault.drop, fault.after_processing, fault.times) == (True, True, 1)


@pytest.mark.parametrize(
    "data",
    [
        {"seed_connections": 10, "bogus": 1},
        {"seed_connections": 10, "faults": [{"code": "X", "drop": True}]},
        {"seed_connections": 10_001},
    ],
)
def test_bad_sandbox_files_are_all_or_nothing(data: dict[str, Any]) -> None:
    state = SandboxState()
    before = set(state.connections)

    with pytest.raises(ValueError, match=r"sandbox file|one way|seed_connections"):
        state.load_config(data)

    assert set(state.connections) == before
    assert state.faults.rules == []


def test_seeded_connections_carry_secrets_for_secret_tests() -> None:
    state = SandboxState()

    bgp = state.connections[SEED_VCO_HANGZHOU_BGP]
    tunnels = state.connections[SEED_VCO_HANGZHOU_TUNNELS]

    assert bgp.bgp is not None
    assert bgp.health_check is not None
    assert set(bgp.secrets) == {bgp.psk, bgp.bgp.auth_key}
    assert len(tunnels.secrets) == 2  # each tunnel has its own key
    assert all(t.bgp is not None for t in tunnels.tunnels)


# --- keys stay out of the control API and the access log --------------------------------------------


async def test_keys_of_create_calls_stay_out_of_the_control_api(
    caller: Caller, sandbox: RunningSandbox
) -> None:
    created = await caller.ok("CreateVpnConnection", single_tunnel(ClientToken="tok-keys"))
    await settled(caller, SEED_VPN_HANGZHOU_2)
    dual = await caller.ok("CreateVpnConnection", dual_tunnel())

    requests = await caller.http.get(
        f"{sandbox.url}/_sandbox/requests", params={"action": "CreateVpnConnection"}
    )
    state = await caller.http.get(f"{sandbox.url}/_sandbox/state")

    for text in (requests.text, state.text):
        for secret in ("new-key-42!", "tunnel-key-1", "tunnel-key-2"):
            assert secret not in text
    first = requests.json()[0]["params"]
    assert json.loads(first["IkeConfig"])["IkeVersion"] == "ikev2"  # the rest stays readable
    assert json.loads(first["IkeConfig"])["Psk"] == "***"
    # In memory the recording keeps what was sent, for tests to assert on.
    assert "new-key-42!" in sandbox.state.accepted("CreateVpnConnection")[0].params["IkeConfig"]
    # Once set up, the new connection's tunnel is up (the sandbox's peers always answer).
    assert sandbox.state.connections[created["VpnConnectionId"]].status == "ipsec_sa_established"
    assert sandbox.state.gateways[SEED_VPN_HANGZHOU_2].pending_create == dual["VpnConnectionId"]


async def test_access_log_names_the_action_but_not_the_query(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with await start_vpc_sandbox(access_log=True) as sandbox, httpx.AsyncClient() as http:
        await Caller(http, sandbox.url).ok("CreateVpnConnection", single_tunnel())

    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any('"POST / CreateVpnConnection" 200' in line for line in lines), lines
    assert not any("new-key-42!" in line or "IkeConfig" in line for line in lines)
