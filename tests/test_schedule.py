"""The pure time logic of scheduled deletions and change windows (bot/schedule.py): zones, DST, midnight."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.schedule import (
    ScheduleError,
    Window,
    check_run_at,
    in_window,
    next_opening,
    parse_run_at,
    parse_window,
    parse_windows,
    run_time,
    windows_for,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- run times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["2026-12-10", "02:00", "Asia/Shanghai"], utc(2026, 12, 9, 18, 0)),
        (["2026-12-10", "02:00:30", "UTC"], utc(2026, 12, 10, 2, 0, 30)),
        (["2026-12-10T02:00:30+08:00"], utc(2026, 12, 9, 18, 0, 30)),
        (["2026-12-10T18:00Z"], utc(2026, 12, 10, 18, 0)),
        (["2026-07-01", "09:15", "Europe/Berlin"], utc(2026, 7, 1, 7, 15)),  # summer time, +02:00
        (["2026-12-01", "09:15", "Europe/Berlin"], utc(2026, 12, 1, 8, 15)),  # winter time, +01:00
    ],
)
def test_run_times_in_every_accepted_form(words: list[str], expected: datetime) -> None:
    got = parse_run_at(words)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (["2026-12-10T02:00"], "has no offset"),
        (["2026-12-10", "02:00"], "has no time zone"),
        (["2026-12-10", "02:00", "Mars/Olympus"], "is not a time zone"),
        (["2026-12-10", "02:00", "../../etc/passwd"], "is not a time zone"),
        (["2026-13-10", "02:00", "UTC"], "is not a date"),
        (["2026-12-10", "25:00", "UTC"], "is not a time of day"),
        (["tomorrow"], "is not a time"),
        (["2026-12-10", "02:00", "UTC", "extra"], "a run time is a date"),
        # New York skips 02:00-03:00 on 2026-03-08 and passes 01:00-02:00 twice on 2026-11-01.
        (["2026-03-08", "02:30", "America/New_York"], "does not exist"),
        (["2026-11-01", "01:30", "America/New_York"], "happens twice"),
    ],
)
def test_bad_run_times_say_why(words: list[str], says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_run_at(words)


def test_an_ambiguous_hour_is_fine_with_its_offset() -> None:
    assert parse_run_at(["2026-11-01T01:30-05:00"]) == utc(2026, 11, 1, 6, 30)


def test_run_time_must_be_to_come_and_not_too_far() -> None:
    now = utc(2026, 12, 8, 12, 0)
    check_run_at(now + timedelta(minutes=1), now=now, max_days=14)
    check_run_at(now + timedelta(days=14), now=now, max_days=14)
    with pytest.raises(ScheduleError, match="in the past"):
        check_run_at(now - timedelta(minutes=1), now=now, max_days=14)
    with pytest.raises(ScheduleError, match="in the past"):
        check_run_at(now, now=now, max_days=14)
    with pytest.raises(ScheduleError, match="more than 14 days ahead"):
        check_run_at(now + timedelta(days=14, seconds=1), now=now, max_days=14)


# --- windows: parsing ---------------------------------------------------------------------------


def test_windows_by_account_several_each_and_a_default() -> None:
    windows = parse_windows(
        "prod=Sat 01:00-05:00 Asia/Shanghai; prod=Sun 01:00-03:00 Asia/Shanghai;*=Mon-Fri 22:00-02:00 UTC;"
    )
    assert [str(w) for w in windows["prod"]] == [
        "Sat 01:00-05:00 Asia/Shanghai",
        "Sun 01:00-03:00 Asia/Shanghai",
    ]
    assert str(windows["*"][0]) == "Mon,Tue,Wed,Thu,Fri 22:00-02:00 UTC"
    assert windows_for(windows, "prod") == windows["prod"]
    assert windows_for(windows, "staging") == windows["*"]
    assert windows_for(windows, "") == windows["*"]  # the single-account bot
    assert windows_for({}, "prod") == ()
    # Written back as normalised, a window parses to itself.
    for w in (*windows["prod"], *windows["*"]):
        assert parse_window(str(w)) == w


@pytest.mark.parametrize(
    ("text", "days"),
    [("Sat", {5}), ("sat,SUN", {5, 6}), ("Fri-Mon", {4, 5, 6, 0}), ("daily", set(range(7)))],
)
def test_days(text: str, days: set[int]) -> None:
    assert parse_window(f"{text} 01:00-02:00 UTC").days == frozenset(days)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("prod Sat 01:00-05:00 UTC", "is not account=DAYS"),
        ("prod=Someday 01:00-05:00 UTC", "is not days"),
        ("prod=Sat 01:00 UTC", "is not a span of hours"),
        ("prod=Sat 01:00-01:00 UTC", "the same time"),
        ("prod=Sat 01:00-05:00 Nowhere/Town", "is not a time zone"),
        ("prod=Sat 1-5 UTC", "is not a time of day"),
        ("prod=Sat 01:00-05:00", "is not DAYS HH:MM-HH:MM Zone"),
        ("PROD!=Sat 01:00-05:00 UTC", "is not an account name"),
    ],
)
def test_bad_windows_say_why(text: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_windows(text, account_ok=["prod"])


# --- windows: when they are open --------------------------------------------------------------------

SAT_SHANGHAI = parse_window("Sat 01:00-05:00 Asia/Shanghai")  # Fri 17:00-21:00 UTC


def test_inside_the_window_runs_at_once() -> None:
    at = utc(2026, 12, 11, 17, 30)  # Sat 01:30 in Shanghai
    assert in_window([SAT_SHANGHAI], at)
    assert next_opening([SAT_SHANGHAI], at) == at


def test_before_the_window_waits_for_its_opening() -> None:
    at = utc(2026, 12, 11, 16, 59)  # Sat 00:59 in Shanghai
    assert not in_window([SAT_SHANGHAI], at)
    assert next_opening([SAT_SHANGHAI], at) == utc(2026, 12, 11, 17, 0)


def test_at_its_end_the_next_opening_is_a_week_later() -> None:
    at = utc(2026, 12, 11, 21, 0)  # Sat 05:00 in Shanghai: the end is not inside
    assert not in_window([SAT_SHANGHAI], at)
    assert next_opening([SAT_SHANGHAI], at) == utc(2026, 12, 18, 17, 0)


def test_the_earliest_of_several_windows() -> None:
    sun = parse_window("Sun 01:00-03:00 Asia/Shanghai")
    at = utc(2026, 12, 11, 21, 0)  # after Saturday's window
    assert next_opening([SAT_SHANGHAI, sun], at) == utc(2026, 12, 12, 17, 0)  # Sun 01:00 in Shanghai


def test_a_window_crossing_midnight() -> None:
    fri_night = parse_window("Fri 22:00-02:00 Europe/Berlin")  # winter: 21:00-01:00 UTC
    assert fri_night.crosses_midnight
    assert in_window([fri_night], utc(2026, 12, 11, 21, 0))  # Fri 22:00
    assert in_window([fri_night], utc(2026, 12, 12, 0, 30))  # Sat 01:30, opened the day before
    assert not in_window([fri_night], utc(2026, 12, 12, 1, 0))  # Sat 02:00: ended
    assert next_opening([fri_night], utc(2026, 12, 12, 1, 0)) == utc(2026, 12, 18, 21, 0)


def test_no_windows_means_any_time() -> None:
    at = utc(2026, 12, 8, 3, 4)
    assert next_opening([], at) == at
    assert run_time([], wanted=None, now=at) == at
    assert run_time([], wanted=at + timedelta(hours=1), now=at) == at + timedelta(hours=1)
    # A requested time that passed while the request waited for approval: at once.
    assert run_time([], wanted=at - timedelta(hours=1), now=at) == at


def test_a_requested_time_outside_the_window_moves_to_its_opening() -> None:
    now = utc(2026, 12, 8, 12, 0)
    assert run_time([SAT_SHANGHAI], wanted=utc(2026, 12, 10, 0, 0), now=now) == utc(2026, 12, 11, 17, 0)
    assert run_time([SAT_SHANGHAI], wanted=utc(2026, 12, 11, 18, 0), now=now) == utc(2026, 12, 11, 18, 0)


# --- daylight saving -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "opens_utc", "ends_utc"),
    [
        # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 is read with the offset before the
        # jump (EST, -5): 07:30 UTC, which is 03:30 EDT; the window then ends at 04:00 EDT (08:00 UTC).
        ("America/New_York", "Sun", utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 8, 0)),
        # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 CET is 01:30 UTC (03:30 CEST).
        ("Europe/Berlin", "Sun", utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0)),
    ],
)
def test_a_window_opening_in_the_spring_forward_gap(
    tz: str, day: str, opens_utc: datetime, ends_utc: datetime
) -> None:
    window = parse_window(f"{day} 02:30-04:00 {tz}")
    before = opens_utc - timedelta(hours=3)
    assert next_opening([window], before) == opens_utc
    assert not in_window([window], opens_utc - timedelta(seconds=1))
    assert in_window([window], opens_utc)
    assert not in_window([window], ends_utc)
    # The week after, 02:30 exists again: summer time, an hour earlier in UTC than on the jump's day.
    assert next_opening([window], ends_utc) == opens_utc + timedelta(days=7) - timedelta(hours=1)


def test_a_window_opening_in_the_fall_back_hour_opens_at_its_first_occurrence() -> None:
    window = parse_window("Sun 01:30-03:00 America/New_York")
    # 2026-11-01 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST): the first one.
    assert next_opening([window], utc(2026, 11, 1, 0, 0)) == utc(2026, 11, 1, 5, 30)
    assert in_window([window], utc(2026, 11, 1, 7, 59))  # 02:59 EST
    assert not in_window([window], utc(2026, 11, 1, 8, 0))  # 03:00 EST


def test_the_same_wall_time_across_a_dst_change() -> None:
    """Saturday 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer."""
    window = parse_window("Sat 02:00-04:00 Europe/Berlin")
    assert next_opening([window], utc(2026, 3, 26, 0, 0)) == utc(2026, 3, 28, 1, 0)  # last winter Saturday
    assert next_opening([window], utc(2026, 3, 29, 0, 0)) == utc(2026, 4, 4, 0, 0)  # first summer Saturday


_ZONES = [
    "UTC",
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
]


@st.composite
def _windows(draw: st.DrawFn) -> Window:
    start = draw(st.integers(0, 24 * 60 - 1))
    # At least two hours long, so no DST gap (at most an hour) can swallow a whole window.
    length = draw(st.integers(120, 24 * 60 - 1))
    end = (start + length) % (24 * 60)
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    return Window(
        days=days,
        start=time(start // 60, start % 60),
        end=time(end // 60, end % 60),
        tz=ZoneInfo(draw(st.sampled_from(_ZONES))),
    )


@settings(max_examples=300, deadline=None)
@given(
    windows=st.lists(_windows(), min_size=1, max_size=3),
    # Hypothesis bounds are naive; the values it draws are in UTC.
    at=st.datetimes(
        min_value=datetime(2025, 1, 1),  # noqa: DTZ001
        max_value=datetime(2030, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)
def test_next_opening_is_the_first_open_instant(windows: list[Window], at: datetime) -> None:
    got = next_opening(windows, at)
    assert at <= got <= at + timedelta(days=8)
    assert in_window(windows, got)
    if got > at:
        # Nothing between: the instant before the opening is outside every window.
        assert not in_window(windows, max(at, got - timedelta(microseconds=1)))
