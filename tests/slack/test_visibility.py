"""The visibility rule (bot.slack.visibility) and the exclusive account binding (bot.slack.accounts).

The rule runs on hand-written fakes of its two Protocols; the Slack directory runs against the
Slack Web API stand-in over HTTP (users.conversations, conversations.info).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from slackfakes import make_op

from bot.config import Settings, explicit_settings
from bot.doctor.model import Check
from bot.doctor.settings import check_settings
from bot.errors import NotAllowed, SlackError, UsageError
from bot.sandbox.slack_api import Channel, SlackStandin, start_slack_standin
from bot.slack.accounts import account_usable, allowed_accounts, choose_account
from bot.slack.visibility import SlackChannelDirectory, Visibility

ARNS = {
    "prod": "acs:ram::1234567890123456:role/vpn-bot",
    "staging": "acs:ram::6543210987654321:role/vpn-bot",
    "dev": "acs:ram::1111111111111111:role/vpn-bot",
}
ACCOUNTS = ",".join(f"{k}={v}" for k, v in ARNS.items())
PROD, STAGE, OTHER, SECRET = "C0PROD", "C0STAGE", "C0OTHER", "C0SECRET"
ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"


class FakeDirectory:
    """Who is in which channel, and which channels are private; ``broken`` makes Slack fail."""

    def __init__(self, members: Mapping[str, set[str]], private: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.members = members
        self.private = private
        self.broken = False
        self.asked: list[str] = []

    async def channels_of(self, user_id: str) -> Mapping[str, bool]:
        self.asked.append(user_id)
        if self.broken:
            raise SlackError("down", error="transport", transient=True)
        return {c: c in self.private for c, people in self.members.items() if user_id in people}

    async def is_private(self, channel_id: str) -> bool:
        self.asked.append(channel_id)
        if self.broken:
            raise SlackError("down", error="transport", transient=True)
        return channel_id in self.private


class FakeApprovers:
    def __init__(self, *named: str) -> None:
        self.named = set(named)

    async def named_approver(self, user_id: str) -> bool:
        return user_id in self.named


def _settings(**extra: object):  # type: ignore[no-untyped-def]
    return explicit_settings(approvers=[BOB], accounts=ACCOUNTS, **extra)


def _visibility(settings=None, *, private: set[str] = frozenset()) -> tuple[Visibility, FakeDirectory]:  # type: ignore[no-untyped-def, assignment]
    directory = FakeDirectory(
        {PROD: {ALICE, CAROL}, STAGE: {DAVE}, OTHER: {ALICE, CAROL, DAVE}, SECRET: {ALICE}}, private=private
    )
    settings = settings or _settings(channel_accounts=f"{PROD}=prod,{STAGE}=staging")
    return Visibility(settings, directory=directory, approvers=FakeApprovers(BOB)), directory


# --- the rule ----------------------------------------------------------------------------------


async def test_the_home_tab_shows_own_awaiting_and_channel_operations_only() -> None:
    vis, _ = _visibility()
    prod_op = make_op(channel_id=PROD, account="prod", requester_id=ALICE)
    # Dave is only in the staging channel: a prod operation is not his to see.
    assert not await vis.sees(prod_op, user_id=DAVE, place=None)
    assert await vis.sees(prod_op, user_id=ALICE, place=None)  # requested it
    assert await vis.sees(prod_op, user_id=CAROL, place=None)  # a member of its channel
    assert await vis.sees(prod_op, user_id=BOB, place=None)  # may approve it


async def test_a_private_channels_operation_is_seen_only_by_its_members_and_only_there() -> None:
    vis, _ = _visibility(private={SECRET})
    op = make_op(channel_id=SECRET, account="dev", requester_id=ALICE)
    assert await vis.sees(op, user_id=ALICE, place=None)
    assert not await vis.sees(op, user_id=BOB, place=None), "an approver outside it does not see it"
    assert not await vis.sees(op, user_id=CAROL, place=None)
    assert await vis.sees(op, user_id=ALICE, place=SECRET)
    assert not await vis.sees(op, user_id=ALICE, place=OTHER), "never elsewhere, even to its requester"


async def test_a_dms_operation_stays_in_that_dm() -> None:
    vis, _ = _visibility()
    op = make_op(channel_id="D0ALICE", account="dev", requester_id=ALICE)
    assert await vis.sees(op, user_id=ALICE, place="D0ALICE")
    assert await vis.sees(op, user_id=ALICE, place=None)
    assert not await vis.sees(op, user_id=ALICE, place=OTHER)
    assert not await vis.sees(op, user_id=BOB, place=None)


async def test_from_a_channel_only_operations_in_accounts_it_may_use() -> None:
    vis, _ = _visibility()
    prod_op = make_op(channel_id=PROD, account="prod", requester_id=ALICE)
    assert await vis.sees(prod_op, user_id=ALICE, place=PROD)
    # Alice asked for it, but from a channel that may not use prod (exclusive binding).
    assert not await vis.sees(prod_op, user_id=ALICE, place=OTHER)
    assert not await vis.sees(prod_op, user_id=ALICE, place=STAGE)
    with pytest.raises(NotAllowed, match="You can't see request `op-1` from here"):
        await vis.check(prod_op, user_id=ALICE, place=OTHER)
    dev_op = make_op(channel_id=PROD, account="dev", requester_id=ALICE)
    assert await vis.sees(dev_op, user_id=CAROL, place=OTHER), "an unbound account, a member of its channel"
    assert not await vis.sees(dev_op, user_id=DAVE, place=OTHER), "not a member, not the requester"


async def test_anyone_may_approve_names_nobody_so_it_shows_nothing_more() -> None:
    settings = explicit_settings(approvers=["*"])
    vis = Visibility(settings, directory=FakeDirectory({PROD: {ALICE}}), approvers=FakeApprovers())
    op = make_op(channel_id=PROD, requester_id=ALICE)
    assert not await vis.sees(op, user_id=DAVE, place=None)
    assert await vis.sees(op, user_id=DAVE, place=PROD), "in its own channel everyone there sees it"


async def test_when_slack_cannot_say_the_operation_stays_hidden() -> None:
    vis, directory = _visibility()
    directory.broken = True
    op = make_op(channel_id=OTHER, account="dev", requester_id=ALICE)
    assert not await vis.sees(op, user_id=CAROL, place=None)
    assert await vis.sees(op, user_id=ALICE, place=None), "one's own request, on one's own Home tab"
    elsewhere = make_op(channel_id="C0ELSE", account="dev", requester_id=ALICE)
    assert not await vis.sees(elsewhere, user_id=ALICE, place=OTHER), "privacy unknown: not shown elsewhere"
    directory.broken = False
    assert await vis.sees(elsewhere, user_id=ALICE, place=OTHER), "a public channel's, to its requester"
    assert await vis.sees(op, user_id=CAROL, place=OTHER), "its own channel needs no lookup"


async def test_visible_keeps_the_order_and_asks_slack_once_per_person_and_channel() -> None:
    vis, directory = _visibility()
    ops = [
        make_op(id=f"op-{i}", channel_id=c, account="dev") for i, c in enumerate([OTHER, STAGE, PROD, OTHER])
    ]
    assert [op.id for op in await vis.visible(ops, user_id=CAROL, place=None)] == ["op-0", "op-2", "op-3"]
    # Carol's channels once, and the privacy of STAGE (not hers) once; never per operation.
    assert sorted(directory.asked) == sorted([CAROL, STAGE])


# --- the binding -------------------------------------------------------------------------------


def test_bindings_are_exclusive_by_default() -> None:
    settings = _settings(channel_accounts=f"{PROD}=prod,{STAGE}=staging")
    assert settings.account_binding == "exclusive"
    assert allowed_accounts(settings, PROD) == (("prod",), True)
    assert allowed_accounts(settings, OTHER) == (("dev",), False)
    assert allowed_accounts(settings, "D0ALICE") == (("dev",), False)
    assert choose_account(settings, channel_id=OTHER, asked=None) == "dev"
    with pytest.raises(NotAllowed) as refused:
        choose_account(settings, channel_id="D0ALICE", asked="prod")
    assert refused.value.friendly == (
        f"The account `prod` is reserved for <#{PROD}>: run the command there "
        "(VPNBOT_CHANNEL_ACCOUNTS binds it). Here you may use `dev`."
    )
    with pytest.raises(UsageError, match="There is no account `qa`"):
        choose_account(settings, channel_id=OTHER, asked="qa")
    assert not account_usable(settings, OTHER, "prod")
    assert account_usable(settings, PROD, "prod")


def test_default_only_keeps_every_account_usable_from_unbound_channels() -> None:
    settings = _settings(channel_accounts=f"{PROD}=prod", account_binding="default-only")
    assert allowed_accounts(settings, OTHER) == (("prod", "staging", "dev"), False)
    assert choose_account(settings, channel_id=OTHER, asked="prod") == "prod"
    with pytest.raises(NotAllowed, match="may act only on the account `prod`, not `dev`"):
        choose_account(settings, channel_id=PROD, asked="dev")


def test_with_every_account_bound_an_unbound_channel_is_told_where_to_go() -> None:
    settings = _settings(channel_accounts=f"{PROD}=prod,{STAGE}=staging,{STAGE}=dev")
    with pytest.raises(
        NotAllowed, match=f"reserved for its own channels; run the command in one of <#{PROD}>"
    ):
        choose_account(settings, channel_id=OTHER, asked=None)


def test_a_bad_binding_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"account_binding|VPNBOT_ACCOUNT_BINDING"):
        _settings(account_binding="sometimes")


def test_the_doctor_says_which_accounts_unbound_channels_reach() -> None:
    def row(settings: Settings) -> Check:
        return next(c for c in check_settings(settings) if c.name == "Accounts from unbound channels")

    exclusive = row(_settings(channel_accounts=f"{PROD}=prod"))
    assert (exclusive.status, exclusive.detail) == (
        "PASS",
        "staging, dev (VPNBOT_ACCOUNT_BINDING=exclusive).",
    )
    loose = row(_settings(channel_accounts=f"{PROD}=prod", account_binding="default-only"))
    assert loose.status == "WARN"
    assert loose.detail.startswith("prod, staging, dev (VPNBOT_ACCOUNT_BINDING=default-only)")
    assert all(c.name != "Accounts from unbound channels" for c in check_settings(explicit_settings()))


# --- Slack's answers, through the stand-in -------------------------------------------------------


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    async with await start_slack_standin(bot_token="xoxb-test") as running:
        yield running


def _client(standin: SlackStandin) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=standin.url)


async def test_the_directory_pages_through_users_conversations_and_caches(standin: SlackStandin) -> None:
    state = standin.state
    for i in range(5):
        state.add_channel(Channel(f"C0PAGE{i}", f"page-{i}", members=(ALICE,)))
    state.add_channel(Channel("C0PRIV", "priv", is_private=True, members=(ALICE,)))
    state.add_channel(Channel("C0HIDDEN", "hidden", is_private=True, bot_is_member=False, members=(ALICE,)))
    state.add_channel(Channel("C0NOTHER", "not-hers", members=(BOB,)))
    now = [0.0]
    directory = SlackChannelDirectory(_client(standin), ttl=60, clock=lambda: now[0], page_size=2)
    found = await directory.channels_of("U0ALICE")
    assert {f"C0PAGE{i}" for i in range(5)} <= set(found)
    assert found["C0PRIV"] is True
    assert found["C0PAGE0"] is False
    assert "C0HIDDEN" not in found, "Slack shows a bot only the private channels it is in"
    assert "C0NOTHER" not in found
    calls = len(state.calls("users.conversations"))
    assert calls >= 4  # pages of two
    await directory.channels_of("U0ALICE")
    assert len(state.calls("users.conversations")) == calls, "cached"
    now[0] = 61
    await directory.channels_of("U0ALICE")
    assert len(state.calls("users.conversations")) > calls, "asked again after the TTL"


async def test_the_directory_asks_conversations_info_for_privacy(standin: SlackStandin) -> None:
    state = standin.state
    state.add_channel(Channel("C0PUB", "pub"))
    state.add_channel(Channel("C0PRIV", "priv", is_private=True))
    state.add_channel(Channel("C0HIDDEN", "hidden", is_private=True, bot_is_member=False))
    directory = SlackChannelDirectory(_client(standin))
    assert await directory.is_private("C0PUB") is False
    assert await directory.is_private("C0PRIV") is True
    assert await directory.is_private("C0HIDDEN") is True, "a channel hidden from the bot counts as private"
    assert await directory.is_private("D0ALICE") is True
    assert await directory.is_private("G0LEGACY") is True
    assert [c.params.get("channel") for c in state.calls("conversations.info")] == [
        "C0PUB",
        "C0PRIV",
        "C0HIDDEN",
    ]


async def test_without_the_read_scopes_the_directory_fails(standin: SlackStandin) -> None:
    standin.state.scopes = ("commands", "chat:write")
    directory = SlackChannelDirectory(_client(standin))
    with pytest.raises(SlackError) as failed:
        await directory.channels_of("U0ALICE")
    assert failed.value.error == "missing_scope"
