"""The ``/vpn delete`` picker end to end: the real bot over HTTP, the VPC sandbox, the Slack stand-in.

``/vpn delete`` with no id opens a modal; typing "office" in the connection field lists matching
connections (block_suggestion); submitting posts the same confirmation as ``/vpn delete <id>``.
Forged suggestions and submissions are refused before anything reaches the cloud.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import StandinState
from bot.sandbox.slack_user import SocketModeUser, selected_option
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_SHANGHAI
from bot.slack.block_ids import ActionId, BlockId, CallbackId

from .conftest import ALICE, CAROL, CHANNEL
from .support import local_stack, socket_mode_bot, wait_confirmation


def running(sqlite_url: str, **settings: Any) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings)


async def _open_view(state: StandinState) -> dict[str, Any]:
    def opened() -> dict[str, Any] | None:
        return next(iter(state.views.values()), None)

    return await state.wait_for(opened, timeout=10, what="the picker modal")


def _cloud_actions(stack: LocalStack) -> list[str]:
    return [r.action for r in stack.vpc.state.requests if r.action != "DescribeRegions"]


def _values(region: str, vco_option: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {
        BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": region})}
    }
    if vco_option is not None:
        values[BlockId.PICK_CONNECTION] = {
            ActionId.PICK_CONNECTION: selected_option(vco_option, "external_select")
        }
    return values


async def test_picker_from_typing_office_to_a_posted_confirmation(sqlite_url: str) -> None:
    """Type "office", pick the match, submit: the confirmation is posted in the command's channel."""
    async with running(sqlite_url) as stack:
        reply = await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        assert reply.status == 200, reply.body
        view = await _open_view(stack.slack.state)
        View(**{k: v for k, v in view.items() if k not in ("id", "hash", "team_id")}).validate_json()
        assert view["callback_id"] == CallbackId.PICKER

        found = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, "office")
        options = found.json()["options"]
        assert [o["value"] for o in options] == [SEED_VCO_HANGZHOU]
        assert "office-beijing" in options[0]["text"]["text"]

        done = await stack.agent.submit(ALICE, view["id"], _values("cn-hangzhou", options[0]))
        assert done.status == 200, done.body
        assert not done.json(), "a plain ack closes the modal"
        await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        assert view["id"] not in stack.slack.state.views


async def test_picker_searches_the_region_chosen_in_the_modal(sqlite_url: str) -> None:
    """After choosing another region, the search lists that region's connections."""
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        regions = [o["value"] for o in view["blocks"][0]["element"]["options"]]
        assert regions[0] == "cn-hangzhou"
        assert "cn-shanghai" in regions
        found = await stack.agent.suggest(
            ALICE, view["id"], ActionId.PICK_CONNECTION, "OFFICE", _values("cn-shanghai", None)
        )
        assert [o["value"] for o in found.json()["options"]] == [SEED_VCO_SHANGHAI]
        done = await stack.agent.submit(ALICE, view["id"], _values("cn-shanghai", found.json()["options"][0]))
        assert done.status == 200, done.body
        await wait_confirmation(stack.slack.state, SEED_VCO_SHANGHAI)


async def test_picker_search_is_refused_for_a_forged_region_and_odd_text(sqlite_url: str) -> None:
    """A region or search text Slack would never send gets an explanatory option, no cloud call."""
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        before = _cloud_actions(stack)
        odd = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, "office'; DROP <x>")
        assert odd.json()["options"][0]["value"] == "none"
        forged = {**view, "private_metadata": json.dumps({"c": CHANNEL, "r": "../../etc"})}
        stack.slack.state.views[view["id"]] = forged
        bad_region = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, "office")
        assert "did not come from this bot" in bad_region.json()["options"][0]["text"]["text"]
        assert _cloud_actions(stack) == before


@pytest.mark.parametrize(
    ("values", "field", "needle"),
    [
        (_values("cn-hangzhou", None), BlockId.PICK_CONNECTION, "Pick a connection"),
        (_values("cn-hangzhou", {"value": "none"}), BlockId.PICK_CONNECTION, "did not come from this bot"),
        (_values("cn-hangzhou", {"value": "vco-doesnotexist000000"}), BlockId.PICK_CONNECTION, "no longer"),
        (_values("xx-nowhere-9", {"value": SEED_VCO_HANGZHOU}), BlockId.PICK_REGION, "no VPC region"),
    ],
)
async def test_bad_submissions_show_errors_in_the_modal(
    sqlite_url: str, values: dict[str, dict[str, Any]], field: str, needle: str
) -> None:
    """An empty choice, a forged value, a connection gone meanwhile, or an unknown region stay in the modal."""
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        reply = await stack.agent.submit(ALICE, view["id"], values)
        body = reply.json()
        assert body["response_action"] == "errors", body
        assert needle in body["errors"][field], body
        assert "DeleteVpnConnection" not in _cloud_actions(stack)
        assert view["id"] in stack.slack.state.views  # the modal stays open
        assert not stack.slack.state.messages(CHANNEL)


