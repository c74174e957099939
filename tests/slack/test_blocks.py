"""Block Kit builders: structure per state, escaping, Slack's limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from slackfakes import T0, make_op

from bot.domain import (
    Accepted,
    AuditEntry,
    Crashed,
    Deferred,
    Deleted,
    Failed,
    GatewayActive,
    GatewayUpdating,
    Operation,
    OpState,
    Queued,
    Resumed,
    Retrying,
    StillExists,
    TimedOut,
    Unanswered,
    VpnConnection,
    VpnGateway,
)
from bot.sandbox.slack_api import message_size_error
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks import (
    MESSAGE_BUDGET,
    blocks_text_length,
    build_confirmation,
    build_history,
    build_looking_up,
    build_parent,
    build_progress,
    build_refusal,
    build_unexpected_error,
    build_usage,
    cap,
    escape,
    explain_slack_error,
    fit_blocks,
    format_duration,
    format_time,
    safe_mrkdwn,
)

EVIL = "<!channel> & <@U1>"


def block(message: dict[str, Any], block_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [b for b in message["blocks"] if b.get("block_id") == block_id]
    assert len(found) == 1, f"expected one {block_id} block"
    return found[0]


def all_text(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def walk_limits(message: dict[str, Any]) -> None:
    """Every block respects Slack's documented limits."""
    assert message["text"]
    assert len(message["blocks"]) <= 50
    # The one budget every message keeps to, under Slack's 12,000 characters of block text in all.
    assert blocks_text_length(message["blocks"]) <= MESSAGE_BUDGET
    assert message_size_error(message["text"], message["blocks"]) is None
    for b in message["blocks"]:
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= 150
        if b["type"] == "section":
            if "text" in b:
                assert len(b["text"]["text"]) <= 3000
            for f in b.get("fields", []):
                assert len(f["text"]) <= 2000
            assert len(b.get("fields", [])) <= 10
        if b["type"] == "actions":
            for el in b["elements"]:
                assert len(el["text"]["text"]) <= 75
                assert len(el["value"]) <= 2000
                if "confirm" in el:
                    c = el["confirm"]
                    assert len(c["title"]["text"]) <= 100
                    assert len(c["text"]["text"]) <= 300
                    assert len(c["confirm"]["text"]) <= 30
                    assert len(c["deny"]["text"]) <= 30


def test_confirmation_structure() -> None:
    msg = build_confirmation(make_op())
    walk_limits(msg)
    assert [b["type"] for b in msg["blocks"]] == ["header", "section", "section", "actions", "context"]
    fields = "\n".join(f["text"] for f in block(msg, BlockId.DETAILS)["fields"])
    for expected in (
        "`vco-bp1abc2def3gh`",
        "office-tunnel",
        "`vpn-bp1gw0001` `main-gw`",
        "state: `active`",
        "`ike_sa_established`",
        "`cgw-bp1cgw0001`",
        "`10.0.0.0/24`, `10.0.1.0/24`",
        "192.168.0.0/16",
        "`cn-hangzhou`",
        "<@U0REQUEST>",
    ):
        assert expected in fields
    summary = block(msg, BlockId.SUMMARY)["text"]["text"]
    assert "It expires at 12:15 UTC if nobody acts." in summary
    assert "12:15" not in fields, "the expiry is said once"
    delete, cancel = block(msg, BlockId.ACTIONS)["elements"]
    assert delete["action_id"] == ActionId.APPROVE
    assert delete["value"] == "op-1"
    assert delete["style"] == "danger"
    assert delete["confirm"]["style"] == "danger"
    assert "office-tunnel" in delete["confirm"]["text"]["text"]
    assert "vco-bp1abc2def3gh" in delete["confirm"]["title"]["text"]
    assert cancel["action_id"] == ActionId.CANCEL
    assert cancel["value"] == "op-1"
    assert "style" not in cancel
    assert "vco-bp1abc2def3gh" in msg["text"]


def test_awaiting_parent_is_the_confirmation() -> None:
    op = make_op()
    assert build_parent(op) == build_confirmation(op)


