"""/vpn list and /vpn status: parsing, button values, builders (valid Block Kit), the listing cache, check_read."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from fakes import FakePolicy
from slackfakes import T0, FakeWorkflow, make_op, make_settings, parse, valid_block_kit

from bot.domain import OpState, VpnGateway
from bot.errors import NotAllowed, UsageError
from bot.sandbox.slack_api import message_size_error
from bot.slack.block_ids import ActionId
from bot.slack.blocks import MESSAGE_BUDGET, blocks_text_length
from bot.slack.blocks.find import (
    PAGE_SIZE,
    build_connection_status,
    build_list_page,
    build_operation_status,
    page_count,
)
from bot.slack.deps import SlackDeps
from bot.slack.find import NOT_SET_UP, render_page
from bot.slack.inventory import ConnectionRow, ListingCache
from bot.slack.parsing import (
    FILTER_WORDS_MAX,
    FOREIGN_LIST_BUTTON,
    ListCommand,
    ListPage,
    RowDelete,
    StatusCommand,
    parse_list_click,
)
from bot.slack.policy import SlackPolicy

EVIL = "<!channel> *x* <@U0BOB> & `y`"


def rendered(message: dict[str, Any]) -> str:
    """Every text Slack renders (not button values, which are never shown)."""
    parts = [message["text"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                elif key != "value":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message["blocks"])
    return "\n".join(parts)


def row(n: int, **overrides: Any) -> ConnectionRow:
    values: dict[str, Any] = {
        "id": f"vco-bp1{n:020d}",
        "name": f"office-{n}",
        "gateway_id": "vpn-bp1gw0001",
        "status": "ipsec_sa_established",
        "remote_subnet": "192.168.0.0/16",
    }
    values.update(overrides)
    return ConnectionRow(**values)


# --- command text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list", ListCommand("cn-hangzhou")),
        ("list cn-shanghai", ListCommand("cn-shanghai", guessed=True)),
        ("list CN-Shanghai office", ListCommand("cn-shanghai", None, ("office",), guessed=True)),
        ("list --region cn-shanghai office", ListCommand("cn-shanghai", None, ("office",))),
        ("list vpn-bp1gw0001 Office", ListCommand("cn-hangzhou", "vpn-bp1gw0001", ("Office",))),
        ("list region=ap-southeast-1 vpn-bp1gw0001", ListCommand("ap-southeast-1", "vpn-bp1gw0001")),
        ("list &lt;!channel&gt;", ListCommand("cn-hangzhou", None, ("<!channel>",))),
        ("status vco-bp1abc2def3gh", StatusCommand("cn-hangzhou", vco_id="vco-bp1abc2def3gh")),
        ("status `VCO-BP1ABC2DEF3GH` cn-shanghai", StatusCommand("cn-shanghai", vco_id="vco-bp1abc2def3gh")),
        ("status 3F2A" + "0" * 28, StatusCommand("cn-hangzhou", op_id="3f2a" + "0" * 28)),
    ],
)
def test_parse_list_and_status(text: str, expected: object) -> None:
    assert parse(text) == expected


def test_a_guessed_region_can_become_a_filter_word() -> None:
    command = parse("list office-1 beijing")
    assert command == ListCommand("office-1", None, ("beijing",), guessed=True)
    assert isinstance(command, ListCommand)
    assert command.as_filter("cn-hangzhou") == ListCommand("cn-hangzhou", None, ("office-1", "beijing"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("list " + "x" * 41, "too long"),
        ("list " + " ".join(["w"] * (FILTER_WORDS_MAX + 1)), "at most"),
        ("list vpn-bp1gw0001 vpn-bp1gw0002", "one VPN gateway"),
        ("list --region", "needs a value"),
        # One option splitter for every command: an empty value is named as such, as for delete.
        ("list region=", "`region=` needs a value"),
        ("status vco-bp1abc2def3gh --region=", "`region=` needs a value"),
        ("list region=cn-hangzhou --region cn-beijing", "given twice"),
        ("list --region bad_region!", "not a region id"),
        ("status", "Status of what?"),
        ("status vco-BAD!", "not a VPN connection id"),
        ("status vco-bp1abc2def3gh cn-shanghai extra", "Too many words"),
        ("status <!channel>", "neither a connection id"),
    ],
)
def test_bad_list_and_status_text(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert needle in info.value.friendly
    assert "<!channel>" not in info.value.friendly


# --- button values ---------------------------------------------------------------------------------


def click_body(action_id: str, value: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0VPNOPS"},
        "team": {"id": "T0TEAM"},
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0VPNOPS", "is_ephemeral": True},
        "response_url": "http://127.0.0.1/response/x",
        "actions": [{"action_id": action_id, "value": value}],
    }
    body.update(overrides)
    return body


def test_page_and_delete_values_round_trip() -> None:
    page = ListPage(r="cn-hangzhou", g="vpn-bp1gw0001", f=("office", "<b>"), p=3)
    click = parse_list_click(click_body(ActionId.LIST_NEXT, page.to_value()))
    assert click.value == page
    assert (click.user_id, click.channel_id, click.team_id) == ("U0ALICE", "C0VPNOPS", "T0TEAM")
    delete = RowDelete(r="cn-hangzhou", v="vco-bp1abc2def3gh")
    assert parse_list_click(click_body(ActionId.LIST_DELETE, delete.to_value())).value == delete


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        (ActionId.LIST_NEXT, "not json"),
        (ActionId.LIST_NEXT, json.dumps({"r": "evil.example.com/x", "p": 0})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": 201})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": -1})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": "1"})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": 0, "x": 1})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": 0, "f": ["y" * 41]})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "p": 0, "g": "sg-123"})),
        (ActionId.LIST_NEXT, json.dumps({"r": "cn-hangzhou", "v": "vco-bp1abc2def3gh"})),
        (ActionId.LIST_DELETE, json.dumps({"r": "cn-hangzhou", "p": 0})),
        (ActionId.LIST_DELETE, json.dumps({"r": "cn-hangzhou", "v": "vco-../../x"})),
        (ActionId.APPROVE, json.dumps({"r": "cn-hangzhou", "p": 0})),
        (ActionId.LIST_NEXT, "x" * 2001),
    ],
)
def test_forged_values_are_refused(action_id: str, value: str) -> None:
    with pytest.raises(NotAllowed) as info:
        parse_list_click(click_body(action_id, value))
    assert info.value.friendly == FOREIGN_LIST_BUTTON


def test_click_without_user_or_channel_is_refused() -> None:
    value = ListPage(r="cn-hangzhou", p=0).to_value()
    broken_bodies: list[dict[str, Any]] = [{"user": {"id": "nobody"}}, {"channel": None, "container": {}}]
    for broken in broken_bodies:
        with pytest.raises(NotAllowed):
            parse_list_click(click_body(ActionId.LIST_NEXT, value, **broken))


# --- builders ------------------------------------------------------------------------------------


def test_list_page_blocks_and_buttons() -> None:
    rows = [row(n) for n in range(PAGE_SIZE)]
    page = ListPage(r="cn-hangzhou", f=("office",), p=1)
    message = build_list_page(rows, page, total=40)
    valid_block_kit(message)
    assert message["response_type"] == "ephemeral"
    assert "16–30 of 40" in rendered(message)
    buttons = [
        b["accessory"]
        for b in message["blocks"]
        if b.get("accessory", {}).get("action_id") == ActionId.LIST_DELETE
    ]
    assert [json.loads(b["value"])["v"] for b in buttons] == [r.id for r in rows]
    nav = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    values = {e["action_id"]: ListPage.model_validate_json(e["value"]) for e in nav}
    assert values[ActionId.LIST_PREVIOUS].p == 0
    assert values[ActionId.LIST_NEXT].p == 2
    assert values[ActionId.LIST_NEXT].f == ("office",)


def test_a_row_with_an_unexpected_id_has_no_delete_button() -> None:
    message = build_list_page([row(1, id="vco-UPPER"), row(2)], ListPage(r="cn-hangzhou", p=0), total=2)
    valid_block_kit(message)
    values = [b["accessory"]["value"] for b in message["blocks"] if "accessory" in b]
    assert [json.loads(v)["v"] for v in values] == [row(2).id]


def test_single_page_has_no_navigation_and_empty_listing_says_so() -> None:
    message = build_list_page([row(1)], ListPage(r="cn-hangzhou", p=0), total=1)
    valid_block_kit(message)
    assert not any(b["type"] == "actions" for b in message["blocks"])
    empty = build_list_page([], ListPage(r="cn-hangzhou", f=(EVIL,), p=0), total=0)
    valid_block_kit(empty)
    assert "No IPsec-VPN connections" in empty["text"]
    assert page_count(0) == 1
    assert page_count(PAGE_SIZE + 1) == 2


def test_hostile_names_and_filters_are_escaped_at_alibabas_limits() -> None:
    long_name = EVIL + "n" * (128 - len(EVIL))
    rows = [
        row(n, name=long_name, remote_subnet=",".join(f"10.{i}.0.0/16" for i in range(200)))
        for n in range(PAGE_SIZE)
    ]
    words = tuple(("<!here>" + "w" * 40)[:40] for _ in range(FILTER_WORDS_MAX))
    message = build_list_page(
        rows, ListPage(r="cn-shanghai-finance-1", g="vpn-" + "a" * 64, f=words, p=0), total=200
    )
    valid_block_kit(message)
    body = rendered(message)
    assert "&lt;!here&gt;" in body
    assert "<!channel>" not in body
    assert "<!here>" not in body
    assert "<@U0BOB>" not in body
    for element in (e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]):
        assert len(element["value"]) <= 2000


def test_connection_status() -> None:
    gateway = VpnGateway("vpn-bp1gw0001", "cn-hangzhou", "gw", "updating", "FinancialLocked")
    message = build_connection_status(
        row(1, name=EVIL, tunnels=("ipsec_sa_established", "ike_sa_not_established")),
        gateway,
        region="cn-hangzhou",
        routes=3,
    )
    valid_block_kit(message)
    text = message["blocks"][0]["text"]["text"]
    assert "`ipsec_sa_established` / `ike_sa_not_established`" in text
    assert "`updating` (`FinancialLocked`)" in text
    assert "next hop: 3" in text
    assert "<!channel>" not in rendered(message)
    unknown = build_connection_status(row(1), None, region="cn-hangzhou", routes=None)
    valid_block_kit(unknown)
    assert "unknown" in unknown["blocks"][0]["text"]["text"]


def test_operation_status_links_the_thread_only_when_safe() -> None:
    op = make_op(
        state=OpState.DELETED,
        approver_id="U0BOB",
        approved_at=T0 + timedelta(minutes=1),
        finished_at=T0 + timedelta(minutes=3),
    )
    link = "https://acme.slack.com/archives/C0CHANNEL/p1700000000000100"
    message = build_operation_status(op, permalink=link, now=T0)
    valid_block_kit(message)
    text = message["blocks"][0]["text"]["text"]
    assert f"<{link}|Open the thread>" in text
    assert "Approved by <@U0BOB>" in text
    assert "Finished at 12:03 UTC" in text
    forged = build_operation_status(op, permalink="https://x.test/a|<!channel>", now=T0)
    assert "<!channel>" not in rendered(forged)
    assert "<#C0CHANNEL>" in forged["blocks"][0]["text"]["text"]
    waiting = build_operation_status(make_op(), permalink=None, now=T0)
    assert "waiting for approval" in waiting["text"]
    assert "expires at 12:15 UTC" in waiting["blocks"][0]["text"]["text"]


# --- the listing cache ---------------------------------------------------------------------------


class CountingInventory:
    def __init__(self, rows: Sequence[ConnectionRow]) -> None:
        self.rows = list(rows)
        self.calls: list[tuple[str, str | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def connections(
        self, *, region: str, gateway_id: str | None = None, account: str = ""
    ) -> list[ConnectionRow]:
        self.calls.append((region, gateway_id))
        await self.gate.wait()
        return self.rows

    async def connection(self, *, region: str, vco_id: str, account: str = "") -> ConnectionRow:
        raise NotImplementedError

    async def gateway(self, *, region: str, gateway_id: str, account: str = "") -> VpnGateway:
        raise NotImplementedError

    async def route_count(self, *, region: str, gateway_id: str, vco_id: str, account: str = "") -> int:
        raise NotImplementedError


async def test_cache_serves_pages_until_the_ttl_passes() -> None:
    now = [0.0]
    inventory = CountingInventory([row(1), row(2)])
    cache = ListingCache(inventory, ttl=60, clock=lambda: now[0])
    assert await cache.rows(region="cn-hangzhou") == (row(1), row(2))
    now[0] = 59.0
    await cache.rows(region="cn-hangzhou")
    assert len(inventory.calls) == 1
    await cache.rows(region="cn-hangzhou", gateway_id="vpn-bp1gw0001")  # another listing
    assert len(inventory.calls) == 2
    now[0] = 60.0
    await cache.rows(region="cn-hangzhou")
    assert len(inventory.calls) == 3
    cache.forget(region="cn-hangzhou")
    await cache.rows(region="cn-hangzhou")
    assert len(inventory.calls) == 4


async def test_concurrent_misses_share_one_fetch_and_size_is_bounded() -> None:
    inventory = CountingInventory([row(1)])
    inventory.gate.clear()
    cache = ListingCache(inventory, clock=lambda: 0.0, max_entries=2)
    pending = [asyncio.create_task(cache.rows(region="cn-hangzhou")) for _ in range(5)]
    await asyncio.sleep(0)
    inventory.gate.set()
    await asyncio.gather(*pending)
    assert len(inventory.calls) == 1
    for region in ("cn-shanghai", "cn-beijing"):
        await cache.rows(region=region)
    await cache.rows(region="cn-hangzhou")  # evicted as the oldest
    assert inventory.calls[-1] == ("cn-hangzhou", None)


class _Unavailable(Exception):
    pass


class FailingInventory(CountingInventory):
    failed = 0

    async def connections(
        self, *, region: str, gateway_id: str | None = None, account: str = ""
    ) -> list[ConnectionRow]:
        self.failed += 1  # counted, not recorded: the test measures what the cache keeps
        await self.gate.wait()
        raise _Unavailable(region)


async def test_failed_listings_leave_no_lock_behind() -> None:
    """Each failing key (e.g. ``/vpn list`` of random gateways) used to keep its lock forever."""
    inventory = FailingInventory([])
    cache = ListingCache(inventory, clock=lambda: 0.0)

    async def fail(first: int, count: int) -> None:
        for i in range(first, first + count):
            with pytest.raises(_Unavailable):
                await cache.rows(region="cn-hangzhou", gateway_id=f"vpn-bp1{i:020d}")
        # Concurrent callers of one failing key share its lock; the last one out drops it.
        inventory.gate.clear()
        waiting = [asyncio.create_task(cache.rows(region=f"cn-x{first}")) for _ in range(3)]
        await asyncio.sleep(0)
        inventory.gate.set()
        for task in waiting:
            with pytest.raises(_Unavailable):
                await task

    await fail(0, 200)  # first-time allocations are not the leak
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        await fail(200, 5000)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 100_000, f"{after - before} bytes kept for 5,000 failed listings"
    assert inventory.failed == 200 + 5000 + 2 * 3  # no failure was cached


# --- check_read ----------------------------------------------------------------------------------


class NoGroups:
    async def members(self, group_id: str) -> frozenset[str]:
        return frozenset()


async def test_check_read_follows_channels_requesters_and_regions() -> None:
    policy = SlackPolicy(
        make_settings(
            allowed_channels=["C0OPS"],
            requesters=["U0ALICE"],
            approvers=["U0BOB"],
            allowed_regions=["cn-hangzhou"],
        ),
        directory=NoGroups(),
    )
    await policy.check_read(user_id="U0ALICE", channel_id="C0OPS", region="cn-hangzhou")
    await policy.check_read(user_id="U0BOB", channel_id="C0OPS", region="cn-hangzhou")  # approvers read too
    cases = [
        ("U0CAROL", "C0OPS", "cn-hangzhou", "VPNBOT_REQUESTERS"),
        ("U0ALICE", "C0RANDOM", "cn-hangzhou", "VPNBOT_ALLOWED_CHANNELS"),
        ("U0ALICE", "C0OPS", "cn-shanghai", "VPNBOT_ALLOWED_REGIONS"),
    ]
    for user, channel, region, setting in cases:
        with pytest.raises(NotAllowed) as info:
            await policy.check_read(user_id=user, channel_id=channel, region=region)
        assert setting in (info.value.who_can or "")


async def test_check_read_with_no_lists_allows_anyone() -> None:
    policy = SlackPolicy(make_settings(), directory=NoGroups())
    await policy.check_read(user_id="U0ANY", channel_id="C0ANY", region="eu-central-1")


# --- listeners' helpers --------------------------------------------------------------------------


async def test_listing_without_an_inventory_says_it_is_not_set_up() -> None:
    async def no_regions() -> frozenset[str]:
        return frozenset()

    deps = SlackDeps(workflow=FakeWorkflow(), settings=make_settings(), regions=no_regions)
    with pytest.raises(UsageError) as info:
        await render_page(deps, ListPage(r="cn-hangzhou", p=0), user_id="U0ALICE", channel_id="C0VPNOPS")
    assert info.value.friendly == NOT_SET_UP


async def test_a_page_is_policy_checked_before_the_cloud_is_asked() -> None:
    async def regions() -> frozenset[str]:
        return frozenset({"cn-hangzhou", "cn-shanghai"})

    inventory = CountingInventory([row(1)])
    deps = SlackDeps(
        workflow=FakeWorkflow(),
        settings=make_settings(),
        regions=regions,
        inventory=inventory,
        listings=ListingCache(inventory),
        read_policy=FakePolicy(channels={"C0VPNOPS"}),
    )
    page = ListPage(r="cn-shanghai", p=0)
    with pytest.raises(NotAllowed):
        await render_page(deps, page, user_id="U0ALICE", channel_id="C0RANDOM")
    assert inventory.calls == []
    message = await render_page(deps, page, user_id="U0ALICE", channel_id="C0VPNOPS")
    assert inventory.calls == [("cn-shanghai", None)]
    valid_block_kit(message)


def test_a_page_of_long_rows_fits_slacks_limit_on_a_message_and_keeps_every_id() -> None:
    """Fifteen rows of long names, subnets and tunnel states escape to far more than Slack takes."""
    hostile = "<&>" * 34  # 102 characters, 340 once escaped
    rows = [
        row(
            n,
            name=hostile,
            tunnels=(hostile[:40], hostile[:40]),
            remote_subnet=",".join(f"172.{i}.0.0/16" for i in range(200)),
        )
        for n in range(PAGE_SIZE)
    ]
    message = build_list_page(rows, ListPage(r="cn-hangzhou", f=(hostile[:40],), p=1), total=100)
    valid_block_kit(message)
    assert message_size_error(message["text"], message["blocks"]) is None
    assert blocks_text_length(message["blocks"]) <= MESSAGE_BUDGET
    text = rendered(message)
    assert all(r.id in text for r in rows)
    # Every row keeps its Delete… button and the page its navigation.
    assert sum(1 for b in message["blocks"] if b.get("accessory")) == PAGE_SIZE
    assert any(b["type"] == "actions" for b in message["blocks"])
