"""The bot's VPC requests and the sandbox's answers, checked against the official SDK (the oracle).

The client in bot/cloud and the sandbox in bot/sandbox were written by the same hands, so a
wrong parameter name in both would pass every other test. Here the bot's real requests (captured
on the wire by an httpx event hook while it talks to the sandbox) are read back through the
official ``alibabacloud-vpc20160428`` SDK (tests/cloud/oracle.py): every parameter must be a
field of the SDK's ``<Action>Request`` with the SDK's type (booleans ``true``/``false``, integers
as digits, JSON-text parameters with only the keys the SDK documents), and the SDK, given that
request, must send the same names with the same values in the same place (query or form body).
Each answer of the sandbox must survive the SDK's ``<Action>Response`` unchanged, and the bot's
model must read the same from the SDK's view of it as from the raw answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import typing
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from alibabacloud_vpc20160428 import models as vpc_models
from pydantic import BaseModel, SecretStr

from bot.cloud import models as bot_models
from bot.cloud.adapter import VpcAdapter
from bot.cloud.client import VpcClient
from bot.cloud.credentials import StaticCredentialsProvider
from bot.cloud.signer import AcsV3Auth, Credentials, canonical_query
from bot.cloud.specs import VpnConnectionSpec
from bot.domain import SnapshotRoute
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, OPERATIONS, start_vpc_sandbox
from bot.sandbox.vpc_params import JSON_PARAMETERS, PARAMETERS, unknown_parameters
from bot.sandbox.vpc_state import (
    SEED_REGION,
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_TUNNELS,
    SandboxState,
)

from .oracle import (
    capture_sdk_call,
    leaf_types,
    model_fields,
    sdk_request_from_wire,
    sdk_schema,
    sdk_wire_value,
    type_problems,
)

# The bot's model of each action's answer (what VpcClient._get validates it with).
BOT_MODELS: dict[str, type[BaseModel]] = {
    "DescribeRegions": bot_models.DescribeRegionsResponse,
    "DescribeVpnConnection": bot_models.VpnConnectionDetail,
    "DescribeVpnConnections": bot_models.DescribeVpnConnectionsPage,
    "DescribeVpnGateway": bot_models.VpnGatewayDetail,
    "DescribeCustomerGateway": bot_models.CustomerGatewayDetail,
    "DeleteVpnConnection": bot_models.DeleteResponse,
    "DescribeVpnRouteEntries": bot_models.VpnRouteEntriesPage,
    "DescribeVpnPbrRouteEntries": bot_models.VpnPbrRouteEntriesPage,
    "CreateVpnConnection": bot_models.CreateVpnConnectionResponse,
    "CreateVpnRouteEntry": bot_models.CreateVpnRouteEntryResponse,
    "CreateVpnPbrRouteEntry": bot_models.CreateVpnPbrRouteEntryResponse,
}


@dataclass
class Exchange:
    """One request of the bot as it went on the wire, and the sandbox's answer."""

    action: str
    version: str
    method: str
    query: dict[str, str]
    body: dict[str, str]
    status: int
    answer: dict[str, Any]


