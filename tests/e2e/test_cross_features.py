"""Where the features of issues 26 and 27 meet, end to end: freezes, scheduled runs, approvals bound to
the preview, quorums, reminders and the audit channel, each with the others.

The real app over signed HTTP with the Slack stand-in and the VPC sandbox, on a controlled clock
(virtual time is moved; nothing waits for real). Every message, view and thread reply is checked as
valid Block Kit with a fallback text.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, time_passes
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, SEED_VPN_HANGZHOU, Route
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import (
    AUDIT,
    all_text,
    audit_lines,
    child_env,
    has_buttons,
    local_stack,
    op_id_of,
    run_to_exit,
    thread_text,
    valid_block_kit,
    wait_audit_lines,
    wait_confirmation,
    wait_thread,
)

# A Tuesday; the scheduled time is two hours later.
T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
RUNS = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
AT = "at 2026-12-08 22:00 Asia/Shanghai"  # RUNS
HELD = "held by a freeze until"
MINUS = "\N{MINUS SIGN}"


@contextlib.asynccontextmanager
async def running(database_url: str, clock: FakeClock, **settings: Any) -> AsyncIterator[LocalStack]:
    async with local_stack(
        database_url,
        update_seconds=0.3,
        clock=clock,
        settings={"approvers": [BOB, CAROL], "audit_channel": AUDIT, **settings},
    ) as stack:
        yield stack


async def _command(stack: LocalStack, user: str, text: str) -> None:
    reply = await stack.agent.slash_command(user, CHANNEL, text)
    assert reply.status == 200, reply.body


async def _ask_batch(stack: LocalStack) -> tuple[list[str], Message]:
    """Alice asks to delete three new connections on one gateway: their ids and the batch card."""
    state = stack.slack.state
    ids = stack.vpc.state.seed_connections("cn-hangzhou", 3, per_gateway=3)
    await _command(stack, ALICE, "delete " + " ".join(ids))
    card = await state.wait_for(
        lambda: next((m for m in state.messages(CHANNEL) if "Batch `" in all_text(m)), None),
        timeout=15,
        what="the batch card",
    )
    return ids, card


async def _request(stack: LocalStack, text: str, vco_id: str) -> Message:
    await _command(stack, ALICE, text)
    card = await wait_confirmation(stack.slack.state, vco_id)
    valid_block_kit(card)
    return card


async def _card_says(stack: LocalStack, ts: str, needle: str) -> Message:
    def found() -> Message | None:
        message = stack.slack.state.message(CHANNEL, ts)
        return message if message is not None and needle in all_text(message) else None

    card = await stack.slack.state.wait_for(found, timeout=20, what=f"the card saying {needle!r}")
    valid_block_kit(card)
    return card


async def _ephemeral(stack: LocalStack, user: str, needle: str, *, count: int = 1) -> Message:
    def found() -> Message | None:
        said = [m for m in stack.slack.state.ephemerals(user, CHANNEL) if needle in all_text(m)]
        return said[-1] if len(said) >= count else None

    message = await stack.slack.state.wait_for(found, timeout=10, what=f"a reply to {user} with {needle!r}")
    valid_block_kit(message)
    return message


def _deletes_of(stack: LocalStack, vco_id: str) -> list[Any]:
    return [
        r
        for r in stack.vpc.state.accepted("DeleteVpnConnection")
        if r.params.get("VpnConnectionId") == vco_id
    ]


async def _op(stack: LocalStack, op_id: str) -> Any:
    op = await stack.bot.app.store.get_operation(op_id=op_id)
    assert op is not None
    return op


async def _let_time_pass(stack: LocalStack, clock: FakeClock, seconds: float) -> None:
    """Inside time_passes: wait until ``seconds`` of virtual time have gone by."""
    moment = clock.now()
    await stack.slack.state.wait_for(
        lambda: clock.now() > moment + timedelta(seconds=seconds), timeout=20, what="virtual time to pass"
    )


def _check_lines(lines: list[Message], card_ts: str, words: list[str]) -> None:
    """One line per decision, in order, each saying its words, linking the card, valid, posted once."""
    assert len(lines) == len(words), [m.text for m in lines]
    for line, said in zip(lines, words, strict=True):
        assert said in line.text, (said, line.text)
        assert f"p{card_ts.replace('.', '')}" in all_text(line), "links the card"
        valid_block_kit(line)
    keys = Counter(str(m.metadata["event_payload"]["effect_id"]) for m in lines if m.metadata)
    assert all(n == 1 for n in keys.values()), keys


async def _home(stack: LocalStack, user: str) -> str:
    """``user``'s Home tab opened now, checked as a valid view; its blocks as JSON."""
    before = stack.slack.state.home_views.get(user)
    await stack.agent.open_home(user)
    view = await stack.slack.state.wait_for(
        lambda: v if (v := stack.slack.state.home_views.get(user)) is not before else None,
        timeout=10,
        what=f"the Home tab of {user}",
    )
    View(**{k: v for k, v in view.items() if k not in ("id", "team_id")}).validate_json()
    return json.dumps(view["blocks"])


