"""Change freezes end to end: the real bot over HTTP, the VPC sandbox and the Slack stand-in.

``/vpn freeze`` by an admin (VPNBOT_ADMINS) refuses approvals with the freeze's end and reason, holds
an approved deletion that sent nothing yet (one thread reply, no DeleteVpnConnection) until
``/vpn unfreeze`` or the freeze's end, and is stored: a new app instance on the same database
applies it, and the Home tab shows it. Time is the test's (FakeClock) where it matters.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

from fakes import FakeClock, time_passes
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.domain import OpState
from bot.sandbox.local import LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU, SEED_VCO_HANGZHOU_BGP, RecordedRequest
from bot.slack.block_ids import ActionId, BlockId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text, has_buttons, local_stack, op_id_of, thread_text, wait_confirmation

ADMINS = "S0NETADM"  # the stand-in's group: bob is in it
EVIL_REASON = "INC-42 <!channel> *core* `router`"
HELD = "held by a freeze until"


def running(
    sqlite_url: str, clock: FakeClock | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings=settings, clock=clock)


def valid_block_kit(message: Message) -> None:
    """What a person sees is valid Block Kit, with a text fallback."""
    assert message.text.strip()
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()


async def _command(stack: LocalStack, user: str, text: str) -> None:
    reply = await stack.agent.slash_command(user, CHANNEL, text)
    assert reply.status == 200, reply.body


async def _ephemeral(stack: LocalStack, user: str, needle: str) -> Message:
    def found() -> Message | None:
        return next((m for m in stack.slack.state.ephemerals(user, CHANNEL) if needle in all_text(m)), None)

    message = await stack.slack.state.wait_for(
        found, timeout=10, what=f"an ephemeral to {user} with {needle!r}"
    )
    valid_block_kit(message)
    return message


async def _announced(stack: LocalStack, needle: str) -> Message:
    """The channel-visible answer (in_channel) containing ``needle``."""

    def found() -> Message | None:
        return next((m for m in stack.slack.state.messages(CHANNEL) if needle in all_text(m)), None)

    message = await stack.slack.state.wait_for(found, timeout=10, what=f"a channel message with {needle!r}")
    assert message.visible_to is None
    valid_block_kit(message)
    return message


def _deletes_of(stack: LocalStack, vco_id: str) -> list[RecordedRequest]:
    return [
        r
        for r in stack.vpc.state.accepted("DeleteVpnConnection")
        if r.params.get("VpnConnectionId") == vco_id
    ]


async def _restart(stack: LocalStack, clock: FakeClock | None = None) -> None:
    """Stop the one bot and start a new app instance on the same database."""
    old, agent = stack.replicas.pop(0), stack.agents.pop(0)
    await agent.aclose()
    await old.aclose()
    await stack.add_replica(clock=clock)


async def _audit_actions(stack: LocalStack) -> list[tuple[str, str, str]]:
    entries = await stack.bot.app.store.recent_audit(limit=50)
    return [(e.action, e.actor_id, e.detail) for e in entries]


async def _home_freeze(stack: LocalStack, user: str) -> str:
    """The freeze section of ``user``'s Home tab, opened now (the view checked as valid Block Kit)."""
    await stack.agent.open_home(user)
    view = await stack.slack.state.wait_for(
        lambda: stack.slack.state.home_views.get(user), timeout=10, what=f"the Home tab of {user}"
    )
    View(**{k: v for k, v in view.items() if k not in ("id", "team_id")}).validate_json()
    [block] = [b for b in view["blocks"] if b.get("block_id") == BlockId.HOME_FREEZE]
    return json.dumps(block)


# --- who may -----------------------------------------------------------------------------------


