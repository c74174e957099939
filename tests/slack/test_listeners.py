"""The whole Slack pipeline: signed HTTP requests -> our handler -> a real AsyncApp -> listeners.

Slack is a loopback fake (Web API and response_url); the workflow is a fake with the real
signatures. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient
from slackfakes import SIGNING_SECRET, T0, FakeSlack, FakeWorkflow, make_op, make_settings, sign

from bot.domain import Operation, OpState
from bot.errors import ConfirmationClosed, NotAllowed, SlackError
from bot.slack import InFlight, register
from bot.slack.blocks import build_confirmation
from bot.slack.http import make_aiohttp_handler
from bot.slack.parsing import FOREIGN_BUTTON


@dataclass
class Harness:
    """Posts signed requests to our aiohttp handler in front of a real AsyncApp."""

    app: AsyncApp
    url: str
    session: aiohttp.ClientSession
    slack: FakeSlack
    workflow: FakeWorkflow
    known_regions: set[str] | None = field(default_factory=lambda: {"cn-hangzhou", "cn-shanghai"})
    inflight: InFlight = field(default_factory=InFlight)
    ops: dict[str, Operation] = field(default_factory=dict)

    async def regions(self) -> set[str]:
        if self.known_regions is None:
            raise RuntimeError("DescribeRegions is down")
        return self.known_regions

    async def operation(self, op_id: str) -> Operation | None:
        return self.ops.get(op_id)

    def command_body(self, text: str) -> str:
        return urlencode(
            {
                "token": "legacy",
                "team_id": "T0TEAM",
                "channel_id": "C0CHANNEL",
                "user_id": "U0REQUEST",
                "command": "/vpn",
                "text": text,
                "response_url": self.slack.webhook("cmd"),
                "trigger_id": "1.2.3",
            }
        )

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(self.url, data=body.encode(), headers=headers) as resp:
            raw = await resp.text()
            return resp.status, (json.loads(raw) if raw.startswith("{") else raw)

    async def command(self, text: str) -> tuple[int, Any]:
        body = self.command_body(text)
        return await self.post(body, sign(body))

    async def click(self, payload: dict[str, Any]) -> tuple[int, Any]:
        body = "payload=" + quote(json.dumps(payload))
        return await self.post(body, sign(body))

    async def replies(self, count: int = 1) -> list[dict[str, Any]]:
        return await self.slack.wait_for("/webhook/cmd", count)


@pytest.fixture
async def harness(fake_slack: FakeSlack, fake_workflow: FakeWorkflow) -> AsyncIterator[Harness]:
    client = AsyncWebClient(token="xoxb-valid", base_url=fake_slack.api_url)
    app = AsyncApp(client=client, signing_secret=SIGNING_SECRET)
    web_app = web.Application()
    web_app.router.add_post("/slack/events", make_aiohttp_handler(app, signing_secret=SIGNING_SECRET))
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with aiohttp.ClientSession() as session:
        h = Harness(
            app=app,
            url=f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events",
            session=session,
            slack=fake_slack,
            workflow=fake_workflow,
        )
        register(
            app,
            workflow=fake_workflow,
            settings=make_settings(),
            regions=h.regions,
            operation=h.operation,
            inflight=h.inflight,
        )
        yield h
    if fake_workflow.hold is not None:
        fake_workflow.hold.set()
    await runner.cleanup()


def click_payload(
    op: Operation, *, value: str | None = None, action_id: str = "vpn-delete-approve", user: str = "U0CLICKER"
) -> dict[str, Any]:
    """A block_actions payload for a click on ``op``'s confirmation, as Slack sends it."""
    message = build_confirmation(op)
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "clicker", "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "legacy",
        "container": {"type": "message", "message_ts": op.message_ts, "channel_id": op.channel_id},
        "trigger_id": "1.2.3",
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": op.channel_id, "name": "ops"},
        "message": {
            "type": "message",
            "ts": op.message_ts,
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "response_url": "REPLACED",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "vpn-delete-actions",
                "text": {"type": "plain_text", "text": "Delete"},
                "value": value if value is not None else op.id,
                "type": "button",
                "action_ts": "1700000001.000001",
            }
        ],
    }


