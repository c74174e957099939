"""Why a deletion is asked for: ``reason=…`` in ``/vpn delete`` and the picker's field, and its rules.

Self-contained on purpose: :func:`split_reason` takes the reason out of the command text before
the words are split, so the command parser itself needs one call. :func:`check_reason` applies
VPNBOT_REQUIRE_REASON and VPNBOT_TICKET_PATTERN and returns the change ticket found in the reason.
"""

from __future__ import annotations

import re

from bot.config import Settings
from bot.domain import REASON_MAX
from bot.errors import NotAllowed, UsageError
from bot.slack.block_ids import SLASH_COMMAND
from bot.slack.blocks import code

__all__ = ["REASON_MAX", "TICKET_MAX", "check_reason", "clean_reason", "split_reason"]

TICKET_MAX = 128

# ``reason=VALUE``, ``--reason=VALUE`` or ``--reason VALUE``; VALUE is one word or quoted text.
_REASON_RE = re.compile(
    r"""(?:(?<=\s)|^)(?:--reason(?:=|\s+)|reason=)"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|“(?P<cq>[^”]*)”|(?P<word>[^\s"'“]\S*))?""",
    re.IGNORECASE,
)
# Slack escapes these three in command text.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))


def clean_reason(reason: str) -> str:
    """``reason`` stripped and length-checked; raise UsageError if it is too long."""
    reason = " ".join(reason.split())
    if len(reason) > REASON_MAX:
        raise UsageError(
            f"The reason is too long ({len(reason)} characters; the limit is {REASON_MAX}). "
            "Say it in a sentence and give the ticket number."
        )
    return reason


def split_reason(text: str) -> tuple[str, str | None]:
    """``text`` without its reason option, and the reason (None when not given).

    Raise UsageError for a reason given twice, an empty or unterminated one, or one too long.
    """
    found = list(_REASON_RE.finditer(text))
    if not found:
        return text, None
    if len(found) > 1:
        raise UsageError("The reason is given twice; give it once.")
    match = found[0]
    value = next((v for v in match.group("dq", "sq", "cq", "word") if v is not None), None)
    if value is None:
        raise UsageError(
            f"`reason=` needs a value: one word, or text in quotes, e.g. `{SLASH_COMMAND} delete "
            'vco-bp1abc2def3gh reason="CHG-1234 site closed"`.'
        )
    for entity, char in _ENTITIES:
        value = value.replace(entity, char)
    reason = clean_reason(value)
    if not reason:
        raise UsageError("The reason is empty; say why, or leave `reason=` out.")
    return text[: match.start()] + " " + text[match.end() :], reason


def check_reason(settings: Settings, *, account: str, reason: str | None) -> str | None:
    """Apply the reason rules of ``account`` ("" for the single-account bot); return the ticket found.

    Raise NotAllowed, stating the rule, when a required reason is missing or names no ticket.
    """
    where = f" in account {code(account, 40)}" if account else ""
    pattern = settings.ticket_pattern(account)
    if not reason:
        if pattern is not None:
            raise NotAllowed(
                f"Deletions{where} need a change ticket matching {code(pattern, 100)} in their reason, "
                f'e.g. `reason="CHG-1234 decommissioned"`. Nothing was requested.',
                who_can="The bot administrator sets the rule (VPNBOT_TICKET_PATTERN).",
            )
        if settings.reason_required(account):
            raise NotAllowed(
                f'Deletions{where} need a reason, e.g. `reason="site closed"`. Nothing was requested.',
                who_can="The bot administrator sets the rule (VPNBOT_REQUIRE_REASON).",
            )
        return None
    if pattern is None:
        return None
    ticket = re.search(pattern, reason)
    if ticket is None or not ticket.group(0):
        raise NotAllowed(
            f"Deletions{where} need a change ticket matching {code(pattern, 100)} in their reason; "
            "none was found. Nothing was requested.",
            who_can="The bot administrator sets the rule (VPNBOT_TICKET_PATTERN).",
        )
    return ticket.group(0)[:TICKET_MAX]
