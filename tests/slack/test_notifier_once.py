"""SlackNotifier against the Slack stand-in: a post is made once, a long snapshot goes as a file.

These drive the notifier alone (the outbox's side is in tests/test_outbox.py, both together in
tests/e2e/test_slack_once.py): what it does when told a post may already be in Slack.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from slackfakes import make_op

from bot.domain import Deleted, Delivery, Denied, Queued, Snapshot, SnapshotRoute, SnapshotTaken
from bot.errors import SlackError
from bot.sandbox.slack import DEFAULT_SCOPES, SlackStandin, start_slack_standin
from bot.sandbox.slack_api import UPLOAD, file_content
from bot.slack.notifier import EFFECT_EVENT, SlackNotifier, configure_retries

TOKEN = "xoxb-once"
OPS = "C0VPNOPS"
SINCE = datetime(2020, 1, 1, tzinfo=UTC)


async def _standin(scopes: tuple[str, ...] = DEFAULT_SCOPES) -> SlackStandin:
    return await start_slack_standin(bot_token=TOKEN, scopes=scopes)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    running = await _standin()
    yield running
    await running.close()


@pytest.fixture
async def client(standin: SlackStandin) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as session:
        web = AsyncWebClient(token=TOKEN, base_url=standin.url, session=session)
        configure_retries(web)
        yield web


def _big_snapshot() -> Snapshot:
    routes = tuple(
        SnapshotRoute(kind="custom", destination=f"172.{16 + i // 256}.{i % 256}.0/24", description="b" * 40)
        for i in range(300)
    )
    return Snapshot(
        vco_id="vco-bp1big", region="cn-hangzhou", name="big", gateway_id="vpn-bp1gw", routes=routes
    )


async def test_every_post_carries_its_effects_key(client: AsyncWebClient, standin: SlackStandin) -> None:
    op = make_op(channel_id=OPS, thread_ts=None)
    ts = await SlackNotifier(client).post_confirmation(op, Delivery(key="op-1/1", since=SINCE))
    [card] = standin.state.messages(OPS)
    assert card.ts == ts
    assert card.metadata == {"event_type": EFFECT_EVENT, "event_payload": {"effect_id": "op-1/1"}}


async def test_a_confirmation_already_posted_is_found_and_not_posted_again(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    notifier = SlackNotifier(client)
    op = make_op(channel_id=OPS, thread_ts=None)
    first = await notifier.post_confirmation(op, Delivery(key="op-1/1", since=SINCE))
    standin.state.add_message(OPS, text="someone else's message")
    again = await notifier.post_confirmation(op, Delivery(key="op-1/1", since=SINCE, maybe_done=True))
    assert again == first
    assert len(standin.state.calls("chat.postMessage")) == 1
    [look] = standin.state.calls("conversations.history")
    assert look.params["include_all_metadata"] in (True, "1", "true")
    # Another effect's key is not taken for this one: it is posted.
    other = await notifier.post_confirmation(op, Delivery(key="op-1/2", since=SINCE, maybe_done=True))
    assert other != first


async def test_a_thread_reply_already_posted_is_found_in_the_thread(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    notifier = SlackNotifier(client)
    root = standin.state.add_message(OPS, text="card")
    op = make_op(channel_id=OPS, message_ts=root.ts, thread_ts=None)
    await notifier.reply_in_thread(op, Queued("vco-2"), Delivery(key="op-1/3", since=SINCE))
    await notifier.reply_in_thread(op, Queued("vco-2"), Delivery(key="op-1/3", since=SINCE, maybe_done=True))
    assert len(standin.state.thread(OPS, root.ts)) == 1
    assert [c.params["ts"] for c in standin.state.calls("conversations.replies")] == [root.ts]


async def test_without_the_history_scope_the_post_is_made_and_the_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An install that predates the history scopes: at least once, as before, and a log line says why."""
    standin = await _standin(tuple(s for s in DEFAULT_SCOPES if not s.endswith(":history")))
    try:
        async with aiohttp.ClientSession() as session:
            notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=standin.url, session=session))
            op = make_op(channel_id=OPS, thread_ts=None)
            with caplog.at_level(logging.WARNING, logger="bot.slack.notifier"):
                await notifier.post_confirmation(op, Delivery(key="op-1/1", since=SINCE, maybe_done=True))
    finally:
        await standin.close()
    assert len(standin.state.messages(OPS)) == 1
    assert [c.error for c in standin.state.calls("conversations.history")] == ["missing_scope"]
    assert any(
        "could not look" in r.getMessage() and getattr(r, "slack_error", None) == "missing_scope"
        for r in caplog.records
    )