async def _drive_the_bot() -> list[Exchange]:
    """Every VPC call the bot makes, against the sandbox, recorded on the wire."""
    exchanges: list[Exchange] = []
    sent: dict[int, httpx.Request] = {}

    async def on_request(request: httpx.Request) -> None:
        sent[id(request)] = request

    async def on_response(response: httpx.Response) -> None:
        request = response.request
        await response.aread()
        exchanges.append(
            Exchange(
                action=request.headers["x-acs-action"],
                version=request.headers["x-acs-version"],
                method=request.method,
                query=dict(parse_qsl(request.url.query.decode(), keep_blank_values=True)),
                body=dict(parse_qsl(request.content.decode(), keep_blank_values=True)),
                status=response.status_code,
                answer=response.json(),
            )
        )

    sandbox = await start_vpc_sandbox(state=SandboxState(update_seconds=0.0))
    http = httpx.AsyncClient(event_hooks={"request": [on_request], "response": [on_response]})
    client = VpcClient(
        StaticCredentialsProvider(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)),
        http=http,
        endpoint=sandbox.url,
        default_region=SEED_REGION,
        max_attempts=1,
    )
    api = VpcAdapter(client)
    try:
        await client.describe_regions()
        single = await client.describe_vpn_connection_detail(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_BGP)
        dual = await client.describe_vpn_connection_detail(
            region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU_TUNNELS
        )
        plain = await api.describe_vpn_connection(region=SEED_REGION, vco_id=SEED_VCO_HANGZHOU)
        await client.describe_vpn_connections(
            region=SEED_REGION,
            vpn_gateway_id=single.vpn_gateway_id,
            customer_gateway_id=single.customer_gateway_id,
            vpn_connection_id=single.vpn_connection_id,
        )
        await client.describe_vpn_connections(region=SEED_REGION)
        await client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=single.vpn_gateway_id)
        await client.describe_vpn_gateway_detail(region=SEED_REGION, gateway_id=dual.vpn_gateway_id)
        # The recreation reads its customer gateway(s) again just before the create.
        await api.describe_customer_gateway(
            region=SEED_REGION, customer_gateway_id=single.customer_gateway_id
        )
        # The snapshot reads both route tables and the policy routes.
        await api.describe_snapshot(region=SEED_REGION, connection=plain, deadline_s=5)
        # The recreation: delete, then create from the snapshot's spec with every optional part.
        created = []
        for detail in (single, dual):
            spec = VpnConnectionSpec.from_detail(
                detail,
                psk=SecretStr("oracle-Psk-1"),
                tunnel_psks=[SecretStr("oracle-Psk-2"), SecretStr("oracle-Psk-3")],
            ).model_copy(
                update={"tags": {"team": "net", "vpnbot-operation": "op-oracle"}, "auto_config_route": False}
            )
            await client.delete_vpn_connection(
                region=SEED_REGION,
                vco_id=detail.vpn_connection_id,
                client_token=f"del-{detail.vpn_connection_id}",
            )
            answer = await client.create_vpn_connection(
                region=SEED_REGION, spec=spec, client_token=f"new-{detail.vpn_connection_id}"
            )
            created.append(answer.vpn_connection_id)
        await api.create_route(
            region=SEED_REGION,
            gateway_id=single.vpn_gateway_id,
            route=SnapshotRoute(
                kind="custom", destination="10.77.0.0/16", weight=0, description="oracle route"
            ),
            next_hop=created[0],
            client_token="route-1",
        )
        await api.create_route(
            region=SEED_REGION,
            gateway_id=single.vpn_gateway_id,
            route=SnapshotRoute(
                kind="policy", destination="10.78.0.0/16", source="192.168.9.0/24", priority=5, weight=100
            ),
            next_hop=created[0],
            client_token="route-2",
        )
    finally:
        await client.aclose()
        await http.aclose()
        await sandbox.close()
    return exchanges


@pytest.fixture(scope="module")
def exchanges() -> list[Exchange]:
    # Once for the module, in a loop of its own (a synchronous fixture runs outside the tests' loop).
    return asyncio.run(_drive_the_bot())


def _of(exchanges: list[Exchange], action: str) -> list[Exchange]:
    found = [e for e in exchanges if e.action == action]
    assert found, f"the bot never sent {action}"
    return found


def test_the_bot_sends_every_action_the_sandbox_serves(exchanges: list[Exchange]) -> None:
    sent = {e.action for e in exchanges}
    assert sent == set(OPERATIONS) == set(PARAMETERS) == set(BOT_MODELS)
    # Every call went through: an answer the oracle reads is a success, not an error body.
    assert [(e.action, e.answer.get("Code")) for e in exchanges if e.status != 200] == []


def _request_problems(exchange: Exchange) -> list[str]:
    """How the bot's request differs from the one the official SDK sends for the same values."""
    action = exchange.action
    check = sdk_request_from_wire(action, {**exchange.query, **exchange.body})
    problems = list(check.problems)
    if check.request is None:
        return problems
    call = capture_sdk_call(action, check.request)
    if exchange.version != "2016-04-28" or exchange.method != call.method or call.style != "RPC":
        problems.append(f"{exchange.method} {exchange.version}: the SDK sends {call.method} 2016-04-28")
    leaves = leaf_types(action)
    for place, ours, theirs in (("query", exchange.query, call.query), ("body", exchange.body, call.body)):
        for name in sorted(ours.keys() ^ theirs.keys()):
            if name in theirs:
                problems.append(f"{name}: the SDK sends it in the {place}, the bot does not")
            elif name in call.params:
                problems.append(f"{name}: sent in the {place}; the SDK sends it elsewhere")
            else:
                problems.append(
                    f"{name}: sent in the {place}; the SDK, given the same values, does not send it"
                )
        for name in sorted(ours.keys() & theirs.keys()):
            hint = leaves[re.sub(r"\.\d+(?=\.|$)", ".N", name)]
            if sdk_wire_value(theirs[name], hint) != ours[name]:
                problems.append(f"{name}={ours[name]!r}: the SDK sends {theirs[name]!r}")
    return problems


