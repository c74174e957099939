"""Fakes for the Slack layer: a loopback Slack Web API, a fake workflow, operations, settings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import SecretStr
from slack_sdk.models.blocks import Block

from bot.config import Settings
from bot.domain import AuditEntry, Freeze, Operation, OpState, VpnConnection, VpnGateway
from bot.slack.parsing import parse_command

SIGNING_SECRET = "secret"
T0 = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)


def parse(text: str) -> object:
    """``/vpn text`` parsed with cn-hangzhou as the default region."""
    return parse_command(text, default_region="cn-hangzhou")


def valid_block_kit(message: dict[str, Any]) -> None:
    """Every block parses as slack_sdk's model and passes its limit checks; text fallback present."""
    assert message["text"].strip()
    assert len(message["blocks"]) <= 50
    for raw in message["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def make_op(**overrides: Any) -> Operation:
    conn = VpnConnection(
        id="vco-bp1abc2def3gh",
        region="cn-hangzhou",
        name="office-tunnel",
        gateway_id="vpn-bp1gw0001",
        customer_gateway_id="cgw-bp1cgw0001",
        status="ike_sa_established",
        local_subnet="10.0.0.0/24,10.0.1.0/24",
        remote_subnet="192.168.0.0/16",
    )
    gw = VpnGateway(id="vpn-bp1gw0001", region="cn-hangzhou", name="main-gw", status="active")
    base = Operation(
        id="op-1",
        state=OpState.AWAITING_APPROVAL,
        region="cn-hangzhou",
        connection=overrides.pop("connection", conn),
        gateway=overrides.pop("gateway", gw),
        requester_id="U0REQUEST",
        channel_id="C0CHANNEL",
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        client_token="tok-1",
        team_id="T0TEAM",
        message_ts="1700000000.000100",
    )
    return replace(base, **overrides)


# --- a loopback Slack Web API ------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    data: dict[str, Any]


@dataclass
class FakeSlack:
    """A tiny Slack Web API + response_url endpoint on 127.0.0.1, recording every request."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # method -> Slack error string
    statuses: dict[str, list[int]] = field(default_factory=dict)  # method -> HTTP statuses to answer first
    groups: dict[str, list[str]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def webhook(self, name: str = "cmd") -> str:
        return f"{self.url}/webhook/{name}"

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [r.data for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait (at most 3 s) until ``path`` was called ``count`` times."""
        async with asyncio.timeout(3.0):
            while len(self.calls(path)) < count:
                await self.arrived.wait()
                self.arrived.clear()
        return self.calls(path)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        if request.content_type == "application/json" and raw:
            data = json.loads(raw)
        else:
            data = dict(parse_qsl(raw)) | dict(request.query)
        path = request.path
        self.requests.append(Recorded(path, data))
        self.arrived.set()
        if path.startswith("/webhook/"):
            return web.Response(text="ok")
        method = path.removeprefix("/api/")
        pending = self.statuses.get(method)
        if pending:
            status = pending.pop(0)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=status, headers={"Retry-After": "0"}
            )
        if method in self.errors:
            return web.json_response({"ok": False, "error": self.errors[method]})
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "user_id": "W0BOT", "bot_id": "B0BOT", "team_id": "T0TEAM", "user": "vpn-bot"}
            )
        if method == "chat.postMessage":
            n = len(self.calls(path))
            return web.json_response(
                {"ok": True, "channel": data.get("channel"), "ts": f"1700000000.{n:06d}"}
            )
        if method == "usergroups.users.list":
            group = data.get("usergroup", "")
            if group not in self.groups:
                return web.json_response({"ok": False, "error": "no_such_subteam"})
            return web.json_response({"ok": True, "users": self.groups[group]})
        return web.json_response({"ok": True})


# --- a fake workflow with the same signatures as bot.workflow.Workflow ----------------------


