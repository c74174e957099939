"""Every id rule in one place: Alibaba Cloud regions and resource ids, Slack ids, our operation ids.

Each rule is a pydantic constrained type (``Annotated[str, StringConstraints(...)]``), so settings,
payload models and plain checks all use the same pattern. The ``*_BODY`` strings are the bare
patterns, for the few places that must find an id inside a longer text (mentions in mrkdwn).

Alibaba Cloud ids are lowercase; :func:`parse_vco_id` and :func:`parse_region` accept any ASCII case
from people and lowercase it. Non-ASCII is refused before lowercasing, so a look-alike such as the
Kelvin sign (which ``str.lower`` folds into ``k``) can never become a valid id.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import StringConstraints, TypeAdapter, ValidationError

from bot.errors import UsageError

__all__ = [
    "ACCOUNT_BODY",
    "CHANNEL_BODY",
    "CUSTOMER_GATEWAY_BODY",
    "MESSAGE_TS_BODY",
    "OPERATION_BODY",
    "REGION_BODY",
    "REGION_MAX",
    "ROLE_ARN_BODY",
    "ROLE_SESSION_BODY",
    "TEAM_BODY",
    "USERGROUP_BODY",
    "USER_BODY",
    "VCO_BODY",
    "VPN_GATEWAY_BODY",
    "AccountName",
    "ChannelId",
    "CustomerGatewayId",
    "MessageTs",
    "OperationId",
    "RegionId",
    "RoleArn",
    "RoleSessionName",
    "SlackPrincipal",
    "TeamId",
    "UserGroupId",
    "UserId",
    "VcoId",
    "VpnGatewayId",
    "account_uid",
    "is_account_name",
    "is_channel_id",
    "is_region",
    "is_role_arn",
    "is_role_session_name",
    "is_slack_principal",
    "is_user_group_id",
    "is_user_id",
    "is_vco_id",
    "parse_region",
    "parse_vco_id",
    "region_error",
    "vco_error",
]

# --- Slack -------------------------------------------------------------------------------------
# Slack ids are an uppercase type letter and uppercase letters/digits (9-11 characters today;
# the bound leaves room while keeping an oversized value cheap to refuse).
USER_BODY: Final = r"[UW][A-Z0-9]{2,30}"
USERGROUP_BODY: Final = r"S[A-Z0-9]{2,30}"
# C… public, G… private (legacy), D… direct message.
CHANNEL_BODY: Final = r"[CGD][A-Z0-9]{2,30}"
TEAM_BODY: Final = r"[TE][A-Z0-9]{2,30}"
MESSAGE_TS_BODY: Final = r"[0-9]{1,12}\.[0-9]{1,8}"

# --- Alibaba Cloud -----------------------------------------------------------------------------
# Regions are lowercase words joined by dashes (cn-hangzhou, ap-southeast-1, cn-shanghai-finance-1);
# the same rule keeps anything else out of the endpoint host name.
REGION_BODY: Final = r"[a-z]{2,}(?:-[a-z0-9]+){1,4}"
REGION_MAX: Final = 40
VCO_BODY: Final = r"vco-[a-z0-9]{4,64}"
VPN_GATEWAY_BODY: Final = r"vpn-[a-z0-9]{4,64}"
CUSTOMER_GATEWAY_BODY: Final = r"cgw-[a-z0-9]{4,64}"

# A RAM role ARN: acs:ram::<16-digit account uid>:role/<role name (1-64 letters, digits, . or -)>.
ROLE_ARN_BODY: Final = r"acs:ram::[0-9]{6,20}:role/[A-Za-z0-9.-]{1,64}"
# STS RoleSessionName: 2-64 characters of letters, digits, ``.@-_``.
ROLE_SESSION_BODY: Final = r"[A-Za-z0-9.@_-]{2,64}"

# --- ours --------------------------------------------------------------------------------------
# Operation ids are minted by the workflow (uuid hex, ulid or "op-…"); the rule only bounds what a
# button payload may carry before anything looks it up.
OPERATION_BODY: Final = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
# Account names in VPNBOT_ACCOUNTS: short lowercase words people type (account=prod).
ACCOUNT_BODY: Final = r"[a-z0-9][a-z0-9_-]{0,31}"


def _id(body: str, max_length: int = 80) -> StringConstraints:
    # pydantic matches with search semantics, so anchor; its regex engine's $ is end-of-text only.
    return StringConstraints(pattern=f"^(?:{body})$", max_length=max_length)


UserId = Annotated[str, _id(USER_BODY)]
UserGroupId = Annotated[str, _id(USERGROUP_BODY)]
SlackPrincipal = Annotated[str, _id(f"{USER_BODY}|{USERGROUP_BODY}")]
ChannelId = Annotated[str, _id(CHANNEL_BODY)]
TeamId = Annotated[str, _id(TEAM_BODY)]
MessageTs = Annotated[str, _id(MESSAGE_TS_BODY, 32)]
RegionId = Annotated[str, _id(REGION_BODY, REGION_MAX)]
VcoId = Annotated[str, _id(VCO_BODY)]
VpnGatewayId = Annotated[str, _id(VPN_GATEWAY_BODY)]
CustomerGatewayId = Annotated[str, _id(CUSTOMER_GATEWAY_BODY)]
OperationId = Annotated[str, _id(OPERATION_BODY, 64)]
AccountName = Annotated[str, _id(ACCOUNT_BODY, 32)]
RoleArn = Annotated[str, _id(ROLE_ARN_BODY, 120)]
RoleSessionName = Annotated[str, _id(ROLE_SESSION_BODY, 64)]

_USER: TypeAdapter[str] = TypeAdapter(UserId)
_USER_GROUP: TypeAdapter[str] = TypeAdapter(UserGroupId)
_PRINCIPAL: TypeAdapter[str] = TypeAdapter(SlackPrincipal)
_CHANNEL: TypeAdapter[str] = TypeAdapter(ChannelId)
_REGION: TypeAdapter[str] = TypeAdapter(RegionId)
_VCO: TypeAdapter[str] = TypeAdapter(VcoId)
_ACCOUNT: TypeAdapter[str] = TypeAdapter(AccountName)
_ROLE_ARN: TypeAdapter[str] = TypeAdapter(RoleArn)
_ROLE_SESSION: TypeAdapter[str] = TypeAdapter(RoleSessionName)


def _valid(adapter: TypeAdapter[str], value: object) -> bool:
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def is_user_id(value: object) -> bool:
    """Whether ``value`` is a Slack user id (``U…``/``W…``)."""
    return _valid(_USER, value)


def is_user_group_id(value: object) -> bool:
    """Whether ``value`` is a Slack user-group id (``S…``)."""
    return _valid(_USER_GROUP, value)


def is_slack_principal(value: object) -> bool:
    """Whether ``value`` is a Slack user id or user-group id (``S…``)."""
    return _valid(_PRINCIPAL, value)


def is_channel_id(value: object) -> bool:
    """Whether ``value`` is a Slack conversation id (``C…``/``G…``/``D…``)."""
    return _valid(_CHANNEL, value)


def is_region(value: object) -> bool:
    """Whether ``value`` is an Alibaba Cloud region id exactly as the API spells it (lowercase)."""
    return _valid(_REGION, value)


def is_vco_id(value: object) -> bool:
    """Whether ``value`` is a VPN connection id exactly as the API spells it (lowercase)."""
    return _valid(_VCO, value)


def is_account_name(value: object) -> bool:
    """Whether ``value`` is an account name as VPNBOT_ACCOUNTS defines them (``prod``, ``bu-retail``)."""
    return _valid(_ACCOUNT, value)


def is_role_arn(value: object) -> bool:
    """Whether ``value`` is a RAM role ARN (``acs:ram::1234567890123456:role/vpn-bot``)."""
    return _valid(_ROLE_ARN, value)


def is_role_session_name(value: object) -> bool:
    """Whether ``value`` is an STS RoleSessionName (2-64 of letters, digits, ``.@-_``)."""
    return _valid(_ROLE_SESSION, value)


def account_uid(role_arn: str) -> str:
    """The account id inside a role ARN (``acs:ram::<uid>:role/…``)."""
    return role_arn.split(":")[3]


def _lowered(value: str) -> str | None:
    return value.lower() if value.isascii() else None


def region_error(shown: str) -> UsageError:
    """The friendly refusal of a region id; ``shown`` is the value as already rendered (escaped)."""
    return UsageError(f"{shown} is not a region id. Regions look like `cn-hangzhou` or `ap-southeast-1`.")


def vco_error(shown: str) -> UsageError:
    """The friendly refusal of a connection id; ``shown`` is the value as already rendered (escaped)."""
    return UsageError(
        f"{shown} is not a VPN connection id. Ids are `vco-` followed by 4–64 lowercase letters and "
        f"digits, e.g. `vco-bp1abc2def3gh`."
    )


def parse_region(value: str, *, shown: str) -> str:
    """Return the region id a person typed, in API case; raise UsageError naming ``shown``."""
    candidate = _lowered(value)
    if candidate is None or not is_region(candidate):
        raise region_error(shown)
    return candidate


def parse_vco_id(value: str, *, shown: str) -> str:
    """Return the connection id a person typed, in API case; raise UsageError naming ``shown``."""
    candidate = _lowered(value)
    if candidate is None or not is_vco_id(candidate):
        raise vco_error(shown)
    return candidate
