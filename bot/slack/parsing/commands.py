"""The ``/vpn`` slash command: its payload and its text, turned into typed commands.

Parsing never raises anything but :class:`bot.errors.UsageError` (command text) or
:class:`bot.errors.NotAllowed` (a payload without Slack's fields). Any text the user typed that is
echoed back is unescaped, then escaped for mrkdwn and bounded (:func:`bot.slack.parsing.primitives.echo`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from bot.domain import FREEZE_MAX
from bot.errors import NotAllowed, UsageError
from bot.ids import (
    VPN_GATEWAY_BODY,
    ChannelId,
    TeamId,
    UserId,
    is_region,
    is_vco_id,
    parse_vco_id,
)
from bot.schedule import ScheduleError, parse_run_at
from bot.slack.block_ids import SLASH_COMMAND
from bot.slack.blocks import escape
from bot.slack.parsing.find import ListCommand, StatusCommand, parse_list, parse_status
from bot.slack.parsing.primitives import (
    Payload,
    account_word,
    clean,
    echo,
    region_word,
    split_account,
    split_region,
)
from bot.slack.reason import split_reason

__all__ = [
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "MALFORMED_COMMAND",
    "TEXT_MAX",
    "BatchDeleteCommand",
    "Command",
    "DeleteCommand",
    "FreezeCommand",
    "HelpCommand",
    "HistoryCommand",
    "PickCommand",
    "SlashCommand",
    "UnfreezeCommand",
    "parse_command",
    "parse_duration",
    "parse_slash_command",
]

TEXT_MAX = 1000
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
MALFORMED_COMMAND = "This request lacks the user or channel Slack sends with every command; nothing was done."

_COUNT_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
_HELP_WORDS = frozenset({"help", "-h", "--help", "?"})
# ``30m``, ``2h``, ``1d``, ``1h30m``, ``1d12h``: days, hours and minutes, in that order, each once.
_DURATION_RE = re.compile(r"(?:(?P<d>[0-9]{1,3})d)?(?:(?P<h>[0-9]{1,4})h)?(?:(?P<m>[0-9]{1,6})m)?", re.ASCII)
_FREEZE_EXAMPLE = f'`{SLASH_COMMAND} freeze 2h reason="CHG-1234 core network upgrade"`'
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
    # ``at 2026-12-10 02:00 Asia/Shanghai`` / ``at 2026-12-10T02:00+08:00`` (UTC); None: at once
    # (``at now`` or no ``at``). Not yet checked against the clock (see bot.schedule.check_run_at).
    run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BatchDeleteCommand:
    """``/vpn delete vco-a vco-b … [region]`` (distinct ids, in the order typed) or
    ``/vpn delete gateway=vpn-… all [region]`` (``vco_ids`` empty: every connection of the gateway)."""

    vco_ids: tuple[str, ...]
    region: str
    gateway_id: str | None = None
    account: str | None = None
    reason: str | None = None
    # ``at …``: every connection runs then once approved (as DeleteCommand.run_at); None: at once.
    run_at: datetime | None = None


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


@dataclass(frozen=True, slots=True)
class FreezeCommand:
    """``/vpn freeze <duration> [account] reason=…``: no approvals, approved changes held, until it ends."""

    duration: timedelta
    reason: str
    # None: every account (and the single-account bot).
    account: str | None = None


@dataclass(frozen=True, slots=True)
class UnfreezeCommand:
    """``/vpn unfreeze [account]``: lift ``account``'s freeze, or (None) every freeze in force."""

    account: str | None = None


Command = (
    DeleteCommand
    | BatchDeleteCommand
    | PickCommand
    | HistoryCommand
    | HelpCommand
    | ListCommand
    | StatusCommand
    | FreezeCommand
    | UnfreezeCommand
)


def _usage(message: str) -> UsageError:
    return UsageError(message)


def _vco_id(token: str) -> str:
    return parse_vco_id(clean(token), shown=echo(token))


_AT_EXAMPLE = "`at 2026-12-10 02:00 Asia/Shanghai` or `at 2026-12-10T02:00+08:00`"


def _time_words(words: list[str]) -> int:
    """How many of ``words`` (those after ``at``) are the run time: a date, its time and zone, or one word."""
    if not words or "-" not in words[0] or "T" in words[0].upper():
        return 1 if words else 0
    taken = 1
    for word in words[1:3]:
        if "=" in word or word.startswith("--") or is_region(word):
            break
        taken += 1
    return taken


def split_run_at(args: list[str]) -> tuple[list[str], datetime | None]:
    """Take ``at TIME`` out of ``args``: the instant (UTC), or None for ``at now`` or no ``at``."""
    places = [i for i, word in enumerate(args) if word.lower() == "at"]
    if not places:
        return args, None
    if len(places) > 1:
        raise _usage("The run time is given twice; give `at …` once.")
    start = places[0]
    after = [clean(w) for w in args[start + 1 :]]
    taken = _time_words(after)
    if taken == 0:
        raise _usage(f"`at` needs a time, e.g. {_AT_EXAMPLE}.")
    rest = args[:start] + args[start + 1 + taken :]
    if taken == 1 and after[0].lower() == "now":
        return rest, None
    try:
        return rest, parse_run_at(after[:taken])
    except ScheduleError as err:
        raise _usage(f"That run time does not work: {escape(str(err))}. Use {_AT_EXAMPLE}.") from None


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
    run_at: datetime | None = None,
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
        vco_ids=(),
        region=region or default_region,
        gateway_id=gateway,
        account=account,
        reason=reason,
        run_at=run_at,
    )


