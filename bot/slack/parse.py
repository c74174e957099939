"""Turn what Slack sends into typed values: the ``/vpn`` text and button clicks.

Parsing never raises anything but :class:`bot.errors.UsageError` (command text) or
:class:`bot.errors.NotAllowed` (a click that does not belong to its message). Any text the user
typed that is echoed back is escaped and bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bot.errors import NotAllowed, UsageError
from bot.ids import (
    ChannelId,
    MessageTs,
    OperationId,
    TeamId,
    UserId,
    is_vco_id,
    parse_region,
    parse_vco_id,
)
from bot.slack.blocks import code
from bot.slack.find_parse import ListCommand, StatusCommand, parse_list, parse_status, split_account
from bot.slack.ids import SLASH_COMMAND, ActionId
from bot.slack.reason import split_reason

__all__ = [
    "FOREIGN_BUTTON",
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "MALFORMED_COMMAND",
    "TEXT_MAX",
    "ButtonClick",
    "Command",
    "DeleteCommand",
    "HelpCommand",
    "HistoryCommand",
    "ListCommand",
    "PickCommand",
    "SlashCommand",
    "StatusCommand",
    "parse_click",
    "parse_command",
    "parse_slash_command",
]

TEXT_MAX = 1000
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
FOREIGN_BUTTON = "This button does not belong to this request; nothing changed."
MALFORMED_COMMAND = "This request lacks the user or channel Slack sends with every command; nothing was done."

_COUNT_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
# Slack escapes these three in command text; people also paste ids in backticks or quotes.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_WRAPPERS = "`'\"<>“”‘’"


class _Payload(BaseModel):
    # Slack adds fields over time; only the ones read here are checked.
    model_config = ConfigDict(frozen=True, extra="ignore")


class SlashCommand(_Payload):
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


Command = DeleteCommand | PickCommand | HistoryCommand | HelpCommand | ListCommand | StatusCommand


def _echo(token: str) -> str:
    return code(token, 40)


def _clean(token: str) -> str:
    for entity, char in _ENTITIES:
        token = token.replace(entity, char)
    return token.strip(_WRAPPERS)


def _usage(message: str) -> UsageError:
    return UsageError(message)


def _vco_id(token: str) -> str:
    return parse_vco_id(_clean(token), shown=_echo(token))


def _region(token: str) -> str:
    return parse_region(_clean(token), shown=_echo(token))


def _parse_delete(args: list[str], default_region: str, reason: str | None) -> DeleteCommand | PickCommand:
    args, account = split_account(args)
    positional: list[str] = []
    region: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        lowered = arg.lower()
        value: str | None = None
        if lowered == "--region":
            if i + 1 >= len(args):
                raise _usage("`--region` needs a value, e.g. `--region cn-hangzhou`.")
            value = args[i + 1]
            i += 1
        elif lowered.startswith(("--region=", "region=")):
            value = arg.split("=", 1)[1]
            if not value:
                raise _usage("`region=` needs a value, e.g. `region=cn-hangzhou`.")
        else:
            positional.append(arg)
        if value is not None:
            if region is not None:
                raise _usage("The region is given twice; give it once.")
            region = _region(value)
        i += 1

    if not positional:
        return PickCommand(region=region or default_region, account=account, reason=reason)
    vco_id = _vco_id(positional[0])
    if len(positional) >= 2:
        if region is not None:
            raise _usage("The region is given twice; give it once.")
        region = _region(positional[1])
    if len(positional) > 2:
        raise _usage(
            f"Too many words: {_echo(' '.join(positional[2:]))}. `{SLASH_COMMAND} delete` takes a "
            f"connection id and an optional region."
        )
    return DeleteCommand(vco_id=vco_id, region=region or default_region, account=account, reason=reason)


def _parse_history(args: list[str]) -> HistoryCommand:
    if not args:
        return HistoryCommand()
    if len(args) > 1:
        raise _usage(f"Too many words: {_echo(' '.join(args[1:]))}. Use `{SLASH_COMMAND} history [count]`.")
    if not _COUNT_RE.fullmatch(args[0]) or not 1 <= int(args[0]) <= HISTORY_MAX:
        raise _usage(f"The history count must be a number from 1 to {HISTORY_MAX}, not {_echo(args[0])}.")
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
    candidate = _clean(tokens[0])
    if candidate.isascii() and is_vco_id(candidate.lower()):
        raise _usage(f"Did you mean `{SLASH_COMMAND} delete {candidate.lower()}`?")
    raise _usage(f"I don't know the command {_echo(tokens[0])}. Try `{SLASH_COMMAND} help`.")


# --- button clicks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonClick:
    """One click on Delete or Cancel, reduced to what the listeners need."""

    action_id: ActionId
    op_id: str
    user_id: str
    channel_id: str
    message_ts: str
    # For a button that opens a modal (Recreate…): views.open needs it within 3 seconds.
    trigger_id: str | None = None


class _ClickedButton(_Payload):
    action_id: ActionId
    value: OperationId


class _User(_Payload):
    id: UserId


class _Channel(_Payload):
    id: ChannelId


class _Container(_Payload):
    message_ts: MessageTs
    channel_id: ChannelId | None = None


class _Element(_Payload):
    action_id: str | None = None
    value: str | None = None


class _Block(_Payload):
    type: str = ""
    elements: list[_Element] = Field(default_factory=list, max_length=25)


class _Message(_Payload):
    """Slack's copy of the clicked message, as it was rendered (absent for ephemerals)."""

    ts: str | None = None
    blocks: list[_Block] = Field(default_factory=list, max_length=50)

    def button_values(self, action_id: ActionId) -> set[str | None]:
        """Values of the buttons with ``action_id`` on the message."""
        return {
            e.value
            for b in self.blocks
            if b.type == "actions"
            for e in b.elements
            if e.action_id == action_id
        }


class _BlockActions(_Payload):
    """The parts of a ``block_actions`` payload a Delete or Cancel click must carry."""

    actions: list[_ClickedButton] = Field(min_length=1, max_length=1)
    user: _User
    channel: _Channel | None = None
    container: _Container
    message: _Message | None = None
    trigger_id: str | None = Field(default=None, max_length=200)


_BLOCK_ACTIONS = TypeAdapter(_BlockActions)


def parse_click(body: Mapping[str, Any]) -> ButtonClick:
    """Validate a block_actions payload for our buttons; raise NotAllowed if it does not add up.

    The clicked value must be an operation id of the right shape and, when Slack's copy of the
    message (sent for every non-ephemeral message) still shows the button, equal to the value
    rendered on it: a value naming another operation is refused and changes nothing.
    """
    try:
        payload = _BLOCK_ACTIONS.validate_python(body)
    except ValidationError:
        raise NotAllowed(FOREIGN_BUTTON) from None
    action, message_ts = payload.actions[0], payload.container.message_ts
    channel_id = payload.channel.id if payload.channel else payload.container.channel_id
    if channel_id is None:
        raise NotAllowed(FOREIGN_BUTTON)
    if payload.message is not None:
        shown = payload.message.button_values(action.action_id)
        # No button on Slack's copy means the message was already updated (a click from a stale
        # client); the server-side checks and the workflow then explain what happened.
        if payload.message.ts != message_ts or (shown and action.value not in shown):
            raise NotAllowed(FOREIGN_BUTTON)
    return ButtonClick(
        action_id=action.action_id,
        op_id=action.value,
        user_id=payload.user.id,
        channel_id=channel_id,
        message_ts=message_ts,
        trigger_id=payload.trigger_id,
    )