async def _status(stack: LocalStack, op_id: str, needle: str) -> str:
    """``/vpn status <request id>`` as Alice sees it, once it says ``needle``."""
    await _command(stack, ALICE, f"status {op_id}")

    def found() -> Message | None:
        said = [
            m for m in stack.slack.state.ephemerals(ALICE, CHANNEL) if f"Request `{op_id}`" in all_text(m)
        ]
        return said[-1] if said and needle in all_text(said[-1]) else None

    message = await stack.slack.state.wait_for(found, timeout=10, what=f"the status saying {needle!r}")
    valid_block_kit(message)
    return all_text(message)


# --- 1. a freeze and a scheduled run -------------------------------------------------------------


async def _freeze_and_refuse_another(stack: LocalStack) -> None:
    """Carol freezes; Bob's approval of another scheduled request is then refused, and it stays asked."""
    state = stack.slack.state
    await _command(stack, CAROL, 'freeze 1d reason="INC-9 <!channel> core"')
    await stack.slack.state.wait_for(
        lambda: any("froze VPN changes" in all_text(m) for m in state.messages(CHANNEL)),
        timeout=10,
        what="the freeze",
    )

    # Approving another scheduled request while frozen is refused; it stays awaiting approval.
    other = await _request(stack, f"delete {SEED_VCO_HANGZHOU_BGP} {AT}", SEED_VCO_HANGZHOU_BGP)
    other_id = op_id_of(other)
    await stack.agent.click(BOB, CHANNEL, other.ts, ActionId.APPROVE)
    refusal = await _ephemeral(stack, BOB, "frozen")
    assert "INC-9" in refusal.text
    assert "<!channel>" not in all_text(refusal)
    assert (await _op(stack, other_id)).state is OpState.AWAITING_APPROVAL
    assert has_buttons(stack.slack.state.message(CHANNEL, other.ts))  # type: ignore[arg-type]