@pytest.mark.parametrize("action", sorted(BOT_MODELS))
def test_every_parameter_is_the_official_sdks(exchanges: list[Exchange], action: str) -> None:
    problems = {i: found for i, e in enumerate(_of(exchanges, action)) if (found := _request_problems(e))}
    assert problems == {}


@pytest.mark.parametrize("action", sorted(BOT_MODELS))
def test_every_answer_is_the_official_sdks_response(exchanges: list[Exchange], action: str) -> None:
    model = BOT_MODELS[action]
    for exchange in _of(exchanges, action):
        check = sdk_request_from_wire(action, {**exchange.query, **exchange.body})
        assert check.request is not None
        call = capture_sdk_call(action, check.request, answer=exchange.answer)
        assert isinstance(call.response, getattr(vpc_models, f"{action}Response"))
        seen_by_sdk = call.response.body.to_map()
        # The sandbox answers nothing the SDK's model lacks, and nothing of another type.
        assert seen_by_sdk == exchange.answer
        assert type_problems(type(call.response.body), exchange.answer) == []
        # The bot reads the same from the SDK's view of the answer as from the raw answer.
        assert model.model_validate(seen_by_sdk) == model.model_validate(exchange.answer)


# --- the bot's response models read only fields the SDK has --------------------------------------------


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _inner_models(arg)]


def _aliases(name: str, info: Any) -> list[str]:
    alias = info.validation_alias
    if alias is None:
        return [info.alias or name]
    return [str(choice) for choice in getattr(alias, "choices", [alias])]


