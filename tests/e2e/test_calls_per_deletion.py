"""The Alibaba calls one deletion makes, counted at the VPC sandbox (issue 24).

Each call that remains has a reason (benchmarks/results.md, "Calls per deletion"); a read that
repeats one made moments before for the same connection, or a region list in front of the first
command, fails here. The snapshot just before DeleteVpnConnection stays a fresh read; the same
answers check the approval against the preview, with the gateway read alongside (issue 26).
"""

from __future__ import annotations

from collections import Counter

from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VPN_HANGZHOU, RecordedRequest
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CHANNEL
from .support import all_text, has_buttons

_READS = ("DescribeVpnConnection", "DescribeVpnRouteEntries", "DescribeVpnPbrRouteEntries")


async def _delete(stack: LocalStack, vco_id: str) -> tuple[list[RecordedRequest], list[RecordedRequest]]:
    """Request, approve and finish one deletion: the calls up to the confirmation, and after approval."""
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {vco_id} cn-hangzhou")
    assert reply.status == 200

    def confirmation() -> Message | None:
        for message in stack.slack.state.messages(CHANNEL):
            if vco_id in all_text(message) and has_buttons(message):
                return message
        return None

    card = await stack.slack.state.wait_for(confirmation, timeout=10, what="the confirmation")
    requested = list(stack.vpc.state.requests)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE, None)

    def deleted() -> Message | None:
        message = stack.slack.state.message(CHANNEL, card.ts)
        return message if message is not None and "eleted" in all_text(message) else None

    await stack.slack.state.wait_for(deleted, timeout=20, what="the deleted card")
    return requested, list(stack.vpc.state.requests[len(requested) :])


def _read(request: RecordedRequest) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What a read asks (action and parameters, paging aside): two alike ask the same thing."""
    params = {k: v for k, v in request.params.items() if k not in ("PageNumber", "PageSize")}
    return request.action, tuple(sorted(params.items()))


def _repeated(requests: list[RecordedRequest]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    asked = Counter(_read(r) for r in requests if r.action.startswith("Describe"))
    return [read for read, times in asked.items() if times > 1]


async def test_one_deletion_makes_each_call_once_and_the_snapshot_fresh(stack: LocalStack) -> None:
    requested, after = await _delete(stack, SEED_VCO_HANGZHOU)

    # Up to the confirmation: the connection, its gateway, and the routes through that gateway;
    # no DescribeRegions first (cn-hangzhou is a public region), no BGP routes (BGP is off here).
    assert Counter(r.action for r in requested) == Counter(
        {
            "DescribeVpnConnection": 1,
            "DescribeVpnGateway": 1,
            "DescribeVpnRouteEntries": 1,
            "DescribeVpnPbrRouteEntries": 1,
        }
    )
    assert _repeated(requested) == []

    # After approval: the snapshot (read afresh, before the delete; its answers and the gateway's
    # check the approval), the delete, the gateway until it is active again, and one check that
    # the connection is gone.
    actions = [r.action for r in after]
    delete_at = actions.index("DeleteVpnConnection")
    snapshot, following = actions[:delete_at], actions[delete_at + 1 :]
    assert Counter(snapshot) == Counter(
        {
            "DescribeVpnConnection": 1,
            "DescribeVpnRouteEntries": 1,
            "DescribeVpnPbrRouteEntries": 1,
            "DescribeVpnGateway": 1,
        }
    )
    assert actions.count("DeleteVpnConnection") == 1
    assert set(following) == {"DescribeVpnGateway", "DescribeVpnConnection"}
    assert following[-1] == "DescribeVpnConnection"
    assert following.count("DescribeVpnConnection") == 1
    assert _repeated(after[:delete_at]) == []
    # Per deletion: 4 + 4 + 1 + the polls + 1 (the polls depend on how long the gateway updates).
    assert len(requested) + len(after) == 4 + 4 + 1 + following.count("DescribeVpnGateway") + 1


async def test_a_bgp_connection_reads_its_bgp_routes_in_the_preview_and_the_snapshot(
    stack: LocalStack,
) -> None:
    requested, after = await _delete(stack, SEED_VCO_HANGZHOU_BGP)

    def route_lists(requests: list[RecordedRequest]) -> list[str]:
        return sorted(
            r.params.get("RouteEntryType", "") for r in requests if r.action == "DescribeVpnRouteEntries"
        )

    assert route_lists(requested) == ["bgp", "custom"]
    assert _repeated(requested) == []
    delete_at = [r.action for r in after].index("DeleteVpnConnection")
    assert route_lists(after[:delete_at]) == ["bgp", "custom"]
    assert all(r.params.get("VpnGatewayId", SEED_VPN_HANGZHOU) == SEED_VPN_HANGZHOU for r in after)
    assert {r.action for r in after[:delete_at]} == {*_READS, "DescribeVpnGateway"}