async def test_a_freeze_refuses_an_approval_and_holds_a_scheduled_run_until_unfreeze(db_url: str) -> None:
    """Issue 27's done-when: approved for 14:00, frozen at 12:00; at 14:00 it starts but is held (one
    note, nothing sent, the Home tab and /vpn status say so); an approval of another scheduled request
    is refused meanwhile; after /vpn unfreeze it is deleted exactly once. The audit channel has one
    line per decision. On SQLite and on PostgreSQL."""
    clock = FakeClock(T0)
    async with running(db_url, clock, admins=[CAROL], delete_timeout_seconds=3600) as stack:
        state = stack.slack.state
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU} {AT}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "scheduled to run")
        assert (await _op(stack, op_id)).state is OpState.SCHEDULED
        assert "scheduled for" in await _status(stack, op_id, "scheduled for")
        assert "scheduled for <!date^" in await _home(stack, ALICE)

        await _freeze_and_refuse_another(stack)

        # Its time comes: it starts (SCHEDULED -> APPROVED), and is held; nothing is sent.
        clock.set(RUNS)
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock):
            await wait_thread(state, card.ts, HELD)
            await _card_says(stack, card.ts, "held by a freeze")
            await _let_time_pass(stack, clock, 60)
            op = await _op(stack, op_id)
            assert op.state is OpState.APPROVED
            assert op.held_at is not None
            assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []
            assert thread_text(state, card.ts).count(HELD) == 1
            assert "held by a freeze" in await _status(stack, op_id, "held by a freeze")
            home = await _home(stack, ALICE)
            assert "held by a freeze" in home
            assert "<!channel>" not in home

            await _command(stack, CAROL, "unfreeze")
            await wait_thread(state, card.ts, "Deleted in", within=20)
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1
        assert thread_text(state, card.ts).count(HELD) == 1
        assert thread_text(state, card.ts).count("the scheduled time: starting now") == 1
        done = await _op(stack, op_id)
        assert done.state is OpState.DELETED
        assert done.started_at is not None
        assert done.started_at >= RUNS
        assert _deletes_of(stack, SEED_VCO_HANGZHOU_BGP) == []
        for reply in state.thread(CHANNEL, card.ts):
            valid_block_kit(reply)

        # The audit channel: one line per decision about it, each once; the freeze's own two lines.
        lines = await wait_audit_lines(stack, op_id, 4)
        _check_lines(
            lines,
            card.ts,
            [
                f"requested by <@{ALICE}>",
                f"approved by <@{BOB}>",
                "started at its scheduled time",
                "the connection is deleted",
            ],
        )
        assert "scheduled for" in lines[1].text
        audit = [all_text(m) for m in state.messages(AUDIT)]
        assert len([t for t in audit if "Deletions frozen" in t]) == 1, audit
        assert len([t for t in audit if "Deletions unfrozen" in t]) == 1, audit
        assert "<!channel>" not in "".join(audit)


# --- 2. a scheduled run and the approval's binding ------------------------------------------------


async def _asked_again_lines(stack: LocalStack, op_id: str, card_ts: str) -> None:
    """The audit channel's lines about a scheduled deletion asked again, then approved and deleted."""
    lines = await wait_audit_lines(stack, op_id, 6)
    _check_lines(
        lines,
        card_ts,
        [
            f"requested by <@{ALICE}>",
            f"approved by <@{BOB}>",
            "started at its scheduled time",
            "the connection changed since it was approved, the approval is void",
            f"approved by <@{CAROL}>",
            "the connection is deleted",
        ],
    )
    assert "What changed: `routes: +10.2.0.0/16`" in lines[3].text
    assert "Details: `scheduled for" in lines[2].text


