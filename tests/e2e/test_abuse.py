"""Abuse end to end, through the real app over HTTP with signed requests: hostile names, floods, click storms.

- A connection and gateway named with Slack's formatting characters restyle nothing on the card.
- One person asking again for the same connection gets a pointer to the open card, not a new one.
- Past VPNBOT_USER_RATE_PER_MINUTE a person is told to slow down and nothing reaches the cloud.
- A refused click storm is one audit row with a count, so ``/vpn history`` keeps the real actions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, deny, has_buttons, op_id_of, wait_confirmation

# Every formatting character Slack's mrkdwn knows, in a name the cloud console would accept from an API.
HOSTILE_NAME = "*bold* _it_ ~gone~ ```fence``` `tick` :boom: <!channel>\n&gt; quoted"
HOSTILE_GATEWAY = "~*gw*~ `x`"
_CODE_RE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


@asynccontextmanager
async def running(sqlite_url: str, **settings: Any) -> AsyncIterator[LocalStack]:
    stack = await start_local_stack(database_url=sqlite_url, update_seconds=0.3, settings=settings)
    try:
        yield stack
    finally:
        await stack.aclose()


def _mrkdwn(message: Message) -> Iterator[str]:
    """The fallback text and every mrkdwn text object of ``message``."""
    yield message.text

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                yield node["text"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(message.blocks)


def _ephemerals_saying(stack: LocalStack, user: str, needle: str) -> list[Message]:
    return [m for m in stack.slack.state.ephemerals(user, CHANNEL) if needle in all_text(m)]


def _cards(stack: LocalStack, vco_id: str) -> list[Message]:
    return [m for m in stack.slack.state.messages(CHANNEL) if vco_id in all_text(m) and has_buttons(m)]


# --- hostile names --------------------------------------------------------------------------------


async def test_hostile_names_restyle_nothing_on_the_card(sqlite_url: str) -> None:
    async with running(sqlite_url) as stack:
        conn = stack.vpc.state.connections[SEED_VCO_HANGZHOU]
        conn.name = HOSTILE_NAME
        stack.vpc.state.gateways[conn.gateway_id].name = HOSTILE_GATEWAY
        reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        assert reply.status == 200
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        texts = list(_mrkdwn(card))
        shown = "\n".join(texts)
        # The names are there, whole, each inside one code span (backticks as lookalikes, the break a space).
        assert "`*bold* _it_ ~gone~ ˋˋˋfenceˋˋˋ ˋtickˋ :boom: &lt;!channel&gt; &amp;gt; quoted`" in shown
        assert "`~*gw*~ ˋxˋ`" in shown
        for text in texts:
            outside = _CODE_RE.sub("", text)
            assert "`" not in outside, text  # every span the bot opened is closed by the bot
            for fragment in ("*bold*", "_it_", "~gone~", "~*gw*~", ":boom:", "quoted", "<!channel>"):
                assert fragment not in outside, (fragment, text)
        assert not any(line.startswith(("&gt;", ">")) for text in texts for line in text.split("\n"))


# --- one open request per person and connection ------------------------------------------------------


async def test_asking_again_points_at_the_open_card_instead_of_posting_another(sqlite_url: str) -> None:
    async with running(sqlite_url) as stack:
        replies = await asyncio.gather(
            *(stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}") for _ in range(6))
        )
        assert [r.status for r in replies] == [200] * 6
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        await stack.slack.state.wait_for(
            lambda: len(_ephemerals_saying(stack, ALICE, "You already asked to delete")) >= 5,
            timeout=10,
            what="five replies pointing at the open request",
        )
        assert _cards(stack, SEED_VCO_HANGZHOU) == [card]
        ops = await stack.bot.app.store.list_operations()
        assert [op.id for op in ops] == [op_id_of(card)]

        # Once the card is posted, the reply links to it.
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        link = f"/archives/{CHANNEL}/p{card.ts.replace('.', '')}|its confirmation>"
        await stack.slack.state.wait_for(
            lambda: _ephemerals_saying(stack, ALICE, link) or None, timeout=10, what="a reply with the link"
        )
        assert len(_cards(stack, SEED_VCO_HANGZHOU)) == 1
        describes = [r for r in stack.vpc.state.requests if r.action == "DescribeVpnConnection"]

        # Someone else may still ask (their own card); after a cancel, Alice may ask again.
        await stack.agent.slash_command(BOB, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        await stack.slack.state.wait_for(
            lambda: len(_cards(stack, SEED_VCO_HANGZHOU)) == 2 or None, timeout=10, what="Bob's card"
        )
        assert len([r for r in stack.vpc.state.requests if r.action == "DescribeVpnConnection"]) > len(
            describes
        )
        await deny(stack, ALICE, card.ts)
        await stack.slack.state.wait_for(
            lambda: "Cancelled" in all_text(stack.slack.state.message(CHANNEL, card.ts) or card) or None,
            timeout=10,
            what="the cancelled card",
        )
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        await stack.slack.state.wait_for(
            lambda: (
                (len(_cards(stack, SEED_VCO_HANGZHOU)) == 2 and card not in _cards(stack, SEED_VCO_HANGZHOU))
                or None
            ),
            timeout=10,
            what="Alice's new card",
        )


# --- the rate per person ------------------------------------------------------------------------------


async def test_past_the_rate_a_person_is_told_to_slow_down_and_nothing_reaches_the_cloud(
    sqlite_url: str,
) -> None:
    async with running(sqlite_url, user_rate_per_minute=3) as stack:
        for _ in range(3):
            reply = await stack.agent.slash_command(ALICE, CHANNEL, "help")
            assert "Usage" in reply.body
        before = len(stack.vpc.state.requests)
        for text in ("status vco-bp1zzzzzzzzzzzzzzzzzz1", "list", f"delete {SEED_VCO_HANGZHOU}", "help"):
            reply = await stack.agent.slash_command(ALICE, CHANNEL, text)
            assert reply.status == 200
            body = reply.json()
            assert body["response_type"] == "ephemeral"
            assert "Slow down" in body["text"]
            assert "more than 3 commands and lookups in a minute" in body["text"]
        await asyncio.sleep(0)  # nothing was started after the ack
        assert len(stack.vpc.state.requests) == before
        assert stack.slack.state.messages(CHANNEL) == []
        assert await stack.bot.app.store.list_operations() == []
        # Someone else has their own allowance.
        reply = await stack.agent.slash_command(BOB, CHANNEL, "help")
        assert "Usage" in reply.body


# --- refused click storms ---------------------------------------------------------------------------------


async def test_a_refused_click_storm_is_one_audit_row_with_a_count(sqlite_url: str) -> None:
    async with running(sqlite_url, approvers=[BOB], requesters=[ALICE, BOB]) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        clicks = 12
        for _ in range(clicks):
            reply = await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.APPROVE)
            assert reply.status == 200
        await stack.slack.state.wait_for(
            lambda: len(stack.slack.state.ephemerals(CAROL, CHANNEL)) >= clicks or None,
            timeout=10,
            what="every click refused",
        )
        store = stack.bot.app.store

        async def counted() -> list[Any]:
            return [e for e in await store.recent_audit(limit=100, op_id=op_id) if e.action == "refused"]

        refused = await counted()
        assert len(refused) == 1, f"{len(refused)} audit rows for {clicks} refused clicks"
        assert [(e.actor_id, e.times) for e in refused] == [(CAROL, clicks)]
        assert [e.action for e in await store.recent_audit(limit=100, op_id=op_id)] == [
            "refused",
            "requested",
        ]
        # The real action is still in the history, next to one counted line.
        await stack.agent.slash_command(BOB, CHANNEL, "history 5")
        history = await stack.slack.state.wait_for(
            lambda: _ephemerals_saying(stack, BOB, "Last ") or None, timeout=10, what="the history"
        )
        text = all_text(history[-1])
        assert "requested" in text
        assert f"({clicks} times" in text
        assert text.count("*refused*") == 1
        assert has_buttons(stack.slack.state.message(CHANNEL, card.ts) or card)


async def test_delete_from_a_list_row_twice_points_at_the_open_card(sqlite_url: str) -> None:
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"list {SEED_VCO_HANGZHOU[:12]}")
        page = await stack.slack.state.wait_for(
            lambda: next(iter(_ephemerals_saying(stack, ALICE, "IPsec-VPN connections")), None),
            timeout=10,
            what="the list page",
        )
        await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)
        card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)
        await stack.slack.state.wait_for(
            lambda: _ephemerals_saying(stack, ALICE, "You already asked to delete") or None,
            timeout=10,
            what="a pointer to the open card",
        )
        assert _cards(stack, SEED_VCO_HANGZHOU) == [card]


async def test_list_paging_counts_against_the_rate(sqlite_url: str) -> None:
    async with running(sqlite_url, user_rate_per_minute=2) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "list")
        page = await stack.slack.state.wait_for(
            lambda: next(iter(_ephemerals_saying(stack, ALICE, "IPsec-VPN connections")), None),
            timeout=10,
            what="the list page",
        )
        await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)  # the second of two
        await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        before = len(stack.vpc.state.requests)
        await stack.agent.click(ALICE, CHANNEL, page.ts, ActionId.LIST_DELETE)
        await stack.slack.state.wait_for(
            lambda: _ephemerals_saying(stack, ALICE, "Slow down") or None, timeout=10, what="slow down"
        )
        assert len(stack.vpc.state.requests) == before
