"""The HTTP front's parts on their own: the replay record, the replay guard, body parsing, throttled logs."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pytest
from slack_sdk.signature import Clock

from bot.errors import StoreUnavailable
from bot.logs import QUIET_LOGGERS, LogThrottle, configure_logging
from bot.serving import quiet_accept_errors
from bot.slack.http import MAX_DEPTH, REPLAY_CHECK_TIMEOUT_SECONDS, ReplayGuard, parse_slack_body
from bot.store import Store


class _Clock(Clock):
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


# --- the store's replay record --------------------------------------------------------------------


async def test_the_store_records_each_request_once_and_forgets_old_ones(store: Store) -> None:
    assert await store.first_delivery(timestamp=1000, signature="v0=aa", forget_before=0) is True
    assert await store.first_delivery(timestamp=1000, signature="v0=aa", forget_before=0) is False
    assert await store.first_delivery(timestamp=1000, signature="v0=bb", forget_before=0) is True
    assert await store.first_delivery(timestamp=1001, signature="v0=aa", forget_before=0) is True
    # Past the window the entry is dropped (Slack's signature check refuses such a request anyway).
    assert await store.first_delivery(timestamp=2000, signature="v0=cc", forget_before=1500) is True
    assert await store.first_delivery(timestamp=1000, signature="v0=aa", forget_before=0) is True


async def test_two_stores_on_one_database_share_the_record(db_url: str) -> None:
    first, second = await Store.open(db_url), await Store.open(db_url)
    try:
        results = await asyncio.gather(
            *(
                s.first_delivery(timestamp=5, signature="v0=same", forget_before=0)
                for s in (first, second) * 3
            )
        )
        assert sorted(results) == [False] * 5 + [True]
    finally:
        await first.close()
        await second.close()


# --- the replay guard -----------------------------------------------------------------------------


async def test_the_guard_asks_the_shared_record() -> None:
    seen: set[tuple[int, str]] = set()

    async def record(timestamp: int, signature: str, forget_before: int) -> bool:
        fresh = (timestamp, signature) not in seen
        seen.add((timestamp, signature))
        return fresh

    clock = _Clock()
    one, other = ReplayGuard(record, clock=clock), ReplayGuard(record, clock=clock)
    assert await one.first_time(100, "v0=a") is True
    assert await other.first_time(100, "v0=a") is False  # another replica's request
    assert await one.first_time(100, "v0=a") is False  # its own memory, before the store


@pytest.mark.parametrize("failure", ["unavailable", "hangs"])
async def test_without_the_store_the_guard_still_refuses_what_it_saw(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def record(timestamp: int, signature: str, forget_before: int) -> bool:
        if failure == "hangs":
            await asyncio.Event().wait()
        raise StoreUnavailable("OperationalError: database is locked")

    guard = ReplayGuard(record, clock=_Clock())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert await guard.first_time(100, "v0=a") is True
        assert await guard.first_time(100, "v0=a") is False
        assert await guard.first_time(101, "v0=b") is True
    assert time.monotonic() - started < 2 * REPLAY_CHECK_TIMEOUT_SECONDS + 1
    assert len([r for r in caplog.records if "replay check" in r.getMessage()]) == 1  # throttled


async def test_the_guard_forgets_requests_older_than_the_window() -> None:
    clock = _Clock(10_000)
    guard = ReplayGuard(None, clock=clock, max_remembered=3)
    assert await guard.first_time(10_000, "v0=a") is True
    clock.value += 24 * 3600
    assert await guard.first_time(int(clock.value), "v0=b") is True
    assert guard.remembered == 1  # the memory stays bounded
    for n in range(5):
        assert await guard.first_time(int(clock.value), f"v0=n{n}") is True
    assert guard.remembered <= 3


# --- body parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[" * 50_000 + "]" * 50_000, "application/json"),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "application/json"),
        ("payload=" + "%5B" * 5000 + "%5D" * 5000, "application/x-www-form-urlencoded"),
        ("a=1&b", "application/x-www-form-urlencoded"),
        ("text=%ff", "application/x-www-form-urlencoded"),
        ("&".join(f"f{i}=1" for i in range(1000)), "application/x-www-form-urlencoded"),
        ("text=help", None),
        ("text=help", "text/html"),
        ('{"s": "\\udc80"}', "application/json"),
    ],
)
def test_unreadable_bodies_are_value_errors(body: str, content_type: str | None) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError is a 400
        parse_slack_body(body, content_type)


def test_slack_bodies_parse() -> None:
    nested = '{"a":' * (MAX_DEPTH - 1) + "1" + "}" * (MAX_DEPTH - 1)
    assert parse_slack_body(nested, "application/json")["a"]
    assert parse_slack_body("command=%2Fvpn&text=", "application/x-www-form-urlencoded") == {
        "command": "/vpn",
        "text": "",
    }
    assert parse_slack_body('payload={"type":"x"}', "application/x-www-form-urlencoded") == {"type": "x"}
    assert parse_slack_body("", None) == {}


# --- logs -----------------------------------------------------------------------------------------


def test_a_throttle_writes_one_line_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(100):
            throttle.log(logging.WARNING, "a", "refused %s", "one")
        throttle.log(logging.WARNING, "b", "another kind")
        now[0] = 61.0
        throttle.log(logging.WARNING, "a", "refused %s", "again")
    assert [r.getMessage() for r in caplog.records] == [
        "refused one",
        "another kind",
        "refused again (99 more since the last such line)",
    ]


async def test_accept_failures_are_one_line_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_accept_errors(loop, LogThrottle(logging.getLogger("test.accept")))
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(1000):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many"),
                    }
                )
        assert len([r for r in caplog.records if "cannot accept" in r.getMessage()]) == 1
    finally:
        loop.set_exception_handler(previous)


def test_database_drivers_stay_quiet_at_debug() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    before = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        configure_logging(level="DEBUG", fmt="text", stream=io.StringIO())
        assert not logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)
        assert not logging.getLogger("asyncpg").isEnabledFor(logging.INFO)
        assert logging.getLogger("bot.store").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in before.items():
            logging.getLogger(name).setLevel(old)
