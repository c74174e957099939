"""SlackPolicy: who may request, approve and cancel; group lookups fail closed."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from slackfakes import FakeSlack, make_op, make_settings

from bot.domain import KIND_RECREATE
from bot.errors import NotAllowed, SlackError
from bot.slack.policy import SlackGroupDirectory, SlackPolicy, who_can_text


class FakeDirectory:
    """Group lookups from a dict; a group mapped to None fails like a Slack outage."""

    def __init__(self, groups: dict[str, list[str] | None]) -> None:
        self.groups = groups
        self.lookups: list[str] = []

    async def members(self, group_id: str) -> frozenset[str]:
        self.lookups.append(group_id)
        members = self.groups.get(group_id)
        if members is None:
            raise SlackError("lookup failed", error="ratelimited")
        return frozenset(members)


def policy(directory: FakeDirectory | None = None, **settings: object) -> SlackPolicy:
    return SlackPolicy(make_settings(**settings), directory=directory or FakeDirectory({}))


async def test_empty_settings_allow_everyone() -> None:
    p = policy()
    op = make_op()
    await p.check_request(user_id="U0ANY", channel_id="C0ANY", region="eu-central-1")
    await p.check_approval(user_id="U0ANY", op=op)
    await p.check_approval(user_id=op.requester_id, op=op)
    await p.check_cancel(user_id="U0ANY", op=op)


async def test_channel_not_allowed_names_the_allowed_channels() -> None:
    p = policy(allowed_channels=["C0OPS", "C0NET"])
    await p.check_request(user_id="U0ANY", channel_id="C0OPS", region="cn-hangzhou")
    with pytest.raises(NotAllowed) as info:
        await p.check_request(user_id="U0ANY", channel_id="C0RANDOM", region="cn-hangzhou")
    assert "<#C0NET>, <#C0OPS>" in info.value.friendly


async def test_region_not_allowed() -> None:
    p = policy(allowed_regions=["cn-hangzhou"])
    await p.check_request(user_id="U0ANY", channel_id="C0ANY", region="cn-hangzhou")
    with pytest.raises(NotAllowed) as info:
        await p.check_request(user_id="U0ANY", channel_id="C0ANY", region="cn-beijing")
    assert "`cn-beijing`" in info.value.friendly
    assert "`cn-hangzhou`" in info.value.friendly


async def test_requesters_directly_or_through_a_group() -> None:
    directory = FakeDirectory({"S0NETOPS": ["U0MEMBER"]})
    p = policy(directory, requesters=["U0ALICE", "S0NETOPS"])
    await p.check_request(user_id="U0ALICE", channel_id="C0", region="cn-hangzhou")
    assert directory.lookups == [], "a directly listed user needs no lookup"
    await p.check_request(user_id="U0MEMBER", channel_id="C0", region="cn-hangzhou")
    with pytest.raises(NotAllowed) as info:
        await p.check_request(user_id="U0MALLORY", channel_id="C0", region="cn-hangzhou")
    assert "Ask one of <@U0ALICE>, <!subteam^S0NETOPS>." in info.value.friendly


async def test_group_lookup_failure_fails_closed() -> None:
    directory = FakeDirectory({"S0NETOPS": None})
    p = policy(directory, approvers=["S0NETOPS"])
    with pytest.raises(NotAllowed) as info:
        await p.check_approval(user_id="U0MEMBER", op=make_op())
    assert "fail closed" in info.value.friendly
    assert "<!subteam^S0NETOPS>" in info.value.friendly


async def test_one_failing_group_does_not_hide_another_that_matches() -> None:
    directory = FakeDirectory({"S0DOWN": None, "S0UP": ["U0MEMBER"]})
    p = policy(directory, approvers=["S0DOWN", "S0UP"])
    await p.check_approval(user_id="U0MEMBER", op=make_op())


async def test_non_approver_is_told_who_can_approve() -> None:
    p = policy(approvers=["U0BOSS", "S0LEADS"], directory=FakeDirectory({"S0LEADS": ["U0LEAD"]}))
    await p.check_approval(user_id="U0LEAD", op=make_op())
    with pytest.raises(NotAllowed) as info:
        await p.check_approval(user_id="U0INTERN", op=make_op())
    assert info.value.friendly == (
        "You are not allowed to approve VPN deletions. Ask one of <@U0BOSS>, <!subteam^S0LEADS>."
    )


async def test_a_recreation_is_named_as_such_when_refused() -> None:
    p = policy(approvers=["U0BOSS"])
    with pytest.raises(NotAllowed) as info:
        await p.check_approval(user_id="U0INTERN", op=make_op(kind=KIND_RECREATE))
    assert info.value.friendly == "You are not allowed to approve VPN recreations. Ask <@U0BOSS>."
    lone = policy(approvers=[], require_second_approver=True)
    with pytest.raises(NotAllowed) as info:
        await lone.check_approval(user_id="U0REQ", op=make_op(kind=KIND_RECREATE, requester_id="U0REQ"))
    assert "recreation" in info.value.friendly
    assert "click Recreate" in info.value.friendly


async def test_four_eyes_refuses_self_approval_even_for_approvers() -> None:
    op = make_op(requester_id="U0BOSS")
    p = policy(approvers=["U0BOSS", "U0OTHER"], require_second_approver=True)
    with pytest.raises(NotAllowed) as info:
        await p.check_approval(user_id="U0BOSS", op=op)
    assert "four-eyes" in info.value.friendly
    assert "<@U0OTHER>" in info.value.friendly
    assert "<@U0BOSS>" not in info.value.who_can
    await p.check_approval(user_id="U0OTHER", op=op)


async def test_four_eyes_without_approver_list() -> None:
    op = make_op(requester_id="U0ME")
    p = policy(require_second_approver=True)
    with pytest.raises(NotAllowed):
        await p.check_approval(user_id="U0ME", op=op)
    await p.check_approval(user_id="U0YOU", op=op)


async def test_cancel_by_requester_or_approver_only() -> None:
    op = make_op(requester_id="U0REQ")
    p = policy(approvers=["U0BOSS"], require_second_approver=True)
    await p.check_cancel(user_id="U0REQ", op=op)
    await p.check_cancel(user_id="U0BOSS", op=op)
    with pytest.raises(NotAllowed) as info:
        await p.check_cancel(user_id="U0BYSTANDER", op=op)
    assert "<@U0REQ>" in info.value.friendly
    assert "<@U0BOSS>" in info.value.friendly


def test_who_can_text() -> None:
    assert who_can_text(["U0A"]) == "Ask <@U0A>."
    assert who_can_text(["U0A", "S0B"]) == "Ask one of <@U0A>, <!subteam^S0B>."
    assert "(and 2 more)" in who_can_text([f"U0{i:02d}" for i in range(12)])


# --- through a real AsyncWebClient against the loopback Slack ------------------------------


async def test_group_directory_through_slack_is_cached(fake_slack: FakeSlack) -> None:
    now = [100.0]
    fake_slack.groups["S0NETOPS"] = ["U0MEMBER"]
    directory = SlackGroupDirectory(
        AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url), ttl=300, clock=lambda: now[0]
    )
    p = SlackPolicy(make_settings(approvers=["S0NETOPS"]), directory=directory)
    await p.check_approval(user_id="U0MEMBER", op=make_op())
    await p.check_approval(user_id="U0MEMBER", op=make_op())
    assert len(fake_slack.calls("/api/usergroups.users.list")) == 1
    assert fake_slack.calls("/api/usergroups.users.list")[0]["usergroup"] == "S0NETOPS"
    now[0] += 301
    fake_slack.groups["S0NETOPS"] = []
    with pytest.raises(NotAllowed):
        await p.check_approval(user_id="U0MEMBER", op=make_op())
    assert len(fake_slack.calls("/api/usergroups.users.list")) == 2


async def test_group_directory_slack_error_fails_closed(fake_slack: FakeSlack) -> None:
    fake_slack.errors["usergroups.users.list"] = "missing_scope"
    directory = SlackGroupDirectory(AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url))
    with pytest.raises(SlackError) as info:
        await directory.members("S0NETOPS")
    assert info.value.error == "missing_scope"
    p = SlackPolicy(make_settings(requesters=["S0NETOPS"]), directory=directory)
    with pytest.raises(NotAllowed) as refused:
        await p.check_request(user_id="U0MEMBER", channel_id="C0", region="cn-hangzhou")
    assert "usergroups:read" in refused.value.friendly
