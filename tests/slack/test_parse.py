"""The /vpn text parser and the button-click validator."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import NotAllowed, UsageError
from bot.slack.block_ids import ActionId
from bot.slack.parsing import (
    FOREIGN_BUTTON,
    MALFORMED_COMMAND,
    ButtonClick,
    Command,
    DeleteCommand,
    HelpCommand,
    HistoryCommand,
    PickCommand,
    parse_click,
    parse_command,
    parse_slash_command,
)
from bot.slack.parsing.primitives import ECHO_MAX, echo

DEFAULT = "cn-hangzhou"


def parse(text: str) -> Command:
    return parse_command(text, default_region=DEFAULT)


# --- fuzzing -----------------------------------------------------------------------------------

_words = st.sampled_from(
    [
        "delete",
        "history",
        "help",
        "--region",
        "--region=",
        "region=",
        "vco-abcd1234",
        "VCO-ABCD",
        "cn-shanghai",
        "payload",
        "payload-x",
        "<!channel>",
        "&amp;",
        "`",
        "50",
        "0",
        "51",
        "١٢",
        "-h",
        "/vpn",
        "\u212a",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=1200), st.lists(st.one_of(_words, st.text(max_size=12)), max_size=6).map(" ".join)
    )
)
def test_any_text_is_a_command_or_a_usage_error(text: str) -> None:
    """Whatever is typed, the parser returns a Command or raises UsageError, nothing else."""
    result: object
    try:
        result = parse(text)
    except UsageError as err:
        result = err
    if isinstance(result, UsageError):
        friendly = result.friendly
        assert friendly
        assert len(friendly) < 400, "usage errors never echo long input"
        assert "<!" not in friendly, "echoed text is escaped"
        assert "<@" not in friendly, "echoed text is escaped"
        return
    assert isinstance(result, DeleteCommand | PickCommand | HistoryCommand | HelpCommand)
    if isinstance(result, DeleteCommand):
        assert result.vco_id.isascii()
        assert result.vco_id == result.vco_id.lower()
    if isinstance(result, HistoryCommand):
        assert 1 <= result.limit <= 50


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"vco-[a-z0-9]{4,64}", fullmatch=True),
    st.from_regex(r"[a-z]{2,6}-[a-z0-9]{1,8}", fullmatch=True),
)
def test_every_well_formed_delete_round_trips(vco_id: str, region: str) -> None:
    """Each accepted spelling of the region gives the same command."""
    expected = DeleteCommand(vco_id=vco_id, region=region)
    for text in (
        f"delete {vco_id} {region}",
        f"delete {vco_id} --region {region}",
        f"delete --region={region} {vco_id}",
        f"delete region={region} {vco_id}",
    ):
        assert parse(text) == expected


# --- explicit cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "help", "HELP", "-h", "--help", "/vpn", "/vpn help"])
def test_empty_or_help_is_help(text: str) -> None:
    assert parse(text) == HelpCommand()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("delete vco-bp1abc2def3gh", DeleteCommand("vco-bp1abc2def3gh", DEFAULT)),
        ("delete vco-bp1abc2def3gh cn-shanghai", DeleteCommand("vco-bp1abc2def3gh", "cn-shanghai")),
        ("Delete VCO-BP1ABC2DEF3GH CN-Shanghai", DeleteCommand("vco-bp1abc2def3gh", "cn-shanghai")),
        ("delete `vco-bp1abc2def3gh`", DeleteCommand("vco-bp1abc2def3gh", DEFAULT)),
        ("delete &lt;vco-bp1abc2def3gh&gt;", DeleteCommand("vco-bp1abc2def3gh", DEFAULT)),
        ("/vpn delete vco-abcd --region ap-southeast-1", DeleteCommand("vco-abcd", "ap-southeast-1")),
        ("delete\u00a0vco-abcd\tus-west-1", DeleteCommand("vco-abcd", "us-west-1")),
        ("delete vco-payload1 cn-hangzhou", DeleteCommand("vco-payload1", "cn-hangzhou")),
        ("delete", PickCommand(DEFAULT)),
        ("delete --region cn-shanghai", PickCommand("cn-shanghai")),
        ("history", HistoryCommand(10)),
        ("history 50", HistoryCommand(50)),
        ("history 1", HistoryCommand(1)),
    ],
)
def test_valid_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("frobnicate", "I don't know the command `frobnicate`"),
        ("delete payload-x", "`payload-x` is not a VPN connection id"),
        ("delete vco-ab", "is not a VPN connection id"),
        ("delete vco-" + "a" * 65, "is not a VPN connection id"),
        ("delete vco-abc_d", "is not a VPN connection id"),
        ("delete vco-\u212aabcd", "is not a VPN connection id"),
        ("delete vco-abcd cn-hangzhou extra words", "Too many words: `extra words`"),
        ("delete vco-abcd cn_hangzhou", "is not a region id"),
        ("delete vco-abcd --region", "`--region` needs a value"),
        ("delete vco-abcd region=", "needs a value"),
        ("delete vco-abcd cn-hangzhou --region cn-beijing", "given twice"),
        ("delete vco-abcd --region cn-hangzhou region=cn-beijing", "given twice"),
        ("history 0", "from 1 to 50"),
        ("history 51", "from 1 to 50"),
        ("history ١٢", "from 1 to 50"),
        ("history 5 6", "Too many words"),
        ("vco-bp1abc2def3gh", "Did you mean `/vpn delete vco-bp1abc2def3gh`?"),
    ],
)
def test_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert fragment in info.value.friendly


def test_echoed_text_is_escaped() -> None:
    """A subcommand like <!channel> is echoed escaped, so the reply cannot ping the channel."""
    with pytest.raises(UsageError) as info:
        parse("<!channel>&")
    assert "&lt;!channel&gt;&amp;" in info.value.friendly
    assert "<!channel>" not in info.value.friendly


@pytest.mark.parametrize(
    "text",
    [
        "frob&lt;b&gt;&amp;",  # an unknown subcommand
        "delete vco-&lt;b&gt;&amp;",  # a malformed connection id
        "history &lt;b&gt;&amp;",  # a malformed count
        "status vco-&lt;b&gt;&amp;",  # a malformed id for status (its own parser)
        "list account=&lt;b&gt;&amp;",  # a malformed account name
    ],
)
def test_echo_shows_what_was_typed_escaped_once(text: str) -> None:
    """Slack sends ``<b>&`` as ``&lt;b&gt;&amp;``; every reply quotes it as typed, escaped once for mrkdwn."""
    with pytest.raises(UsageError) as info:
        parse(text)
    assert "&lt;b&gt;&amp;" in info.value.friendly
    assert "&amp;lt;" not in info.value.friendly, "Slack's entities are not escaped a second time"
    assert "<b>" not in info.value.friendly


def test_echo_unescapes_bounds_and_keeps_the_code_span() -> None:
    assert echo("&lt;!here&gt;") == "`&lt;!here&gt;`"
    assert echo("a`b") == "`a\u02cbb`"  # code(): a backtick cannot end the span
    # The bound counts what was typed, not Slack's entities.
    assert echo("&amp;" * 100) == echo("&" * 100)
    assert 0 < echo("&" * 100).count("&amp;") < ECHO_MAX


def test_oversized_text_is_not_echoed() -> None:
    text = "delete " + "x" * 2000
    with pytest.raises(UsageError) as info:
        parse(text)
    assert "too long" in info.value.friendly
    assert "xxxxxxxxxx" not in info.value.friendly


def test_long_tokens_are_echoed_bounded() -> None:
    with pytest.raises(UsageError) as info:
        parse("y" * 900)
    assert len(info.value.friendly) < 200


# --- button clicks -----------------------------------------------------------------------------


def click_body(
    *,
    value: str = "op-1",
    message_value: str | None = "op-1",
    action_id: str = ActionId.APPROVE,
    ts: str = "1700000000.000100",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0CLICKER"},
        "channel": {"id": "C0CHANNEL"},
        "container": {"type": "message", "message_ts": ts, "channel_id": "C0CHANNEL"},
        "response_url": "http://127.0.0.1:1/webhook/x",
        "actions": [
            {"action_id": action_id, "block_id": "vpn-delete-actions", "value": value, "type": "button"}
        ],
    }
    if message_value is not None:
        body["message"] = {
            "ts": ts,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "x"}},
                {
                    "type": "actions",
                    "elements": [
                        {"type": "button", "action_id": ActionId.APPROVE, "value": message_value},
                        {"type": "button", "action_id": ActionId.CANCEL, "value": message_value},
                    ],
                },
            ],
        }
    return body


def test_click_parses() -> None:
    assert parse_click(click_body()) == ButtonClick(
        action_id=ActionId.APPROVE,
        op_id="op-1",
        user_id="U0CLICKER",
        channel_id="C0CHANNEL",
        message_ts="1700000000.000100",
    )


def test_click_on_an_updated_message_is_left_to_the_server() -> None:
    """A stale client clicks a button the message no longer has: the server checks decide."""
    body = click_body()
    body["message"]["blocks"] = [b for b in body["message"]["blocks"] if b["type"] != "actions"]
    assert parse_click(body).op_id == "op-1"


def test_click_without_message_copy_is_accepted() -> None:
    """Ephemeral messages come without Slack's copy; the shape checks still apply."""
    assert parse_click(click_body(message_value=None)).op_id == "op-1"