@dataclass
class FakeWorkflow:
    """Records calls; each method can be made to raise, and request_delete can be held open."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raise_on: dict[str, BaseException] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # request_delete waits for this before returning
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    entries: list[AuditEntry] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # set on every recorded call

    def _enter(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, kwargs))
        self.entered.set()
        if name in self.raise_on:
            raise self.raise_on[name]

    def called(self, name: str) -> list[dict[str, Any]]:
        return [kw for n, kw in self.calls if n == name]

    async def request_delete(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_id: str,
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
        run_at: datetime | None = None,
    ) -> Operation:
        self.started.set()
        try:
            kwargs: dict[str, Any] = {
                "team_id": team_id,
                "user_id": user_id,
                "channel_id": channel_id,
                "vco_id": vco_id,
                "region": region,
                "response_url": response_url,
            }
            if account:  # only with several accounts, so single-account expectations stay as they were
                kwargs["account"] = account
            if run_at is not None:  # only when asked for, so the other expectations stay as they were
                kwargs["run_at"] = run_at
            if self.hold is not None:
                await self.hold.wait()
            self._enter("request_delete", kwargs)
            return make_op(requester_id=user_id, channel_id=channel_id, region=region)
        finally:
            self.finished.set()

    async def approve(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        self._enter("approve", {"op_id": op_id, "user_id": user_id})
        return make_op(id=op_id, state=OpState.APPROVED, approver_id=user_id, approved_at=T0)

    async def withdraw(self, *, op_id: str, user_id: str, message_ts: str | None = None) -> Operation:
        self._enter("withdraw", {"op_id": op_id, "user_id": user_id})
        return make_op(id=op_id)

    async def cancel(
        self, *, op_id: str, user_id: str, message_ts: str | None = None, reason: str | None = None
    ) -> Operation:
        self._enter("cancel", {"op_id": op_id, "user_id": user_id, **({"reason": reason} if reason else {})})
        return make_op(id=op_id, state=OpState.CANCELLED, cancelled_by=user_id, cancel_reason=reason)

    async def override_window(self, *, op_id: str, user_id: str) -> Operation:
        self._enter("override_window", {"op_id": op_id, "user_id": user_id})
        return make_op(id=op_id, state=OpState.APPROVED, approver_id="U0OTHER", approved_at=T0)

    async def request_batch(
        self,
        *,
        team_id: str,
        user_id: str,
        channel_id: str,
        vco_ids: Sequence[str],
        region: str,
        response_url: str | None,
        account: str = "",
        reason: str | None = None,
        ticket: str | None = None,
        run_at: datetime | None = None,
    ) -> list[Operation]:
        self._enter(
            "request_batch",
            {"user_id": user_id, "channel_id": channel_id, "vco_ids": list(vco_ids), "region": region},
        )
        return [make_op(requester_id=user_id, channel_id=channel_id, region=region)]

    async def approve_batch(
        self, *, batch_id: str, user_id: str, message_ts: str | None = None
    ) -> list[Operation]:
        self._enter("approve_batch", {"batch_id": batch_id, "user_id": user_id})
        return []

    async def cancel_batch(
        self, *, batch_id: str, user_id: str, reason: str | None = None
    ) -> list[Operation]:
        self._enter("cancel_batch", {"batch_id": batch_id, "user_id": user_id})
        return []

    async def withdraw_batch(self, *, batch_id: str, user_id: str) -> list[Operation]:
        self._enter("withdraw_batch", {"batch_id": batch_id, "user_id": user_id})
        return []

    async def override_batch_window(self, *, batch_id: str, user_id: str) -> list[Operation]:
        self._enter("override_batch_window", {"batch_id": batch_id, "user_id": user_id})
        return []

    async def batch_members(self, *, batch_id: str) -> list[Operation]:
        return []

    async def recreate_target(self, *, op_id: str, user_id: str, channel_id: str) -> Operation:
        self._enter("recreate_target", {"op_id": op_id, "user_id": user_id, "channel_id": channel_id})
        return make_op(id=op_id, state=OpState.DELETED)

    async def request_recreate(
        self, *, op_id: str, user_id: str, channel_id: str, psk: SecretStr
    ) -> Operation:
        # The key is not recorded, as the real workflow keeps it in memory only.
        self._enter("request_recreate", {"op_id": op_id, "user_id": user_id, "channel_id": channel_id})
        return make_op(id=op_id, state=OpState.DELETED)

    async def history(
        self,
        *,
        limit: int = 10,
        user_id: str | None = None,
        channel_id: str = "",
        accounts: Collection[str] | None = None,
    ) -> list[AuditEntry]:
        self._enter("history", {"limit": limit, "channel_id": channel_id, "accounts": accounts})
        return self.entries[:limit]

    async def freeze(
        self, *, user_id: str, duration: timedelta, account: str | None, reason: str
    ) -> tuple[Freeze, list[Freeze]]:
        self._enter(
            "freeze", {"user_id": user_id, "duration": duration, "account": account, "reason": reason}
        )
        return Freeze("f1", account, reason, user_id, T0, T0 + duration), []

    async def unfreeze(self, *, user_id: str, account: str | None, everything: bool) -> list[Freeze]:
        self._enter("unfreeze", {"user_id": user_id, "account": account, "everything": everything})
        return []

    async def frozen(self, account: str, now: datetime | None = None) -> Freeze | None:
        return None

    async def active_freezes(self) -> list[Freeze]:
        return []


# --- signing -----------------------------------------------------------------------------------


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }
