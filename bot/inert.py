"""Outside text made inert for Slack's mrkdwn: the one neutralising step every renderer shares.

A string the bot did not write (a cloud name, Alibaba's error message, a person's input) is shown
inside an inline code span, where Slack formats nothing. Only two things could end or break that
span, and :func:`neutralise` removes both: a backtick becomes its lookalike (U+02CB) and a line
break a space. Escaping ``& < >`` is the renderer's business (``bot.slack.blocks.text``), since some
texts are escaped once more on the way to Slack.
"""

from __future__ import annotations

import re

__all__ = ["neutralise"]

_LINE_BREAK_RE = re.compile("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")


def neutralise(text: str) -> str:
    """``text`` with nothing that could end an inline code span: no backtick, no line break."""
    return _LINE_BREAK_RE.sub(" ", text).replace("`", "\u02cb")