async def test_only_an_admin_may_freeze_and_unfreeze(sqlite_url: str) -> None:
    """Alice (not in VPNBOT_ADMINS) is refused, told who may; Bob (in its group) freezes and lifts it."""
    async with running(sqlite_url, admins=[ADMINS]) as stack:
        await _command(stack, ALICE, 'freeze 2h reason="INC-42 core incident"')
        refusal = await _ephemeral(stack, ALICE, ":no_entry:")
        assert "Only a bot admin" in refusal.text
        assert f"<!subteam^{ADMINS}>" in refusal.text
        assert await stack.bot.app.workflow.active_freezes() == []
        assert stack.slack.state.messages(CHANNEL) == []

        await _command(stack, BOB, 'freeze 2h reason="INC-42 core incident"')
        frozen = await _announced(stack, "froze VPN changes")
        assert f"<@{BOB}>" in frozen.text
        assert "all accounts" in frozen.text
        assert "INC-42" in frozen.text
        [freeze] = await stack.bot.app.workflow.active_freezes()
        assert freeze.created_by == BOB
        assert freeze.account is None

        await _command(stack, ALICE, "unfreeze")
        await stack.slack.state.wait_for(
            lambda: (
                len([m for m in stack.slack.state.ephemerals(ALICE, CHANNEL) if ":no_entry:" in m.text]) == 2
            ),
            timeout=10,
            what="the second refusal",
        )
        assert len(await stack.bot.app.workflow.active_freezes()) == 1

        await _command(stack, BOB, "unfreeze")
        await _announced(stack, "lifted the freeze")
        assert await stack.bot.app.workflow.active_freezes() == []
        # Freezes belong to no request, yet /vpn history in the channel lists them.
        await _command(stack, BOB, "history")
        history = await stack.slack.state.wait_for(
            lambda: next(
                (all_text(m) for m in stack.slack.state.ephemerals(BOB) if "*unfrozen*" in all_text(m)), None
            ),
            timeout=10,
            what="the history",
        )
        assert "*frozen*" in history
        assert "`reason: INC-42 core incident`" in history  # person-typed: inert
        actions = await _audit_actions(stack)
        assert [(a, who) for a, who, _ in actions if a in ("frozen", "unfrozen")] == [
            ("unfrozen", BOB),
            ("frozen", BOB),
        ]
        assert all(
            "INC-42 core incident" in detail for a, _, detail in actions if a in ("frozen", "unfrozen")
        )


async def test_without_admins_nobody_may_freeze(sqlite_url: str) -> None:
    async with running(sqlite_url) as stack:
        await _command(stack, BOB, "freeze 30m reason=test")
        refusal = await _ephemeral(stack, BOB, ":no_entry:")
        assert "VPNBOT_ADMINS" in refusal.text
        assert await stack.bot.app.workflow.active_freezes() == []


async def test_bad_freeze_commands_are_explained(sqlite_url: str) -> None:
    async with running(sqlite_url, admins=[BOB]) as stack:
        await _command(stack, BOB, "freeze 2h")
        await _ephemeral(stack, BOB, "needs a reason")
        await _command(stack, BOB, "freeze 45d reason=x")
        await _ephemeral(stack, BOB, "at most 30 days")
        await _command(stack, BOB, "freeze 2h prod reason=x")
        await _ephemeral(stack, BOB, "one Alibaba Cloud account")
        assert await stack.bot.app.workflow.active_freezes() == []


# --- what a freeze stops -----------------------------------------------------------------------


async def test_a_freeze_refuses_approval_survives_a_restart_and_shows_on_home(sqlite_url: str) -> None:
    """Frozen: the click is refused with the end and the reason, the card untouched, nothing deleted;
    a new app instance on the same database still refuses; Home shows it; after unfreeze it deletes."""
    async with running(sqlite_url, admins=[CAROL], approvers=[BOB]) as stack:
        await _command(stack, CAROL, f'freeze 2h reason="{EVIL_REASON}"')
        await _announced(stack, "froze VPN changes")
        [freeze] = await stack.bot.app.workflow.active_freezes()
        end = freeze.until.strftime("%Y-%m-%d %H:%M UTC")

        # A request is still taken while frozen: its card is posted as usual.
        await _command(stack, ALICE, f"delete {SEED_VCO_HANGZHOU}")
        confirmation = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
        note = await _ephemeral(stack, ALICE, "approvals are frozen")
        assert end in note.text
        assert "&lt;!channel&gt;" in note.text
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        refusal = await _ephemeral(stack, BOB, "frozen")
        assert end in refusal.text
        assert "INC-42" in refusal.text
        assert "&lt;!channel&gt;" in refusal.text
        assert "<!channel>" not in refusal.text

        def untouched() -> None:
            current = stack.slack.state.message(CHANNEL, confirmation.ts)
            assert current is not None
            assert not current.edited
            assert has_buttons(current)
            assert stack.slack.state.thread(CHANNEL, confirmation.ts) == []
            assert stack.vpc.state.accepted("DeleteVpnConnection") == []

        untouched()
        op = await stack.bot.app.store.get_operation(op_id=op_id_of(confirmation))
        assert op is not None
        assert op.state is OpState.AWAITING_APPROVAL
        refused = [(who, d) for a, who, d in await _audit_actions(stack) if a == "refused"]
        assert refused == [(BOB, refused[0][1])]
        assert "approve: approvals are frozen" in refused[0][1]

        await _restart(stack)
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)
        await stack.slack.state.wait_for(
            lambda: len([m for m in stack.slack.state.ephemerals(BOB, CHANNEL) if "frozen" in m.text]) == 2,
            timeout=10,
            what="the refusal from the new instance",
        )
        untouched()

        text = await _home_freeze(stack, ALICE)
        assert end in text
        assert "all accounts" in text
        assert f"<@{CAROL}>" in text
        assert "&lt;!channel&gt;" in text
        assert "<!channel>" not in text

        await _command(stack, CAROL, "unfreeze")
        await _announced(stack, "lifted the freeze")
        await stack.agent.click(BOB, CHANNEL, confirmation.ts, ActionId.APPROVE)

        def deleted() -> bool:
            message = stack.slack.state.message(CHANNEL, confirmation.ts)
            return message is not None and "Deleted" in all_text(message)

        await stack.slack.state.wait_for(deleted, timeout=20, what="the deletion after the unfreeze")
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU)) == 1