LATER = {
    OpState.APPROVED: ["Approved by <@U0APPROVER> at 12:03 UTC, deleting…"],
    OpState.DELETING: ["Approved by <@U0APPROVER> at 12:03 UTC, deleting…"],
    OpState.WAITING_GATEWAY: ["waiting for gateway `vpn-bp1gw0001`"],
    OpState.VERIFYING: ["Checking that the connection is gone"],
    OpState.DELETED: [":white_check_mark: Approved by <@U0APPROVER> at 12:03 UTC and deleted in 1 min 12 s."],
    OpState.FAILED: [
        ":x: Approved by <@U0APPROVER> at 12:03 UTC. The connection was not deleted. The gateway is busy."
    ],
    OpState.TIMED_OUT: ["may still finish", "gateway `vpn-bp1gw0001`", "`updating` means still working"],
    OpState.CANCELLED: ["Cancelled by <@U0CANCEL> at 12:05 UTC. Nothing was deleted."],
    OpState.EXPIRED: ["Expired at 12:15 UTC without approval. Nothing was deleted."],
}


@pytest.mark.parametrize("state", list(LATER))
def test_later_states_have_no_buttons_and_say_what_happened(state: OpState) -> None:
    op = make_op(
        state=state,
        approver_id="U0APPROVER",
        approved_at=T0 + timedelta(minutes=3),
        started_at=T0 + timedelta(minutes=3),
        finished_at=T0 + timedelta(minutes=4, seconds=12),
        cancelled_by="U0CANCEL",
        updated_at=T0 + timedelta(minutes=5),
        error_text="The gateway is busy.",
        delete_request_id="REQ-1",
        attempts=1,
    )
    if state is OpState.CANCELLED:
        op = make_op(state=state, cancelled_by="U0CANCEL", finished_at=T0 + timedelta(minutes=5))
    msg = build_parent(op)
    walk_limits(msg)
    assert all(b["type"] != "actions" for b in msg["blocks"]), "Slack has no disabled buttons: remove them"
    status = block(msg, BlockId.STATUS)["text"]["text"]
    for fragment in LATER[state]:
        assert fragment in status
    assert "Expires at" not in all_text(msg)


def test_every_state_is_rendered() -> None:
    # A recreation's own states are rendered in tests/slack/test_recreate_blocks.py.
    recreation_only = {OpState.CREATING, OpState.ROUTING, OpState.RECREATED}
    # A scheduled deletion's card (with its Cancel) is rendered in tests/slack/test_schedule_blocks.py.
    others = {OpState.AWAITING_APPROVAL, OpState.LOOKING_UP, OpState.SCHEDULED}
    assert set(LATER) | recreation_only | others == set(OpState)


def test_failed_without_text_names_the_code() -> None:
    msg = build_parent(make_op(state=OpState.FAILED, error_code="IncorrectStatus.VpnGateway"))
    status = block(msg, BlockId.STATUS)["text"]["text"]
    assert "`IncorrectStatus.VpnGateway`" in status
    assert status.count("run `/vpn delete vco-bp1abc2def3gh cn-hangzhou` again") == 1


def test_failed_card_gives_one_next_step() -> None:
    """A known error's text says what to do; the card adds no second, different step."""
    friendly = (
        "The account is overdue. The account owner must top up the account; then request the deletion again."
    )
    msg = build_parent(make_op(state=OpState.FAILED, approver_id="U0APPROVER", error_text=friendly))
    status = block(msg, BlockId.STATUS)["text"]["text"]
    assert status.startswith(":x: Approved by <@U0APPROVER>")
    assert status.endswith(friendly)
    assert "again" not in status.removesuffix(friendly)


def _sentences(text: str) -> set[str]:
    return {s.strip(" .:") for s in re.split(r"(?<=[.!?])\s+|\n", text) if len(s.strip(" .:")) > 3}


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (OpState.DELETED, Deleted(72.0)),
        (OpState.FAILED, Failed("VpnGateway.FinancialLocked", "The account is overdue. Top it up.", "RID-2")),
    ],
)
def test_card_and_thread_never_say_the_same_sentence(state: OpState, event: object) -> None:
    op = make_op(
        state=state,
        approver_id="U0APPROVER",
        approved_at=T0 + timedelta(minutes=3),
        finished_at=T0 + timedelta(minutes=4, seconds=12),
        error_code="VpnGateway.FinancialLocked",
        error_text="The account is overdue. Top it up.",
        delete_request_id="RID-2",
    )
    card = block(build_parent(op), BlockId.STATUS)["text"]["text"]
    thread = build_progress(event)  # type: ignore[arg-type]
    assert not _sentences(card) & _sentences(thread), (card, thread)


