"""SlackNotifier against a loopback Slack Web API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slackfakes import FakeSlack, make_op

from bot.domain import Accepted, OpState, Queued
from bot.errors import SlackError
from bot.slack.block_ids import ActionId
from bot.slack.notifier import SlackNotifier, configure_retries


def notifier(fake: FakeSlack) -> SlackNotifier:
    return SlackNotifier(AsyncWebClient(token="xoxb-test", base_url=fake.api_url))


def blocks_of(call: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = call["blocks"]
    parsed: list[dict[str, Any]] = json.loads(blocks) if isinstance(blocks, str) else blocks
    return parsed


async def test_post_confirmation_returns_ts_and_posts_buttons(fake_slack: FakeSlack) -> None:
    ts = await notifier(fake_slack).post_confirmation(make_op(channel_id="C0OPS"))
    assert ts == "1700000000.000001"
    (call,) = fake_slack.calls("/api/chat.postMessage")
    assert call["channel"] == "C0OPS"
    assert "vco-bp1abc2def3gh" in call["text"]
    actions = [b for b in blocks_of(call) if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == [ActionId.APPROVE, ActionId.CANCEL]


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
async def test_post_confirmation_explains_how_to_invite(fake_slack: FakeSlack, error: str) -> None:
    fake_slack.errors["chat.postMessage"] = error
    with pytest.raises(SlackError) as info:
        await notifier(fake_slack).post_confirmation(make_op())
    assert info.value.error == error
    assert "/invite @vpn-bot" in info.value.friendly


async def test_post_confirmation_unreachable_slack_is_a_slack_error() -> None:
    client = AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:1/api/")
    client.retry_handlers.clear()
    with pytest.raises(SlackError) as info:
        await SlackNotifier(client).post_confirmation(make_op())
    assert info.value.error == "transport"


async def test_update_card_renders_the_state_without_buttons(fake_slack: FakeSlack) -> None:
    op = make_op(state=OpState.CANCELLED, cancelled_by="U0CANCEL")
    await notifier(fake_slack).update_card(op)
    (call,) = fake_slack.calls("/api/chat.update")
    assert call["channel"] == op.channel_id
    assert call["ts"] == op.message_ts
    assert all(b["type"] != "actions" for b in blocks_of(call))
    assert "Cancelled by <@U0CANCEL>" in call["text"]


async def test_a_refused_update_is_a_permanent_slack_error(fake_slack: FakeSlack) -> None:
    fake_slack.errors["chat.update"] = "message_not_found"
    with pytest.raises(SlackError) as info:
        await notifier(fake_slack).update_card(make_op(state=OpState.DELETED))
    assert (info.value.error, info.value.transient) == ("message_not_found", False)


async def test_a_slack_outage_is_a_transient_slack_error(fake_slack: FakeSlack) -> None:
    fake_slack.statuses["chat.update"] = [503, 503, 503]
    with pytest.raises(SlackError) as info:
        await notifier(fake_slack).update_card(make_op(state=OpState.DELETED))
    assert info.value.transient


async def test_reply_in_thread(fake_slack: FakeSlack) -> None:
    op = make_op(message_ts="1700000000.000100")
    await notifier(fake_slack).reply_in_thread(op, Queued("vco-other1234"))
    (call,) = fake_slack.calls("/api/chat.postMessage")
    assert call["thread_ts"] == "1700000000.000100"
    assert call["text"] == "Waiting for `vco-other1234` on the same gateway to finish."


async def test_a_refused_thread_reply_raises(fake_slack: FakeSlack) -> None:
    fake_slack.errors["chat.postMessage"] = "is_archived"
    with pytest.raises(SlackError) as info:
        await notifier(fake_slack).reply_in_thread(make_op(), Accepted("RID"))
    assert info.value.error == "is_archived"
    assert not info.value.transient


def test_configure_retries_is_idempotent() -> None:
    client = AsyncWebClient(token="xoxb-test")
    before = len(client.retry_handlers)
    configure_retries(client)
    configure_retries(client)
    handlers = client.retry_handlers
    assert len(handlers) == before + 2
    assert any(isinstance(h, AsyncRateLimitErrorRetryHandler) for h in handlers)
    assert sum(isinstance(h, AsyncServerErrorRetryHandler) for h in handlers) == 1
    # slack_sdk's default retry after a lost connection stays, for calls that may run twice.
    assert sum(isinstance(h, AsyncConnectionErrorRetryHandler) for h in handlers) == 1


async def test_configured_client_retries_a_rate_limit(fake_slack: FakeSlack) -> None:
    """With configure_retries a 429 (Retry-After: 0) is retried instead of failing the post."""
    fake_slack.statuses["chat.postMessage"] = [429]
    client = AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url)
    configure_retries(client)
    ts = await SlackNotifier(client).post_confirmation(make_op())
    assert ts
    assert len(fake_slack.calls("/api/chat.postMessage")) == 2


async def test_a_configured_client_never_posts_twice_after_a_5xx_but_updates_again(
    fake_slack: FakeSlack,
) -> None:
    """Slack may have posted before its 5xx: slack_sdk must not post again on its own (the outbox looks first)."""
    fake_slack.statuses["chat.postMessage"] = [503]
    fake_slack.statuses["chat.update"] = [503]
    client = AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url)
    configure_retries(client)
    with pytest.raises(SlackError) as info:
        await SlackNotifier(client).post_confirmation(make_op())
    assert info.value.transient
    assert len(fake_slack.calls("/api/chat.postMessage")) == 1
    # An update is the same however often it runs: it is retried as before.
    await SlackNotifier(client).update_card(make_op(state=OpState.DELETED))
    assert len(fake_slack.calls("/api/chat.update")) == 2