# --- /vpn --------------------------------------------------------------------------------------


async def test_delete_is_acked_before_the_workflow_finishes(harness: Harness) -> None:
    """The HTTP answer (the ack) arrives while request_delete is still running."""
    harness.workflow.hold = asyncio.Event()
    status, body = await asyncio.wait_for(harness.command("delete vco-bp1abc2def3gh cn-shanghai"), timeout=3)
    assert status == 200
    assert body["response_type"] == "ephemeral"
    assert "Looking up `vco-bp1abc2def3gh` in region `cn-shanghai`" in body["text"]
    await asyncio.wait_for(harness.workflow.started.wait(), timeout=3)
    assert not harness.workflow.finished.is_set()
    harness.workflow.hold.set()
    await asyncio.wait_for(harness.workflow.finished.wait(), timeout=3)
    assert harness.workflow.called("request_delete") == [
        {
            "team_id": "T0TEAM",
            "user_id": "U0REQUEST",
            "channel_id": "C0CHANNEL",
            "vco_id": "vco-bp1abc2def3gh",
            "region": "cn-shanghai",
            "response_url": harness.slack.webhook("cmd"),
        }
    ]


async def test_too_much_in_flight_turns_new_deletes_away_in_the_ack(harness: Harness) -> None:
    """Past the in-flight limit a delete request is acked with 'try again' and nothing starts."""
    harness.inflight.limit = 1
    harness.workflow.hold = asyncio.Event()
    status, _ = await harness.command("delete vco-bp1abc2def3gh cn-shanghai")
    assert status == 200
    await asyncio.wait_for(harness.workflow.started.wait(), timeout=3)

    status, body = await harness.command("delete vco-bp1zzz9yyy8xx cn-shanghai")
    assert status == 200
    assert "did not start this one" in body["text"]
    assert "/vpn delete vco-bp1zzz9yyy8xx cn-shanghai" in body["text"]

    harness.workflow.hold.set()
    await asyncio.wait_for(harness.workflow.finished.wait(), timeout=3)
    assert [kw["vco_id"] for kw in harness.workflow.called("request_delete")] == ["vco-bp1abc2def3gh"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "*Usage*"),
        ("help", "*Usage*"),
        ("frobnicate", "I don't know the command `frobnicate`"),
        ("delete vco-abcd cn-hangzhou extra", "Too many words"),
    ],
)
async def test_usage_replies_ride_on_the_ack(harness: Harness, text: str, fragment: str) -> None:
    status, body = await harness.command(text)
    assert status == 200
    assert body["response_type"] == "ephemeral"
    assert fragment in json.dumps(body["blocks"]) + body["text"]
    assert harness.workflow.calls == []


async def test_text_containing_payload_reaches_the_listener(harness: Harness) -> None:
    """Bolt alone answers 404 to a command whose text contains "payload"; our handler does not."""
    body = harness.command_body("delete vco-payload1 cn-hangzhou")
    bolt_only = await harness.app.async_dispatch(AsyncBoltRequest(body=body, headers={**sign(body)}))
    assert bolt_only.status == 404, "the quirk this handler exists for"

    status, reply = await harness.command("delete vco-payload1 cn-hangzhou")
    assert status == 200
    assert "Looking up `vco-payload1`" in reply["text"]
    await asyncio.wait_for(harness.workflow.finished.wait(), timeout=3)
    assert harness.workflow.called("request_delete")[0]["vco_id"] == "vco-payload1"

    status, reply = await harness.command("delete payload-x")
    assert status == 200
    assert "`payload-x` is not a VPN connection id" in reply["text"]


async def test_history_is_sent_ephemerally(harness: Harness) -> None:
    status, _ = await harness.command("history 3")
    assert status == 200
    (reply,) = await harness.replies()
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == "No VPN deletions recorded yet."
    # The channel's own history (the visibility rule); one account, so no account filter.
    (call,) = harness.workflow.called("history")
    assert call == {"limit": 3, "channel_id": "C0CHANNEL", "accounts": None}


