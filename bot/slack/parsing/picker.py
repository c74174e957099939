"""The picker modal's payloads (block_suggestion, view_submission), checked before anything is used.

Everything in them came through the person's browser: the channel in ``private_metadata``, the
region and the connection id are checked by the id rules here, and by the policy afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from bot.errors import NotAllowed
from bot.ids import AccountName, ChannelId, RegionId, TeamId, VcoId
from bot.slack.block_ids import ActionId, BlockId, CallbackId
from bot.slack.parsing.primitives import Payload, User

__all__ = [
    "FOREIGN_VIEW",
    "PickerMeta",
    "PickerSubmission",
    "Suggestion",
    "parse_submission",
    "parse_suggestion",
]

FOREIGN_VIEW = "That form did not come from this bot, or it was changed on the way; run `/vpn delete` again."
# What someone may type in the connection search: part of a name or an id, nothing else.
SEARCH_MAX = 64
SearchText = Annotated[str, StringConstraints(pattern=r"^[\w .:/-]*$", max_length=SEARCH_MAX)]


class PickerMeta(Payload):
    """The modal's ``private_metadata``: where the command was typed, and the region first shown."""

    c: ChannelId
    r: RegionId
    # The account first shown, with several accounts.
    a: AccountName | None = None


class _Team(Payload):
    id: TeamId


class _Option(Payload):
    value: str = Field(max_length=150)


class _Select(Payload):
    selected_option: _Option | None = None
    # A multi_external_select's choices (the picker's "more connections").
    selected_options: list[_Option] | None = Field(default=None, max_length=100)
    # A plain_text_input's value (the reason field); bounded well past the reason's own limit.
    value: str | None = Field(default=None, max_length=3000)
    # A datetimepicker's choice (the run time field): Unix seconds; None when left empty.
    selected_date_time: int | None = Field(default=None, ge=0, le=253_402_300_799)


class _State(Payload):
    values: dict[str, dict[str, _Select]] = Field(default_factory=dict)


class _View(Payload):
    callback_id: Literal[CallbackId.PICKER]
    private_metadata: str = Field(max_length=3000)
    state: _State = _State()


class _SuggestionPayload(Payload):
    type: Literal["block_suggestion"]
    user: User
    action_id: Literal[ActionId.PICK_CONNECTION, ActionId.PICK_MORE]
    value: str = Field(max_length=2000)
    view: _View


class _SubmissionPayload(Payload):
    type: Literal["view_submission"]
    user: User
    team: _Team | None = None
    view: _View


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Someone typing in the connection search: the region chosen so far and the words typed."""

    user_id: str
    channel_id: str
    region: str
    words: tuple[str, ...]
    account: str | None = None


@dataclass(frozen=True, slots=True)
class PickerSubmission:
    """A submitted picker: the same request as ``/vpn delete <vco_id> <region>`` in ``channel_id``."""

    user_id: str
    team_id: str
    channel_id: str
    region: str
    vco_id: str | None
    account: str | None = None
    # What was typed in the reason field (None when left empty); its rules are checked on submit.
    reason: str | None = None
    # The run time field (UTC; None when left empty); checked against the clock on submit.
    run_at: datetime | None = None
    # The "more connections" multi-select (site decommission), distinct and without ``vco_id``.
    more: tuple[str, ...] = ()

    @property
    def vco_ids(self) -> tuple[str, ...]:
        """Every connection picked, the first one first."""
        return ((self.vco_id,) if self.vco_id else ()) + self.more


_META = TypeAdapter(PickerMeta)
_SEARCH: TypeAdapter[str] = TypeAdapter(SearchText)
_REGION: TypeAdapter[str] = TypeAdapter(RegionId)
_VCO: TypeAdapter[str] = TypeAdapter(VcoId)
_ACCOUNT: TypeAdapter[str] = TypeAdapter(AccountName)


def _selected(view: _View, block: BlockId, action: ActionId) -> str | None:
    choice = view.state.values.get(block.value, {}).get(action.value)
    return choice.selected_option.value if choice is not None and choice.selected_option else None


def _region(view: _View, meta: PickerMeta) -> str:
    chosen = _selected(view, BlockId.PICK_REGION, ActionId.PICK_REGION)
    return _REGION.validate_python(chosen) if chosen is not None else meta.r


def _account(view: _View, meta: PickerMeta) -> str | None:
    chosen = _selected(view, BlockId.PICK_ACCOUNT, ActionId.PICK_ACCOUNT)
    return _ACCOUNT.validate_python(chosen) if chosen is not None else meta.a


def parse_suggestion(body: Mapping[str, Any]) -> Suggestion:
    """Validate a block_suggestion; raise NotAllowed if it is not ours or carries anything odd."""
    try:
        payload = _SuggestionPayload.model_validate(body)
        meta = _META.validate_json(payload.view.private_metadata)
        words = _SEARCH.validate_python(payload.value.strip()).split()
        region = _region(payload.view, meta)
        account = _account(payload.view, meta)
    except ValidationError:
        raise NotAllowed(FOREIGN_VIEW) from None
    return Suggestion(payload.user.id, meta.c, region, tuple(words), account)


def parse_submission(body: Mapping[str, Any]) -> PickerSubmission:
    """Validate a view_submission of the picker; raise NotAllowed if it is not ours or was tampered with."""
    try:
        payload = _SubmissionPayload.model_validate(body)
        meta = _META.validate_json(payload.view.private_metadata)
        region = _region(payload.view, meta)
        vco = _selected(payload.view, BlockId.PICK_CONNECTION, ActionId.PICK_CONNECTION)
        vco_id = _VCO.validate_python(vco) if vco is not None else None
        account = _account(payload.view, meta)
        more_choice = payload.view.state.values.get(BlockId.PICK_MORE.value, {}).get(ActionId.PICK_MORE.value)
        picked = [o.value for o in (more_choice.selected_options or [])] if more_choice is not None else []
        more = tuple(dict.fromkeys(_VCO.validate_python(v) for v in picked if v not in (vco_id, "none")))
    except ValidationError:
        raise NotAllowed(FOREIGN_VIEW) from None
    typed = payload.view.state.values.get(BlockId.PICK_REASON.value, {}).get(ActionId.PICK_REASON.value)
    reason = typed.value.strip() if typed is not None and typed.value and typed.value.strip() else None
    team_id = payload.team.id if payload.team else ""
    when = payload.view.state.values.get(BlockId.PICK_RUN_AT.value, {}).get(ActionId.PICK_RUN_AT.value)
    run_at = (
        datetime.fromtimestamp(when.selected_date_time, tz=UTC)
        if when is not None and when.selected_date_time is not None
        else None
    )
    return PickerSubmission(payload.user.id, team_id, meta.c, region, vco_id, account, reason, run_at, more)
