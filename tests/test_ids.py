"""One home for id rules: settings, command parsing, click parsing, blocks and endpoints agree."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from bot import ids
from bot.cloud.endpoints import SDK_ENDPOINT_MAP, default_host
from bot.config import explicit_settings
from bot.errors import ConfigError, NotAllowed, UsageError
from bot.slack.blocks import mention, safe_mrkdwn
from bot.slack.parsing import DeleteCommand, parse_click, parse_command
from bot.slack.policy import who_can_text

# Near misses matter more than random text: mostly the characters ids are made of, a few that
# are not (case, punctuation, the Kelvin sign that lowercases to "k").
_REGIONISH = st.one_of(
    st.from_regex(ids.REGION_BODY, fullmatch=True),
    st.text(alphabet="abcnkz0129-_.KAé\u212a", min_size=1, max_size=45),
)
_SLACKISH = st.one_of(
    st.from_regex(f"{ids.USER_BODY}|{ids.USERGROUP_BODY}|{ids.CHANNEL_BODY}", fullmatch=True),
    st.text(alphabet="UWSCGDTabu0129-_", min_size=1, max_size=34),
)
_VCOISH = st.one_of(
    st.from_regex(ids.VCO_BODY, fullmatch=True),
    st.text(alphabet="vcoVCO-abz019_K\u212a", min_size=1, max_size=70),
)


def _config_accepts(**values: object) -> bool:
    try:
        explicit_settings(**values)
    except (ConfigError, ValidationError):
        return False
    return True


def _api_case(text: str) -> str:
    # People may type any ASCII case; the parser lowercases ASCII only.
    return text.lower() if text.isascii() else text


@settings(max_examples=300, deadline=None)
@given(_REGIONISH)
@example("cn-shanghai-finance-1")
@example("cn-hangzhou-")
@example("x" * 41)
@example("local")
def test_settings_parser_and_endpoints_agree_on_regions(region: str) -> None:
    valid = ids.is_region(region)
    assert _config_accepts(default_region=region) is valid
    assert _config_accepts(allowed_regions=[region]) is valid
    try:
        assert default_host(region) == SDK_ENDPOINT_MAP.get(region, f"vpc.{region}.aliyuncs.com")
        hosted = True
    except UsageError:
        hosted = False
    assert hosted is valid
    try:
        parsed = parse_command(f"delete vco-abcd1234 {region}", default_region="cn-hangzhou")
    except UsageError:
        parsed = None
    expected = _api_case(region)
    assert (parsed == DeleteCommand("vco-abcd1234", expected)) is ids.is_region(expected)


@settings(max_examples=300, deadline=None)
@given(_VCOISH)
@example("VCO-ABCD1234")
@example("vco-abc")
@example("vco-\u212a234")
def test_the_parser_takes_exactly_the_connection_ids_the_rule_allows(vco_id: str) -> None:
    try:
        parsed = parse_command(f"delete {vco_id}", default_region="cn-hangzhou")
    except UsageError:
        parsed = None
    expected = _api_case(vco_id)
    assert (parsed == DeleteCommand(expected, "cn-hangzhou")) is ids.is_vco_id(expected)


def _click(user: str = "U0CLICKER", channel: str = "C0CHANNEL") -> dict[str, object]:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": channel},
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "actions": [{"action_id": "vpn-delete-approve", "value": "op-1"}],
    }


def _click_accepted(**kwargs: str) -> bool:
    try:
        parse_click(_click(**kwargs))
    except NotAllowed:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_SLACKISH)
@example("U1")
@example("S0NETADM")
@example("W" + "A" * 31)
def test_settings_clicks_and_mentions_agree_on_user_ids(user: str) -> None:
    is_user = ids.is_user_id(user)
    assert ids.is_slack_principal(user) is (is_user or _is_group(user))
    assert _config_accepts(approvers=[user]) is ids.is_slack_principal(user)
    assert _config_accepts(requesters=[user]) is ids.is_slack_principal(user)
    assert _click_accepted(user=user) is is_user
    assert (mention(user) == f"<@{user}>") is is_user
    assert (safe_mrkdwn(f"<@{user}>") == f"<@{user}>") is is_user
    # The policy names a group as a group exactly when the rules say it is one.
    assert (f"<!subteam^{user}>" in who_can_text([user])) is ids.is_user_group_id(user)


def _is_group(value: str) -> bool:
    return ids.is_user_group_id(value)


@settings(max_examples=300, deadline=None)
@given(_SLACKISH)
@example("C0NETOPS")
@example("G0SECRET")
@example("c0lower")
def test_settings_clicks_and_mentions_agree_on_channel_ids(channel: str) -> None:
    valid = ids.is_channel_id(channel)
    assert _config_accepts(allowed_channels=[channel]) is valid
    assert _click_accepted(channel=channel) is valid
    assert (safe_mrkdwn(f"<#{channel}>") == f"<#{channel}>") is valid


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (ids.VpnGatewayId, "vpn-bp1q8bgx4xnkm2ogj3pnb", "vpn-BP1"),
        (ids.CustomerGatewayId, "cgw-bp1pbw9tq0ibd1jvixz7a", "cgw_bp1pbw9tq0ibd"),
        (ids.TeamId, "T0VPNBOT", "t0vpnbot"),
        (ids.MessageTs, "1700000000.000100", "1700000000"),
        (ids.OperationId, "a9d1d73575144e1b83a8bd89e2198fc8", "../etc"),
    ],
)
def test_resource_id_types(kind: Any, good: str, bad: str) -> None:  # a type expression (Annotated str)
    adapter: TypeAdapter[str] = TypeAdapter(kind)
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError):
        adapter.validate_python(bad)
    with pytest.raises(ValidationError):
        adapter.validate_python(good + "\n")  # no trailing newline slips past the anchor


def test_typed_ids_get_a_friendly_answer() -> None:
    with pytest.raises(UsageError) as info:
        ids.parse_vco_id("vpn-123", shown="`vpn-123`")
    assert "is not a VPN connection id" in info.value.friendly
    with pytest.raises(UsageError) as info:
        ids.parse_region("Hangzhou!", shown="`Hangzhou!`")
    assert "cn-hangzhou" in info.value.friendly
    assert ids.parse_region("CN-Hangzhou", shown="x") == "cn-hangzhou"
