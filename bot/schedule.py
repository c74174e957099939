"""When a deletion may run: requested run times (``at …``) and change windows, pure time logic.

Nothing here reads a clock: every function takes the instant it reasons about. Times are aware
datetimes; results are in UTC. Zones come from :mod:`zoneinfo` (the IANA database).

Run times (``/vpn delete vco-… at …``): ``2026-12-10 02:00 Asia/Shanghai`` (a wall time and its
zone; ``UTC`` is a zone too), ``2026-12-10T02:00:30+08:00`` or ``2026-12-10T18:00Z`` (ISO 8601 with
its offset). A wall time the zone's clocks skip (the spring-forward hour) or pass twice (the
fall-back hour) is refused: the person gives the offset instead.

Change windows (``VPNBOT_CHANGE_WINDOWS``): ``account=DAYS HH:MM-HH:MM Zone``, several separated by
``;``. ``DAYS`` is a day (``Sat``), a range (``Mon-Fri``), a list (``Sat,Sun``) or ``daily``; it names
the day the window *opens*. An end at or before the start crosses midnight (``Fri 22:00-02:00``
ends on Saturday). ``*`` is every account without windows of its own (and the single-account bot,
whose account is ``""``).

Daylight saving: a window's opening and end are wall times on their day, turned into instants by
the zone's rules for that day. A wall time the clocks skip is read with the offset from before the
jump, which puts it as far after the jump as it was after the skipped hour's start: ``02:30`` on a
spring-forward day in America/New_York or Europe/Berlin is ``03:30`` (new time). A wall time the
clocks pass twice is its first occurrence (the earlier instant). A window's length in real time
changes by the shift on such days (``01:00-03:00`` is one hour long on a spring-forward day).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ANY_ACCOUNT",
    "ScheduleError",
    "Window",
    "check_run_at",
    "in_window",
    "next_opening",
    "parse_run_at",
    "parse_window",
    "parse_windows",
    "run_time",
    "windows_for",
    "zone",
]

# The account key of windows that apply to every account without windows of its own.
ANY_ACCOUNT = "*"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_CLOCK_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
# How far a window's next opening is looked for: a week and a day covers every weekly window.
_LOOK_AHEAD_DAYS = 8


class ScheduleError(ValueError):
    """A run time or a window that cannot be used; the message says why, in words for a person."""


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``Asia/Shanghai``, ``UTC``); ScheduleError if there is none."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", name) or ".." in name or name.startswith("/"):
        raise ScheduleError(f"{name!r} is not a time zone name like Asia/Shanghai or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{name!r} is not a time zone name like Asia/Shanghai or UTC") from None


def _clock(text: str) -> time:
    match = _CLOCK_RE.fullmatch(text)
    if match is None:
        raise ScheduleError(f"{text!r} is not a time of day like 02:00 (24-hour, HH:MM)")
    hour, minute, second = match.groups()
    return time(int(hour), int(minute), int(second or 0))


def _wall(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant (UTC) of wall time ``at`` on ``day`` in ``tz``, by the rules in the module's docstring."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


# --- run times ---------------------------------------------------------------------------------


def parse_run_at(words: Sequence[str]) -> datetime:
    """The instant (UTC) ``words`` name: ``DATE HH:MM[:SS] Zone`` or one ISO 8601 word with its offset."""
    if len(words) == 1:
        text = words[0]
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ScheduleError(
                f"{text!r} is not a time: use 2026-12-10T02:00+08:00, 2026-12-10T18:00Z, "
                "or a date, a time and a zone (2026-12-10 02:00 Asia/Shanghai)"
            ) from None
        if parsed.tzinfo is None:
            raise ScheduleError(
                f"{text!r} has no offset: add one (+08:00, Z) or give the zone (2026-12-10 02:00 Asia/Shanghai)"
            )
        return parsed.astimezone(UTC)
    if len(words) == 2:
        raise ScheduleError(
            f"{' '.join(words)!r} has no time zone: add one, e.g. {words[0]} {words[1]} Asia/Shanghai (or UTC)"
        )
    if len(words) != 3:
        raise ScheduleError(
            "a run time is a date, a time and a zone (2026-12-10 02:00 Asia/Shanghai) or one ISO 8601 "
            "time with its offset (2026-12-10T02:00+08:00)"
        )
    day_text, clock_text, zone_text = words
    if not _DATE_RE.fullmatch(day_text):
        raise ScheduleError(f"{day_text!r} is not a date like 2026-12-10")
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise ScheduleError(f"{day_text!r} is not a date like 2026-12-10") from None
    at, tz = _clock(clock_text), zone(zone_text)
    local = datetime.combine(day, at, tzinfo=tz)
    if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ScheduleError(
            f"{day_text} {clock_text} does not exist in {zone_text} (the clocks skip it that day): "
            "give a time outside the skipped hour"
        )
    if local.replace(fold=1).utcoffset() != local.utcoffset():
        raise ScheduleError(
            f"{day_text} {clock_text} happens twice in {zone_text} (the clocks go back that day): "
            "give it with its offset, e.g. 2026-10-25T02:30+02:00"
        )
    return local.astimezone(UTC)


def check_run_at(at: datetime, *, now: datetime, max_days: float) -> None:
    """ScheduleError if ``at`` is not after ``now`` or is more than ``max_days`` ahead of it."""
    if at <= now:
        shown = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise ScheduleError(
            f"{shown} is in the past: give a time still to come, or leave out `at` to run it now"
        )
    if at - now > timedelta(days=max_days):
        raise ScheduleError(
            f"that is more than {max_days:g} days ahead (VPNBOT_MAX_SCHEDULE_DAYS): give a sooner time"
        )


# --- change windows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A weekly change window: it opens at ``start`` on each of ``days`` (0 = Monday) in ``tz``."""

    days: frozenset[int]
    start: time
    end: time
    tz: ZoneInfo

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        days = "daily" if len(self.days) == 7 else ",".join(_DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.tz.key}"

    def spans(self, around: datetime) -> Iterator[tuple[datetime, datetime]]:
        """(opening, end) instants in UTC of the window's days from the day before ``around`` on, in order."""
        first = around.astimezone(self.tz).date() - timedelta(days=1)
        for offset in range(_LOOK_AHEAD_DAYS + 1):
            day = first + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            end_day = day + timedelta(days=1) if self.crosses_midnight else day
            yield _wall(day, self.start, self.tz), _wall(end_day, self.end, self.tz)


