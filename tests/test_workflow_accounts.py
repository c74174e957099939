"""The workflow's per-account seam: it asks for the VPC API of (account, acting user) and nothing else.

A recording :class:`bot.ports.VpcApis` over the usual fake VPC shows which account and which person
each call was made for: lookups and polls in the operation's account with no person (the shared
read session), the delete in the approver's name; audit entries and the meter carry the account.
"""

from __future__ import annotations

import dataclasses

from fakes import REGION, AllowAllPolicy, FakeVpc
from workflow_harness import CONFIG, Harness

from bot.domain import Accepted, OpState
from bot.ports import VpcApi
from bot.workflow import Workflow


class RecordingVpcs:
    def __init__(self, vpc: FakeVpc) -> None:
        self.vpc = vpc
        self.asked: list[tuple[str, str | None]] = []

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi:
        self.asked.append((account, acting_user))
        return self.vpc


class Meter:
    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []

    def operation_finished(self, outcome: str, approval_to_final_s: float | None, account: str = "") -> None:
        self.finished.append((outcome, account))


async def test_an_operation_runs_in_its_account_and_deletes_in_the_approvers_name(h: Harness) -> None:
    vpcs, meter = RecordingVpcs(h.vpc), Meter()
    wf = Workflow(
        store=h.store,
        vpcs=vpcs,
        notifier=h.notifier,
        policy=AllowAllPolicy(),
        clock=h.clock,
        config=dataclasses.replace(CONFIG),
        instance_id="wf-accounts",
        meter=meter,
    )
    h.workflows.append(wf)
    op = await wf.request_delete(
        team_id="T0",
        user_id="U0REQ",
        channel_id="C0OPS",
        vco_id="vco-1",
        region=REGION,
        response_url=None,
        account="staging",
    )
    assert op.account == "staging"
    assert set(vpcs.asked) == {("staging", None)}  # the lookup: the shared read session

    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED, OpState.FAILED)
    assert done.state is OpState.DELETED
    assert done.account == "staging"
    assert ("staging", "U0BOSS") in vpcs.asked  # the delete, in a session named after the approver
    assert {account for account, _ in vpcs.asked} == {"staging"}
    assert [user for _, user in vpcs.asked].count("U0BOSS") == len(h.vpc.delete_calls)
    assert h.notifier.events_for(op.id)[0] == Accepted(request_id="REQ-0001", account="staging")
    entries = await h.store.recent_audit(limit=50, op_id=op.id)
    assert entries
    assert {e.account for e in entries} == {"staging"}
    assert meter.finished == [("deleted", "staging")]


async def test_a_single_account_operation_is_unchanged(h: Harness) -> None:
    wf = h.workflow()
    op = await h.request(wf)
    await wf.approve(op_id=op.id, user_id="U0BOSS")
    done = await h.wait_state(op.id, OpState.DELETED)
    assert done.account == ""
    assert h.notifier.events_for(op.id)[0] == Accepted(request_id="REQ-0001")
    assert {e.account for e in await h.store.recent_audit(limit=50, op_id=op.id)} == {None}