async def test_a_look_that_fails_for_now_fails_the_attempt_as_maybe_done(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    standin.state.rate_limit("conversations.history", times=5, retry_after=0)
    op = make_op(channel_id=OPS, thread_ts=None)
    with pytest.raises(SlackError) as info:
        await SlackNotifier(client).post_confirmation(
            op, Delivery(key="op-1/1", since=SINCE, maybe_done=True)
        )
    assert (info.value.error, info.value.transient, info.value.maybe_done) == ("ratelimited", True, True)
    assert standin.state.calls("chat.postMessage") == []


async def test_a_long_snapshot_is_a_summary_then_a_yaml_file_each_sent_once(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    notifier = SlackNotifier(client)
    root = standin.state.add_message(OPS, text="card")
    op = make_op(channel_id=OPS, message_ts=root.ts, thread_ts=None)
    event = SnapshotTaken(_big_snapshot())
    # The upload's last step loses its answer: the summary is there, the file too, unconfirmed.
    standin.state.drop_answer("files.completeUploadExternal")
    with pytest.raises(SlackError) as info:
        await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE))
    assert info.value.maybe_done
    summary, shared = standin.state.thread(OPS, root.ts)
    assert "Configuration before the deletion" in summary.text
    assert shared.files[0]["name"] == "vco-bp1big-configuration.yaml"
    assert "172.16.0.0/24" in file_content(standin.state, shared.files[0]["id"])

    # The next attempt finds both and sends nothing.
    await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE, maybe_done=True))
    assert len(standin.state.thread(OPS, root.ts)) == 2
    assert len(standin.state.calls("chat.postMessage")) == 1
    assert len(standin.state.calls("files.getUploadURLExternal")) == 1


async def test_a_file_that_did_not_arrive_is_sent_after_the_summary_found(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    notifier = SlackNotifier(client)
    root = standin.state.add_message(OPS, text="card")
    op = make_op(channel_id=OPS, message_ts=root.ts, thread_ts=None)
    event = SnapshotTaken(_big_snapshot())
    standin.state.fail("files.getUploadURLExternal", "internal_error")
    with pytest.raises(SlackError) as info:
        await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE))
    assert info.value.maybe_done  # the summary went out: the next attempt must look
    await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE, maybe_done=True))
    summary, shared = standin.state.thread(OPS, root.ts)
    assert summary.metadata is not None
    assert shared.files
    assert len(standin.state.calls("chat.postMessage")) == 1


async def test_an_upload_the_file_host_refuses_is_tried_again_without_a_second_summary(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    notifier = SlackNotifier(client)
    root = standin.state.add_message(OPS, text="card")
    op = make_op(channel_id=OPS, message_ts=root.ts, thread_ts=None)
    event = SnapshotTaken(_big_snapshot())
    standin.state.server_error(UPLOAD, status=500, times=2)  # slack_sdk tries the upload twice
    with pytest.raises(SlackError) as info:
        await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE))
    assert (info.value.error, info.value.transient, info.value.maybe_done) == (
        "file_upload_failed",
        True,
        True,
    )
    assert len(standin.state.thread(OPS, root.ts)) == 1
    await notifier.reply_in_thread(op, event, Delivery(key="op-1/9", since=SINCE, maybe_done=True))
    summary, shared = standin.state.thread(OPS, root.ts)
    assert "Configuration before the deletion" in summary.text
    assert shared.files[0]["name"] == "vco-bp1big-configuration.yaml"


async def test_the_requesters_dm_is_posted_once_and_links_the_card(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    """The outcome's DM goes to the DM conversations.open gives, carries its key, and is found after a lost answer."""
    state = standin.state
    card = state.add_message(OPS, text="the card")
    op = make_op(channel_id=OPS, requester_id="U0ALICE", message_ts=card.ts, approver_id="U0BOB")
    notifier = SlackNotifier(client)
    await notifier.direct_message(op, Deleted(elapsed_s=3.0), Delivery(key="op-1/7", since=SINCE))
    [dm] = state.messages("DU0ALICE")
    assert dm.metadata == {"event_type": EFFECT_EVENT, "event_payload": {"effect_id": "op-1/7"}}
    assert "the connection is deleted" in dm.text
    assert f"p{card.ts.replace('.', '')}" in str(dm.blocks), "links the card"
    # An attempt whose answer was lost looks in the DM first and does not post again.
    await notifier.direct_message(
        op, Deleted(elapsed_s=3.0), Delivery(key="op-1/7", since=SINCE, maybe_done=True)
    )
    assert len(state.messages("DU0ALICE")) == 1
    assert state.calls("conversations.history")[-1].params["channel"] == "DU0ALICE"


async def test_the_dm_goes_without_a_link_when_slack_gives_none(
    client: AsyncWebClient, standin: SlackStandin
) -> None:
    standin.state.fail("chat.getPermalink", "internal_error")
    op = make_op(channel_id=OPS, requester_id="U0ALICE", message_ts="1700000000.000100")
    await SlackNotifier(client).direct_message(op, Denied(by="U0BOB", reason="<!here> no"), None)
    [dm] = standin.state.messages("DU0ALICE")
    assert "&lt;!here&gt; no" in str(dm.blocks)
    assert "<!here>" not in str(dm.blocks)
    assert "Open the request" not in str(dm.blocks)
