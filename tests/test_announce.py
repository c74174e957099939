"""Decisions announced in the audit channel, through the workflow on a real store (FakeNotifier).

One line per decision, written with it; none without VPNBOT_AUDIT_CHANNEL; and ANNOUNCED_ACTIONS is
the one place that decides: an action added there is announced without touching the steps.
"""

from __future__ import annotations

import pytest
from workflow_harness import Harness

from bot.domain import ANNOUNCED_ACTIONS, OpState
from bot.errors import SlackError


def _lines(h: Harness, op_id: str) -> list[tuple[str, str]]:
    return [(e.action, e.actor_id) for oid, e in h.notifier.audit_lines if oid == op_id]


async def test_one_line_per_decision_of_a_deletion(h: Harness) -> None:
    wf = h.workflow(audit_channel=True)
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_state(op.id, OpState.DELETED)
    await h.settle()
    assert _lines(h, op.id) == [("requested", "U0REQ"), ("approved", "U0BOSS"), ("deleted", "vpn-bot")]
    requested = next(e for oid, e in h.notifier.audit_lines if oid == op.id)
    assert requested.at == op.created_at

    denied = await h.request(wf, "vco-2")
    await wf.cancel(op_id=denied.id, user_id="U0BOSS", reason="wrong one")
    await h.settle()
    assert _lines(h, denied.id) == [("requested", "U0REQ"), ("cancelled", "U0BOSS")]
    assert [e.note for oid, e in h.notifier.audit_lines if oid == denied.id] == ["", "wrong one"]


async def test_no_channel_no_lines(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.cancel(op_id=op.id, user_id="U0BOSS")
    await h.settle()
    assert h.notifier.audit_lines == []


async def test_an_action_listed_in_the_one_set_is_announced(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What another engineer does to announce a step (delete_sent here): list it, nothing else."""
    monkeypatch.setattr("bot.workflow.steps.ANNOUNCED_ACTIONS", ANNOUNCED_ACTIONS | {"delete_sent"})
    wf = h.workflow(audit_channel=True)
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    await h.wait_state(op.id, OpState.DELETED)
    await h.settle()
    assert [a for a, _ in _lines(h, op.id)] == ["requested", "approved", "delete_sent", "deleted"]


async def test_a_card_that_could_not_be_posted_is_announced_as_failed(h: Harness) -> None:
    """Its "requested" line goes out without a card to link; a "failed" line says why."""
    h.notifier.post_error = SlackError("The bot is not in this channel.", error="not_in_channel")
    wf = h.workflow(audit_channel=True)
    op = await h.request(wf)
    await h.settle()
    assert (await h.op(op.id)).state is OpState.FAILED
    assert _lines(h, op.id) == [("requested", "U0REQ"), ("failed", "vpn-bot")]
    assert h.notifier.audit_lines[-1][1].note == "The bot is not in this channel."
