"""What every parser shares: the payload base model and the rules for a word someone typed.

Slack escapes ``&``, ``<`` and ``>`` in command text as HTML entities; people also paste ids in
backticks or quotes. A typed word is unescaped before it is checked (:func:`clean`) and before it is
echoed back in a reply (:func:`echo`), so a reply shows ``<b>`` as the person typed it, escaped once
for mrkdwn by :func:`bot.slack.blocks.code`, never ``&amp;lt;b&amp;gt;``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from bot.errors import UsageError
from bot.ids import UserId, is_account_name, parse_region
from bot.slack.blocks import code

__all__ = [
    "ECHO_MAX",
    "Payload",
    "User",
    "account_word",
    "clean",
    "echo",
    "region_word",
    "split_account",
    "split_option",
    "split_region",
    "unescape",
]

# How much of a typed word a reply quotes.
ECHO_MAX = 40

_T = TypeVar("_T")

_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_WRAPPERS = "`'\"<>“”‘’"


class Payload(BaseModel):
    """A Slack payload: Slack adds fields over time, so only the ones read are checked."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class User(Payload):
    """The ``user`` of an interactive payload: who clicked or submitted."""

    id: UserId


def unescape(token: str) -> str:
    """Undo Slack's escaping of ``&``, ``<`` and ``>`` in command text."""
    for entity, char in _ENTITIES:
        token = token.replace(entity, char)
    return token


def clean(token: str) -> str:
    """A typed word as it is checked: unescaped, without the backticks or quotes around it."""
    return unescape(token).strip(_WRAPPERS)


def echo(token: str) -> str:
    """A typed word quoted back in a reply: unescaped, then shown as bounded, escaped inline code."""
    return code(unescape(token), ECHO_MAX)


def split_option(
    args: list[str], name: str, *, example: str, check: Callable[[str], _T]
) -> tuple[list[str], _T | None]:
    """Take ``--NAME VALUE`` / ``--NAME=VALUE`` / ``NAME=VALUE`` out of ``args``, checked by ``check``.

    Given twice, or without a value, is a UsageError; ``check`` raises its own for a bad value.
    """
    rest: list[str] = []
    found: _T | None = None
    tokens = iter(args)
    for arg in tokens:
        lowered = arg.lower()
        if lowered == f"--{name}":
            value = next(tokens, None)
            if value is None:
                raise UsageError(f"`--{name}` needs a value, e.g. `--{name} {example}`.")
        elif lowered.startswith((f"--{name}=", f"{name}=")):
            value = arg.split("=", 1)[1]
            if not value:
                raise UsageError(f"`{name}=` needs a value, e.g. `{name}={example}`.")
        else:
            rest.append(arg)
            continue
        if found is not None:
            raise UsageError(f"The {name} is given twice; give it once.")
        found = check(value)
    return rest, found


def account_word(value: str) -> str:
    """A typed account name, lowercased; UsageError if it is not one."""
    name = clean(value).lower()
    if not is_account_name(name):
        raise UsageError(f"{echo(value)} is not an account name; names look like `prod` or `staging`.")
    return name


def region_word(value: str) -> str:
    """A typed region id; UsageError if it is not one."""
    return parse_region(clean(value), shown=echo(value))


def split_account(args: list[str]) -> tuple[list[str], str | None]:
    """Take ``--account NAME`` / ``--account=NAME`` / ``account=NAME`` out of ``args``."""
    return split_option(args, "account", example="prod", check=account_word)


def split_region(args: list[str]) -> tuple[list[str], str | None]:
    """Take ``--region R`` / ``--region=R`` / ``region=R`` out of ``args``."""
    return split_option(args, "region", example="cn-hangzhou", check=region_word)
