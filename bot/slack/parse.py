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

from bot.errors import NotAllowed, UsageError
from bot.slack.blocks import code
from bot.slack.ids import OP_ID_MAX, OP_ID_RE, SLASH_COMMAND, ActionId

__all__ = [
    "FOREIGN_BUTTON",
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "TEXT_MAX",
    "ButtonClick",
    "Command",
    "DeleteCommand",
    "HelpCommand",
    "HistoryCommand",
    "parse_click",
    "parse_command",
]

TEXT_MAX = 1000
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
FOREIGN_BUTTON = "This button does not belong to this request; nothing changed."

# Alibaba Cloud ids are lowercase; we accept any ASCII case and lowercase it (re.ASCII keeps
# look-alikes such as the Kelvin sign from folding into "k").
_VCO_RE = re.compile(r"vco-[a-z0-9]{4,64}", re.ASCII | re.IGNORECASE)
_REGION_RE = re.compile(r"[a-z]{2,}(?:-[a-z0-9]+){1,4}", re.ASCII | re.IGNORECASE)
_REGION_MAX = 40
_COUNT_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
_USER_RE = re.compile(r"[UW][A-Z0-9]{2,30}", re.ASCII)
_CHANNEL_RE = re.compile(r"[CGD][A-Z0-9]{2,30}", re.ASCII)
_TS_RE = re.compile(r"[0-9]{1,12}\.[0-9]{1,8}", re.ASCII)
_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
# Slack escapes these three in command text; people also paste ids in backticks or quotes.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_WRAPPERS = "`'\"<>“”‘’"


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """``/vpn delete <vco-id> [region]``."""

    vco_id: str
    region: str


@dataclass(frozen=True, slots=True)
class HistoryCommand:
    """``/vpn history [count]``."""

    limit: int = HISTORY_DEFAULT


@dataclass(frozen=True, slots=True)
class HelpCommand:
    """``/vpn``, ``/vpn help``."""


Command = DeleteCommand | HistoryCommand | HelpCommand


def _echo(token: str) -> str:
    return code(token, 40)


def _clean(token: str) -> str:
    for entity, char in _ENTITIES:
        token = token.replace(entity, char)
    return token.strip(_WRAPPERS)


def _usage(message: str) -> UsageError:
    return UsageError(message)


def _vco_id(token: str) -> str:
    candidate = _clean(token)
    if not _VCO_RE.fullmatch(candidate):
        raise _usage(
            f"{_echo(token)} is not a VPN connection id. Ids are `vco-` followed by 4–64 lowercase "
            f"letters and digits, e.g. `vco-bp1abc2def3gh`."
        )
    return candidate.lower()


def _region(token: str) -> str:
    candidate = _clean(token)
    if len(candidate) > _REGION_MAX or not _REGION_RE.fullmatch(candidate):
        raise _usage(
            f"{_echo(token)} is not a region id. Regions look like `cn-hangzhou` or `ap-southeast-1`."
        )
    return candidate.lower()


def _parse_delete(args: list[str], default_region: str) -> DeleteCommand:
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
        raise _usage(
            f"Which connection? Give its id, e.g. `{SLASH_COMMAND} delete vco-bp1abc2def3gh cn-hangzhou`."
        )
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
    return DeleteCommand(vco_id=vco_id, region=region or default_region)


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
    tokens = text.split()
    if tokens and tokens[0].lower() == SLASH_COMMAND:
        tokens = tokens[1:]
    if not tokens or tokens[0].lower() in _HELP_WORDS:
        return HelpCommand()
    word, args = tokens[0].lower(), tokens[1:]
    if word == "delete":
        return _parse_delete(args, default_region)
    if word == "history":
        return _parse_history(args)
    if _VCO_RE.fullmatch(_clean(tokens[0])):
        raise _usage(f"Did you mean `{SLASH_COMMAND} delete {_clean(tokens[0]).lower()}`?")
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


def _str(value: Any, pattern: re.Pattern[str], limit: int) -> str | None:
    # Bound the length before matching, so an oversized value costs nothing.
    if isinstance(value, str) and len(value) <= limit and pattern.fullmatch(value):
        return value
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _message_values(message: Mapping[str, Any], action_id: str) -> set[str]:
    """Values of the buttons with ``action_id`` in Slack's copy of the clicked message."""
    values: set[str] = set()
    blocks = message.get("blocks")
    if not isinstance(blocks, list):
        return values
    for block in blocks[:50]:
        if not isinstance(block, Mapping) or block.get("type") != "actions":
            continue
        elements = block.get("elements")
        for element in elements[:25] if isinstance(elements, list) else []:
            if isinstance(element, Mapping) and element.get("action_id") == action_id:
                value = element.get("value")
                if isinstance(value, str) and len(value) <= OP_ID_MAX:
                    values.add(value)
    return values


def parse_click(body: Mapping[str, Any]) -> ButtonClick:
    """Validate a block_actions payload for our buttons; raise NotAllowed if it does not add up.

    The clicked value must be an operation id of the right shape and, when Slack's copy of the
    message (sent for every non-ephemeral message) still shows the button, equal to the value
    rendered on it: a value naming another operation is refused and changes nothing.
    """
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and len(actions) == 1 else {}
    raw_action_id = action.get("action_id")
    action_id = ActionId(raw_action_id) if raw_action_id in tuple(ActionId) else None
    op_id = _str(action.get("value"), OP_ID_RE, OP_ID_MAX)
    user_id = _str(_dict(body.get("user")).get("id"), _USER_RE, 32)
    container = _dict(body.get("container"))
    channel_id = _str(_dict(body.get("channel")).get("id") or container.get("channel_id"), _CHANNEL_RE, 32)
    message_ts = _str(container.get("message_ts"), _TS_RE, 32)
    if action_id is None or op_id is None or user_id is None or channel_id is None or message_ts is None:
        raise NotAllowed(FOREIGN_BUTTON)
    message = body.get("message")
    if isinstance(message, Mapping):
        shown = _message_values(message, action_id.value)
        # No button on Slack's copy means the message was already updated (a click from a stale
        # client); the server-side checks and the workflow then explain what happened.
        if message.get("ts") != message_ts or (shown and op_id not in shown):
            raise NotAllowed(FOREIGN_BUTTON)
    return ButtonClick(
        action_id=action_id, op_id=op_id, user_id=user_id, channel_id=channel_id, message_ts=message_ts
    )
