"""A click on an operation card's buttons (Delete, Cancel, Recreate…), checked against its message.

A click that does not belong to its message raises :class:`bot.errors.NotAllowed` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from bot.errors import NotAllowed
from bot.ids import ChannelId, MessageTs, OperationId
from bot.slack.block_ids import ActionId
from bot.slack.parsing.primitives import Payload, User

__all__ = ["FOREIGN_BUTTON", "ButtonClick", "parse_click"]

FOREIGN_BUTTON = "This button does not belong to this request; nothing changed."


@dataclass(frozen=True, slots=True)
class ButtonClick:
    """One click on Delete or Cancel, reduced to what the listeners need."""

    action_id: ActionId
    op_id: str
    user_id: str
    channel_id: str
    message_ts: str
    # For a button that opens a modal (Recreate…): views.open needs it within 3 seconds.
    trigger_id: str | None = None


class _ClickedButton(Payload):
    action_id: ActionId
    value: OperationId


class _Channel(Payload):
    id: ChannelId


class _Container(Payload):
    message_ts: MessageTs
    channel_id: ChannelId | None = None


class _Element(Payload):
    action_id: str | None = None
    value: str | None = None


class _Block(Payload):
    type: str = ""
    elements: list[_Element] = Field(default_factory=list, max_length=25)


class _Message(Payload):
    """Slack's copy of the clicked message, as it was rendered (absent for ephemerals)."""

    ts: str | None = None
    blocks: list[_Block] = Field(default_factory=list, max_length=50)

    def button_values(self, action_id: ActionId) -> set[str | None]:
        """Values of the buttons with ``action_id`` on the message."""
        return {
            e.value
            for b in self.blocks
            if b.type == "actions"
            for e in b.elements
            if e.action_id == action_id
        }


class _BlockActions(Payload):
    """The parts of a ``block_actions`` payload a Delete or Cancel click must carry."""

    actions: list[_ClickedButton] = Field(min_length=1, max_length=1)
    user: User
    channel: _Channel | None = None
    container: _Container
    message: _Message | None = None
    trigger_id: str | None = Field(default=None, max_length=200)


_BLOCK_ACTIONS = TypeAdapter(_BlockActions)


def parse_click(body: Mapping[str, Any]) -> ButtonClick:
    """Validate a block_actions payload for our buttons; raise NotAllowed if it does not add up.

    The clicked value must be an operation id of the right shape and, when Slack's copy of the
    message (sent for every non-ephemeral message) still shows the button, equal to the value
    rendered on it: a value naming another operation is refused and changes nothing.
    """
    try:
        payload = _BLOCK_ACTIONS.validate_python(body)
    except ValidationError:
        raise NotAllowed(FOREIGN_BUTTON) from None
    action, message_ts = payload.actions[0], payload.container.message_ts
    channel_id = payload.channel.id if payload.channel else payload.container.channel_id
    if channel_id is None:
        raise NotAllowed(FOREIGN_BUTTON)
    if payload.message is not None:
        shown = payload.message.button_values(action.action_id)
        # No button on Slack's copy means the message was already updated (a click from a stale
        # client); the server-side checks and the workflow then explain what happened.
        if payload.message.ts != message_ts or (shown and action.value not in shown):
            raise NotAllowed(FOREIGN_BUTTON)
    return ButtonClick(
        action_id=action.action_id,
        op_id=action.value,
        user_id=payload.user.id,
        channel_id=channel_id,
        message_ts=message_ts,
        trigger_id=payload.trigger_id,
    )
