"""The picker modal and Home tab builders, and the picker's payload models."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from slack_sdk.models.views import View
from slackfakes import T0, make_op

from bot.domain import OpState
from bot.errors import NotAllowed
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.blocks.views import (
    OPTIONS_MAX,
    build_connection_options,
    build_home,
    build_picker,
    picker_metadata,
)
from bot.slack.inventory import ConnectionRow
from bot.slack.parsing import FOREIGN_VIEW, parse_submission, parse_suggestion

CHANNEL = "C0VPNOPS"
ALICE = "U0ALICE"
ALIBABA_NAME_MAX = 128  # Alibaba Cloud's limit on a VPN connection's name


def _valid(view: dict[str, Any]) -> None:
    View(**view).validate_json()


def _row(i: int, name: str = "") -> ConnectionRow:
    return ConnectionRow(f"vco-bp1{i:018d}", name or f"office-{i}", "vpn-bp1gw", "ike_sa_established", "")


def test_picker_is_valid_block_kit_and_starts_at_the_given_region() -> None:
    view = build_picker(
        regions=["us-west-1", "cn-shanghai", "cn-hangzhou"], region="cn-hangzhou", channel_id=CHANNEL
    )
    _valid(view)
    options = [o["value"] for o in view["blocks"][0]["element"]["options"]]
    assert options == ["cn-hangzhou", "cn-shanghai", "us-west-1"]
    assert view["blocks"][0]["element"]["initial_option"]["value"] == "cn-hangzhou"
    assert view["blocks"][1]["element"]["type"] == "external_select"
    assert json.loads(view["private_metadata"]) == {"c": CHANNEL, "r": "cn-hangzhou"}


def test_picker_with_many_regions_stays_within_slacks_option_limit() -> None:
    regions = [f"xx-region-{i}" for i in range(150)]
    view = build_picker(regions=regions, region="cn-hangzhou", channel_id=CHANNEL)
    _valid(view)
    assert len(view["blocks"][0]["element"]["options"]) == OPTIONS_MAX


def test_connection_options_cut_long_names_but_keep_the_id() -> None:
    long = _row(1, "n" * ALIBABA_NAME_MAX)
    rows = [long, *(_row(i) for i in range(2, 150))]
    options = build_connection_options(rows)["options"]
    assert len(options) == OPTIONS_MAX
    first = options[0]["text"]["text"]
    assert len(first) <= 75
    assert first.endswith(long.id)
    assert options[0]["value"] == long.id
    # The options block_suggestion answers are the same objects an external select would hold.
    _valid(
        {
            **build_picker(regions=[], region="cn-hangzhou", channel_id=CHANNEL),
            "blocks": [
                {
                    "type": "input",
                    "label": {"type": "plain_text", "text": "x"},
                    "element": {"type": "static_select", "action_id": "a", "options": options},
                }
            ],
        }
    )


def test_home_is_valid_and_lists_each_part_with_thread_links() -> None:
    waiting = make_op(id="op-w")
    running = make_op(id="op-r", state=OpState.DELETING)
    done = make_op(id="op-d", state=OpState.DELETED, finished_at=T0)
    link = "https://acme.slack.com/archives/C0CHANNEL/p1700000000000100"
    view = build_home(pending=[waiting], running=[running], finished=[done], links={"op-w": link}, now=T0)
    _valid(view)
    text = json.dumps(view["blocks"])
    assert f"<{link}|thread>" in text
    assert "in progress (deleting)" in text
    assert "<#C0CHANNEL>" in text  # no link: the channel instead
    assert BlockId.HOME_PENDING in text


def test_home_without_approval_rights_has_no_pending_heading() -> None:
    view = build_home(pending=None, running=[], finished=[], links={}, now=T0)
    _valid(view)
    assert BlockId.HOME_PENDING not in json.dumps(view["blocks"])


def test_home_escapes_hostile_names_and_caps_long_lists() -> None:
    hostile = replace(make_op().connection, name="<!channel> *x* " + "n" * ALIBABA_NAME_MAX)
    ops = [make_op(id=f"op-{i}", state=OpState.DELETED, connection=hostile) for i in range(60)]
    view = build_home(pending=[], running=ops, finished=ops, links={"op-1": "javascript:alert(1)"}, now=T0)
    _valid(view)
    text = json.dumps(view["blocks"])
    assert "<!channel>" not in text
    assert "javascript:" not in text
    assert len(view["blocks"]) <= 100


# --- payload models ---------------------------------------------------------------------------------


def _view(meta: str | None = None, values: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "V1",
        "callback_id": CallbackId.PICKER.value,
        "private_metadata": meta
        if meta is not None
        else picker_metadata(channel_id=CHANNEL, region="cn-hangzhou"),
        "state": {"values": values or {}},
        **extra,
    }


def _suggestion(value: str = "office", **view: Any) -> dict[str, Any]:
    return {
        "type": "block_suggestion",
        "user": {"id": ALICE},
        "action_id": ActionId.PICK_CONNECTION.value,
        "value": value,
        "view": _view(**view),
    }


def _choice(region: str | None, vco: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if region is not None:
        values[BlockId.PICK_REGION.value] = {
            ActionId.PICK_REGION.value: {"selected_option": {"value": region}}
        }
    if vco is not None:
        values[BlockId.PICK_CONNECTION.value] = {
            ActionId.PICK_CONNECTION.value: {"selected_option": {"value": vco}}
        }
    return values


def _submission(values: dict[str, Any], **view: Any) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "user": {"id": ALICE},
        "team": {"id": "T0TEAM"},
        "view": _view(values=values, **view),
    }


def test_suggestion_reads_words_and_the_chosen_region() -> None:
    got = parse_suggestion(_suggestion(" office  beijing ", values=_choice("cn-shanghai", None)))
    assert (got.user_id, got.channel_id, got.region, got.words) == (
        ALICE,
        CHANNEL,
        "cn-shanghai",
        ("office", "beijing"),
    )
    assert parse_suggestion(_suggestion("")).region == "cn-hangzhou"


@pytest.mark.parametrize(
    "body",
    [
        _suggestion("office'; DROP TABLE"),
        _suggestion("<!channel>"),
        _suggestion("x" * 65),
        _suggestion(meta=json.dumps({"c": "not-a-channel", "r": "cn-hangzhou"})),
        _suggestion(meta=json.dumps({"c": CHANNEL, "r": "../etc"})),
        _suggestion(meta="not json"),
        _suggestion(values=_choice("cn-hangzhou\n", None)),
        {**_suggestion(), "action_id": "vpn-something-else"},
        {**_suggestion(), "view": {**_view(), "callback_id": "someone-elses"}},
        {**_suggestion(), "user": {"id": "alice"}},
    ],
)
def test_forged_suggestions_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(NotAllowed) as err:
        parse_suggestion(body)
    assert err.value.message == FOREIGN_VIEW


def test_submission_carries_channel_region_and_connection() -> None:
    got = parse_submission(_submission(_choice("cn-shanghai", "vco-uf6c0nn3ct10n5h4ngh4a")))
    assert (got.user_id, got.team_id, got.channel_id, got.region, got.vco_id) == (
        ALICE,
        "T0TEAM",
        CHANNEL,
        "cn-shanghai",
        "vco-uf6c0nn3ct10n5h4ngh4a",
    )
    assert parse_submission(_submission(_choice(None, None))).vco_id is None


@pytest.mark.parametrize(
    "values",
    [
        _choice("cn-hangzhou", "none"),
        _choice("cn-hangzhou", "vco-<!here>"),
        _choice("cn hangzhou", "vco-bp1abc2def3gh"),
        _choice("cn-hangzhou", "VCO-" + "a" * 200),
    ],
)
def test_forged_submissions_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(NotAllowed):
        parse_submission(_submission(values))


# --- the Home listener against the Slack stand-in ------------------------------------------------


async def test_home_listener_publishes_for_a_real_user_and_ignores_a_forged_one() -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.sandbox.slack import start_slack_standin
    from bot.slack.home import make_home_listener

    ops = [make_op(id="op-w"), make_op(id="op-d", state=OpState.DELETED, finished_at=T0)]
    asked: list[dict[str, Any]] = []

    async def recent(**kwargs: Any) -> list[Any]:
        asked.append(kwargs)
        return ops

    standin = await start_slack_standin(bot_token="xoxb-home")
    try:
        client = AsyncWebClient(token="xoxb-home", base_url=standin.url)
        listener = make_home_listener(recent=recent, read_policy=None, approvals=None)
        await listener(event={"type": "app_home_opened", "user": "<!channel>", "tab": "home"}, client=client)
        await listener(event={"type": "app_home_opened", "user": ALICE, "tab": "messages"}, client=client)
        assert standin.state.home_views == {}
        assert asked == []
        await listener(event={"type": "app_home_opened", "user": ALICE, "tab": "home"}, client=client)
        view = standin.state.home_views[ALICE]
        text = json.dumps(view["blocks"])
        assert "op-w" not in text  # ids of requests are not shown; the connection is
        assert BlockId.HOME_PENDING in text
        assert asked == [{"finished": 10}]
        assert [c.method for c in standin.state.api_calls] == ["chat.getPermalink"] * 2 + ["views.publish"]
    finally:
        await standin.close()