async def test_a_scheduled_deletion_whose_connection_changed_is_asked_again_then_runs_on_approval(
    sqlite_url: str,
) -> None:
    """Approved for 14:00; a route through it comes before then. At 14:00 nothing is deleted: the card
    asks again with what changed (audited and announced), no longer offering a time gone by; approved
    again, it runs at once, deleted exactly once."""
    clock = FakeClock(T0)
    settings = {"delete_timeout_seconds": 3600, "remind_after_seconds": 600}
    async with running(sqlite_url, clock, **settings) as stack:
        state = stack.slack.state
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU} {AT}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        assert "Once approved, it runs" in all_text(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "scheduled to run")
        stack.vpc.state.routes.append(Route(SEED_VPN_HANGZHOU, "10.2.0.0/16", SEED_VCO_HANGZHOU))

        clock.set(RUNS)
        await stack.bot.app.workflow.run_once()
        async with time_passes(clock):

            def asked_again() -> Message | None:
                message = state.message(CHANNEL, card.ts)
                if message is None or not has_buttons(message):
                    return None
                return (
                    message
                    if any(b.get("block_id") == BlockId.CHANGED.value for b in message.blocks)
                    else None
                )

            again = await state.wait_for(asked_again, timeout=20, what="the card asking again")
            await wait_thread(state, card.ts, "Not deleted")
        valid_block_kit(again)
        text = all_text(again)
        assert "`routes: +10.2.0.0/16`" in text
        # Its time has gone by: approved again it runs at once, and the card does not offer 14:00.
        assert "Once approved, it runs" not in text
        assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []
        op = await _op(stack, op_id)
        assert op.state is OpState.AWAITING_APPROVAL
        assert (op.approver_id, op.run_at, op.schedule_kind) == (None, None, None)
        entries = await stack.bot.app.store.recent_audit(op_id=op_id, limit=20)
        assert [e.detail for e in entries if e.action == "changed_since_approval"] == ["routes: +10.2.0.0/16"]
        # /vpn status and the Home tab say it is asked again.
        assert "changed since approved" in await _status(stack, op_id, "waiting for approval")
        assert "changed since approved" in await _home(stack, ALICE)
        # Asked again: reminded ten minutes after that, not at once for the hours since the request.
        await _passes(stack)
        assert _bells(stack, card.ts) == []
        clock.advance(601)
        await _passes(stack)
        await wait_thread(state, card.ts, ":bell:")
        [bell] = _bells(stack, card.ts)
        # Counted from when it was asked again (a few virtual minutes of work since), not from 12:00.
        assert "min" in bell, bell
        assert " h " not in bell, bell

        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.APPROVE)
        async with time_passes(clock):
            await wait_thread(state, card.ts, "Deleted in", within=20)
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1
        done = await _op(stack, op_id)
        assert done.state is OpState.DELETED
        assert done.approver_id == CAROL
        assert done.schedule_kind is None  # ran at once: no second "scheduled" round

        await _asked_again_lines(stack, op_id, card.ts)


# --- 3 and 4. reminders and audit lines under a quorum ---------------------------------------------


async def _passes(stack: LocalStack) -> None:
    for replica in stack.replicas:
        await replica.app.workflow.run_once()
    for replica in stack.replicas:
        await replica.app.workflow.wait_idle()


def _bells(stack: LocalStack, ts: str) -> list[str]:
    return [all_text(m) for m in stack.slack.state.thread(CHANNEL, ts) if ":bell:" in all_text(m)]


async def test_a_reminder_under_a_quorum_names_who_is_still_needed_once_and_not_after(
    sqlite_url: str,
) -> None:
    """1 of 2 approvals is still unanswered: reminded once, naming only Carol (Bob approved already,
    Alice asked), with the count; not again after the quorum is met. One audit line for the approval
    that met the quorum, none for the one that was only counted."""
    clock = FakeClock(T0)
    settings = {"approval_rules": "*=2", "remind_after_seconds": 120, "delete_timeout_seconds": 3600}
    async with running(sqlite_url, clock, approvers=[ALICE, BOB, CAROL], **settings) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, f"1 of 2 approvals*: <@{BOB}> ✓")

        clock.advance(121)
        await _passes(stack)
        said = await wait_thread(stack.slack.state, card.ts, ":bell:")
        assert said.startswith(f":bell: <@{CAROL}>:"), said
        assert f"<@{BOB}>" not in said
        assert f"<@{ALICE}>" not in said
        assert "1 of 2 approvals so far, 1 more needed" in said

        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.APPROVE)
        async with time_passes(clock):
            await wait_thread(stack.slack.state, card.ts, "Deleted in", within=20)
        clock.advance(600)
        await _passes(stack)
        assert len(_bells(stack, card.ts)) == 1
        for reply in stack.slack.state.thread(CHANNEL, card.ts):
            valid_block_kit(reply)

        lines = await wait_audit_lines(stack, op_id, 3)
        _check_lines(
            lines,
            card.ts,
            [
                f"requested by <@{ALICE}>",
                f"approved by <@{CAROL}> with <@{BOB}>.",
                "the connection is deleted",
            ],
        )


async def test_no_reminder_for_a_scheduled_deletion(sqlite_url: str) -> None:
    """Approved to run later, it is answered: no reminder while it waits for its time."""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, remind_after_seconds=120) as stack:
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU} {AT}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "scheduled to run")
        clock.advance(3600)
        await _passes(stack)
        assert (await _op(stack, op_id)).state is OpState.SCHEDULED
        assert _bells(stack, card.ts) == []


