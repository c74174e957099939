"""``/vpn list`` and ``/vpn status`` end to end: the real bot over HTTP, the VPC sandbox, the Slack stand-in.

Replies are ephemeral to the asker; paging reads a briefly cached listing; Delete… on a row posts
the same confirmation as ``/vpn delete``; forged button values and hostile filter text are refused
before anything reaches the cloud.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from bot.sandbox.local import LocalStack
from bot.sandbox.slack import find_button
from bot.sandbox.slack_api import Message
from bot.sandbox.slack_user import SocketModeUser
from bot.sandbox.vpc_state import (
    SEED_VCO_HANGZHOU,
    SEED_VCO_SHANGHAI,
    SEED_VPN_HANGZHOU,
)
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import (
    all_text,
    local_stack,
    op_id_of,
    socket_mode_bot,
    wait_confirmation,
    wait_parent,
)

REFUSED = ":no_entry:"


def running(sqlite_url: str, **settings: Any) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings)


def _cloud_actions(stack: LocalStack, *, but: tuple[str, ...] = ("DescribeRegions",)) -> list[str]:
    return [r.action for r in stack.vpc.state.requests if r.action not in but]


async def _reply(stack: LocalStack, needle: str, user: str = ALICE, channel: str = CHANNEL) -> Message:
    """Wait for the ephemeral shown to ``user`` that contains ``needle``."""

    def found() -> Message | None:
        return next(
            (m for m in reversed(stack.slack.state.ephemerals(user, channel)) if needle in all_text(m)), None
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"ephemeral with {needle!r}")


async def _command(stack: LocalStack, text: str, user: str = ALICE, channel: str = CHANNEL) -> None:
    reply = await stack.agent.slash_command(user, channel, text)
    assert reply.status == 200, reply.body


def _rows(message: Message) -> list[str]:
    """The connection ids of the rows on a list page, in order."""
    return [
        json.loads(b["accessory"]["value"])["v"]
        for b in message.blocks
        if b.get("accessory", {}).get("action_id") == ActionId.LIST_DELETE
    ]


async def _page_changed(stack: LocalStack, ts: str, needle: str) -> Message:
    def done() -> Message | None:
        msg = stack.slack.state.message(CHANNEL, ts)
        return msg if msg is not None and needle in all_text(msg) else None

    return await stack.slack.state.wait_for(done, timeout=10, what=f"list page saying {needle!r}")


async def test_list_pages_through_120_connections_from_one_scan(stack: LocalStack) -> None:
    """120 seeded + the seed region's own: Next and Previous replace the page; the region is scanned once."""
    stack.vpc.state.seed_connections("cn-hangzhou", 120)
    total = sum(1 for c in stack.vpc.state.connections.values() if c.region == "cn-hangzhou")
    await _command(stack, "list")
    first = await _reply(stack, "IPsec-VPN connections")
    assert first.visible_to == ALICE
    assert f"1–15 of {total}" in all_text(first)
    rows1 = _rows(first)
    assert len(rows1) == 15
    assert find_button(first.blocks, ActionId.LIST_PREVIOUS) is None
    scans = _cloud_actions(stack).count("DescribeVpnConnections")
    assert scans == -(-total // 50)  # every Alibaba page once

    await stack.agent.click(ALICE, CHANNEL, first.ts, ActionId.LIST_NEXT)
    second = await _page_changed(stack, first.ts, f"16–30 of {total}")
    rows2 = _rows(second)
    assert len(rows2) == 15
    assert not set(rows1) & set(rows2)
    await stack.agent.click(ALICE, CHANNEL, first.ts, ActionId.LIST_PREVIOUS)
    back = await _page_changed(stack, first.ts, f"1–15 of {total}")
    assert _rows(back) == rows1
    # Paging read the cached listing: no new scan.
    assert _cloud_actions(stack).count("DescribeVpnConnections") == scans
    # Only alice sees any of it; nothing was posted in the channel.
    assert stack.slack.state.messages(CHANNEL) == []


async def test_list_last_page_has_no_next(stack: LocalStack) -> None:
    stack.vpc.state.seed_connections("cn-hangzhou", 20)
    total = sum(1 for c in stack.vpc.state.connections.values() if c.region == "cn-hangzhou")
    await _command(stack, "list cn-hangzhou")
    page = await _reply(stack, "IPsec-VPN connections")
    await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_NEXT)
    last = await _page_changed(stack, page.ts, f"of {total}")
    last = await _page_changed(stack, page.ts, f"16–{total} of {total}")
    assert find_button(last.blocks, ActionId.LIST_NEXT) is None
    assert find_button(last.blocks, ActionId.LIST_PREVIOUS) is not None