def _parse_delete(
    args: list[str], default_region: str, reason: str | None
) -> DeleteCommand | BatchDeleteCommand | PickCommand:
    args, run_at = split_run_at(args)
    args, account = split_account(args)
    args, gateway = _split_gateway(args)
    positional, region = split_region(args)
    if gateway is not None:
        return _parse_gateway_all(positional, gateway, region, account, reason, default_region, run_at)
    if not positional:
        if run_at is not None:
            raise _usage(
                f"Give the connection with a run time, e.g. `{SLASH_COMMAND} delete vco-bp1abc2def3gh at "
                "2026-12-10 02:00 Asia/Shanghai`, or pick it and the time in the form."
            )
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
                vco_ids=distinct,
                region=region or default_region,
                account=account,
                reason=reason,
                run_at=run_at,
            )
        return DeleteCommand(
            vco_id=distinct[0], region=region or default_region, account=account, reason=reason, run_at=run_at
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
            f"connection id, an optional region and an optional `at` time."
        )
    return DeleteCommand(
        vco_id=vco_id, region=region or default_region, account=account, reason=reason, run_at=run_at
    )


def _parse_history(args: list[str]) -> HistoryCommand:
    if not args:
        return HistoryCommand()
    if len(args) > 1:
        raise _usage(f"Too many words: {echo(' '.join(args[1:]))}. Use `{SLASH_COMMAND} history [count]`.")
    if not _COUNT_RE.fullmatch(args[0]) or not 1 <= int(args[0]) <= HISTORY_MAX:
        raise _usage(f"The history count must be a number from 1 to {HISTORY_MAX}, not {echo(args[0])}.")
    return HistoryCommand(limit=int(args[0]))


def parse_duration(word: str) -> timedelta:
    """``30m``, ``2h``, ``1d``, ``1h30m`` as a timedelta, more than 0 and at most FREEZE_MAX; else UsageError."""
    value = clean(word).lower()
    match = _DURATION_RE.fullmatch(value)
    if not value or match is None:
        raise _usage(
            f"{echo(word)} is not a duration. Write it like `30m`, `2h`, `1d` or `1h30m` "
            f"(days, hours, minutes), e.g. {_FREEZE_EXAMPLE}."
        )
    days, hours, minutes = (int(match.group(g) or 0) for g in ("d", "h", "m"))
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration <= timedelta(0):
        raise _usage("A freeze must last at least a minute, e.g. `30m`.")
    if duration > FREEZE_MAX:
        raise _usage(
            f"{echo(word)} is too long: a freeze lasts at most {FREEZE_MAX.days} days. "
            "Freeze again when it ends if it must last longer."
        )
    return duration


def _parse_freeze(args: list[str], reason: str | None) -> FreezeCommand:
    args, account = split_account(args)
    if not args:
        raise _usage(f"How long? Give a duration and a reason, e.g. {_FREEZE_EXAMPLE}.")
    duration = parse_duration(args[0])
    if len(args) >= 2:
        if account is not None:
            raise _usage("The account is given twice; give it once.")
        account = account_word(args[1])
    if len(args) > 2:
        raise _usage(
            f"Too many words: {echo(' '.join(args[2:]))}. `{SLASH_COMMAND} freeze` takes a duration, "
            f'an optional account and `reason="…"`. A reason of several words goes in quotes.'
        )
    if reason is None:
        raise _usage(f"A freeze needs a reason, so people know why approvals stop, e.g. {_FREEZE_EXAMPLE}.")
    return FreezeCommand(duration=duration, reason=reason, account=account)


def _parse_unfreeze(args: list[str]) -> UnfreezeCommand:
    args, account = split_account(args)
    if args and account is not None:
        raise _usage("The account is given twice; give it once.")
    if len(args) > 1:
        raise _usage(f"Too many words: {echo(' '.join(args[1:]))}. Use `{SLASH_COMMAND} unfreeze [account]`.")
    return UnfreezeCommand(account=account_word(args[0]) if args else account)


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
    if word == "freeze":
        try:
            return _parse_freeze(args, reason)
        except UsageError as err:
            if reason is None or "in quotes" in err.friendly:
                raise
            raise _usage(f'{err.friendly} A reason of several words goes in quotes: `reason="…"`.') from None
    if reason is not None:
        raise _usage(f"A reason goes with `{SLASH_COMMAND} delete` and `{SLASH_COMMAND} freeze` only.")
    if word == "unfreeze":
        return _parse_unfreeze(args)
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
