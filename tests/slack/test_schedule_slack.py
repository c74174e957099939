"""Scheduled deletions in the Slack layer: ``at …`` in /vpn delete, the scheduled card, its thread
replies and the settings (VPNBOT_MAX_SCHEDULE_DAYS, VPNBOT_CHANGE_WINDOWS)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slackfakes import T0, make_op, parse, valid_block_kit

from bot.config import load_settings
from bot.domain import (
    SCHEDULE_AT,
    SCHEDULE_WINDOW,
    SCHEDULED_GONE,
    SCHEDULED_MOVED,
    Failed,
    OpState,
    Scheduled,
    Starting,
)
from bot.errors import ConfigError, UsageError
from bot.schedule import parse_window
from bot.slack.block_ids import ActionId, BlockId
from bot.slack.blocks import build_parent, build_usage, closed_text
from bot.slack.blocks.thread import build_progress
from bot.slack.parsing import DeleteCommand, PickCommand

RUN = datetime(2026, 12, 9, 18, 0, tzinfo=UTC)
VCO = "vco-bp1abc2def3gh"


def _buttons(message: dict[str, Any]) -> list[str]:
    return [
        e["action_id"]
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    ]


# --- /vpn delete … at … --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"delete {VCO} at 2026-12-10 02:00 Asia/Shanghai", DeleteCommand(VCO, "cn-hangzhou", run_at=RUN)),
        (
            f"delete {VCO} cn-shanghai at 2026-12-10T02:00+08:00",
            DeleteCommand(VCO, "cn-shanghai", run_at=RUN),
        ),
        (f"delete {VCO} at 2026-12-09T18:00Z cn-shanghai", DeleteCommand(VCO, "cn-shanghai", run_at=RUN)),
        (
            f"delete {VCO} AT 2026-12-10 02:00 Asia/Shanghai account=prod",
            DeleteCommand(VCO, "cn-hangzhou", account="prod", run_at=RUN),
        ),
        (
            f"delete {VCO} at 2026-12-09 18:00 UTC region=cn-shanghai",
            DeleteCommand(VCO, "cn-shanghai", run_at=RUN),
        ),
        (
            f'delete {VCO} at `2026-12-09T18:00:00Z` reason="CHG-1 at night"',
            DeleteCommand(VCO, "cn-hangzhou", reason="CHG-1 at night", run_at=RUN),
        ),
        (f"delete {VCO} at now", DeleteCommand(VCO, "cn-hangzhou")),
        ("delete", PickCommand("cn-hangzhou")),
    ],
)
def test_at_is_parsed_in_every_form(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"delete {VCO} at", "`at` needs a time"),
        (f"delete {VCO} at 2026-12-10 02:00", "has no time zone"),
        (f"delete {VCO} at 2026-12-10 02:00 Mars/Base", "is not a time zone"),
        (f"delete {VCO} at 2026-12-10T02:00Z at now", "given twice"),
        (f"delete {VCO} at tonight", "is not a time"),
        ("delete at 2026-12-10T02:00Z", "Give the connection with a run time"),
        (f"delete {VCO} at 2026-03-08 02:30 America/New_York", "does not exist"),
    ],
)
def test_bad_run_times_say_why(text: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert says in info.value.friendly


def test_a_hostile_zone_is_echoed_inert() -> None:
    with pytest.raises(UsageError) as info:
        parse(f"delete {VCO} at 2026-12-10 02:00 &lt;!channel&gt;")
    assert "<!channel>" not in info.value.friendly


def test_help_lists_at() -> None:
    usage = build_usage()
    valid_block_kit(usage)
    assert "at 2026-12-10 02:00 Asia/Shanghai" in json.dumps(usage)


# --- the card and the thread --------------------------------------------------------------------------


def _scheduled(kind: str, **fields: Any) -> Any:
    return make_op(
        state=OpState.SCHEDULED,
        approver_id="U0APPROVER",
        approved_at=T0 + timedelta(minutes=3),
        run_at=RUN,
        schedule_kind=kind,
        **fields,
    )


def test_a_scheduled_card_says_when_in_each_readers_zone_and_utc_and_keeps_cancel() -> None:
    card = build_parent(_scheduled(SCHEDULE_AT))
    valid_block_kit(card)
    status = next(b for b in card["blocks"] if b.get("block_id") == BlockId.STATUS)["text"]["text"]
    stamp = int(RUN.timestamp())
    assert (
        f"<!date^{stamp}^{{date_short_pretty}} {{time}}|2026-12-09 18:00 UTC> (2026-12-09 18:00 UTC)"
        in status
    )
    assert "Approved by <@U0APPROVER>" in status
    assert _buttons(card) == [ActionId.CANCEL]
    assert card["blocks"][0]["text"]["text"].startswith("Scheduled: delete VPN connection")


def test_a_card_held_by_the_window_offers_the_override() -> None:
    card = build_parent(_scheduled(SCHEDULE_WINDOW, account="prod"))
    valid_block_kit(card)
    assert "outside the change window of account `prod`" in json.dumps(card)
    assert _buttons(card) == [ActionId.CANCEL, ActionId.OVERRIDE_WINDOW]
    override = next(e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"])
    assert override["value"] == card["blocks"][-2]["elements"][1]["value"]


def test_the_confirmation_names_the_requested_time() -> None:
    card = build_parent(make_op(state=OpState.AWAITING_APPROVAL, run_at=RUN))
    valid_block_kit(card)
    assert "Once approved, it runs <!date^" in json.dumps(card)


def test_the_confirmation_says_when_the_window_holds_it_back() -> None:
    windows = (parse_window("Sat 01:00-05:00 Asia/Shanghai"),)
    # T0 is a Thursday: approved now, it would wait for Saturday 01:00 in Shanghai (Friday 17:00 UTC).
    card = build_parent(make_op(state=OpState.AWAITING_APPROVAL), now=T0, windows=windows)
    valid_block_kit(card)
    text = json.dumps(card)
    assert "Outside the change window (`Sat 01:00-05:00 Asia/Shanghai`)" in text
    inside = build_parent(make_op(state=OpState.AWAITING_APPROVAL), now=T0, windows=())
    assert "change window" not in json.dumps(inside)


def test_a_late_delete_click_on_a_scheduled_card_says_when_it_runs() -> None:
    text = closed_text(_scheduled(SCHEDULE_AT), now=T0)
    assert "scheduled to run <!date^" in text
    assert "(2026-12-09 18:00 UTC)" in text


@pytest.mark.parametrize(
    ("code", "says"), [(SCHEDULED_GONE, "no longer existed"), (SCHEDULED_MOVED, "on another gateway")]
)
def test_not_run_at_its_time_says_why(code: str, says: str) -> None:
    card = build_parent(
        make_op(
            state=OpState.FAILED,
            approver_id="U0APPROVER",
            error_code=code,
            run_at=RUN,
            schedule_kind=SCHEDULE_AT,
        )
    )
    valid_block_kit(card)
    assert says in json.dumps(card)
    assert "Nothing was deleted" in build_progress(Failed(code=code, reason=""))


def test_thread_replies() -> None:
    assert "scheduled for <!date^" in build_progress(Scheduled(run_at=RUN))
    window = build_progress(Scheduled(run_at=RUN, window="Sat 01:00-05:00 Asia/Shanghai"))
    assert "outside the change window (`Sat 01:00-05:00 Asia/Shanghai`)" in window
    assert "2026-12-09 18:00 UTC, the scheduled time: starting now" in build_progress(Starting(run_at=RUN))
    assert "<@U0CAROL> overrode the change window" in build_progress(
        Starting(run_at=RUN, override_by="U0CAROL")
    )


# --- settings -------------------------------------------------------------------------------------


def test_change_windows_settings() -> None:
    settings = load_settings(
        change_windows="prod=Sat 01:00-05:00 Asia/Shanghai; prod=sun 01:00-03:00 Asia/Shanghai",
        accounts="prod=acs:ram::1234567890123456:role/vpn-bot",
    )
    assert settings.change_windows == {
        "prod": ["Sat 01:00-05:00 Asia/Shanghai", "Sun 01:00-03:00 Asia/Shanghai"]
    }
    assert [str(w) for w in settings.change_windows_parsed()["prod"]] == settings.change_windows["prod"]
    assert load_settings(max_schedule_days="7").max_schedule_days == 7


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"change_windows": "*=Sat 01:00-05:00 Nowhere/Zone"}, "is not a time zone"),
        ({"change_windows": "*=Caturday 01:00-05:00 UTC"}, "is not days"),
        ({"change_windows": "prod=Sat 01:00-05:00 UTC"}, "single-account bot takes *="),
        ({"max_schedule_days": "0"}, "VPNBOT_MAX_SCHEDULE_DAYS"),
    ],
)
def test_bad_schedule_settings_are_refused_at_start(values: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**values)
    assert says in "\n".join(info.value.problems)


def test_status_and_home_say_when_it_runs() -> None:
    from slack_sdk.models.views import View

    from bot.slack.blocks.find import build_operation_status
    from bot.slack.blocks.views import build_home

    op = _scheduled(SCHEDULE_AT)
    status = build_operation_status(op, permalink=None, now=T0)
    valid_block_kit(status)
    assert "scheduled for 2026-12-09 18:00 UTC" in status["text"]
    assert "Runs <!date^" in json.dumps(status)
    home = build_home(pending=[], running=[op], finished=[], links={}, now=T0)
    View(**home).validate_json()
    assert "scheduled for <!date^" in json.dumps(home)
