"""Every Slack payload and ``/vpn`` command, turned into typed values before anything uses it.

One module per payload kind: :mod:`.commands` (the slash command and its text), :mod:`.clicks`
(an operation card's buttons), :mod:`.find` (``/vpn list`` / ``/vpn status`` and the list's
buttons), :mod:`.picker` (the picker modal), :mod:`.recreate` (the Recreate modal);
:mod:`.primitives` holds what they share (the payload base, unescaping and echoing a typed word,
``account=``). Parsing raises only :class:`bot.errors.UsageError` (command text, with a friendly
explanation), :class:`bot.errors.NotAllowed` (a payload the bot did not make, or that was changed
on the way) and, for the Recreate modal, :class:`KeyProblem`.
"""

from bot.slack.parsing.clicks import FOREIGN_BUTTON, ButtonClick, parse_click
from bot.slack.parsing.commands import (
    HISTORY_DEFAULT,
    HISTORY_MAX,
    MALFORMED_COMMAND,
    TEXT_MAX,
    BatchDeleteCommand,
    Command,
    DeleteCommand,
    FreezeCommand,
    HelpCommand,
    HistoryCommand,
    PickCommand,
    SlashCommand,
    UnfreezeCommand,
    parse_command,
    parse_duration,
    parse_slash_command,
)
from bot.slack.parsing.find import (
    FILTER_WORD_MAX,
    FILTER_WORDS_MAX,
    FOREIGN_LIST_BUTTON,
    PAGE_MAX,
    ListClick,
    ListCommand,
    ListPage,
    RowDelete,
    StatusCommand,
    parse_list,
    parse_list_click,
    parse_status,
)
from bot.slack.parsing.picker import (
    FOREIGN_VIEW,
    PickerMeta,
    PickerSubmission,
    Suggestion,
    parse_submission,
    parse_suggestion,
)
from bot.slack.parsing.recreate import KeyProblem, RecreateSubmission, parse_recreate_submission

__all__ = [
    "FILTER_WORDS_MAX",
    "FILTER_WORD_MAX",
    "FOREIGN_BUTTON",
    "FOREIGN_LIST_BUTTON",
    "FOREIGN_VIEW",
    "HISTORY_DEFAULT",
    "HISTORY_MAX",
    "MALFORMED_COMMAND",
    "PAGE_MAX",
    "TEXT_MAX",
    "BatchDeleteCommand",
    "ButtonClick",
    "Command",
    "DeleteCommand",
    "FreezeCommand",
    "HelpCommand",
    "HistoryCommand",
    "KeyProblem",
    "ListClick",
    "ListCommand",
    "ListPage",
    "PickCommand",
    "PickerMeta",
    "PickerSubmission",
    "RecreateSubmission",
    "RowDelete",
    "SlashCommand",
    "StatusCommand",
    "Suggestion",
    "UnfreezeCommand",
    "parse_click",
    "parse_command",
    "parse_duration",
    "parse_list",
    "parse_list_click",
    "parse_recreate_submission",
    "parse_slash_command",
    "parse_status",
    "parse_submission",
    "parse_suggestion",
]
