"""Every state an operation can be in, and the cross-feature variants (held by a freeze, asked again
after a change, one of a batch, scheduled), as the Home tab, ``/vpn status``, a reminder and the audit
channel render them: valid Block Kit, names inert, and each says what it is.

A state or variant missing from a rendering table shows as a raw enum word or a wrong phrase here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slackfakes import T0, make_op

from bot.domain import (
    ACTIVE_STATES,
    ANNOUNCED_ACTIONS,
    SCHEDULE_AT,
    SCHEDULE_WINDOW,
    TERMINAL_STATES,
    Announced,
    Approval,
    Operation,
    OpState,
    Reminded,
)
from bot.slack.blocks.audit_line import WORDING, build_audit_line
from bot.slack.blocks.find import build_operation_status
from bot.slack.blocks.thread import build_progress
from bot.slack.blocks.views import build_home

HOSTILE = "<!channel> *core* `x` <https://evil|click>"


def _op(state: OpState, **fields: Any) -> Operation:
    op = make_op(state=state, **fields)
    return replace(op, connection=replace(op.connection, name=HOSTILE))


def _variants() -> list[tuple[str, Operation, str]]:
    """(what, the operation, what Home and /vpn status must say about it)."""
    cases: list[tuple[str, Operation, str]] = []
    for state in OpState:
        if state is OpState.AWAITING_APPROVAL:
            said = "waiting for approval"
        elif state is OpState.SCHEDULED:
            said = "scheduled"
        elif state in ACTIVE_STATES:
            said = f"in progress ({state.value.replace('_', ' ')})"
        else:
            assert state in TERMINAL_STATES, f"{state} is neither active, terminal, awaiting nor scheduled"
            said = state.value.replace("_", " ")
        cases.append((state.value, _op(state), said))
    approved = {"approver_id": "U0BOB", "approved_at": T0 + timedelta(minutes=1)}
    runs = T0 + timedelta(hours=3)
    cases += [
        (
            "scheduled at",
            _op(OpState.SCHEDULED, run_at=runs, schedule_kind=SCHEDULE_AT, **approved),
            "scheduled for",
        ),
        (
            "scheduled window",
            _op(OpState.SCHEDULED, run_at=runs, schedule_kind=SCHEDULE_WINDOW, **approved),
            "scheduled for",
        ),
        ("held", _op(OpState.APPROVED, held_at=T0 + timedelta(minutes=2), **approved), "held by a freeze"),
        (
            "asked again",
            _op(OpState.AWAITING_APPROVAL, preview_changes=("routes: +10.2.0.0/16",)),
            "changed since approved",
        ),
        ("batch member", _op(OpState.APPROVED, batch_id="b" * 32, **approved), "one of a batch"),
        ("batch member waiting", _op(OpState.AWAITING_APPROVAL, batch_id="b" * 32), "one of a batch"),
        (
            "quorum",
            _op(OpState.AWAITING_APPROVAL, approvals=(Approval(user_id="U0BOB", at=T0),)),
            "waiting for approval",
        ),
    ]
    return cases


CASES = _variants()


def _inert(text: str) -> None:
    assert "<!channel>" not in text
    assert "<https://evil" not in text


@pytest.mark.parametrize(("what", "op", "said"), CASES, ids=[c[0] for c in CASES])
def test_the_home_tab_renders_it(what: str, op: Operation, said: str) -> None:
    home = build_home(pending=[], running=[op], finished=[], links={}, now=T0)
    View(**home).validate_json()
    text = json.dumps(home)
    _inert(text)
    assert said in text, (what, text)
    if op.batch_id is None:
        assert "one of a batch" not in text
    if op.held_at is None:
        assert "held by a freeze" not in text


@pytest.mark.parametrize(("what", "op", "said"), CASES, ids=[c[0] for c in CASES])
def test_vpn_status_renders_it(what: str, op: Operation, said: str) -> None:
    status = build_operation_status(op, permalink=None, now=T0)
    assert status["text"].strip()
    for raw in status["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
    text = json.dumps(status)
    _inert(text)
    expected = said.replace("one of a batch", "One of a batch")
    assert expected in text, (what, text)
    if op.state is OpState.APPROVED and op.held_at is None:
        assert "held by a freeze" not in text


def test_a_reminder_under_a_rule_says_how_far_it_got_and_names_only_who_is_needed() -> None:
    counted = build_progress(Reminded(waited_s=125, approvers=("U0CAROL",), approvals=1, needed=2))
    assert counted.startswith(":bell: <@U0CAROL>: this request has waited 2 min 5 s")
    assert "(1 of 2 approvals so far, 1 more needed)" in counted
    groups = build_progress(Reminded(waited_s=60, approvers=("S0SECURITY",), approvals=0, needed=2))
    assert groups.startswith(":bell: <!subteam^S0SECURITY>:")
    assert "(2 approvals needed)" in groups
    # Without a rule, as before.
    plain = build_progress(Reminded(waited_s=60, approvers=("U0BOB",)))
    assert "approvals" not in plain


@pytest.mark.parametrize("action", sorted(ANNOUNCED_ACTIONS))
def test_every_announced_action_has_its_words(action: str) -> None:
    """No announced decision falls back to its raw action name; each line is valid and inert."""
    base = action.removeprefix("recreate_")
    assert base in WORDING or action == "recreated", action
    op = None if action in ("frozen", "unfrozen") else _op(OpState.DELETED)
    line = build_audit_line(
        op, Announced(action=action, actor_id="U0BOB", at=T0, note=HOSTILE), permalink=None
    )
    assert line["text"].strip()
    if "_" in base:
        assert base not in line["text"], line["text"]  # worded, not the raw action name
    for raw in line["blocks"]:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]
    _inert(json.dumps(line))


def test_the_approval_that_meets_a_quorum_names_the_others_on_its_line() -> None:
    op = _op(
        OpState.APPROVED,
        approver_id="U0CAROL",
        approvals=(Approval(user_id="U0BOB", at=T0), Approval(user_id="U0CAROL", at=T0)),
    )
    line = build_audit_line(op, Announced(action="approved", actor_id="U0CAROL", at=T0), permalink=None)
    assert "approved by <@U0CAROL> with <@U0BOB>." in line["text"]
    single = build_audit_line(
        replace(op, approvals=()), Announced(action="approved", actor_id="U0CAROL", at=T0), permalink=None
    )
    assert "approved by <@U0CAROL>." in single["text"]
