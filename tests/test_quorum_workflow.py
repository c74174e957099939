"""Quorum rules in the workflow (real store, Protocol fakes, virtual clock): deletions and recreations.

A recreation's approval goes through the same path as a deletion's: under a rule the approval that
meets it starts the recreation on the replica holding the key, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from workflow_harness import CONFIG, Harness

from bot.domain import ApprovalRule, Operation, OpState
from bot.errors import ApprovalRefused, ConfirmationClosed, NotAllowed

KEY = SecretStr("fresh-Key_123")


@dataclass
class TwoApprovals:
    """A :class:`bot.ports.Quorum`: two different approvers for the operations of ``kinds``."""

    kinds: tuple[str, ...] = ("delete", "recreate")

    def rule_for(self, op: Operation) -> ApprovalRule | None:
        return ApprovalRule(count=2) if op.kind in self.kinds else None

    async def check_quorum_approval(
        self, *, user_id: str, op: Operation, rule: ApprovalRule
    ) -> tuple[str, ...]:
        if user_id == op.requester_id:
            raise NotAllowed("The requester never counts.")
        return ()


async def test_a_deletion_takes_two_approvers_and_deletes_once(h: Harness) -> None:
    wf = h.workflow(quorum=TwoApprovals())
    op = await h.request(wf)
    with pytest.raises(NotAllowed):
        await wf.approve(op_id=op.id, user_id="U0REQ")
    counted = await wf.approve(op_id=op.id, user_id="U0BOB")
    assert counted.state is OpState.AWAITING_APPROVAL
    assert [a.user_id for a in counted.approvals] == ["U0BOB"]
    with pytest.raises(ApprovalRefused) as repeated:
        await wf.approve(op_id=op.id, user_id="U0BOB")
    assert repeated.value.reason == "repeated"
    approved = await wf.approve(op_id=op.id, user_id="U0CAROL")
    assert approved.state is OpState.APPROVED
    assert approved.approver_id == "U0CAROL"
    await h.wait_state(op.id, OpState.DELETED)
    assert h.vpc.effective_deletes == [op.vco_id]
    with pytest.raises(ConfirmationClosed):
        await wf.approve(op_id=op.id, user_id="U0DAVE")


async def test_a_recreation_under_a_rule_starts_once_on_the_key_holder(h: Harness) -> None:
    quorum = TwoApprovals(kinds=("recreate",))
    deleter = h.workflow(instance_id="wf-del", quorum=quorum)
    op = await h.request(deleter)
    await deleter.approve(op_id=op.id, user_id="U0BOSS")  # no rule for deletions here: one approver
    parent = await h.wait_state(op.id, OpState.DELETED)

    holder = h.workflow(instance_id="wf-holder", quorum=quorum)
    other = h.workflow(instance_id="wf-other", quorum=quorum)
    recreation = await holder.request_recreate(op_id=parent.id, user_id="U0REQ", channel_id="C0OPS", psk=KEY)
    # The first approval lands on the replica without the key: counted, nothing started.
    counted = await other.approve(op_id=recreation.id, user_id="U0BOB")
    assert counted.state is OpState.AWAITING_APPROVAL
    # The second, on the same replica, meets the rule; the key holder's resume pass drives it.
    approved = await other.approve(op_id=recreation.id, user_id="U0CAROL")
    assert approved.state is OpState.APPROVED
    await holder.run_once()
    await h.wait_state(recreation.id, OpState.RECREATED, within=120)
    assert h.vpc.created_keys == ["fresh-Key_123"]
    actions = await h.audit_actions(recreation.id)
    assert actions.count("recreate_approved") == 2


async def test_expiry_and_cancel_work_as_without_a_rule(h: Harness) -> None:
    wf = h.workflow(quorum=TwoApprovals())
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOB")
    h.clock.advance(CONFIG.confirmation_ttl_s + 1)
    await wf.run_once()
    expired = await h.wait_state(op.id, OpState.EXPIRED)
    assert [a.user_id for a in expired.approvals] == ["U0BOB"]  # kept on the record
    with pytest.raises(ConfirmationClosed):
        await wf.approve(op_id=op.id, user_id="U0CAROL")
    with pytest.raises(ConfirmationClosed):
        await wf.withdraw(op_id=op.id, user_id="U0BOB")

    other = await h.request(wf, vco_id="vco-2")
    await wf.approve(op_id=other.id, user_id="U0BOB")
    cancelled = await wf.cancel(op_id=other.id, user_id="U0REQ", reason="not today")
    assert cancelled.state is OpState.CANCELLED
    with pytest.raises(ConfirmationClosed):
        await wf.approve(op_id=other.id, user_id="U0CAROL")
    assert h.vpc.effective_deletes == []
