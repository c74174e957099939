"""Pure Block Kit builders: domain records in, message dicts out. No I/O, no clients.

Every message has a ``text`` fallback (notifications, screen readers). Every string that came
from a user or from an API enters mrkdwn through :func:`~bot.slack.blocks.text.code` (an inline
code span, escaped, its backticks and line breaks neutralised), so a connection named
``<!channel>`` cannot ping anyone and one named ``*x* ```y``` `` restyles nothing; every text is
capped to Slack's limits. Pre-shared keys
and BGP AuthKeys are not in the domain records, and raw API bodies are never rendered.

The package: ``text`` (escaping, limits, times, the public block primitives every builder uses), ``cards`` (the confirmation and
its later states), ``impact`` (the impact preview on it), ``snapshot`` (the configuration posted
after a deletion), ``thread`` (thread replies and replies
through the response_url), ``ephemeral`` (usage, refusals, errors, history).
"""

from bot.slack.blocks.cards import build_confirmation, build_parent, closed_text
from bot.slack.blocks.ephemeral import (
    ONE_ACCOUNT_TEXT,
    account_choice_text,
    build_already_requested,
    build_busy,
    build_history,
    build_looking_up,
    build_refusal,
    build_unexpected_error,
    build_usage,
    explain_slack_error,
)
from bot.slack.blocks.freeze import (
    build_freeze_answer,
    build_frozen_request_note,
    build_unfreeze_answer,
    frozen_refusal_text,
    home_freeze_blocks,
)
from bot.slack.blocks.impact import build_impact_blocks, impact_summary
from bot.slack.blocks.recreate import (
    build_recreate_modal,
    recreate_refused_text,
)
from bot.slack.blocks.snapshot import (
    FILE_KEY,
    SnapshotFile,
    build_snapshot_reply,
    snapshot_document,
    snapshot_summary,
)
from bot.slack.blocks.text import (
    BLOCKS_MAX,
    BLOCKS_TEXT_MAX,
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    CONTEXT_MAX,
    FIELD_MAX,
    HEADER_MAX,
    MESSAGE_BUDGET,
    MESSAGE_TEXT_MAX,
    ROUTES_SHOWN,
    SECTION_MAX,
    TEXT_MAX,
    USAGE_LINE,
    USAGE_TEXT,
    Block,
    Message,
    blocks_text_length,
    build_message,
    cap,
    code,
    context_block,
    escape,
    fit_blocks,
    fits,
    format_duration,
    format_time,
    header_block,
    inert_name,
    mention,
    mrkdwn_object,
    op_name,
    plain_object,
    safe_mrkdwn,
    section_block,
    subnets,
)
from bot.slack.blocks.thread import build_progress, build_respond, build_thread_reply

__all__ = [
    "BLOCKS_MAX",
    "BLOCKS_TEXT_MAX",
    "CONFIRM_BUTTON_MAX",
    "CONFIRM_TEXT_MAX",
    "CONFIRM_TITLE_MAX",
    "CONTEXT_MAX",
    "FIELD_MAX",
    "FILE_KEY",
    "HEADER_MAX",
    "MESSAGE_BUDGET",
    "MESSAGE_TEXT_MAX",
    "ONE_ACCOUNT_TEXT",
    "ROUTES_SHOWN",
    "SECTION_MAX",
    "TEXT_MAX",
    "USAGE_LINE",
    "USAGE_TEXT",
    "Block",
    "Message",
    "SnapshotFile",
    "account_choice_text",
    "blocks_text_length",
    "build_already_requested",
    "build_busy",
    "build_confirmation",
    "build_freeze_answer",
    "build_frozen_request_note",
    "build_history",
    "build_impact_blocks",
    "build_looking_up",
    "build_message",
    "build_parent",
    "build_progress",
    "build_recreate_modal",
    "build_refusal",
    "build_respond",
    "build_snapshot_reply",
    "build_thread_reply",
    "build_unexpected_error",
    "build_unfreeze_answer",
    "build_usage",
    "cap",
    "closed_text",
    "code",
    "context_block",
    "escape",
    "explain_slack_error",
    "fit_blocks",
    "fits",
    "format_duration",
    "format_time",
    "frozen_refusal_text",
    "header_block",
    "home_freeze_blocks",
    "impact_summary",
    "inert_name",
    "mention",
    "mrkdwn_object",
    "op_name",
    "plain_object",
    "recreate_refused_text",
    "safe_mrkdwn",
    "section_block",
    "snapshot_document",
    "snapshot_summary",
    "subnets",
]
