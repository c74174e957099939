"""Parse ``/vpn list`` and ``/vpn status`` text and the values of the list's buttons.

Command text raises :class:`bot.errors.UsageError`; a button value that is not one the bot
rendered raises :class:`bot.errors.NotAllowed`. Button values are small JSON objects checked by
pydantic models with the id rules of :mod:`bot.ids`, so nothing forged reaches the cloud.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from bot.errors import NotAllowed, UsageError
from bot.ids import (
    OPERATION_BODY,
    VPN_GATEWAY_BODY,
    AccountName,
    ChannelId,
    RegionId,
    TeamId,
    UserId,
    VcoId,
    VpnGatewayId,
    is_region,
    parse_vco_id,
)
from bot.slack.block_ids import SLASH_COMMAND, ActionId
from bot.slack.parsing.primitives import (
    Payload,
    clean,
    echo,
    region_word,
    split_account,
    split_region,
    unescape,
)

__all__ = [
    "FILTER_WORDS_MAX",
    "FILTER_WORD_MAX",
    "FOREIGN_LIST_BUTTON",
    "PAGE_MAX",
    "ListClick",
    "ListCommand",
    "ListPage",
    "RowDelete",
    "StatusCommand",
    "parse_list",
    "parse_list_click",
    "parse_status",
]

FILTER_WORD_MAX = 40
FILTER_WORDS_MAX = 8
# 200 pages of 15 rows is 3,000 connections; a larger number in a button was not made by us.
PAGE_MAX = 200
VALUE_MAX = 2000  # Slack's limit for a button value
FOREIGN_LIST_BUTTON = "This button's value is not one I made, so I ignored it; nothing was done."

_RESOURCE_PREFIXES = ("vpn-", "vco-", "cgw-")
_GATEWAY_RE = re.compile(f"(?:{VPN_GATEWAY_BODY})", re.ASCII)
_OPERATION_RE = re.compile(f"(?:{OPERATION_BODY})", re.ASCII)


@dataclass(frozen=True, slots=True)
class ListCommand:
    """``/vpn list [region] [gateway-id] [filter words]``."""

    region: str
    gateway_id: str | None = None
    words: tuple[str, ...] = ()
    # The region was a bare first word: if no such region exists, it was meant as a filter word.
    guessed: bool = False
    # ``account=NAME``: None when not given (the channel's default applies).
    account: str | None = None

    def as_filter(self, default_region: str) -> ListCommand:
        """The same listing with the guessed region read as a filter word instead."""
        return ListCommand(default_region, self.gateway_id, (self.region, *self.words), account=self.account)


@dataclass(frozen=True, slots=True)
class StatusCommand:
    """``/vpn status <vco-id | request-id> [region]``: exactly one of ``vco_id`` and ``op_id`` is set."""

    region: str
    vco_id: str | None = None
    op_id: str | None = None
    account: str | None = None


def _lower_ascii(token: str) -> str | None:
    cleaned = clean(token)
    return cleaned.lower() if cleaned.isascii() else None


def parse_list(args: list[str], *, default_region: str) -> ListCommand:
    """``[region] [gateway-id] [words…]``: a leading region-shaped word is the region."""
    args, account = split_account(args)
    rest, region = split_region(args)
    guessed = False
    first = _lower_ascii(rest[0]) if rest else None
    # Resource ids (vpn-…, vco-…) are shaped like regions too; they are never one.
    if region is None and first is not None and is_region(first) and not first.startswith(_RESOURCE_PREFIXES):
        region, guessed = first, True
        rest = rest[1:]
    gateway_id: str | None = None
    words: list[str] = []
    for token in rest:
        lowered = _lower_ascii(token)
        if lowered is not None and _GATEWAY_RE.fullmatch(lowered):
            if gateway_id is not None:
                raise UsageError("Give at most one VPN gateway id.")
            gateway_id = lowered
            continue
        word = unescape(token)
        if len(word) > FILTER_WORD_MAX:
            raise UsageError(
                f"The filter word {echo(token)} is too long (the limit is {FILTER_WORD_MAX} characters)."
            )
        words.append(word)
    if len(words) > FILTER_WORDS_MAX:
        raise UsageError(f"Give at most {FILTER_WORDS_MAX} filter words.")
    if guessed and len(words) >= FILTER_WORDS_MAX:
        raise UsageError(f"Give at most {FILTER_WORDS_MAX} filter words.")
    return ListCommand(region or default_region, gateway_id, tuple(words), guessed=guessed, account=account)


def parse_status(args: list[str], *, default_region: str) -> StatusCommand:
    """``<vco-id | request-id> [region]``."""
    args, account = split_account(args)
    rest, region = split_region(args)
    if not rest:
        raise UsageError(
            f"Status of what? Give a connection id or a request id, e.g. `{SLASH_COMMAND} status "
            "vco-bp1abc2def3gh`."
        )
    if len(rest) >= 2:
        if region is not None or len(rest) > 2:
            raise UsageError(
                f"Too many words: {echo(' '.join(rest[1:]))}. `{SLASH_COMMAND} status` takes one id "
                "and an optional region."
            )
        region = region_word(rest[1])
    region = region or default_region
    target = clean(rest[0])
    if target.lower().startswith("vco-"):
        return StatusCommand(region=region, vco_id=parse_vco_id(target, shown=echo(rest[0])), account=account)
    if target.isascii() and _OPERATION_RE.fullmatch(target):
        return StatusCommand(region=region, op_id=target.lower(), account=account)
    raise UsageError(
        f"{echo(rest[0])} is neither a connection id (`vco-…`) nor a request id (the one shown under "
        "a confirmation, such as `3f2a…`)."
    )


# --- button values -----------------------------------------------------------------------------

FilterWord = Annotated[str, StringConstraints(min_length=1, max_length=FILTER_WORD_MAX)]


class _Value(BaseModel):
    # Exactly what the bot renders, nothing more: anything else was not made by us.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ListPage(_Value):
    """The value of Next / Previous: which listing, which filter, which page (0-based)."""

    r: RegionId
    g: VpnGatewayId | None = None
    f: tuple[FilterWord, ...] = Field(default=(), max_length=FILTER_WORDS_MAX)
    p: int = Field(ge=0, le=PAGE_MAX)
    # The account listed, with several (checked again against the channel on every click).
    a: AccountName | None = None

    def to_value(self) -> str:
        """The button value (compact JSON, well under Slack's 2,000 characters)."""
        return self.model_dump_json(exclude_defaults=True)


class RowDelete(_Value):
    """The value of a row's Delete… button: the connection and its region."""

    r: RegionId
    v: VcoId
    a: AccountName | None = None

    def to_value(self) -> str:
        """The button value."""
        return self.model_dump_json(exclude_none=True)


class _Button(Payload):
    action_id: ActionId
    value: str = Field(max_length=VALUE_MAX)


class _Id(Payload):
    id: str


class _Container(Payload):
    channel_id: ChannelId | None = None


class _ListActions(Payload):
    actions: list[_Button] = Field(min_length=1, max_length=1)
    user: _Id
    channel: _Id | None = None
    team: _Id | None = None
    container: _Container = Field(default_factory=_Container)
    response_url: str | None = None


class _Who(Payload):
    user_id: UserId
    channel_id: ChannelId
    team_id: TeamId | None = None


_LIST_ACTIONS = TypeAdapter(_ListActions)
_WHO = TypeAdapter(_Who)


@dataclass(frozen=True, slots=True)
class ListClick:
    """A click on a list button: who clicked where, and the checked value."""

    action_id: ActionId
    user_id: str
    channel_id: str
    team_id: str
    response_url: str | None
    value: ListPage | RowDelete


def parse_list_click(body: Mapping[str, Any]) -> ListClick:
    """Validate a list button click; raise NotAllowed if the payload or value is not ours."""
    try:
        payload = _LIST_ACTIONS.validate_python(body)
        button = payload.actions[0]
        channel = payload.channel.id if payload.channel else payload.container.channel_id
        who = _WHO.validate_python(
            {
                "user_id": payload.user.id,
                "channel_id": channel,
                "team_id": payload.team.id if payload.team else None,
            }
        )
        model = RowDelete if button.action_id is ActionId.LIST_DELETE else ListPage
        if button.action_id not in (ActionId.LIST_DELETE, ActionId.LIST_NEXT, ActionId.LIST_PREVIOUS):
            raise NotAllowed(FOREIGN_LIST_BUTTON)
        value = model.model_validate_json(button.value)
    except ValidationError:
        raise NotAllowed(FOREIGN_LIST_BUTTON) from None
    return ListClick(
        action_id=button.action_id,
        user_id=who.user_id,
        channel_id=who.channel_id,
        team_id=who.team_id or "",
        response_url=payload.response_url,
        value=value,
    )