@pytest.mark.parametrize(
    "body",
    [
        click_body(value="op-2"),  # value names another operation than the clicked message shows
        click_body(value="op-1", message_value="op-2"),
        click_body(value="x" * 5000, message_value="x" * 5000),  # oversized value
        click_body(value="op 1; drop"),
        click_body(action_id="something-else"),
        {**click_body(), "message": {**click_body()["message"], "ts": "1.2"}},
        {**click_body(), "actions": []},
        {**click_body(), "user": {"id": "<!channel>"}},
        {**click_body(), "actions": [{"action_id": ActionId.APPROVE, "value": {"op": 1}}]},
        {"type": "block_actions"},
    ],
)
def test_foreign_or_malformed_clicks_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(NotAllowed) as info:
        parse_click(body)
    assert info.value.friendly == FOREIGN_BUTTON


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_click_is_parsed_or_refused(junk: object) -> None:
    body = json.loads(json.dumps({"actions": [junk], "message": junk, "user": junk, "container": junk}))
    with contextlib.suppress(NotAllowed):
        parse_click(body)


def test_slash_command_payload_is_checked_by_the_id_rules() -> None:
    body = {
        "command": "/vpn",
        "text": "delete vco-abcd1234",
        "user_id": "U0ALICE",
        "channel_id": "C0VPNOPS",
        "team_id": "T0VPNDEMO",
        "response_url": "http://127.0.0.1:1/response/x",
    }
    request = parse_slash_command(body)
    assert (request.user_id, request.channel_id, request.team_id) == ("U0ALICE", "C0VPNOPS", "T0VPNDEMO")
    assert parse_slash_command({**body, "team_id": None}).team_id is None


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "<!channel>"},
        {"user_id": None},
        {"channel_id": "#general"},
        {"text": ["x"]},
        {"team_id": 5},
    ],
)
def test_malformed_slash_command_payloads_are_refused(change: dict[str, Any]) -> None:
    body = {"text": "help", "user_id": "U0ALICE", "channel_id": "C0VPNOPS", **change}
    with pytest.raises(NotAllowed) as info:
        parse_slash_command(body)
    assert info.value.friendly == MALFORMED_COMMAND
