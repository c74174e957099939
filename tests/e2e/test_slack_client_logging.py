"""The bot's Slack Web API client builds its debug lines only when debug logging is on."""

from __future__ import annotations

import logging

from bot.sandbox.local import LocalStack

from .conftest import CHANNEL


class _Counted(str):
    """A text that counts how often it is formatted with repr(), as debug lines do with parameters."""

    __slots__ = ("reprs",)
    reprs: int

    def __new__(cls, value: str) -> _Counted:
        self = super().__new__(cls, value)
        self.reprs = 0
        return self

    def __repr__(self) -> str:
        self.reprs += 1
        return super().__repr__()


async def test_the_web_client_formats_no_debug_lines_unless_debug_logging_is_on(stack: LocalStack) -> None:
    # slack_sdk checks the level set on its logger itself, not the effective one
    # (slackapi/python-slack-sdk#1957); the bot gives its client a logger with that level set.
    client = stack.bot.app.slack
    quiet = _Counted("no debug here")
    assert (await client.chat_postMessage(channel=CHANNEL, text=quiet))["ok"]
    assert quiet.reprs == 0

    logger = logging.getLogger("slack_sdk.web.vpn_bot")
    before = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        loud = _Counted("debug on")
        assert (await client.chat_postMessage(channel=CHANNEL, text=loud))["ok"]
        assert loud.reprs > 0  # the count sees the debug lines when they are built
    finally:
        logger.setLevel(before)