async def test_list_filter_and_gateway(stack: LocalStack) -> None:
    """Filter words narrow by name or id, case-insensitively; a gateway id narrows to its connections."""
    stack.vpc.state.seed_connections("cn-hangzhou", 60)
    await _command(stack, "list cn-hangzhou OFFICE beijing")
    page = await _reply(stack, "IPsec-VPN connections")
    names = {c.id: c.name for c in stack.vpc.state.connections.values()}
    assert _rows(page)
    assert all("office" in names[r] and "beijing" in names[r] for r in _rows(page))

    await _command(stack, f"list {SEED_VPN_HANGZHOU}")
    gw_page = await _reply(stack, f"gateway `{SEED_VPN_HANGZHOU}`*")
    expected = {c.id for c in stack.vpc.state.connections.values() if c.gateway_id == SEED_VPN_HANGZHOU}
    assert set(_rows(gw_page)) == expected
    assert SEED_VCO_HANGZHOU in expected

    await _command(stack, "list no-such-name-anywhere")
    empty = await _reply(stack, "No IPsec-VPN connections")
    assert _rows(empty) == []


async def test_list_shows_no_secret(stack: LocalStack) -> None:
    await _command(stack, "list")
    page = await _reply(stack, "IPsec-VPN connections")
    text = all_text(page) + json.dumps(page.blocks)
    for conn in stack.vpc.state.connections.values():
        assert conn.psk not in text


async def test_delete_from_a_row_posts_the_confirmation(stack: LocalStack) -> None:
    await _command(stack, f"list {SEED_VCO_HANGZHOU[:12]}")
    page = await _reply(stack, "IPsec-VPN connections")
    assert _rows(page) == [SEED_VCO_HANGZHOU]
    await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)
    confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
    assert confirmation.visible_to is None  # in the channel, for an approver
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await wait_parent(stack.slack.state, confirmation.ts, "Deleted")
    assert SEED_VCO_HANGZHOU not in stack.vpc.state.connections


async def test_status_of_a_connection(stack: LocalStack) -> None:
    await _command(stack, f"status {SEED_VCO_HANGZHOU}")
    reply = await _reply(stack, "Tunnel status")
    text = all_text(reply)
    assert reply.visible_to == ALICE
    assert "Routes with this connection as next hop: 3" in text  # two destination routes, one policy route
    assert "`active`" in text  # the gateway's state
    await _command(stack, f"status {SEED_VCO_SHANGHAI} cn-shanghai")
    await _reply(stack, SEED_VCO_SHANGHAI)
    await _command(stack, "status vco-bp1nosuchthing00")
    gone = await _reply(stack, REFUSED)
    assert "No IPsec-VPN connection with this id" in all_text(gone)


async def test_status_of_an_operation(stack: LocalStack) -> None:
    await _command(stack, f"delete {SEED_VCO_HANGZHOU}")
    confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
    op_id = op_id_of(confirmation)
    await _command(stack, f"status {op_id}")
    reply = await _reply(stack, "waiting for approval")
    text = all_text(reply)
    assert f"<@{ALICE}>" in text
    link = f"/archives/{CHANNEL}/p{confirmation.ts.replace('.', '')}"
    assert link in json.dumps(reply.blocks)
    await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
    await wait_parent(stack.slack.state, confirmation.ts, "Deleted")
    await _command(stack, f"status {op_id.upper()}")
    done = await _reply(stack, "Approved by")
    assert f"<@{BOB}>" in all_text(done)
    assert "deleted" in all_text(done)
    await _command(stack, "status 0123456789abcdef0123456789abcdef")
    await _reply(stack, "I know no request")


async def test_hostile_filter_text_is_escaped_and_never_sent(stack: LocalStack) -> None:
    await _command(stack, "list <!channel> *bold* <@U0BOB>")
    reply = await _reply(stack, "No IPsec-VPN connections")
    body = json.dumps(reply.blocks)
    assert "<!channel>" not in body
    assert "<@U0BOB>" not in body
    assert "&lt;!channel&gt;" in body
    for request in stack.vpc.state.requests:
        assert "channel" not in json.dumps(request.params)


async def test_forged_button_values_are_refused(stack: LocalStack) -> None:
    await _command(stack, "list")
    page = await _reply(stack, "IPsec-VPN connections")
    before = len(stack.vpc.state.requests)
    forged = [
        "not json",
        json.dumps({"r": "evil.example.com/x", "p": 1}),
        json.dumps({"r": "cn-hangzhou", "p": 99999}),
        json.dumps({"r": "cn-hangzhou", "p": 0, "extra": "x"}),
        json.dumps({"r": "cn-hangzhou", "p": "1"}),
    ]
    for value in forged:
        await stack.agent.click(
            ALICE, CHANNEL, page.ts, ActionId.LIST_NEXT, value=value, require_button=False
        )
    await stack.agent.click(
        ALICE,
        CHANNEL,
        page.ts,
        ActionId.LIST_DELETE,
        value=json.dumps({"r": "cn-hangzhou", "v": "vco-x/../y"}),
    )

    def refusals() -> list[Message] | None:
        found = [m for m in stack.slack.state.ephemerals(ALICE, CHANNEL) if "not one I made" in m.text]
        return found if len(found) == len(forged) + 1 else None

    await stack.slack.state.wait_for(refusals, timeout=10, what="a refusal per forged click")
    assert len(stack.vpc.state.requests) == before
    assert stack.slack.state.messages(CHANNEL) == []