def _days(text: str) -> frozenset[int]:
    word = text.lower()
    if word in {"daily", "*"}:
        return frozenset(range(7))
    found: set[int] = set()
    for part in word.split(","):
        first, sep, last = part.partition("-")
        if first not in _DAYS or (sep and last not in _DAYS):
            raise ScheduleError(f"{text!r} is not days like Sat, Mon-Fri, Sat,Sun or daily")
        start = _DAYS.index(first)
        stop = _DAYS.index(last) if sep else start
        found.update((start + i) % 7 for i in range((stop - start) % 7 + 1))
    return frozenset(found)


def parse_window(text: str) -> Window:
    """One window, ``DAYS HH:MM-HH:MM Zone`` (``Sat 01:00-05:00 Asia/Shanghai``); ScheduleError if not."""
    words = text.split()
    if len(words) != 3:
        raise ScheduleError(
            f"{text.strip()!r} is not DAYS HH:MM-HH:MM Zone, e.g. Sat 01:00-05:00 Asia/Shanghai"
        )
    days_text, hours, zone_text = words
    start_text, sep, end_text = hours.partition("-")
    if not sep:
        raise ScheduleError(f"{hours!r} is not a span of hours like 01:00-05:00")
    start, end = _clock(start_text), _clock(end_text)
    if start == end:
        raise ScheduleError(f"{hours!r} starts and ends at the same time")
    return Window(days=_days(days_text), start=start, end=end, tz=zone(zone_text))


def parse_windows(text: str, *, account_ok: Iterable[str] | None = None) -> dict[str, tuple[Window, ...]]:
    """``VPNBOT_CHANGE_WINDOWS``: ``account=window; account=window; *=window`` by account name.

    ``account_ok`` (if given) is checked for every name but ``*``: ScheduleError for another one.
    """
    allowed = set(account_ok) if account_ok is not None else None
    found: dict[str, list[Window]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, spec = (p.strip() for p in part.partition("="))
        if not sep or not name:
            raise ScheduleError(
                f"{part!r} is not account=DAYS HH:MM-HH:MM Zone (or *=…), e.g. prod=Sat 01:00-05:00 Asia/Shanghai"
            )
        if allowed is not None and name != ANY_ACCOUNT and name not in allowed:
            raise ScheduleError(
                f"{name!r} is not an account name (1-32 lowercase letters, digits, - or _) or *"
            )
        try:
            window = parse_window(spec)
        except ScheduleError as err:
            raise ScheduleError(f"account {name}: {err}") from None
        found.setdefault(name, []).append(window)
    return {name: tuple(windows) for name, windows in found.items()}


def windows_for(windows: Mapping[str, tuple[Window, ...]], account: str) -> tuple[Window, ...]:
    """The windows of ``account`` ("" for the single-account bot): its own, else ``*``'s, else none."""
    if account in windows:
        return windows[account]
    return windows.get(ANY_ACCOUNT, ())


def in_window(windows: Sequence[Window], at: datetime) -> bool:
    """Whether ``at`` is inside one of ``windows`` (from its opening, up to but not including its end)."""
    return any(opens <= at < ends for w in windows for opens, ends in w.spans(at))


def next_opening(windows: Sequence[Window], at: datetime) -> datetime:
    """The first opening of one of ``windows`` after ``at`` (UTC); ``at`` itself if it is inside one.

    Without windows, ``at``: nothing restricts when a deletion runs.
    """
    at = at.astimezone(UTC)
    if not windows or in_window(windows, at):
        return at
    openings = [opens for w in windows for opens, _ in w.spans(at) if opens > at]
    # Every window opens at least once a week, so the look-ahead always finds one.
    return min(openings)


def run_time(windows: Sequence[Window], *, wanted: datetime | None, now: datetime) -> datetime:
    """When an approved deletion runs: ``wanted`` (or ``now`` if none or passed), moved to the next window opening."""
    start = now if wanted is None or wanted <= now else wanted
    return next_opening(windows, start)