def _sdk_item(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if typing.get_origin(hint) in (list, typing.List) and args else hint  # noqa: UP006


def _unknown_fields(model: type[BaseModel], sdk_cls: type, path: str) -> list[str]:
    sdk_fields = model_fields(sdk_cls)
    unknown: list[str] = []
    for name, info in model.model_fields.items():
        names = [a for a in _aliases(name, info) if a in sdk_fields]
        if not names:
            unknown.append(f"{path}{_aliases(name, info)[0]}")
            continue
        sdk_hint = _sdk_item(sdk_fields[names[0]].hint)
        for inner in _inner_models(info.annotation):
            if isinstance(sdk_hint, type) and hasattr(sdk_hint, "to_map"):
                unknown += _unknown_fields(inner, sdk_hint, f"{path}{names[0]}.")
            else:
                unknown.append(f"{path}{names[0]}: an object for the bot, {sdk_hint} for the SDK")
    return unknown


def _sdk_body(action: str) -> type:
    cls: type = getattr(vpc_models, f"{action}ResponseBody")
    return cls


# Fields the bot's models have although the SDK's model of that answer does not, each for a reason.
# Anything else the bot reads must be a field of the SDK's response.
READ_THOUGH_NOT_IN_THE_SDK: dict[str, set[str]] = {
    # The list's items are read with the single answer's model; this exists only in that answer,
    # and the bot copes without them (specs._bgp_spec: no EnableBgp in a list item).
    "DescribeVpnConnections": {"VpnConnections.VpnConnection.VpnBgpConfig.EnableBgp"},
    # A route's description, for the snapshot: not in the SDK's model of the lists, so a route
    # recreated from a live snapshot probably gets none (unverified against the live API).
    "DescribeVpnRouteEntries": {"VpnRouteEntries.VpnRouteEntry.Description"},
    "DescribeVpnPbrRouteEntries": {"VpnPbrRouteEntries.VpnPbrRouteEntry.Description"},
}


@pytest.mark.parametrize("action", sorted(BOT_MODELS))
def test_the_bot_reads_only_fields_of_the_sdk_response(action: str) -> None:
    unknown = set(_unknown_fields(BOT_MODELS[action], _sdk_body(action), ""))
    assert unknown == READ_THOUGH_NOT_IN_THE_SDK.get(action, set())


# --- the sandbox's table of parameters is the SDK's ------------------------------------------------------


@pytest.mark.parametrize("action", sorted(PARAMETERS))
def test_the_sandbox_takes_exactly_the_sdks_parameters(action: str) -> None:
    schema = sdk_schema(action)
    assert PARAMETERS[action] == schema.names
    assert dict(JSON_PARAMETERS.get(action, {})) == dict(schema.json)


# --- the oracle itself catches what it is for -------------------------------------------------------------


def _exchange(action: str, query: dict[str, str], body: dict[str, str] | None = None) -> Exchange:
    return Exchange(action, "2016-04-28", "POST", query, body or {}, 200, {})


def test_the_oracle_catches_a_wrong_name_encoding_key_or_place() -> None:
    good = {"RegionId": "cn-hangzhou", "VpnGatewayId": "vpn-1", "LocalSubnet": "10.0.0.0/8"}
    assert _request_problems(_exchange("CreateVpnConnection", good)) == []
    cases = {
        "VpnGatewayID": "not a parameter",
        "EnableDpd": "a boolean is sent as true or false",
        "BgpConfig": "keys the SDK does not document: AuthKey",
        "TunnelOptionsSpecification.1.Role": "the SDK sends it elsewhere",
        "Tags.1.Key": "",
        "Tags.2.Value": "the SDK sends it in the query, the bot does not",
    }
    values = {
        "VpnGatewayID": "vpn-1",
        "EnableDpd": "True",
        "BgpConfig": json.dumps({"EnableBgp": "true", "AuthKey": "k"}),
        "TunnelOptionsSpecification.1.Role": "master",
        "Tags.1.Key": "team",
        "Tags.2.Value": "net",  # numbered from 2: the SDK numbers its list from 1
    }
    for name, expected in cases.items():
        found = _request_problems(_exchange("CreateVpnConnection", good | {name: values[name]}))
        if expected:
            assert any(expected in p for p in found), (name, found)
        else:
            assert found == [], (name, found)
    # A route's weight as text is not an integer.
    route = {"RegionId": "cn-hangzhou", "VpnGatewayId": "vpn-1", "Weight": "heavy"}
    assert any("not an integer" in p for p in _request_problems(_exchange("CreateVpnRouteEntry", route)))


def test_the_oracle_catches_an_answer_of_the_wrong_type() -> None:
    body = vpc_models.DescribeVpnGatewayResponseBody
    assert type_problems(body, {"VpnGatewayId": "vpn-1", "Spec": "5M", "EndTime": 1700000000000}) == []
    assert type_problems(body, {"EndTime": "1700000000000", "Tags": {"Tag": "x"}, "Nope": 1}) == [
        "EndTime='1700000000000': int for the SDK",
        "Tags.Tag: a list for the SDK, got str",
        "Nope: not in the SDK's DescribeVpnGatewayResponseBody",
    ]


def test_unknown_parameters_names_each_one() -> None:
    params = {
        "RegionId": "cn-hangzhou",
        "Tags.12.Key": "a",
        "Tag.1.Key": "b",
        "BgpConfig": json.dumps({"EnableBgp": "true", "AuthKey": "k"}),
        "HealthCheckConfig": json.dumps({"enable": "true", "policy": "revoke_route"}),
    }
    assert unknown_parameters("CreateVpnConnection", params) == [
        "BgpConfig.AuthKey",
        "HealthCheckConfig.policy",
        "Tag.1.Key",
    ]
    assert unknown_parameters("DescribeVpnConnections", {"Tag.3.Value": "x", "PageSize": "50"}) == []


# --- the sandbox refuses what the SDK's model does not have ------------------------------------------------


async def _signed_call(url: str, action: str, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        request = http.build_request(
            "POST",
            f"{url}/?{canonical_query(params)}",
            headers={"x-acs-action": action, "x-acs-version": "2016-04-28"},
            content=b"",
        )
        return await http.send(
            request, auth=AcsV3Auth(Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET))
        )


@pytest.mark.parametrize("action", sorted(PARAMETERS))
async def test_the_sandbox_refuses_a_parameter_the_sdk_does_not_have(action: str) -> None:
    async with await start_vpc_sandbox(state=SandboxState()) as sandbox:
        # A name off by one letter's case, next to a good one.
        good = {"RegionId": SEED_REGION} if "RegionId" in PARAMETERS[action] else {"AcceptLanguage": "en-US"}
        response = await _signed_call(sandbox.url, action, good | {"VpnGatewayID": "vpn-1"})
        calls = sandbox.state.calls(action)
    assert response.status_code == 400
    body = response.json()
    assert body["Code"] == "InvalidParameter"
    assert '"VpnGatewayID"' in body["Message"]
    # Refused before the operation ran: nothing was read or changed.
    assert [c.outcome for c in calls] == ["error"]


async def test_the_sandbox_refuses_a_json_key_the_sdk_does_not_document() -> None:
    async with await start_vpc_sandbox(state=SandboxState()) as sandbox:
        response = await _signed_call(
            sandbox.url,
            "CreateVpnConnection",
            {
                "RegionId": SEED_REGION,
                "BgpConfig": json.dumps({"EnableBgp": "true", "AuthKey": "k"}),
            },
        )
    assert response.status_code == 400
    assert response.json()["Code"] == "InvalidParameter"
    assert '"BgpConfig.AuthKey"' in response.json()["Message"]
