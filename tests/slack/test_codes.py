"""The Slack error table and translate(): real slack_sdk failures from the local Slack stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import SlackError, Who
from bot.sandbox.slack import SlackStandin, start_slack_standin
from bot.slack.blocks import explain_slack_error
from bot.slack.codes import (
    CLIENT_ERROR,
    NO_TS,
    SLACK_CODES,
    SLACK_FAILURES,
    TIMEOUT,
    TRANSPORT,
    lookup,
    slack_error,
    translate,
)

TOKEN = "xoxb-codes-test-token-1234"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    async with await start_slack_standin(bot_token=TOKEN) as running:
        yield running


@pytest.fixture
async def client(standin: SlackStandin) -> AsyncIterator[AsyncWebClient]:
    web = AsyncWebClient(token=TOKEN, base_url=standin.url + "/", timeout=5)
    web.retry_handlers.clear()  # see each failure as the caller would after slack_sdk's retries
    yield web
    if web.session is not None:
        await web.session.close()


async def failure_of(client: AsyncWebClient) -> SlackError:
    """Post a message and translate how it failed."""
    try:
        await client.chat_postMessage(channel="C0OPS", text="hello")
    except SLACK_FAILURES as exc:
        return translate(exc)
    raise AssertionError("the call did not fail")


def test_every_row_says_what_happened_and_what_to_do() -> None:
    for error, row in SLACK_CODES.items():
        assert row.error == error
        assert row.friendly.endswith("."), error
        assert row.action, error
        assert lookup(error) is row


def test_a_failure_may_have_been_carried_out_unless_slack_refused_it() -> None:
    """Only a rate limit among the transient failures says for sure that Slack did nothing."""
    assert not any(lookup(e).ambiguous for e in ("ratelimited", "rate_limited", "http_429"))
    assert all(lookup(e).ambiguous for e in (TRANSPORT, TIMEOUT, "internal_error", "http_502"))
    assert not any(lookup(e).ambiguous for e in ("msg_blocks_too_long", "not_in_channel", "invalid_auth"))
    assert (slack_error("transport").maybe_done, slack_error("ratelimited").maybe_done) == (True, False)


def test_message_size_errors_are_known_rows() -> None:
    for error in ("msg_blocks_too_long", "msg_too_long", "invalid_blocks"):
        row = SLACK_CODES[error]
        assert not row.transient
        assert "bot bug" in row.action


def test_only_rate_limits_outages_and_the_network_are_transient() -> None:
    transient = {error for error, row in SLACK_CODES.items() if row.transient}
    assert transient == {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "file_upload_failed",
        "http_429",
        TRANSPORT,
        TIMEOUT,
    }
    assert all(SLACK_CODES[e].who is Who.NOBODY for e in transient)


def test_token_rows_say_the_administrator_acts() -> None:
    refused = {error for error, row in SLACK_CODES.items() if row.token_refused}
    assert {"invalid_auth", "not_authed", "token_revoked", "account_inactive", "missing_scope"} <= refused
    assert all(SLACK_CODES[e].who is Who.ADMIN for e in refused)
    assert not lookup("not_in_channel").token_refused


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
async def test_channel_errors_explain_how_to_invite(
    standin: SlackStandin, client: AsyncWebClient, error: str
) -> None:
    standin.state.fail("chat.postMessage", error)
    failure = await failure_of(client)
    assert failure.error == error
    assert not failure.transient
    assert "/invite @vpn-bot" in failure.friendly


async def test_refused_token_is_not_transient(standin: SlackStandin) -> None:
    wrong = AsyncWebClient(token="xoxb-not-the-right-one-0000", base_url=standin.url + "/")
    try:
        failure = await failure_of(wrong)
    finally:
        if wrong.session is not None:
            await wrong.session.close()
    assert failure.error == "invalid_auth"
    assert not failure.transient
    assert "SLACK_BOT_TOKEN" in failure.friendly


async def test_rate_limit_is_transient(standin: SlackStandin, client: AsyncWebClient) -> None:
    standin.state.rate_limit("chat.postMessage")
    failure = await failure_of(client)
    assert failure.error == "ratelimited"
    assert failure.transient


async def test_server_error_is_transient(standin: SlackStandin, client: AsyncWebClient) -> None:
    standin.state.server_error("chat.postMessage", status=503)
    failure = await failure_of(client)
    assert failure.transient


async def test_unreachable_slack_is_a_transient_transport_error() -> None:
    client = AsyncWebClient(token=TOKEN, base_url="http://127.0.0.1:1/api/")
    client.retry_handlers.clear()
    failure = await failure_of(client)
    assert failure.error == TRANSPORT
    assert failure.transient


async def test_no_answer_in_time_is_a_transient_timeout(standin: SlackStandin) -> None:
    standin.state.set_latency(3.0, "chat.postMessage")
    client = AsyncWebClient(token=TOKEN, base_url=standin.url + "/", timeout=1)
    client.retry_handlers.clear()
    try:
        failure = await failure_of(client)
    finally:
        if client.session is not None:
            await client.session.close()
    assert failure.error == TIMEOUT
    assert failure.transient


async def test_unknown_error_names_the_code_and_is_final(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    standin.state.fail("chat.postMessage", "weird_error")
    failure = await failure_of(client)
    assert failure.error == "weird_error"
    assert not failure.transient
    assert "`weird_error`" in failure.friendly


def _api_error(status: int, data: dict[str, object]) -> SlackApiError:
    response = AsyncSlackResponse(
        client=AsyncWebClient(token=TOKEN),
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={},
        data=data,
        headers={},
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]  # slack_sdk's SlackApiError is untyped


def test_http_error_without_a_slack_body_is_read_by_status() -> None:
    assert translate(_api_error(502, {})).error == "http_502"
    assert translate(_api_error(502, {})).transient
    assert translate(_api_error(429, {})).transient
    assert not translate(_api_error(404, {})).transient


def test_odd_codes_never_reach_mrkdwn_as_markup() -> None:
    text = lookup("<@U0EVIL> `x`").friendly
    assert "<" not in text
    assert "`x`" not in text


def test_client_side_refusal_is_its_own_code() -> None:
    failure = translate(SlackRequestError("bad argument"))
    assert failure.error == CLIENT_ERROR
    assert not failure.transient


def test_slack_error_keeps_its_old_constructor() -> None:
    error = SlackError("refused", error="not_in_channel")
    assert error.error == "not_in_channel"
    assert error.transient is False


def test_blocks_delegate_to_the_table() -> None:
    assert explain_slack_error("is_archived").startswith(lookup("is_archived").text)
    assert "Nothing was deleted" in explain_slack_error("is_archived")


def test_failures_without_an_exception_come_from_the_table_too() -> None:
    error = slack_error(NO_TS)
    assert error.error == NO_TS
    assert not error.transient
    assert error.friendly == lookup(NO_TS).text