# --- 2 and 5. a window override, a changed connection, a quorum; the audit export -------------------

DAVE = "U0DAVE"
WINDOW = {"*": ["Sat 01:00-05:00 Asia/Shanghai"]}


async def _approve_twice(stack: LocalStack, ts: str) -> Message:
    """Bob's and Carol's approvals (the quorum): outside the window it is scheduled for it."""
    await stack.agent.click(BOB, CHANNEL, ts, ActionId.APPROVE)
    await _card_says(stack, ts, f"1 of 2 approvals*: <@{BOB}> ✓")
    await stack.agent.click(CAROL, CHANNEL, ts, ActionId.APPROVE)
    return await _card_says(stack, ts, "Override window")


async def _announced(stack: LocalStack, needle: str) -> None:
    await stack.slack.state.wait_for(
        lambda: any(needle in all_text(m) for m in stack.slack.state.messages(CHANNEL)),
        timeout=10,
        what=f"a channel message with {needle!r}",
    )


async def _export(tmp_path: Path, url: str) -> list[dict[str, Any]]:
    """``vpn-bot audit export`` (JSON lines) run as a user runs it, parsed."""
    status, out, err = await run_to_exit(
        [sys.executable, "-m", "bot", "audit", "export"],
        env=child_env(tmp_path, VPNBOT_DATABASE_URL=url),
        cwd=tmp_path,
    )
    assert status == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.process