async def test_page_out_of_range_is_explained(stack: LocalStack) -> None:
    await _command(stack, "list")
    page = await _reply(stack, "IPsec-VPN connections")
    await stack.agent.click(
        ALICE,
        CHANNEL,
        page.ts,
        ActionId.LIST_NEXT,
        value=json.dumps({"r": "cn-hangzhou", "p": 7}),
        require_button=False,
    )
    reply = await _reply(stack, "There is no page 8")
    assert "1 page" in all_text(reply)
    scans = _cloud_actions(stack).count("DescribeVpnConnections")
    await stack.agent.click(
        ALICE,
        CHANNEL,
        page.ts,
        ActionId.LIST_NEXT,
        value=json.dumps({"r": "xx-nowhere", "p": 0}),
        require_button=False,
    )
    await _reply(stack, "no VPC region")
    assert _cloud_actions(stack).count("DescribeVpnConnections") == scans


async def test_bad_command_text(stack: LocalStack) -> None:
    await _command(stack, "status")
    await _reply(stack, "Status of what?")
    await _command(stack, "status vco-INVALID!")
    await _reply(stack, "is not a VPN connection id")
    await _command(stack, "list " + "x" * 60)
    await _reply(stack, "too long")
    await _command(stack, "list --region nowhere-land")
    await _reply(stack, "no VPC region")
    assert _cloud_actions(stack) == []


async def test_policy_refuses_channel_person_and_region(sqlite_url: str) -> None:
    async with running(
        sqlite_url, allowed_channels=[CHANNEL], requesters=[ALICE], allowed_regions=["cn-hangzhou"]
    ) as stack:
        await _command(stack, "list", user=CAROL)
        refusal = await _reply(stack, REFUSED, user=CAROL)
        assert "VPNBOT_REQUESTERS" in all_text(refusal)
        await _command(stack, f"status {SEED_VCO_SHANGHAI} cn-shanghai")
        refusal = await _reply(stack, REFUSED)
        assert "VPNBOT_ALLOWED_REGIONS" in all_text(refusal)
        await _command(stack, "list", channel="C0RANDOM")
        refusal = await _reply(stack, REFUSED, channel="C0RANDOM")
        assert "VPNBOT_ALLOWED_CHANNELS" in all_text(refusal)
        assert _cloud_actions(stack) == []
        # A page click is checked again: a forged region is refused as well.
        await _command(stack, "list")
        page = await _reply(stack, "IPsec-VPN connections")
        await stack.agent.click(
            ALICE,
            CHANNEL,
            page.ts,
            ActionId.LIST_NEXT,
            value=json.dumps({"r": "cn-shanghai", "p": 0}),
            require_button=False,
        )
        await _reply(stack, "not enabled for this bot")
        assert all(r.params.get("RegionId") != "cn-shanghai" for r in stack.vpc.state.requests)


async def test_list_and_paging_over_socket_mode(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same listing and a Next click, delivered as Socket Mode envelopes."""
    async with socket_mode_bot(sqlite_url, monkeypatch, app_token="xapp-1-A0VPNBOT-1-find-e2e") as world:
        vpc, slack = world.vpc, world.slack

        vpc.state.seed_connections("cn-hangzhou", 30)
        total = sum(1 for c in vpc.state.connections.values() if c.region == "cn-hangzhou")
        user = SocketModeUser(state=slack.state)
        await user.slash_command(ALICE, CHANNEL, "list")

        def first_page() -> Message | None:
            return next(
                (m for m in slack.state.ephemerals(ALICE, CHANNEL) if "IPsec-VPN" in all_text(m)), None
            )

        page = await slack.state.wait_for(first_page, timeout=10, what="the first page")
        assert f"1–15 of {total}" in all_text(page)
        await user.click(ALICE, CHANNEL, page.ts, ActionId.LIST_NEXT)

        def second_page() -> Message | None:
            msg = slack.state.message(CHANNEL, page.ts)
            return msg if msg is not None and f"16–30 of {total}" in all_text(msg) else None

        await slack.state.wait_for(second_page, timeout=10, what="the second page")
