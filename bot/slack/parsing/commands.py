"""The ``/vpn`` slash command: its payload and its text, turned into typed commands.

Parsing never raises anything but :class:`bot.errors.UsageError` (command text) or
:class:`bot.errors.NotAllowed` (a payload without Slack's fields). Any text the user typed that is
echoed back is unescaped, then escaped for mrkdwn and bounded (:func:`bot.slack.parsing.primitives.echo`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from bot.errors import NotAllowed, UsageError
from bot.ids import (
    VPN_GATEWAY_BODY,
    ChannelId,
    TeamId,
    UserId,
    is_vco_id,
    parse_vco_id,
)
from bot.slack.block_ids import SLASH_COMMAND
from bot.slack.parsing.find import ListCommand, StatusCommand, parse_list, parse_status
from bot.slack.parsing.primitives import Payload, clean, echo, region_word, split_account, split_region
from bot.slack.reason import split_reason

__all__ = [
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "MALFORMED_COMMAND",
    "TEXT_MAX",
    "BatchDeleteCommand",
    "Command",
    "DeleteCommand",
    "HelpCommand",
    "HistoryCommand",
    "PickCommand",
    "SlashCommand",
    "parse_command",
    "parse_slash_command",
]

TEXT_MAX = 1000
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
MALFORMED_COMMAND = "This request lacks the user or channel Slack sends with every command; nothing was done."

_COUNT_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
_GATEWAY_RE = re.compile(VPN_GATEWAY_BODY, re.ASCII)
# ``/vpn delete gateway=vpn-… all``: the option's spellings, as for account= and region=.
_GATEWAY_PREFIXES = ("gateway=", "--gateway=")


class SlashCommand(Payload):
    """The fields of a ``/vpn`` request the bot reads, checked by the id rules."""

    text: str = ""
    user_id: UserId
    channel_id: ChannelId
    team_id: TeamId | None = None
    response_url: str | None = None
    # Opens the picker modal (views.open); Slack's are ~60 characters.
    trigger_id: str | None = Field(default=None, max_length=200)


_SLASH_COMMAND = TypeAdapter(SlashCommand)


def parse_slash_command(body: Mapping[str, Any]) -> SlashCommand:
    """Validate the slash-command payload; raise NotAllowed if Slack's fields are missing or malformed."""
    try:
        return _SLASH_COMMAND.validate_python(body)
    except ValidationError:
        raise NotAllowed(MALFORMED_COMMAND) from None


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """``/vpn delete <vco-id> [region]``."""

    vco_id: str
    region: str
    # ``account=NAME`` / ``--account NAME``: None when not given (the channel's default applies).
    account: str | None = None
    # ``reason=…`` / ``--reason …`` (quoted text allowed): None when not given.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BatchDeleteCommand:
    """``/vpn delete vco-a vco-b … [region]`` (distinct ids, in the order typed) or
    ``/vpn delete gateway=vpn-… all [region]`` (``vco_ids`` empty: every connection of the gateway)."""

    vco_ids: tuple[str, ...]
    region: str
    gateway_id: str | None = None
    account: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PickCommand:
    """``/vpn delete`` with no id: open the picker modal, starting at ``region``."""

    region: str
    account: str | None = None
    # Fills the modal's reason field.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryCommand:
    """``/vpn history [count]``."""

    limit: int = HISTORY_DEFAULT


@dataclass(frozen=True, slots=True)
class HelpCommand:
    """``/vpn``, ``/vpn help``."""


Command = (
    DeleteCommand
    | BatchDeleteCommand
    | PickCommand
    | HistoryCommand
    | HelpCommand
    | ListCommand
    | StatusCommand
)


def _usage(message: str) -> UsageError:
    return UsageError(message)


def _vco_id(token: str) -> str:
    return parse_vco_id(clean(token), shown=echo(token))


def _split_gateway(args: list[str]) -> tuple[list[str], str | None]:
    """Take ``gateway=vpn-…`` (or ``--gateway vpn-…``) out of ``args``."""
    rest: list[str] = []
    gateway: str | None = None
    tokens = iter(args)
    for token in tokens:
        word = clean(token)
        lowered = word.lower()
        value: str | None = None
        if lowered == "--gateway":
            value = next(tokens, "")
        elif lowered.startswith(_GATEWAY_PREFIXES):
            value = word.split("=", 1)[1]
        if value is None:
            rest.append(token)
            continue
        if gateway is not None:
            raise _usage("The gateway is given twice; give it once.")
        typed = clean(value).lower()
        if not typed.isascii() or not _GATEWAY_RE.fullmatch(typed):
            raise _usage(
                f"{echo(value)} is not a VPN gateway id (they look like `vpn-bp1q8bgx4xnkm2ogj3pnb`)."
            )
        gateway = typed
    return rest, gateway


