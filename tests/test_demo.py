"""The demo runs the whole scripted conversation, prints it in order, and is the README's sample.

The README's "What the demo shows" block is this test's output. After changing what the bot says
or how the demo prints it, regenerate the block with::

    UPDATE_DEMO_SAMPLE=1 .venv/bin/python -m pytest tests/test_demo.py

Clock times, durations, operation ids and Alibaba RequestIds differ from run to run, and so does
whether a poll saw a gateway ``updating`` (see _UPDATING); the comparison masks exactly those, so
any other change to the demo shows up as a failure here.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path

import pytest

from bot.demo import RULE, run_demo
from bot.sandbox.slack import Interaction, StandinState, demo_workspace, render_timeline
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_LOCKED

README = Path(__file__).resolve().parent.parent / "README.md"
# With `pytest -n`, one worker runs all of this module, so the demo runs once for all its tests.
pytestmark = pytest.mark.xdist_group("demo")
# The closing fence is the first at a line's start: thread replies hold indented ``` of their own.
_SAMPLE = re.compile(r"(## What the demo shows\n.*?```text\n)(.*?)(^```$)", re.S | re.M)
_VOLATILE = (
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "<hh:mm:ss>"),
    (re.compile(r"\b(?:\d{4}-\d\d-\d\d )?\d\d:\d\d UTC\b"), "<hh:mm> UTC"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<op-id>"),
    (re.compile(r"\b[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\b"), "<request-id>"),
    (re.compile(r"\b\d+(?:\.\d)? s\b"), "<n> s"),
    # The recreated connection's id is the sandbox's fresh one (vco-bp1 and 18 hex digits).
    (re.compile(r"\bvco-bp1[0-9a-f]{18}\b"), "<new-vco-id>"),
)


# "Gateway … is updating…" is said when a poll finds the gateway updating: on a slow or busy machine
# the first poll may come only once it is active again, and the reply is (rightly) not posted.
_UPDATING = re.compile(
    r"^  │ \S+  vpn-bot \(APP\)  in the thread of “[^”\n]*”\n  │ +Gateway `[^`\n]*` is updating…\n", re.M
)


def _mask(text: str) -> str:
    text = _UPDATING.sub("", text)
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


@pytest.fixture(scope="module")
def demo_output() -> str:
    out = io.StringIO()
    assert asyncio.run(run_demo(out)) == 0, out.getvalue()
    return out.getvalue()


def _timeline(output: str) -> str:
    _, timeline, _ = output.split(RULE + "\n")
    return timeline


def test_demo_runs_the_whole_story(demo_output: str) -> None:
    timeline = _timeline(demo_output)
    assert SEED_VCO_HANGZHOU in timeline
    assert "Deleted in" in timeline  # the approved delete finished
    assert "Recreated in" in timeline  # and was recreated with its routes
    assert "3 of 3 routes back on it" in timeline
    assert "not allowed to approve" in timeline  # the refusal
    assert "VpnGateway.FinancialLocked" in timeline
    assert SEED_VCO_LOCKED in timeline
    assert "Usage" in timeline  # the typo's usage reply
    assert "*Last 5 actions*" in timeline  # /vpn history
    # The stale approval: read again before the delete, asked again with what changed, then deleted.
    assert "Changed since it was approved — nothing was deleted" in timeline
    assert "routes: +10.2.0.0/16" in timeline
    assert "Not deleted: the connection changed since @bob approved it" in timeline
    assert "Traceback" not in demo_output


def test_the_demo_ends_with_a_site_decommission(demo_output: str) -> None:
    """Scene 11: 3 connections on 2 gateways on one card, one approval, each deleted with its Recreate…."""
    card = demo_output.split(RULE + "\n")[2]
    assert "Site decommission: 3 deleted" in card
    assert card.count(":white_check_mark: deleted") == 3
    assert card.count("[Recreate…]") == 3
    assert "[Delete 3]" not in card


def test_the_channel_is_named_once(demo_output: str) -> None:
    assert demo_output.count("#vpn-ops") == 1
    assert "#netops" not in demo_output


def _position(lines: list[str], fragment: str, start: int = 0) -> int:
    return next(i for i, line in enumerate(lines) if i >= start and fragment in line)


def test_events_print_in_the_order_they_happened(demo_output: str) -> None:
    lines = _timeline(demo_output).splitlines()
    # The card is shown with its buttons before anyone clicks, and the click before its result.
    card = _position(lines, "Delete VPN connection office-beijing?")
    buttons = _position(lines, "[Delete] [Cancel]", card)
    click = _position(lines, "bob clicked [Delete] on “Delete VPN connection office-beijing?”")
    result = _position(lines, "Deleted VPN connection office-beijing")
    assert card < buttons < click < result
    # The cancel is shown on its own card, before that card says it was cancelled.
    cancel = _position(lines, "alice clicked [Cancel] on “Delete VPN connection staging-lab?”")
    cancelled = _position(lines, "Cancelled by @alice")
    assert cancel < cancelled < _position(lines, "Delete VPN connection legacy-branch?")
    # Each acknowledgement follows its own command.
    for command in ("ran /vpn delete vpn-123", "ran /vpn history 5"):
        at = _position(lines, command)
        assert "(only visible to @alice)" in lines[at + 1]


def test_readme_sample_is_the_demo_output(demo_output: str) -> None:
    timeline = _timeline(demo_output)
    readme = README.read_text(encoding="utf-8")
    match = _SAMPLE.search(readme)
    assert match, "README.md needs a ```text block under '## What the demo shows'"
    if os.environ.get("UPDATE_DEMO_SAMPLE"):
        README.write_text(readme[: match.start(2)] + timeline + readme[match.end(2) :], encoding="utf-8")
        return
    assert _mask(match.group(2)) == _mask(timeline), (
        "README's demo sample is out of date: UPDATE_DEMO_SAMPLE=1 .venv/bin/python -m pytest tests/test_demo.py"
    )


def _fixed_state() -> StandinState:
    t = [1_700_000_000.0]  # 22:13:20 UTC

    def clock() -> float:
        t[0] += 1
        return t[0]

    return StandinState(demo_workspace(), bot_token="xoxb-test", clock=clock)


_BUTTONS = {
    "type": "actions",
    "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "Delete"}},
        {"type": "button", "action_id": "c", "text": {"type": "plain_text", "text": "Cancel"}},
    ],
}


def test_timeline_shows_each_version_when_it_appeared() -> None:
    state = _fixed_state()
    command = Interaction("slash_command", state.next_ts(), "U0ALICE", "C0VPNOPS", "/vpn delete vco-1")
    state.record_interaction(command)
    card = state.add_message(
        "C0VPNOPS",
        text="Delete vco-1?",
        blocks=[{"type": "header", "text": {"type": "plain_text", "text": "Delete vco-1?"}}, _BUTTONS],
    )
    # The ack is stored after the card (its HTTP reply came back later) but belongs to the command.
    state.add_message("C0VPNOPS", text="Looking up vco-1…", visible_to="U0ALICE", via="ack")
    state.record_interaction(
        Interaction("button", state.next_ts(), "U0BOB", "C0VPNOPS", "Delete", message_ts=card.ts)
    )
    state.add_message("C0VPNOPS", text="Accepted.", thread_ts=card.ts)
    state.edit_message(
        card,
        text="Deleted",
        blocks=[{"type": "header", "text": {"type": "plain_text", "text": "Deleted vco-1"}}],
    )
    assert render_timeline(state, "C0VPNOPS") == (
        "#vpn-ops\n"
        "────────────────────────\n"
        "22:13:21  alice ran /vpn delete vco-1\n"
        "22:13:21  vpn-bot (APP)  (only visible to @alice)\n"
        "          Looking up vco-1…\n"
        "22:13:22  vpn-bot (APP)\n"
        "          Delete vco-1?\n"
        "          [Delete] [Cancel]\n"
        "22:13:24  bob clicked [Delete] on “Delete vco-1?”\n"
        "  │ 22:13:25  vpn-bot (APP)  in the thread of “Delete vco-1?”\n"
        "  │           Accepted.\n"
        "22:13:26  vpn-bot (APP)  edited “Delete vco-1?”\n"
        "          Deleted vco-1\n"
        "          (removed [Delete] [Cancel])\n"
    )