def test_decided_cards_mark_lookup_state_as_at_request_time() -> None:
    confirmation = "\n".join(
        f["text"] for f in block(build_confirmation(make_op()), BlockId.DETAILS)["fields"]
    )
    assert "at request time" not in confirmation
    for state in (OpState.DELETED, OpState.FAILED, OpState.CANCELLED):
        fields = "\n".join(
            f["text"] for f in block(build_parent(make_op(state=state)), BlockId.DETAILS)["fields"]
        )
        assert "state at request time: `active`" in fields
        assert "*Connection status at request time*" in fields


def test_format_time_adds_the_date_when_it_is_not_today() -> None:
    at = datetime(2026, 3, 1, 12, 3, tzinfo=UTC)
    assert format_time(at, now=at + timedelta(hours=11)) == "12:03 UTC"
    assert format_time(at, now=at + timedelta(hours=12)) == "2026-03-01 12:03 UTC"
    assert format_time(at.replace(tzinfo=None), now=at) == "12:03 UTC"  # naive is UTC
    shanghai = timezone(timedelta(hours=8))
    assert format_time(at.astimezone(shanghai), now=at) == "12:03 UTC"
    assert format_time(None, now=at) == "an unknown time"


def test_cards_and_history_date_their_times_when_shown_another_day() -> None:
    op = make_op(state=OpState.DELETED, approver_id="U0APPROVER", approved_at=T0, finished_at=T0)
    later = T0 + timedelta(days=2)
    day = T0.strftime("%Y-%m-%d")
    assert f"{day} {T0:%H:%M} UTC" in block(build_parent(op, now=later), BlockId.STATUS)["text"]["text"]
    assert day not in block(build_parent(op, now=T0), BlockId.STATUS)["text"]["text"]
    pending = build_confirmation(make_op(), now=later)
    assert day in all_text(pending)
    history = all_text(
        build_history([AuditEntry(at=T0, action="approved", actor_id="U0APPROVER")], now=later)
    )
    assert day in history
    assert day not in all_text(build_history([AuditEntry(at=T0, action="approved", actor_id="U0A")], now=T0))


def test_usage_uses_one_placeholder_for_the_connection_id() -> None:
    for msg in (build_usage(), build_usage(error="`x` is wrong")):
        text = all_text(msg)
        assert "vpn-connection-id" not in text
        assert "<vco-id>" not in text, "a raw <…> is a link in mrkdwn"
        placeholders = set(re.findall(r"&lt;([a-z-]+)&gt;", text))
        assert placeholders == {"vco-id"}


def test_connection_name_is_escaped_everywhere() -> None:
    """A connection named "<!channel> & <@U1>" cannot ping anyone or mention a user."""
    conn = VpnConnection(
        id="vco-bp1abc2def3gh",
        region="cn-hangzhou",
        name=EVIL,
        gateway_id="vpn-x",
        customer_gateway_id="cgw-x",
        status="<b>",
        local_subnet="<!here>",
        remote_subnet="&",
    )
    for msg in (
        build_confirmation(make_op(connection=conn)),
        build_parent(make_op(connection=conn, state=OpState.DELETED)),
    ):
        mrkdwn = [msg["text"]] + [
            t["text"]
            for b in msg["blocks"]
            if b["type"] != "header"
            for t in [b.get("text") or {"text": ""}, *b.get("fields", [])]
        ]
        joined = "\n".join(mrkdwn)
        assert "<!channel>" not in joined
        assert "<@U1>" not in joined
        assert "<!here>" not in joined
        assert "&lt;!channel&gt; &amp; &lt;@U1&gt;" in joined


def test_escape_and_safe_mrkdwn() -> None:
    assert escape(EVIL) == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    # Bot-written text keeps its own mentions but not mass mentions or raw markup.
    assert safe_mrkdwn("Ask <@U123> or <!subteam^S123> in <#C123>; not <!channel> &amp; a&b") == (
        "Ask <@U123> or <!subteam^S123> in <#C123>; not &lt;!channel&gt; &amp; a&amp;b"
    )
    assert safe_mrkdwn(safe_mrkdwn(EVIL)) == safe_mrkdwn(EVIL)


def test_limits_hold_for_huge_values() -> None:
    conn = VpnConnection(
        id="vco-" + "a" * 64,
        region="cn-hangzhou",
        name="&" * 5000,
        gateway_id="vpn-" + "b" * 500,
        customer_gateway_id="cgw-x",
        status="x" * 3000,
        local_subnet=",".join(["10.0.0.0/24"] * 400),
        remote_subnet="<" * 4000,
    )
    for state in OpState:
        msg = build_parent(make_op(connection=conn, state=state, error_text="<" * 9000))
        walk_limits(msg)
        assert len(msg["text"]) <= 3000


