"""The impact preview end to end: the real bot over HTTP, Slack-signed requests, the VPC sandbox.

The confirmation shows what the deletion takes down (tunnels, BGP, health check, the routes through
this connection and no other), still appears when a part of the preview is forbidden or slow, and no
Psk or BGP AuthKey reaches Slack, a log line or a database row.
"""

from __future__ import annotations

import json
import sqlite3

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import (
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_TUNNELS,
)
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_logs, all_text, has_buttons, wait_confirmation, wait_parent

# Routes the sandbox seeds on the same gateway for the other connections.
OTHER_CONNECTIONS_ROUTES = (
    "172.16.0.0/16",
    "10.200.0.0/16",
    "10.201.0.0/16",
    "172.16.1.0/24",
    "10.200.8.0/24",
)


def _block_text(message: object, block_id: BlockId) -> str:
    blocks = getattr(message, "blocks", [])
    found = [b for b in blocks if b.get("block_id") == block_id.value]
    assert len(found) == 1, f"no {block_id.value} block"
    return str(found[0]["text"]["text"])


async def _request(stack: LocalStack, vco_id: str, user: str = ALICE) -> None:
    reply = await stack.agent.slash_command(user, CHANNEL, f"delete {vco_id}")
    assert reply.status == 200, reply.body


async def test_preview_lists_the_routes_of_this_connection_only(stack: LocalStack) -> None:
    await _request(stack, SEED_VCO_HANGZHOU)
    card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)

    impact = _block_text(card, BlockId.IMPACT)
    routes = _block_text(card, BlockId.ROUTES)
    assert impact.startswith(":rotating_light: *Tunnel up · 3 routes go through it*")
    assert "traffic may be flowing through it right now" in impact
    assert "*Routes through it* (3):" in routes
    assert "`192.168.10.0/24` (destination-based)" in routes
    assert "`192.168.11.0/24` (destination-based)" in routes
    assert "`192.168.10.128/25` from `10.10.1.0/24` (policy-based)" in routes
    text = all_text(card)
    for other in OTHER_CONNECTIONS_ROUTES:
        assert other not in text
    assert "Tunnel up · 3 routes go through it" in card.text  # the notification fallback

    # The card keeps the preview, labelled as of the request, after the deletion.
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
    done = await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")
    assert "(at request time)" in _block_text(done, BlockId.IMPACT)
    assert "`192.168.10.128/25` from `10.10.1.0/24`" in _block_text(done, BlockId.ROUTES)


async def test_preview_of_a_bgp_and_a_dual_tunnel_connection(stack: LocalStack) -> None:
    await _request(stack, SEED_VCO_HANGZHOU_BGP)
    bgp_card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU_BGP)
    impact = _block_text(bgp_card, BlockId.IMPACT)
    assert "BGP peer 65001" in impact
    assert "*BGP:* on · local ASN 45104 · peer ASN 65001 · peer IP `169.254.11.2`" in impact
    assert "*Health check:* on, probing `10.200.0.1`" in impact
    assert "`10.200.0.0/16` (BGP-learned)" in _block_text(bgp_card, BlockId.ROUTES)

    await _request(stack, SEED_VCO_HANGZHOU_TUNNELS)
    dual = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU_TUNNELS)
    impact = _block_text(dual, BlockId.IMPACT)
    assert "1 of 2 tunnels up" in impact
    assert "Tunnel 1 · role `master` · state `active` · status `ipsec_sa_established`" in impact
    assert "Tunnel 2 · role `slave` · state `active` · status `ipsec_sa_not_established`" in impact


async def test_forbidden_route_lookup_degrades_the_preview_not_the_confirmation(stack: LocalStack) -> None:
    stack.vpc.state.faults.add(action="DescribeVpnRouteEntries", code="Forbidden")
    await _request(stack, SEED_VCO_HANGZHOU)
    card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)

    routes = _block_text(card, BlockId.ROUTES)
    assert "Routes: could not be read (Alibaba Cloud code `Forbidden`)" in routes
    # The policy-based routes and the tunnel state were still read.
    assert "`192.168.10.128/25` from `10.10.1.0/24` (policy-based)" in routes
    assert "Tunnel up" in _block_text(card, BlockId.IMPACT)
    assert any(
        r.action == "DescribeVpnRouteEntries" and r.outcome == "fault" for r in stack.vpc.state.requests
    )