async def _one_held(stack: LocalStack, clock: FakeClock, freeze: str) -> tuple[Message, Message, str]:
    """Two deletions on one gateway: the first sent and waiting on the clock, the second approved and
    queued behind it; then ``freeze`` (an admin's command). Both confirmations and the second's op id."""
    await _command(stack, ALICE, f"delete {SEED_VCO_HANGZHOU}")
    first = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU)
    await _command(stack, ALICE, f"delete {SEED_VCO_HANGZHOU_BGP}")
    second = await wait_confirmation(stack.slack.state, SEED_VCO_HANGZHOU_BGP)
    # Read before the click: the stand-in updates the message in place once approved.
    second_id = op_id_of(second)
    # The sandbox's gateway runs on real time: kept updating until the second is queued behind the
    # first, or on a busy machine the first could be done (on its first poll) before the second's click.
    vpc = stack.vpc.state
    vpc.update_seconds = 3600.0
    await stack.agent.click(BOB, CHANNEL, first.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: _deletes_of(stack, SEED_VCO_HANGZHOU), timeout=10, what="the first delete sent"
    )
    await stack.agent.click(BOB, CHANNEL, second.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: "Waiting for" in thread_text(stack.slack.state, second.ts), timeout=10, what="the queued note"
    )
    # Queued: the gateway may finish now (the first's next look waits for the test's clock anyway).
    vpc.update_seconds = 0.3
    for gateway in vpc.gateways.values():
        if gateway.updating_until is not None:
            gateway.updating_until = vpc.clock()
    await _command(stack, CAROL, freeze)
    await _announced(stack, "froze VPN changes")
    return first, second, second_id


def _holds(stack: LocalStack, ts: str) -> int:
    return thread_text(stack.slack.state, ts).count(HELD)