def test_cap_never_leaves_half_an_entity() -> None:
    capped = cap(escape("a" * 10 + "<" * 10), 14)
    assert capped.endswith("…")
    assert len(capped) <= 14
    assert capped[:-1].endswith(("a", ";"))


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (Accepted("RID-1"), "Request accepted by Alibaba Cloud (RequestId `RID-1`)."),
        (GatewayUpdating("vpn-bp1gw0001"), "Gateway `vpn-bp1gw0001` is updating…"),
        (
            Retrying("The gateway is busy with another change", 10.0, 2, 5),
            "The gateway is busy with another change; sending again in 10 s (attempt 2 of 5).",
        ),
        (
            GatewayActive("vpn-bp1gw0001"),
            "Gateway `vpn-bp1gw0001` is `active` again; checking that the connection is gone…",
        ),
        (
            StillExists("ipsec_sa_established", None, unanswered=True),
            ":x: Alibaba Cloud never answered the delete, but the connection still exists (status `ipsec_sa_established`).",
        ),
        (Crashed("ab12cd"), ":x: Stopped after repeated unexpected errors (error id `ab12cd`)."),
        (Queued("vco-other1234"), "Waiting for `vco-other1234` on the same gateway to finish."),
        (
            Deleted(72.4),
            ":white_check_mark: Deleted in 1 min 12 s: Alibaba Cloud no longer finds the connection.",
        ),
        (Resumed("pod-7"), "Picked up again by bot instance `pod-7` after a restart; continuing."),
        (Resumed("pod-7", fresh=True), "Started by bot instance `pod-7`."),
        (
            Deferred(200),
            "Approved; waiting to start. This bot instance is already carrying out 200 operations, as "
            "many as it runs at once: this one starts as soon as one of them ends, here or on another "
            "instance with room.",
        ),
        (
            Failed("Forbidden", "No permission <!channel>.", "RID-2"),
            ":x: Stopped (code `Forbidden`, RequestId `RID-2`).",
        ),
    ],
)
def test_progress_texts(event: object, text: str) -> None:
    assert build_progress(event) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sent", "says"), [(True, "the delete may still finish"), (False, "the delete was never sent")]
)
def test_timed_out_progress_says_whether_the_delete_was_sent(sent: bool, says: str) -> None:
    text = build_progress(TimedOut("waiting_gateway", 900.0, sent=sent, request_id="RID-9"))
    assert text.startswith(":warning: Timed out after 15 min in `waiting_gateway`")
    assert says in text
    assert "RequestId `RID-9`" in text