async def test_unknown_region_is_refused_after_the_ack(harness: Harness) -> None:
    status, _ = await harness.command("delete vco-abcd eu-nowhere-9")
    assert status == 200
    (reply,) = await harness.replies()
    assert "no VPC region `eu-nowhere-9`" in reply["text"]
    assert harness.workflow.called("request_delete") == []


async def test_region_list_outage_accepts_well_formed_regions(harness: Harness) -> None:
    harness.known_regions = None
    await harness.command("delete vco-abcd eu-nowhere-9")
    await asyncio.wait_for(harness.workflow.finished.wait(), timeout=3)
    assert harness.workflow.called("request_delete")[0]["region"] == "eu-nowhere-9"


async def test_refusal_is_ephemeral_and_names_who_can_act(harness: Harness) -> None:
    harness.workflow.raise_on["request_delete"] = NotAllowed(
        "You may not request deletions.", who_can="Ask one of <@U0BOSS>, <!subteam^S0LEADS>."
    )
    status, _ = await harness.command("delete vco-abcd")
    assert status == 200
    (reply,) = await harness.replies()
    assert reply["response_type"] == "ephemeral"
    assert "You may not request deletions. Ask one of <@U0BOSS>, <!subteam^S0LEADS>." in reply["text"]


async def test_bot_not_in_channel_explains_how_to_invite(harness: Harness) -> None:
    harness.workflow.raise_on["request_delete"] = SlackError("cannot post", error="not_in_channel")
    await harness.command("delete vco-abcd")
    (reply,) = await harness.replies()
    assert "/invite @vpn-bot" in reply["text"]


async def test_unexpected_error_shows_an_id_and_no_details(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.workflow.raise_on["request_delete"] = RuntimeError("boom: internal detail")
    with caplog.at_level(logging.ERROR, logger="bot.slack.errors"):
        await harness.command("delete vco-abcd")
        (reply,) = await harness.replies()
    assert "Something went wrong on our side (error id `" in reply["text"]
    assert "Nothing was deleted." in reply["text"]
    assert "boom" not in json.dumps(reply)
    assert "Traceback" not in json.dumps(reply)
    record = next(r for r in caplog.records if r.name == "bot.slack.errors")
    assert f"error id `{record.error_id}`" in reply["text"]  # type: ignore[attr-defined]


# --- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"secret": "not-the-secret"}, "bad signature"),
        ({"timestamp": int(time.time()) - 600}, "stale timestamp"),
    ],
)
async def test_unsigned_requests_get_401_and_are_logged_without_body(
    harness: Harness, caplog: pytest.LogCaptureFixture, headers: dict[str, Any], reason: str
) -> None:
    body = harness.command_body("delete vco-secretish1")
    with caplog.at_level(logging.WARNING, logger="bot.slack.http"):
        status, reply = await harness.post(body, sign(body, **headers))
    assert status == 401
    assert reply == {"error": "invalid request"}
    assert harness.workflow.calls == []
    record = next(r for r in caplog.records if r.name == "bot.slack.http")
    assert record.reason == reason  # type: ignore[attr-defined]
    assert all(
        "vco-secretish1" not in r.getMessage() and "vco-secretish1" not in str(r.__dict__)
        for r in caplog.records
    )