async def test_an_approved_deletion_is_held_until_unfreeze_across_a_restart(sqlite_url: str) -> None:
    """Approved before the freeze, queued, nothing sent: held (one thread note, no delete) past its own
    deadline and through a restart; after /vpn unfreeze it is deleted exactly once."""
    clock = FakeClock()
    # Long enough that the deletions, once free to go, finish in time however fast virtual time runs.
    timeout = 3600.0
    async with running(sqlite_url, clock, admins=[CAROL], delete_timeout_seconds=timeout) as stack:
        first, second, second_id = await _one_held(stack, clock, f'freeze 1d reason="{EVIL_REASON}"')
        async with time_passes(clock):
            await stack.slack.state.wait_for(
                lambda: _holds(stack, second.ts) == 1, timeout=10, what="the hold note"
            )
            note = thread_text(stack.slack.state, second.ts)
            assert "INC-42" in note
            assert "<!channel>" not in note
            assert f"<@{CAROL}>" in note

            def card_says_held() -> bool:
                card = stack.slack.state.message(CHANNEL, second.ts)
                return card is not None and "held by a freeze" in all_text(card)

            await stack.slack.state.wait_for(card_says_held, timeout=10, what="the card saying it is held")
            # The first was not held: it had been sent before the freeze.
            await stack.slack.state.wait_for(
                lambda: "Deleted in" in thread_text(stack.slack.state, first.ts), timeout=10, what="the first"
            )
        op = await stack.bot.app.store.get_operation(op_id=second_id)
        assert op is not None
        assert op.held_at is not None
        assert op.state is OpState.APPROVED
        # Held well past its own deadline: a hold does not count against it.
        clock.advance(2 * timeout)
        async with time_passes(clock):
            moment = clock.now()
            await stack.slack.state.wait_for(
                lambda: clock.now() > moment + timedelta(seconds=5), timeout=20, what="virtual time to pass"
            )
        op = await stack.bot.app.store.get_operation(op_id=second_id)
        assert op is not None
        assert op.state is OpState.APPROVED
        assert _deletes_of(stack, SEED_VCO_HANGZHOU_BGP) == []

        await _restart(stack, clock)
        async with time_passes(clock):
            await stack.slack.state.wait_for(
                lambda: "by bot instance" in thread_text(stack.slack.state, second.ts),
                timeout=10,
                what="the new instance taking it up",
            )
            moment = clock.now()
            await stack.slack.state.wait_for(
                lambda: clock.now() > moment + timedelta(seconds=5), timeout=20, what="virtual time to pass"
            )
            assert _deletes_of(stack, SEED_VCO_HANGZHOU_BGP) == []
            assert _holds(stack, second.ts) == 1

            await _command(stack, CAROL, "unfreeze")
            await _announced(stack, "lifted the freeze")
            await stack.slack.state.wait_for(
                lambda: "Deleted in" in thread_text(stack.slack.state, second.ts),
                timeout=20,
                what="the deletion",
            )
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU_BGP)) == 1
        assert _holds(stack, second.ts) == 1
        done = await stack.bot.app.store.get_operation(op_id=second_id)
        assert done is not None
        assert done.state is OpState.DELETED
        assert done.held_at is None


async def test_a_freeze_that_ends_releases_what_it_held(sqlite_url: str) -> None:
    """A 1-minute freeze: the held deletion goes on by itself when the (virtual) minute is over."""
    clock = FakeClock()
    async with running(sqlite_url, clock, admins=[CAROL], delete_timeout_seconds=3600) as stack:
        _, second, second_id = await _one_held(stack, clock, "freeze 1m reason=maintenance")
        [freeze] = await stack.bot.app.workflow.active_freezes()
        async with time_passes(clock):
            await stack.slack.state.wait_for(
                lambda: _holds(stack, second.ts) == 1, timeout=10, what="the hold note"
            )
            assert clock.now() < freeze.until
            assert _deletes_of(stack, SEED_VCO_HANGZHOU_BGP) == []
            await stack.slack.state.wait_for(
                lambda: "Deleted in" in thread_text(stack.slack.state, second.ts),
                timeout=30,
                what="the deletion",
            )
        assert len(_deletes_of(stack, SEED_VCO_HANGZHOU_BGP)) == 1
        done = await stack.bot.app.store.get_operation(op_id=second_id)
        assert done is not None
        assert done.state is OpState.DELETED
        assert done.started_at is not None
        assert done.started_at >= freeze.until
        assert _holds(stack, second.ts) == 1
        assert await stack.bot.app.workflow.active_freezes() == []


async def test_a_freeze_and_its_lifting_are_announced_once_in_the_audit_channel(sqlite_url: str) -> None:
    """With VPNBOT_AUDIT_CHANNEL, /vpn freeze and /vpn unfreeze each get one line there (no card to link)."""
    audit = "C0AUDIT"
    async with running(sqlite_url, admins=[ADMINS], audit_channel=audit) as stack:
        state = stack.slack.state
        await _command(stack, BOB, f'freeze 2h reason="{EVIL_REASON}"')
        await _announced(stack, "froze VPN changes")
        frozen = await state.wait_for(
            lambda: next((m for m in state.messages(audit) if "frozen" in m.text), None),
            timeout=10,
            what="the freeze's audit line",
        )
        assert f"<@{BOB}>" in frozen.text
        assert "INC-42" in frozen.text
        assert "<!channel>" not in all_text(frozen)  # the person-typed reason is inert
        valid_block_kit(frozen)
        await _command(stack, BOB, "unfreeze")
        await state.wait_for(
            lambda: [m for m in state.messages(audit) if "unfrozen" in m.text] or None,
            timeout=10,
            what="the unfreeze's audit line",
        )
        # Each once: delivered by the outbox with its key, never again.
        lines = state.messages(audit)
        assert len([m for m in lines if " frozen" in m.text]) == 1, [m.text for m in lines]
        assert len([m for m in lines if "unfrozen" in m.text]) == 1, [m.text for m in lines]