def _parse_gateway_all(
    positional: list[str],
    gateway: str,
    region: str | None,
    account: str | None,
    reason: str | None,
    default_region: str,
) -> BatchDeleteCommand:
    words = [clean(t).lower() for t in positional]
    if "all" not in words:
        raise _usage(
            f"`{SLASH_COMMAND} delete gateway={gateway} all` deletes every connection of the gateway: add `all` "
            "to say so, or name the connections."
        )
    rest = [t for t, w in zip(positional, words, strict=True) if w != "all"]
    if len(rest) > 1 or (rest and region is not None):
        raise _usage(
            f"Too many words: {echo(' '.join(rest))}. Give `gateway=vpn-… all` and an optional region."
        )
    if rest:
        region = region_word(rest[0])
    return BatchDeleteCommand(
        vco_ids=(), region=region or default_region, gateway_id=gateway, account=account, reason=reason
    )


def _parse_delete(
    args: list[str], default_region: str, reason: str | None
) -> DeleteCommand | BatchDeleteCommand | PickCommand:
    args, account = split_account(args)
    args, gateway = _split_gateway(args)
    positional, region = split_region(args)
    if gateway is not None:
        return _parse_gateway_all(positional, gateway, region, account, reason, default_region)
    if not positional:
        return PickCommand(region=region or default_region, account=account, reason=reason)
    # Several ids: every leading word shaped like a connection id (a typo in one is said at once).
    ids: list[str] = []
    while positional and clean(positional[0]).lower().startswith("vco-"):
        ids.append(_vco_id(positional.pop(0)))
    if len(ids) > 1 or (len(ids) == 1 and positional and clean(positional[0]).lower().startswith("vco-")):
        if len(positional) > 1 or (positional and region is not None):
            raise _usage(
                f"Too many words: {echo(' '.join(positional))}. `{SLASH_COMMAND} delete` takes connection "
                "ids and an optional region."
            )
        if positional:
            region = region_word(positional[0])
        distinct = tuple(dict.fromkeys(ids))
        if len(distinct) > 1:
            return BatchDeleteCommand(
                vco_ids=distinct, region=region or default_region, account=account, reason=reason
            )
        return DeleteCommand(
            vco_id=distinct[0], region=region or default_region, account=account, reason=reason
        )
    positional = ids + positional
    vco_id = _vco_id(positional[0])
    if len(positional) >= 2:
        if region is not None:
            raise _usage("The region is given twice; give it once.")
        region = region_word(positional[1])
    if len(positional) > 2:
        raise _usage(
            f"Too many words: {echo(' '.join(positional[2:]))}. `{SLASH_COMMAND} delete` takes a "
            f"connection id and an optional region."
        )
    return DeleteCommand(vco_id=vco_id, region=region or default_region, account=account, reason=reason)


def _parse_history(args: list[str]) -> HistoryCommand:
    if not args:
        return HistoryCommand()
    if len(args) > 1:
        raise _usage(f"Too many words: {echo(' '.join(args[1:]))}. Use `{SLASH_COMMAND} history [count]`.")
    if not _COUNT_RE.fullmatch(args[0]) or not 1 <= int(args[0]) <= HISTORY_MAX:
        raise _usage(f"The history count must be a number from 1 to {HISTORY_MAX}, not {echo(args[0])}.")
    return HistoryCommand(limit=int(args[0]))


def parse_command(text: str, *, default_region: str) -> Command:
    """Parse the text after ``/vpn``; raise UsageError with a friendly explanation."""
    if len(text) > TEXT_MAX:
        raise _usage(f"That command is too long ({len(text)} characters; the limit is {TEXT_MAX}).")
    text, reason = split_reason(text)
    tokens = text.split()
    if tokens and tokens[0].lower() == SLASH_COMMAND:
        tokens = tokens[1:]
    if not tokens or tokens[0].lower() in _HELP_WORDS:
        return HelpCommand()
    word, args = tokens[0].lower(), tokens[1:]
    if word == "delete":
        try:
            return _parse_delete(args, default_region, reason)
        except UsageError as err:
            if reason is None:
                raise
            # ``reason=two words`` leaves ``words`` behind: say how to give several words.
            raise _usage(f'{err.friendly} A reason of several words goes in quotes: `reason="…"`.') from None
    if reason is not None:
        raise _usage(f"A reason goes with `{SLASH_COMMAND} delete` only.")
    if word == "history":
        return _parse_history(args)
    if word == "list":
        return parse_list(args, default_region=default_region)
    if word == "status":
        return parse_status(args, default_region=default_region)
    candidate = clean(tokens[0])
    if candidate.isascii() and is_vco_id(candidate.lower()):
        raise _usage(f"Did you mean `{SLASH_COMMAND} delete {candidate.lower()}`?")
    raise _usage(f"I don't know the command {echo(tokens[0])}. Try `{SLASH_COMMAND} help`.")