async def test_missing_signature_headers_get_401(harness: Harness) -> None:
    status, _ = await harness.post(
        harness.command_body("help"), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 401


# --- buttons -----------------------------------------------------------------------------------


def _with_webhook(payload: dict[str, Any], harness: Harness) -> dict[str, Any]:
    payload["response_url"] = harness.slack.webhook("cmd")
    return payload


async def test_approve_click_calls_the_workflow(harness: Harness) -> None:
    op = make_op()
    harness.ops[op.id] = op
    status, _ = await harness.click(_with_webhook(click_payload(op), harness))
    assert status == 200
    await asyncio.wait_for(harness.workflow.entered.wait(), timeout=3)
    assert harness.workflow.called("approve") == [{"op_id": "op-1", "user_id": "U0CLICKER"}]


async def test_cancel_click_without_a_trigger_id_cancels_at_once(harness: Harness) -> None:
    """No trigger id, no reason modal: the click cancels as it always did, without a reason."""
    op = make_op()
    harness.ops[op.id] = op
    payload = click_payload(op, action_id="vpn-delete-cancel")
    del payload["trigger_id"]
    await harness.click(_with_webhook(payload, harness))
    await asyncio.wait_for(harness.workflow.entered.wait(), timeout=3)
    assert harness.workflow.called("cancel") == [{"op_id": "op-1", "user_id": "U0CLICKER"}]


async def test_click_naming_another_op_changes_nothing(harness: Harness) -> None:
    """A value naming op-2 on op-1's message is refused, ephemerally, and nothing is called."""
    op1, op2 = make_op(id="op-1"), make_op(id="op-2", message_ts="1700000000.000999")
    harness.ops.update({"op-1": op1, "op-2": op2})
    status, _ = await asyncio.wait_for(
        harness.click(_with_webhook(click_payload(op1, value="op-2"), harness)), 3
    )
    assert status == 200, "a refusal right after ack() must not lose the ack"
    (reply,) = await harness.replies()
    assert FOREIGN_BUTTON in reply["text"]
    assert reply["response_type"] == "ephemeral"
    assert reply["replace_original"] is False
    assert harness.workflow.calls == []


async def test_click_on_a_message_the_op_was_not_posted_in_changes_nothing(harness: Harness) -> None:
    """Even when the message shows the value, the op's own message_ts must match the click."""
    shown = make_op(id="op-1")  # what the clicked message displays
    harness.ops["op-1"] = make_op(id="op-1", message_ts="1700000000.000555")  # where op-1 really lives
    await harness.click(_with_webhook(click_payload(shown), harness))
    (reply,) = await harness.replies()
    assert FOREIGN_BUTTON in reply["text"]
    assert harness.workflow.calls == []


async def test_oversized_value_is_refused(harness: Harness) -> None:
    op = make_op()
    payload = click_payload(op, value="x" * 10_000)
    await harness.click(_with_webhook(payload, harness))
    (reply,) = await harness.replies()
    assert FOREIGN_BUTTON in reply["text"]
    assert "xxxxxxxx" not in json.dumps(reply)
    assert harness.workflow.calls == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConfirmationClosed(make_op(state=OpState.APPROVED, approver_id="U0OTHER", approved_at=T0)),
            "This request was already approved by <@U0OTHER>",
        ),
        (
            NotAllowed("You are not allowed to approve VPN deletions.", who_can="Ask <@U0BOSS>."),
            "You are not allowed to approve VPN deletions",
        ),
    ],
)
async def test_refused_click_is_ephemeral_to_the_clicker(
    harness: Harness, error: Exception, expected: str
) -> None:
    op = make_op()
    harness.ops[op.id] = op
    harness.workflow.raise_on["approve"] = error
    await harness.click(_with_webhook(click_payload(op), harness))
    (reply,) = await harness.replies()
    assert reply["response_type"] == "ephemeral"
    assert reply["replace_original"] is False
    assert expected in reply["text"]
    assert "<@" in reply["text"], "mentions written by the bot stay mentions"


async def test_errors_before_ack_go_through_the_app_error_funnel(harness: Harness) -> None:
    """register() installs the one @app.error handler: a bug before ack() gets an id, HTTP 200."""

    async def handle_broken(ack: object) -> None:
        raise ValueError("broken before ack")

    harness.app.command("/broken")(handle_broken)
    body = harness.command_body("x").replace("%2Fvpn", "%2Fbroken")
    status, reply = await harness.post(body, sign(body))
    assert status == 200
    assert reply == ""
    (sent,) = await harness.replies()
    assert "Something went wrong on our side (error id `" in sent["text"]
    assert "broken before ack" not in json.dumps(sent)
