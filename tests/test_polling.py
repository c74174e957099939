"""The gateway polling schedule, and the history it learns from (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes import make_connection

from bot.domain import Operation, OpState, VpnGateway
from bot.store import Store
from bot.workflow.polling import CLOSE_POLL_S, expected_duration, poll_delay

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_without_history_it_polls_at_the_base_interval() -> None:
    assert poll_delay(0.0, None, 5.0) == 5.0
    assert poll_delay(123.0, None, 5.0) == 5.0


def test_with_history_it_waits_quietly_then_looks_every_second() -> None:
    assert poll_delay(0.0, 60.0, 5.0) == pytest.approx(54.0)  # first look at 90 % of the usual
    assert poll_delay(54.0, 60.0, 5.0) == CLOSE_POLL_S
    assert poll_delay(119.0, 60.0, 5.0) == CLOSE_POLL_S
    assert poll_delay(121.0, 60.0, 5.0) == 5.0  # far past the usual: back to the base interval


def test_expected_duration_is_the_median_of_enough_history() -> None:
    assert expected_duration([]) is None
    assert expected_duration([30.0]) is None
    assert expected_duration([10.0, 30.0, 20.0, 0.0]) == 20.0


def _done(op_id: str, gateway_id: str, seconds: float, *, state: OpState = OpState.DELETED) -> Operation:
    conn = make_connection(f"vco-{op_id}", gateway_id)
    return Operation(
        id=op_id,
        state=state,
        region=conn.region,
        connection=conn,
        gateway=VpnGateway(gateway_id, conn.region, "gw", "active"),
        requester_id="U0REQ",
        channel_id="C0OPS",
        created_at=T0,
        updated_at=T0,
        expires_at=T0,
        client_token=f"vpnbot-{op_id}-0",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
    )


async def test_durations_come_from_the_gateway_else_the_region(store: Store) -> None:
    assert await store.recent_durations(region="cn-hangzhou", gateway_id="vpn-a") == []
    for op in (_done("a1", "vpn-a", 12), _done("b1", "vpn-b", 50), _done("b2", "vpn-b", 70)):
        await store.create_operation(op=op)
    await store.create_operation(op=_done("a2", "vpn-a", 999, state=OpState.FAILED))  # not a deletion
    # One deletion on vpn-a is too little history: the region's are used.
    assert sorted(await store.recent_durations(region="cn-hangzhou", gateway_id="vpn-a")) == [12, 50, 70]
    await store.create_operation(op=_done("a3", "vpn-a", 14))
    assert sorted(await store.recent_durations(region="cn-hangzhou", gateway_id="vpn-a")) == [12, 14]