async def test_a_quorum_a_window_override_and_a_changed_connection_then_the_audit_export(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Under a 2-approver rule and a Saturday window: a withdrawn approval; approved, scheduled for the
    window; an approver may not override (Dave, who did not approve, may); the connection changed, so
    it is asked again; approved again it is scheduled for the window again (the override is not carried
    over); overridden again, deleted once. The export has every new action."""
    clock = FakeClock(T0)
    settings = {"approval_rules": "*=2", "change_windows": WINDOW, "admins": [CAROL]}
    async with running(sqlite_url, clock, approvers=[BOB, CAROL, DAVE], **settings) as stack:
        state = stack.slack.state
        state.add_user(DAVE, "dave")
        await _command(stack, CAROL, 'freeze 1h reason="INC-9, core; =cmd"')
        await _announced(stack, "froze VPN changes")
        await _command(stack, CAROL, "unfreeze")
        await _announced(stack, "lifted the freeze")
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, f"1 of 2 approvals*: <@{BOB}> ✓")
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.WITHDRAW)
        await _card_says(stack, card.ts, "*0 of 2 approvals*")
        await _approve_twice(stack, card.ts)
        assert (await _op(stack, op_id)).state is OpState.SCHEDULED

        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        await _ephemeral(stack, BOB, "needs a second approver")
        assert (await _op(stack, op_id)).state is OpState.SCHEDULED

        stack.vpc.state.routes.append(Route(SEED_VPN_HANGZHOU, "10.2.0.0/16", SEED_VCO_HANGZHOU))
        await stack.agent.click(DAVE, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        async with time_passes(clock):
            await wait_thread(state, card.ts, "Not deleted", within=20)
        reopened = await _op(stack, op_id)
        assert reopened.state is OpState.AWAITING_APPROVAL
        assert (reopened.run_at, reopened.schedule_kind, reopened.approvals) == (None, None, ())
        assert _deletes_of(stack, SEED_VCO_HANGZHOU) == []

        # Approved again, still outside the window: scheduled for its next opening again.
        await _approve_twice(stack, card.ts)
        again = await _op(stack, op_id)
        assert again.state is OpState.SCHEDULED
        assert again.run_at is not None
        assert again.run_at > clock.now()
        await stack.agent.click(DAVE, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        async with time_passes(clock):
            await wait_thread(state, card.ts, "Deleted in", within=20)
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1

    records = await _export(tmp_path, sqlite_url)
    actions = Counter(r["action"] for r in records)
    for action, times in {
        "frozen": 1,
        "unfrozen": 1,
        "approval_withdrawn": 1,
        "window_override": 2,
        "changed_since_approval": 1,
        "deleted": 1,
    }.items():
        assert actions[action] == times, (action, actions)
    [frozen] = [r for r in records if r["action"] == "frozen"]
    assert frozen["op_id"] is None
    assert "reason: INC-9, core; =cmd" in frozen["detail"]
    [changed] = [r for r in records if r["action"] == "changed_since_approval"]
    assert (changed["op_id"], changed["detail"]) == (op_id, "routes: +10.2.0.0/16")
    overrides = [r["actor_id"] for r in records if r["action"] == "window_override"]
    assert overrides == [DAVE, DAVE]
    refused = [r for r in records if r["action"] == "refused" and r["actor_id"] == BOB]
    assert any("override the window" in r["detail"] for r in refused)


# --- 4. a batch in the audit channel ----------------------------------------------------------------


async def test_a_batch_in_the_audit_channel_one_outcome_line_per_connection_each_once(
    sqlite_url: str,
) -> None:
    """A batch of three: each connection's outcome is announced once, valid, linking the batch card;
    no line is posted twice. (The batch's request and approval are not announced yet: see the report.)"""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, delete_timeout_seconds=3600) as stack:
        state = stack.slack.state
        _, card = await _ask_batch(stack)
        valid_block_kit(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        async with time_passes(clock):
            await _card_says(stack, card.ts, "3 deleted")
        ops = await stack.bot.app.store.list_operations()
        assert len(ops) == 3
        for op in ops:
            await wait_audit_lines(stack, op.id, 1)
        await stack.bot.app.workflow.run_once()
        await stack.bot.app.workflow.wait_idle()
        for op in ops:
            _check_lines(audit_lines(stack, op.id), card.ts, ["the connection is deleted"])
        texts = [m.text for m in state.messages(AUDIT)]
        assert len(texts) == 3, texts
        assert len(set(texts)) == 3, "one line per connection, not one line three times"
        # The Home tab and /vpn status say each is one of a batch.
        assert (await _home(stack, ALICE)).count("(one of a batch)") == 3
        status = await _status(stack, ops[0].id, "One of a batch")
        assert f"batch `{ops[0].batch_id}`" in status


# --- 3. reminders about a batch ----------------------------------------------------------------------


async def test_an_unanswered_batch_is_reminded_once_not_once_per_connection(sqlite_url: str) -> None:
    clock = FakeClock(T0)
    settings = {"remind_after_seconds": 120, "escalate_to": "S0ONCALL", "confirmation_ttl_seconds": 900}
    async with running(sqlite_url, clock, **settings) as stack:
        state = stack.slack.state
        _, card = await _ask_batch(stack)
        clock.advance(121)
        await _passes(stack)
        await wait_thread(state, card.ts, ":bell:")
        clock.advance(900 - 121 - 225 + 1)  # inside the escalation window
        await _passes(stack)
        await wait_thread(state, card.ts, ":rotating_light:")
        clock.advance(60)
        await _passes(stack)
        thread = [all_text(m) for m in state.thread(CHANNEL, card.ts)]
        assert len([t for t in thread if ":bell:" in t]) == 1, thread
        assert len([t for t in thread if ":rotating_light:" in t]) == 1, thread
        for reply in state.thread(CHANNEL, card.ts):
            valid_block_kit(reply)


# --- 1. a freeze and a change window's override --------------------------------------------------------


async def test_a_freeze_refuses_a_window_override(sqlite_url: str) -> None:
    """Scheduled for the window; frozen: Carol's override is refused (audited), nothing starts; after
    /vpn unfreeze her override runs it, deleted once."""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, change_windows=WINDOW, admins=[CAROL]) as stack:
        state = stack.slack.state
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        op_id = op_id_of(card)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)
        await _card_says(stack, card.ts, "Override window")
        await _command(stack, CAROL, 'freeze 2h reason="INC-9 <!channel>"')
        await _announced(stack, "froze VPN changes")

        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        refusal = await _ephemeral(stack, CAROL, "frozen")
        assert "INC-9" in refusal.text
        assert "<!channel>" not in all_text(refusal)
        assert (await _op(stack, op_id)).state is OpState.SCHEDULED
        entries = await stack.bot.app.store.recent_audit(op_id=op_id, limit=20)
        assert [e.actor_id for e in entries if e.action == "refused"] == [CAROL]
        assert [e for e in entries if e.action == "window_override"] == []

        await _command(stack, CAROL, "unfreeze")
        await _announced(stack, "lifted the freeze")
        await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.OVERRIDE_WINDOW)
        async with time_passes(clock):
            await wait_thread(state, card.ts, "Deleted in", within=20)
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1