async def test_policy_refusal_shows_in_the_modal(sqlite_url: str) -> None:
    """A region the bot may not touch is refused in the modal, before any lookup."""
    async with running(sqlite_url, allowed_regions=["cn-shanghai"], default_region="cn-shanghai") as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        region_options = view["blocks"][0]["element"]["options"]
        assert [o["value"] for o in region_options] == ["cn-shanghai"]
        reply = await stack.agent.submit(
            ALICE, view["id"], _values("cn-hangzhou", {"value": SEED_VCO_HANGZHOU})
        )
        body = reply.json()
        assert body["response_action"] == "errors"
        assert BlockId.PICK_REGION in body["errors"], body
        assert not stack.slack.state.messages(CHANNEL)


async def test_picker_over_socket_mode(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The modal, the search and the submission as Socket Mode envelopes."""
    async with socket_mode_bot(sqlite_url, monkeypatch, app_token="xapp-1-A0VPNBOT-1-picker-e2e") as world:
        slack = world.slack

        user = SocketModeUser(state=slack.state)
        await user.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(slack.state)
        found = await user.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, "office")
        assert found.payload is not None
        options = found.payload["options"]
        assert [o["value"] for o in options] == [SEED_VCO_HANGZHOU]
        await user.submit(ALICE, view["id"], _values("cn-hangzhou", options[0]))
        await wait_confirmation(slack.state, SEED_VCO_HANGZHOU)


async def test_a_forged_channel_in_the_modal_is_refused_by_the_policy(sqlite_url: str) -> None:
    """Swapping the channel carried in private_metadata for one outside the allowed list posts nothing."""
    async with running(sqlite_url, allowed_channels=[CHANNEL]) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        forged = {**view, "private_metadata": json.dumps({"c": "C0RANDOM", "r": "cn-hangzhou"})}
        stack.slack.state.views[view["id"]] = forged
        reply = await stack.agent.submit(
            ALICE, view["id"], _values("cn-hangzhou", {"value": SEED_VCO_HANGZHOU})
        )
        body = reply.json()
        assert body["response_action"] == "errors"
        assert "can't be listed or inspected in this channel" in body["errors"][BlockId.PICK_REGION]
        assert f"#{CHANNEL}" in body["errors"][BlockId.PICK_REGION]
        assert "<#" not in body["errors"][BlockId.PICK_REGION], "modal errors are plain text"
        assert not stack.slack.state.messages("C0RANDOM")
        assert not stack.slack.state.messages(CHANNEL)
        assert "DescribeVpnConnection" not in _cloud_actions(stack)


async def test_an_empty_region_says_so_in_the_search_and_on_submit(sqlite_url: str) -> None:
    """A region without connections answers the search with one explanatory option; submitting it is refused."""
    async with running(sqlite_url) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        found = await stack.agent.suggest(
            ALICE, view["id"], ActionId.PICK_CONNECTION, "", _values("eu-central-1", None)
        )
        [only] = found.json()["options"]
        assert only["text"]["text"] == "No IPsec connections in eu-central-1"
        reply = await stack.agent.submit(ALICE, view["id"], _values("eu-central-1", only))
        assert reply.json()["response_action"] == "errors"
        assert not stack.slack.state.messages(CHANNEL)


async def test_a_refusal_after_the_modal_closed_reaches_the_requester_privately(sqlite_url: str) -> None:
    """An approver who may look but not request passes the modal's read check; the request is refused to her alone."""
    async with running(sqlite_url, requesters=[CAROL], approvers=[ALICE]) as stack:
        await stack.agent.slash_command(ALICE, CHANNEL, "delete")
        view = await _open_view(stack.slack.state)
        reply = await stack.agent.submit(
            ALICE, view["id"], _values("cn-hangzhou", {"value": SEED_VCO_HANGZHOU})
        )
        assert not reply.json()

        def refused() -> bool:
            return any(
                "not on the list of people who may request" in m.text
                for m in stack.slack.state.ephemerals(ALICE, CHANNEL)
            )

        await stack.slack.state.wait_for(refused, timeout=10, what="the private refusal")
        assert not stack.slack.state.messages(CHANNEL)
        assert "DeleteVpnConnection" not in _cloud_actions(stack)