def test_unanswered_delete_is_never_called_not_deleted() -> None:
    text = build_progress(Unanswered("Transport.Timeout"))
    assert "may have been carried out" in text
    assert "not deleted" not in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (2.5, "2.5 s"),
        (10, "10 s"),
        (59.6, "1 min"),
        (72, "1 min 12 s"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_usage_and_refusal_are_ephemeral_with_fallback_text() -> None:
    for msg in (
        build_usage(),
        build_usage(error="`x` is wrong"),
        build_refusal("Ask <@U0BOB>."),
        build_looking_up("vco-abcd", "cn-hangzhou"),
        build_unexpected_error("ab12cd", nothing_deleted=True),
        build_history([], now=T0),
    ):
        assert msg["response_type"] == "ephemeral"
        assert msg["text"]
        walk_limits(msg)
    assert "<@U0BOB>" in build_refusal("Ask <@U0BOB>.")["text"]
    assert "<!channel>" not in all_text(build_refusal("hi <!channel>"))
    assert "error id `ab12cd`" in build_unexpected_error("ab12cd", nothing_deleted=True)["text"]
    assert "Nothing was deleted" in build_unexpected_error("ab12cd", nothing_deleted=True)["text"]


def test_slack_error_explanations_say_how_to_invite() -> None:
    assert "/invite @vpn-bot" in explain_slack_error("not_in_channel")
    assert "/invite @vpn-bot" in explain_slack_error("channel_not_found")
    assert "`weird_error`" in explain_slack_error("weird_error")


def test_history_lists_entries_escaped_and_split() -> None:
    entries = [
        AuditEntry(
            at=T0,
            action="approved",
            actor_id="U0APPROVER",
            op_id="op-1",
            vco_id="vco-abcd",
            region="cn-hangzhou",
            detail=EVIL,
            request_id="RID-9",
        ),
        AuditEntry(at=T0, action="expired", actor_id="system"),
    ]
    msg = build_history(entries, now=T0)
    text = all_text(msg)
    assert "<@U0APPROVER>" in text
    assert "*approved*" in text
    assert "`vco-abcd`" in text
    assert "RequestId `RID-9`" in text
    assert "<!channel>" not in text
    assert "system" in text
    many = build_history([AuditEntry(at=T0, action="x", actor_id="U1", detail="d" * 300)] * 50, now=T0)
    walk_limits(many)
    assert len(many["blocks"]) > 2


def test_history_keeps_bot_mentions_and_quotes_a_request_id_once() -> None:
    entry = AuditEntry(
        at=T0,
        action="failed",
        actor_id="system",
        detail="Ask <@U0BOB>. (RequestId `RID-7`) <!channel>",
        request_id="RID-7",
    )
    text = build_history([entry], now=T0)["blocks"][1]["text"]["text"]
    assert "Ask <@U0BOB>." in text
    assert text.count("RID-7") == 1
    assert "<!channel>" not in text


def test_confirmation_warns_about_a_locked_or_busy_gateway() -> None:
    """The approver learns up front that the gateway is in arrears or busy."""
    op = _op_for_warnings(business_status="FinancialLocked", status="updating")
    text = json.dumps(build_confirmation(op)["blocks"])
    assert "overdue payment" in text
    assert "updating" in text
    calm = json.dumps(
        build_confirmation(_op_for_warnings(business_status="Normal", status="active"))["blocks"]
    )
    assert "overdue" not in calm
    assert "waits for it" not in calm


def _op_for_warnings(*, business_status: str, status: str) -> Operation:
    gateway = VpnGateway(
        id="vpn-bp1gw0001",
        region="cn-hangzhou",
        name="main-gw",
        status=status,
        business_status=business_status,
    )
    return make_op(gateway=gateway)


def test_fit_blocks_shortens_the_longest_texts_alike_and_keeps_every_block() -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "H" * 100}},
        *(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"row {n} " + "x" * 3000}}
            for n in range(5)
        ),
        {"type": "section", "text": {"type": "mrkdwn", "text": "short"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 1900}]},
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Delete"}, "value": "v"}],
        },
    ]
    assert blocks_text_length(blocks) > 15_000
    fitted = fit_blocks(blocks, budget=10_000)
    assert blocks_text_length(fitted) <= 10_000
    assert [b["type"] for b in fitted] == [b["type"] for b in blocks]
    # Each long text keeps its beginning; they are cut to one length; short texts, the header and
    # the button are untouched.
    long_texts = [b["text"]["text"] for b in fitted[1:6]]
    assert all(t.startswith(f"row {n} ") and t.endswith("…") for n, t in enumerate(long_texts))
    assert len({len(t) for t in long_texts}) == 1
    assert fitted[6]["text"]["text"] == "short"
    assert fitted[0] == blocks[0]
    assert fitted[-1] == blocks[-1]
    # The input is not changed, and what fits comes back as it was.
    assert blocks[1]["text"]["text"].endswith("x")
    assert fit_blocks(fitted, budget=10_000) == fitted


@pytest.mark.parametrize(
    ("permalink", "linked"),
    [
        ("https://acme.slack.com/archives/C0CHANNEL/p1700000000000100", True),
        ("https://acme.slack.com/archives/C0CHANNEL/p1|click here", False),
        ("javascript:alert(1)", False),
        (None, False),
    ],
)
def test_already_requested_points_at_the_open_card(permalink: str | None, linked: bool) -> None:
    from slack_sdk.models.blocks import Block

    from bot.slack.blocks import build_already_requested

    op = make_op(state=OpState.AWAITING_APPROVAL, channel_id="C0CHANNEL")
    message = build_already_requested(op, permalink=permalink, now=T0)
    walk_limits(message)
    for raw in message["blocks"]:
        Block.parse(raw).validate_json()  # type: ignore[union-attr]
    assert message["response_type"] == "ephemeral"
    text = message["blocks"][0]["text"]["text"]
    assert "You already asked to delete `vco-bp1abc2def3gh`" in text
    assert "Nothing new was posted" in text
    assert (f"<{permalink}|its confirmation>" in text) is linked
    if not linked:
        assert "its confirmation in <#C0CHANNEL>" in text
    looking = build_already_requested(make_op(state=OpState.LOOKING_UP), permalink=None, now=T0)
    assert "being looked up" in looking["text"]