# --- 1 and 4. a freeze and a batch -------------------------------------------------------------------


async def test_a_freeze_holds_a_batch_then_unfreeze_deletes_each_once(sqlite_url: str) -> None:
    """Three on one gateway, approved; frozen once the first was sent: the other two are held, the
    batch's thread says so once for each of them (as it says each one waits for the gateway), never
    again across polls; after /vpn unfreeze each is deleted once."""
    clock = FakeClock(T0)
    async with running(sqlite_url, clock, admins=[CAROL], delete_timeout_seconds=3600) as stack:
        state = stack.slack.state
        ids, card = await _ask_batch(stack)
        await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.BATCH_APPROVE)
        await state.wait_for(
            lambda: stack.vpc.state.accepted("DeleteVpnConnection"), timeout=10, what="the first delete"
        )
        await _command(stack, CAROL, "freeze 1d reason=INC-9")
        await _announced(stack, "froze VPN changes")
        async with time_passes(clock):
            await wait_thread(state, card.ts, HELD)
            await _let_time_pass(stack, clock, 120)
            held = [op for op in await stack.bot.app.store.list_operations() if op.held_at is not None]
            assert len(held) == 2
            text = thread_text(state, card.ts)
            assert text.count(HELD) == 2, text
            for op in held:
                assert text.count(f"`{op.vco_id}`: :snowflake: Approved, but {HELD}") == 1, text
            assert len(stack.vpc.state.accepted("DeleteVpnConnection")) == 1
            await _command(stack, CAROL, "unfreeze")
            await _card_says(stack, card.ts, "3 deleted")
        assert sorted(
            r.params["VpnConnectionId"] for r in stack.vpc.state.accepted("DeleteVpnConnection")
        ) == sorted(ids)
        assert thread_text(state, card.ts).count(HELD) == 2
        for reply in state.thread(CHANNEL, card.ts):
            valid_block_kit(reply)


# --- 3. reminders during a freeze --------------------------------------------------------------------


async def test_no_reminder_while_a_freeze_refuses_the_approval_then_one_after(sqlite_url: str) -> None:
    """A request made during a freeze is not reminded (its approval would be refused) nor escalated;
    once the freeze is lifted, it is reminded once."""
    clock = FakeClock(T0)
    settings = {"remind_after_seconds": 120, "escalate_to": "S0ONCALL", "confirmation_ttl_seconds": 900}
    async with running(sqlite_url, clock, admins=[CAROL], **settings) as stack:
        state = stack.slack.state
        await _command(stack, CAROL, "freeze 1h reason=INC-9")
        await _announced(stack, "froze VPN changes")
        card = await _request(stack, f"delete {SEED_VCO_HANGZHOU}", SEED_VCO_HANGZHOU)
        clock.advance(900 - 225 + 1)  # past the reminder, inside the escalation window
        await _passes(stack)
        assert thread_text(state, card.ts) == ""
        await _command(stack, CAROL, "unfreeze")
        await _announced(stack, "lifted the freeze")
        await _passes(stack)
        await wait_thread(state, card.ts, ":rotating_light:")
        clock.advance(30)
        await _passes(stack)
        assert len(_bells(stack, card.ts)) == 1
        assert thread_text(state, card.ts).count(":rotating_light:") == 1
