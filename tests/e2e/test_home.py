"""The Home tab end to end: the real bot over HTTP (and Socket Mode), the VPC sandbox, the Slack stand-in.

Opening the tab publishes a view for that person: confirmations waiting for them (only if they may
approve), work in flight and the last finished, each linking to its thread.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import StandinState
from bot.sandbox.slack_user import SocketModeUser
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import local_stack, op_id_of, socket_mode_bot, wait_confirmation


def running(sqlite_url: str, **settings: Any) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings)


def _text(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"])


async def _home(state: StandinState, user: str, after: dict[str, Any] | None = None) -> dict[str, Any]:
    def published() -> dict[str, Any] | None:
        view = state.home_views.get(user)
        return view if view is not None and view is not after else None

    view = await state.wait_for(published, timeout=10, what=f"the Home tab of {user}")
    View(**{k: v for k, v in view.items() if k not in ("id", "team_id")}).validate_json()
    return view


def _section(view: dict[str, Any], block_id: str) -> list[str]:
    """The texts of the blocks under the heading ``block_id``, up to the next heading."""
    out: list[str] = []
    inside = False
    for block in view["blocks"]:
        if block.get("block_id", "").startswith("vpn-home-"):
            inside = block["block_id"] == block_id
            continue
        if inside:
            out.append(json.dumps(block))
    return out


async def test_home_lists_a_pending_confirmation_for_an_approver_only(sqlite_url: str) -> None:
    """Bob (approver) sees Alice's confirmation waiting for him; Carol (not one) and Alice (four-eyes) do not."""
    async with running(sqlite_url, approvers=[BOB]) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)

        reply = await stack.agent.open_home(BOB)
        assert reply.status == 200
        bob = await _home(stack.slack.state, BOB)
        pending = _section(bob, BlockId.HOME_PENDING)
        assert any(SEED_VCO_HANGZHOU in b for b in pending), bob
        assert any(f"p{confirmation.ts.replace('.', '')}" in b for b in pending), "links to its thread"

        await stack.agent.open_home(CAROL)
        carol = await _home(stack.slack.state, CAROL)
        assert BlockId.HOME_PENDING not in _text(carol)
        assert any(SEED_VCO_HANGZHOU in b for b in _section(carol, BlockId.HOME_RUNNING))

        await stack.agent.open_home(ALICE)
        alice = await _home(stack.slack.state, ALICE)
        assert BlockId.HOME_PENDING not in _text(alice), "the requester cannot approve her own request"


async def test_home_shows_finished_after_approval_and_refreshes(sqlite_url: str) -> None:
    """Once approved and done, the operation moves to Last finished the next time the tab opens."""
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        await stack.agent.open_home(BOB)
        first = await _home(stack.slack.state, BOB)
        assert not any(SEED_VCO_HANGZHOU in b for b in _section(first, BlockId.HOME_FINISHED))
        # Read the id before the click: the stand-in updates the message in place once approved.
        op_id = op_id_of(confirmation)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)

        async def finished() -> bool:
            op = await stack.bot.app.store.get_operation(op_id=op_id)
            return op is not None and op.is_terminal

        await stack.slack.state.wait_for(finished, timeout=20, what="the deletion to finish")
        await stack.agent.open_home(BOB)
        second = await _home(stack.slack.state, BOB, after=first)
        done = _section(second, BlockId.HOME_FINISHED)
        assert any(SEED_VCO_HANGZHOU in b and "deleted" in b for b in done), second


async def test_home_hides_operations_a_non_requester_may_not_see(sqlite_url: str) -> None:
    """With a requester list, someone not on it sees none of the operations."""
    async with running(sqlite_url, requesters=[ALICE], approvers=[BOB]) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        await stack.agent.open_home(CAROL)
        carol = await _home(stack.slack.state, CAROL)
        assert SEED_VCO_HANGZHOU not in _text(carol)


async def test_home_over_socket_mode(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """app_home_opened arrives as an events_api envelope; the view is published the same way."""
    async with socket_mode_bot(
        sqlite_url, monkeypatch, app_token="xapp-1-A0VPNBOT-1-home-e2e", approvers=[BOB]
    ) as world:
        slack = world.slack

        user = SocketModeUser(state=slack.state)
        await user.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU}")
        await wait_confirmation(slack.state, SEED_VCO_HANGZHOU)
        await user.open_home(BOB)
        bob = await _home(slack.state, BOB)
        assert any(SEED_VCO_HANGZHOU in b for b in _section(bob, BlockId.HOME_PENDING))
