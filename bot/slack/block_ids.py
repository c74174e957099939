"""Every Slack id the bot uses, in one place: the slash command, action ids and block ids.

Builders, listeners and tests share these spellings. Values are kebab-case, as in Slack's own
samples; a Delete/Cancel button's ``value`` is only the operation id (the server looks everything
else up); a ``/vpn list`` button's value is a small JSON object checked by :mod:`bot.slack.parsing.find`.
The id rules themselves (users, channels, regions, connections, operations) live in :mod:`bot.ids`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SLASH_COMMAND", "ActionId", "BlockId", "CallbackId"]

SLASH_COMMAND = "/vpn"


class ActionId(StrEnum):
    """``action_id`` of every interactive element."""

    APPROVE = "vpn-delete-approve"
    CANCEL = "vpn-delete-cancel"
    # A scheduled deletion the change window holds back: a second approver runs it now.
    OVERRIDE_WINDOW = "vpn-delete-override-window"
    # The picker modal's optional run time (a datetimepicker).
    PICK_RUN_AT = "vpn-pick-run-at"
    # Under a quorum rule (VPNBOT_APPROVAL_RULES): take one's own approval back before the rule is met.
    WITHDRAW = "vpn-delete-withdraw"
    # /vpn list: page through a listing, or start the delete confirmation for one row.
    LIST_NEXT = "vpn-list-next"
    LIST_PREVIOUS = "vpn-list-previous"
    LIST_DELETE = "vpn-list-delete"
    # The /vpn delete picker modal: the region select and the connection search (external select).
    PICK_REGION = "vpn-pick-region"
    PICK_ACCOUNT = "vpn-pick-account"
    PICK_CONNECTION = "vpn-pick-connection"
    # The picker's multi-select of more connections (site decommission), searched like the first.
    PICK_MORE = "vpn-pick-more"
    # Why: the picker's reason field, and the Cancel modal's.
    PICK_REASON = "vpn-pick-reason"
    CANCEL_REASON = "vpn-cancel-reason"
    # Recreate: the deleted card's Recreate… button, and the modal's key inputs.
    RECREATE_OPEN = "vpn-recreate-open"
    # Site decommission: the batch card's Delete (all of it) and Cancel (all of it).
    BATCH_APPROVE = "vpn-batch-approve"
    BATCH_CANCEL = "vpn-batch-cancel"
    # A batch the change window holds back (scheduled): a second approver starts all of it now.
    BATCH_OVERRIDE_WINDOW = "vpn-batch-override-window"
    # Under a quorum rule: take one's approval of the whole batch back before the rule is met.
    BATCH_WITHDRAW = "vpn-batch-withdraw"
    RECREATE_PSK = "vpn-recreate-psk"


class BlockId(StrEnum):
    """``block_id`` of every block the bot renders."""

    HEADER = "vpn-delete-header"
    SUMMARY = "vpn-delete-summary"
    DETAILS = "vpn-delete-details"
    IMPACT = "vpn-delete-impact"
    ROUTES = "vpn-delete-routes"
    ACTIONS = "vpn-delete-actions"
    STATUS = "vpn-delete-status"
    FOOTER = "vpn-delete-footer"
    USAGE = "vpn-usage"
    HISTORY = "vpn-history"
    REFUSAL = "vpn-refusal"
    LIST_HEADER = "vpn-list-header"
    LIST_NAV = "vpn-list-nav"
    LIST_FOOTER = "vpn-list-footer"
    LOOKUP = "vpn-status"
    PICK_REGION = "vpn-pick-region-block"
    PICK_ACCOUNT = "vpn-pick-account-block"
    PICK_CONNECTION = "vpn-pick-connection-block"
    PICK_MORE = "vpn-pick-more-block"
    PICK_REASON = "vpn-pick-reason-block"
    PICK_RUN_AT = "vpn-pick-run-at-block"
    CANCEL_REASON = "vpn-cancel-reason-block"
    REASON = "vpn-delete-reason"
    APPROVAL_RULE = "vpn-delete-approval-rule"
    APPROVALS = "vpn-delete-approvals"
    CHANGED = "vpn-delete-changed"
    HOME_HEADER = "vpn-home-header"
    HOME_PENDING = "vpn-home-pending"
    HOME_RUNNING = "vpn-home-running"
    HOME_FINISHED = "vpn-home-finished"
    HOME_FREEZE = "vpn-home-freeze"
    RECREATE = "vpn-recreate-offer"
    RECREATE_ROUTES = "vpn-recreate-routes"
    RECREATE_PSK = "vpn-recreate-psk-block"
    RECREATE_NOT_CARRIED = "vpn-recreate-not-carried"
    # The batch card: one line per connection (numbered: ``vpn-batch-line-1``…) and the rest counted.
    BATCH_LINE = "vpn-batch-line"
    BATCH_MORE = "vpn-batch-more"


class CallbackId(StrEnum):
    """``callback_id`` of every modal."""

    PICKER = "vpn-delete-picker"
    RECREATE = "vpn-recreate"
    CANCEL = "vpn-cancel"
