"""The Recreate modal's submission: the pre-shared key checked for Alibaba's form, never echoed.

A submission that is not the bot's modal raises :class:`bot.errors.NotAllowed`; a key that is empty,
too long or has spaces or characters Alibaba refuses raises :class:`KeyProblem`, whose errors are
shown under the field in the modal. The key goes from the payload straight into a SecretStr: it is
never logged, stored or echoed (a field error never quotes it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError

from bot.errors import NotAllowed
from bot.ids import OperationId
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.blocks.recreate import FOREIGN_FORM, PSK_CHARS, PSK_MAX, PSK_MISSING, PSK_TOO_LONG
from bot.slack.parsing.primitives import Payload, User

__all__ = ["KeyProblem", "RecreateSubmission", "parse_recreate_submission"]

# Alibaba's Psk: 1-100 characters, no spaces, letters, digits and these symbols.
_PSK_RE = re.compile(r'^[A-Za-z0-9~!`@#$%^&*()_\-+={}\[\]\\|;:",.<>/?]{1,100}$')


class _Input(Payload):
    # Longer than any key Alibaba takes, so a too-long key is reported, not refused as foreign.
    value: str | None = Field(default=None, max_length=3000)


class _State(Payload):
    values: dict[str, dict[str, _Input]] = Field(default_factory=dict)


class _View(Payload):
    callback_id: Literal[CallbackId.RECREATE]
    private_metadata: OperationId
    state: _State = _State()


class _Submission(Payload):
    type: Literal["view_submission"]
    user: User
    view: _View


@dataclass(frozen=True, slots=True)
class RecreateSubmission:
    """A submitted Recreate modal: who, which deleted operation, and the pre-shared key (secret)."""

    user_id: str
    op_id: str
    psk: SecretStr | None


class KeyProblem(Exception):
    """A key in the modal is not usable; ``errors`` maps block ids to the texts shown under them."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("key problem")
        self.errors = errors


def _typed(view: _View, block: BlockId, action: ActionId) -> str | None:
    typed = view.state.values.get(block.value, {}).get(action.value)
    return typed.value if typed is not None and typed.value else None


def parse_recreate_submission(body: Mapping[str, Any]) -> RecreateSubmission:
    """Validate a submitted Recreate modal; NotAllowed if it is not ours, KeyProblem if the key is unusable."""
    try:
        payload = _Submission.model_validate(body)
    except ValidationError:
        raise NotAllowed(FOREIGN_FORM) from None
    psk = _typed(payload.view, BlockId.RECREATE_PSK, ActionId.RECREATE_PSK)
    errors: dict[str, str] = {}
    if psk is None:
        errors[BlockId.RECREATE_PSK.value] = PSK_MISSING
    elif len(psk) > PSK_MAX:
        errors[BlockId.RECREATE_PSK.value] = PSK_TOO_LONG
    elif not _PSK_RE.match(psk):
        errors[BlockId.RECREATE_PSK.value] = PSK_CHARS
    if errors:
        raise KeyProblem(errors)
    return RecreateSubmission(
        user_id=payload.user.id,
        op_id=payload.view.private_metadata,
        psk=SecretStr(psk) if psk else None,
    )
