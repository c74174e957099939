"""Every Slack id the bot uses, in one place: the slash command, action ids and block ids.

Builders, listeners and tests share these spellings. Values are kebab-case, as in Slack's own
samples; a button's ``value`` is only the operation id (the server looks everything else up).
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["OP_ID_MAX", "OP_ID_RE", "SLASH_COMMAND", "ActionId", "BlockId"]

SLASH_COMMAND = "/vpn"

# Operation ids are minted by the workflow (uuid hex, ulid or "op-…"); this is only a shape
# check that bounds what a button payload may carry before anything looks it up.
OP_ID_MAX = 64
OP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)


class ActionId(StrEnum):
    """``action_id`` of every interactive element."""

    APPROVE = "vpn-delete-approve"
    CANCEL = "vpn-delete-cancel"


class BlockId(StrEnum):
    """``block_id`` of every block the bot renders."""

    HEADER = "vpn-delete-header"
    SUMMARY = "vpn-delete-summary"
    DETAILS = "vpn-delete-details"
    ACTIONS = "vpn-delete-actions"
    STATUS = "vpn-delete-status"
    FOOTER = "vpn-delete-footer"
    USAGE = "vpn-usage"
    HISTORY = "vpn-history"
    REFUSAL = "vpn-refusal"
