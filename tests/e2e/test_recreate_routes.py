"""Recreate end to end on a big connection: the real bot over HTTP, the VPC sandbox, the Slack stand-in.

A BGP, dual-tunnel connection with 200 routes (some not published to the VPC) and 20 tags (some
with prefixes Create refuses) is deleted and recreated. The new connection has exactly the
snapshot's routes, each once, with the same publish state: the create says AutoConfigRoute=false,
so Alibaba adds none of its own (the sandbox would, for each remote subnet). What cannot come back
is listed in the modal before the key is typed, and in the thread after.
"""

from __future__ import annotations

import json
from collections import Counter

from bot.domain import OPERATION_TAG
from bot.sandbox.local import start_local_stack
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU_TUNNELS, SEED_VPN_HANGZHOU, PbrRoute, Route, SandboxState
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CHANNEL
from .support import wait_thread
from .test_recreate import KEY, delete, open_modal, psk_values, recreate_confirmation

RESERVED = {"acs:rm:rgId": "rg-old", "aliyun-billing": "cost-1", "acs:tag:owner": "netops"}
TAGS = {f"team-{i:02d}": f"v{i}" for i in range(17)} | RESERVED  # 20 in all
RESOURCE_GROUP = "rg-aek2netops"


def routes_of(vpc: SandboxState, vco_id: str) -> Counter[tuple[str, str, str, str]]:
    """Every route through ``vco_id`` as (kind, source, destination, state), counted (duplicates show)."""
    found: Counter[tuple[str, str, str, str]] = Counter(
        ("custom", "", r.dest, r.state) for r in vpc.routes if r.next_hop == vco_id and r.kind == "custom"
    )
    found.update(("policy", r.source, r.dest, r.state) for r in vpc.pbr_routes if r.next_hop == vco_id)
    return found


def big_connection(vpc: SandboxState) -> None:
    """The seeded dual-tunnel BGP connection, grown to 200 routes and 20 tags."""
    conn = vpc.connections[SEED_VCO_HANGZHOU_TUNNELS]
    assert conn.enable_tunnels_bgp
    assert len(conn.tunnels) == 2
    conn.tags = dict(TAGS)
    conn.resource_group_id = RESOURCE_GROUP
    # A second remote subnet with no route through the connection: AutoConfigRoute=true would add one.
    conn.remote_subnet = "172.16.0.0/16,172.30.0.0/16"
    for i in range(148):
        state = "normal" if i % 4 == 0 else "published"
        vpc.routes.append(Route(SEED_VPN_HANGZHOU, f"10.100.{i}.0/24", conn.id, state=state))
    for j in range(50):
        state = "normal" if j % 5 == 0 else "published"
        vpc.pbr_routes.append(
            PbrRoute(SEED_VPN_HANGZHOU, f"10.20.{100 + j}.0/24", f"172.18.{j}.0/24", conn.id, state=state)
        )


async def test_a_bgp_dual_tunnel_connection_with_200_routes_comes_back_with_exactly_its_routes(
    sqlite_url: str,
) -> None:
    stack = await start_local_stack(
        database_url=sqlite_url,
        update_seconds=0.01,
        settings={"poll_interval_seconds": 0.02, "busy_retry_base_seconds": 0.02},
    )
    try:
        vpc, state = stack.vpc.state, stack.slack.state
        big_connection(vpc)
        before = routes_of(vpc, SEED_VCO_HANGZHOU_TUNNELS)
        assert sum(before.values()) == 200
        assert {s for (_, _, _, s) in before} == {"published", "normal"}

        ts = await delete(stack, SEED_VCO_HANGZHOU_TUNNELS)
        assert not routes_of(vpc, SEED_VCO_HANGZHOU_TUNNELS)  # they went with the connection
        view = await open_modal(stack, ts)

        # One key asked (no BGP key: Create takes none); what cannot come back is said before it.
        inputs = [b["block_id"] for b in view["blocks"] if b["type"] == "input"]
        assert inputs == [BlockId.RECREATE_PSK]
        ids = [b.get("block_id") for b in view["blocks"]]
        assert ids.index(BlockId.RECREATE_NOT_CARRIED) < ids.index(BlockId.RECREATE_PSK)
        shown = json.dumps(view)
        assert "BGP authentication* is not asked for" in shown
        for lost in (RESOURCE_GROUP, *RESERVED, "Route descriptions"):
            assert lost in shown, lost

        assert (await stack.agent.submit(ALICE, view["id"], psk_values(KEY))).status == 200
        confirmation = await recreate_confirmation(state, ts)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        thread = await wait_thread(state, ts, "Recreated in", within=180)

        [recreation] = [op for op in await stack.bot.app.store.list_operations() if op.is_recreate]
        new_id = recreation.new_vco_id
        assert new_id is not None
        # Exactly the snapshot's routes: none missing, none twice, none extra, same publish state.
        assert routes_of(vpc, new_id) == before
        assert "200 of 200 routes back on it" in thread
        assert "Not carried over" in thread
        assert RESOURCE_GROUP in thread

        [create] = vpc.accepted("CreateVpnConnection")
        params = create.params
        assert params["AutoConfigRoute"] == "false"
        sent_tags = {
            params[f"Tags.{n}.Key"]: params[f"Tags.{n}.Value"]
            for n in range(1, 21)
            if f"Tags.{n}.Key" in params
        }
        assert sent_tags == {k: v for k, v in TAGS.items() if k not in RESERVED} | {
            OPERATION_TAG: recreation.id
        }
        assert not [k for k, v in params.items() if "AuthKey" in k or "AuthKey" in v]
        assert params["EnableTunnelsBgp"] == "true"
        new = vpc.connections[new_id]
        assert [t.psk for t in new.tunnels] == [KEY, KEY]
        assert all(t.bgp is not None for t in new.tunnels)
        # Each route was sent once: nothing refused as already there, nothing sent twice.
        sent = vpc.accepted("CreateVpnRouteEntry") + vpc.accepted("CreateVpnPbrRouteEntry")
        assert len(sent) == 200
        assert not [r for r in vpc.requests if r.code == "Sandbox.RouteEntryExists"]
    finally:
        await stack.aclose()