async def test_slow_route_lookup_degrades_after_its_deadline(stack: LocalStack) -> None:
    # Above the 3 s per-part deadline, below the 10 s the confirmation is waited for.
    stack.vpc.state.faults.add(action="DescribeVpnRouteEntries", latency=8.0)
    await _request(stack, SEED_VCO_HANGZHOU)
    card = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU, within=7)

    routes = _block_text(card, BlockId.ROUTES)
    assert "Routes: could not be read (no answer within 3 s)" in routes
    assert "`192.168.10.128/25` from `10.10.1.0/24` (policy-based)" in routes


async def test_no_psk_or_auth_key_in_slack_logs_or_database(stack: LocalStack, sqlite_url: str) -> None:
    connections = [SEED_VCO_HANGZHOU_BGP, SEED_VCO_HANGZHOU_TUNNELS]
    secrets = {s for vco in connections for s in stack.vpc.state.connections[vco].secrets}
    assert stack.vpc.state.connections[SEED_VCO_HANGZHOU_BGP].bgp is not None  # an AuthKey is among them
    with all_logs() as logs:
        for vco in connections:
            await _request(stack, vco)
            card = await wait_confirmation(stack.slack.state, vco)
            await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
            await wait_parent(stack.slack.state, card.ts, "Deleted VPN connection")

    state = stack.slack.state
    slack = [all_text(m) for m in state.all_messages(CHANNEL)]
    slack += [
        json.dumps({"text": e.text, "blocks": list(e.blocks)})
        for m in state.all_messages(CHANNEL)
        for e in m.edits
    ]
    slack += [json.dumps(c.params, default=str) for c in state.api_calls]
    assert any("BGP peer 65001" in text for text in slack)  # the preview really was posted
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        rows = [
            repr(row)
            for table in ("operations", "audit", "outbox")
            for row in db.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
        ]
        impacts = [json.loads(r[0]) for r in db.execute("SELECT impact FROM operations")]
    assert len(impacts) == 2
    assert all(i["route_count"] >= 1 for i in impacts)  # the preview really was stored
    ops = await stack.bot.app.store.list_operations()
    assert {op.state for op in ops} == {OpState.DELETED}

    # The preview's own calls were logged, at DEBUG with their (redacted) answers.
    assert any("DescribeVpnPbrRouteEntries" in line and "'levelname': 'DEBUG'" in line for line in logs.lines)
    for secret in secrets:
        assert not [t for t in slack if secret in t], "a secret reached Slack"
        assert not [line for line in logs.lines if secret in line], "a secret reached the logs"
        assert not [row for row in rows if secret in row], "a secret reached the database"


async def test_the_connection_is_read_once_for_its_confirmation_and_preview(stack: LocalStack) -> None:
    # The preview reuses the lookup's DescribeVpnConnection answer: reading it twice doubled the
    # time to the confirmation when Alibaba answers slowly (issue 14), and the API calls. Two
    # requests for the same connection at once each find a reusable answer (two people: one person
    # asking twice is pointed at the first card).
    await _request(stack, SEED_VCO_HANGZHOU)
    await _request(stack, SEED_VCO_HANGZHOU, user=BOB)

    def cards() -> list[Message] | None:
        found = [m for m in stack.slack.state.messages(CHANNEL) if has_buttons(m)]
        return found if len(found) == 2 else None

    for card in await stack.slack.state.wait_for(cards, timeout=10, what="two confirmations"):
        assert "Tunnel up" in _block_text(card, BlockId.IMPACT)
    reads = stack.vpc.state.calls("DescribeVpnConnection")
    assert len(reads) == 2, [r.params for r in reads]
