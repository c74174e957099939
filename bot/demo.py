"""``vpn-bot demo``: the whole flow on one machine, no Slack workspace and no cloud account.

The real bot serves HTTP on loopback; the VPC sandbox plays Alibaba Cloud and the Slack
stand-in plays Slack. A scripted conversation drives it through Slack-signed requests, and the
channel is printed as a person would see it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from bot.sandbox.local import LocalStack, start_local_stack
from bot.sandbox.slack import render_message, render_timeline
from bot.sandbox.slack_api import Message
from bot.sandbox.slack_user import selected_option
from bot.sandbox.vpc_state import (
    SEED_VCO_HANGZHOU,
    SEED_VCO_HANGZHOU_BGP,
    SEED_VCO_HANGZHOU_GW2,
    SEED_VCO_HANGZHOU_TUNNELS,
    SEED_VCO_LOCKED,
    SEED_VCO_SHANGHAI,
    SEED_VPN_HANGZHOU,
    Route,
)
from bot.slack.block_ids import ActionId, BlockId

__all__ = ["RULE", "run_demo"]

CHANNEL = "C0VPNOPS"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
STEP_TIMEOUT = 20.0
# The demo's second user group (the stand-in's workspace has @network-admins, S0NETADM, with @bob).
SECURITY = "S0SECURITY"
# The channel's timeline is printed between two of these (tests/test_readme.py reads it there).
RULE = "─" * 72


def _has_buttons(message: Message) -> bool:
    return any(block.get("type") == "actions" for block in message.blocks)


async def _confirmation_for(stack: LocalStack, vco_id: str) -> Message:
    def found() -> Message | None:
        for message in stack.slack.state.messages(CHANNEL):
            if _has_buttons(message) and vco_id in message.text + str(message.blocks):
                return message
        return None

    result: Message | None = await stack.slack.state.wait_for(
        found, timeout=STEP_TIMEOUT, what=f"confirmation of {vco_id}"
    )
    assert result is not None  # noqa: S101 - wait_for returns only a truthy result
    return result


async def _until_final(stack: LocalStack, ts: str) -> None:
    async def final() -> bool:
        ops = await stack.bot.app.store.list_operations()
        return any(op.message_ts == ts and op.is_terminal for op in ops)

    finished: bool = await stack.slack.state.wait_for(
        final, timeout=STEP_TIMEOUT, what="the operation to finish"
    )
    assert finished  # noqa: S101 - wait_for returns only a truthy result
    # The parent is updated right after the final state is stored.
    await stack.bot.app.workflow.wait_idle()


async def _script(stack: LocalStack, out: TextIO) -> None:
    say = out.write
    say("1. @alice asks to delete a connection; @bob (an approver) approves it.\n")
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU} cn-hangzhou")
    first = await _confirmation_for(stack, SEED_VCO_HANGZHOU)
    await stack.agent.click(BOB, CHANNEL, first.ts, ActionId.APPROVE)
    await _until_final(stack, first.ts)

    say("2. It was the wrong one: @alice clicks Recreate…, types a new pre-shared key; @bob approves.\n")
    await _recreate(stack, first.ts)

    say("3. @carol, who is not an approver, clicks Delete on another request: refused.\n")
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_GW2}")
    second = await _confirmation_for(stack, SEED_VCO_HANGZHOU_GW2)
    await stack.agent.click(CAROL, CHANNEL, second.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: stack.slack.state.ephemerals(CAROL), timeout=STEP_TIMEOUT, what="the refusal"
    )
    await _deny(stack, second.ts, "Not this one: it still carries traffic.")
    await _until_final(stack, second.ts)

    say("4. A gateway whose account is in arrears: Alibaba Cloud refuses, the bot explains.\n")
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_LOCKED}")
    third = await _confirmation_for(stack, SEED_VCO_LOCKED)
    await stack.agent.click(BOB, CHANNEL, third.ts, ActionId.APPROVE)
    await _until_final(stack, third.ts)

    say("5. A typo gets a usage reply, only for the person who typed it.\n")
    await _ephemeral_after(stack, ALICE, "delete vpn-123", "Usage", what="the usage reply")

    say("6. @alice reads the audit trail with /vpn history.\n")
    await _ephemeral_after(stack, ALICE, "history 5", "Last ", what="the history")

    say("7. @alice finds connections from Slack: /vpn list with a filter word.\n")
    await _ephemeral_after(stack, ALICE, "list cn-hangzhou staging", "staging-lab", what="the list")

    say("8. /vpn delete with no id opens a picker; @alice types 'staging', picks it, submits.\n")
    await _pick(stack, "staging")
    picked = await _confirmation_for(stack, SEED_VCO_HANGZHOU_GW2)
    await _deny(stack, picked.ts, None)
    await _until_final(stack, picked.ts)

    say("9. cn-shanghai takes two approvals, one from @network-admins and one from @security:\n")
    say("   @bob approves (the card shows 1 of 2), @carol adds the second and the deletion starts.\n")
    await _two_person_approval(stack)

    say(
        "10. A blocked stale approval: @bob approves deleting idc-shenzhen-bgp while another deletion holds its\n"
        "   gateway; before its turn, someone adds a route through it. Read again just before the delete,\n"
        "   it is not what was approved: nothing is deleted, the card shows what changed and asks again;\n"
        "   @bob approves the new preview and it is deleted.\n"
    )
    await _stale_approval(stack)


async def _two_person_approval(stack: LocalStack) -> None:
    """VPNBOT_APPROVAL_RULES=cn-shanghai=S0NETADM+S0SECURITY: @bob, then @carol, approve one deletion."""
    state = stack.slack.state
    state.set_usergroup(SECURITY, [CAROL], handle="security")
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_SHANGHAI} cn-shanghai")
    card = await _confirmation_for(stack, SEED_VCO_SHANGHAI)
    await stack.agent.click(BOB, CHANNEL, card.ts, ActionId.APPROVE)

    def counted() -> bool:
        message = state.message(CHANNEL, card.ts)
        return message is not None and "1 of 2 approvals" in json.dumps(message.blocks)

    await state.wait_for(counted, timeout=STEP_TIMEOUT, what="the card counting @bob's approval")
    await stack.agent.click(CAROL, CHANNEL, card.ts, ActionId.APPROVE)
    await _until_final(stack, card.ts)


async def _stale_approval(stack: LocalStack) -> None:
    """Scene 10: an approval queued behind another deletion goes stale; the bot asks again, then deletes."""
    vpc = stack.vpc.state
    gateway = vpc.gateways[SEED_VPN_HANGZHOU]

    def idle() -> bool:
        vpc.settle()
        return gateway.status == "active"

    await stack.slack.state.wait_for(idle, timeout=STEP_TIMEOUT, what="the gateway idle")
    # The sandbox keeps the gateway updating after each delete until released below, so the
    # second deletion surely waits its turn however slow this machine is.
    vpc.update_seconds = 3600.0
    sent = len(vpc.accepted("DeleteVpnConnection"))
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_TUNNELS}")
    holder = await _confirmation_for(stack, SEED_VCO_HANGZHOU_TUNNELS)
    await stack.agent.click(BOB, CHANNEL, holder.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: len(vpc.accepted("DeleteVpnConnection")) > sent, timeout=STEP_TIMEOUT, what="the first delete"
    )
    # Its "Request accepted" reply before the next command, so the timeline reads the same every run.
    await stack.slack.state.wait_for(
        lambda: any("Request accepted" in m.text for m in stack.slack.state.thread(CHANNEL, holder.ts)),
        timeout=STEP_TIMEOUT,
        what="the first delete's reply",
    )
    await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_BGP}")
    stale = await _confirmation_for(stack, SEED_VCO_HANGZHOU_BGP)
    await stack.agent.click(BOB, CHANNEL, stale.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: any("Waiting for" in m.text for m in stack.slack.state.thread(CHANNEL, stale.ts)),
        timeout=STEP_TIMEOUT,
        what="the approved deletion waiting its turn",
    )
    await stack.slack.state.wait_for(
        lambda: any("is updating" in m.text for m in stack.slack.state.thread(CHANNEL, holder.ts)),
        timeout=STEP_TIMEOUT,
        what="the first deletion under way",
    )
    vpc.routes.append(Route(SEED_VPN_HANGZHOU, "10.2.0.0/16", SEED_VCO_HANGZHOU_BGP))
    gateway.updating_until = vpc.clock()
    await _until_final(stack, holder.ts)

    def asked_again() -> Message | None:
        message = stack.slack.state.message(CHANNEL, stale.ts)
        changed = message is not None and any(b.get("block_id") == BlockId.CHANGED for b in message.blocks)
        return message if changed and message is not None and _has_buttons(message) else None

    await stack.slack.state.wait_for(asked_again, timeout=STEP_TIMEOUT, what="the card asking again")
    await stack.bot.app.workflow.wait_idle()
    await stack.agent.click(BOB, CHANNEL, stale.ts, ActionId.APPROVE)
    await stack.slack.state.wait_for(
        lambda: any("is updating" in m.text for m in stack.slack.state.thread(CHANNEL, stale.ts)),
        timeout=STEP_TIMEOUT,
        what="the deletion under way",
    )
    vpc.update_seconds = 2.0
    gateway.updating_until = vpc.clock()
    await _until_final(stack, stale.ts)


async def _site_decommission(stack: LocalStack, out: TextIO) -> Message:
    """Scene 11: a batch of 3 connections on 2 gateways, one card, one approval; return the card as it ends.

    Its deletions run side by side (one per gateway at a time), so their thread replies interleave
    differently from run to run: the demo prints the card as it ended, not its timeline.
    """
    out.write(
        "11. A site closes: @alice asks for its 3 connections on 2 gateways at once; @bob approves once.\n"
    )
    # The site's own connections (the seeded ones were used by the steps before).
    site = tuple(stack.vpc.state.seed_connections("cn-hangzhou", 3, per_gateway=2))
    await _gateways_idle(stack)
    await stack.agent.slash_command(ALICE, CHANNEL, "delete " + " ".join(site))
    batch = await _confirmation_for(stack, site[0])
    await stack.agent.click(BOB, CHANNEL, batch.ts, ActionId.BATCH_APPROVE)
    await _until_batch_final(stack, batch.ts, len(site))
    card = stack.slack.state.message(CHANNEL, batch.ts)
    assert card is not None  # noqa: S101 - it was just found
    return card


async def _gateways_idle(stack: LocalStack) -> None:
    """Wait until the recreation's last route is applied: every gateway ``active`` (a steady story)."""
    vpc = stack.vpc.state

    def idle() -> bool:
        vpc.settle()
        return all(gw.status == "active" for gw in vpc.gateways.values())

    await stack.slack.state.wait_for(idle, timeout=STEP_TIMEOUT, what="the gateways to be active")


async def _until_batch_final(stack: LocalStack, ts: str, count: int) -> None:
    async def final() -> bool:
        ops = [op for op in await stack.bot.app.store.list_operations() if op.message_ts == ts]
        return len(ops) == count and all(op.is_terminal for op in ops)

    finished: bool = await stack.slack.state.wait_for(
        final, timeout=3 * STEP_TIMEOUT, what="the batch to finish"
    )
    assert finished  # noqa: S101 - wait_for returns only a truthy result
    await stack.bot.app.workflow.wait_idle()


async def _deny(stack: LocalStack, ts: str, reason: str | None) -> None:
    """@alice clicks Cancel on ``ts`` and submits the modal it opens, with ``reason`` (None: left empty)."""
    state = stack.slack.state
    before = set(state.views)
    await stack.agent.click(ALICE, CHANNEL, ts, ActionId.CANCEL)

    def opened() -> dict[str, Any]:
        return next((v for k, v in state.views.items() if k not in before), {})

    view: dict[str, Any] = await state.wait_for(opened, timeout=STEP_TIMEOUT, what="the Cancel modal")
    values: dict[str, dict[str, Any]] = {}
    if reason is not None:
        typed = {"type": "plain_text_input", "value": reason}
        values = {BlockId.CANCEL_REASON: {ActionId.CANCEL_REASON: typed}}
    await stack.agent.submit(ALICE, view["id"], values)


async def _recreate(stack: LocalStack, ts: str) -> None:
    """Recreate… on the deleted card ``ts``, a key in the modal, the confirmation in the thread, approve."""
    state = stack.slack.state
    before = set(state.views)
    await stack.agent.click(ALICE, CHANNEL, ts, ActionId.RECREATE_OPEN)

    def opened() -> dict[str, Any]:
        return next((v for k, v in state.views.items() if k not in before), {})

    view: dict[str, Any] = await state.wait_for(opened, timeout=STEP_TIMEOUT, what="the Recreate modal")
    typed = {"type": "plain_text_input", "value": "demo-Key_only-in-memory"}
    await stack.agent.submit(ALICE, view["id"], {BlockId.RECREATE_PSK: {ActionId.RECREATE_PSK: typed}})

    def confirmation() -> Message | None:
        return next((m for m in state.thread(CHANNEL, ts) if _has_buttons(m)), None)

    posted: Message | None = await state.wait_for(
        confirmation, timeout=STEP_TIMEOUT, what="the recreate confirmation"
    )
    assert posted is not None  # noqa: S101 - wait_for returns only a truthy result
    await stack.agent.click(BOB, CHANNEL, posted.ts, ActionId.APPROVE)
    await _until_final(stack, posted.ts)


async def _pick(stack: LocalStack, typed: str) -> None:
    """Open the picker, type ``typed`` in the connection field, take the first match and submit."""
    state = stack.slack.state
    await stack.agent.slash_command(ALICE, CHANNEL, "delete")

    def opened() -> dict[str, Any]:
        return next(iter(state.views.values()), {})  # empty (falsy) until the modal is open

    view: dict[str, Any] = await state.wait_for(opened, timeout=STEP_TIMEOUT, what="the picker")
    found = await stack.agent.suggest(ALICE, view["id"], ActionId.PICK_CONNECTION, typed)
    option = found.json()["options"][0]
    values: dict[str, dict[str, Any]] = {
        BlockId.PICK_REGION: {ActionId.PICK_REGION: selected_option({"text": {}, "value": "cn-hangzhou"})},
        BlockId.PICK_CONNECTION: {ActionId.PICK_CONNECTION: selected_option(option, "external_select")},
    }
    await stack.agent.submit(ALICE, view["id"], values)


async def _ephemeral_after(stack: LocalStack, user: str, command: str, marker: str, *, what: str) -> None:
    """Run ``command`` as ``user`` and wait for the ephemeral answer containing ``marker``."""
    before = len(stack.slack.state.ephemerals(user))
    await stack.agent.slash_command(user, CHANNEL, command)

    def answered() -> bool:
        return any(
            marker in m.text or marker in json.dumps(m.blocks)
            for m in stack.slack.state.ephemerals(user)[before:]
        )

    await stack.slack.state.wait_for(answered, timeout=STEP_TIMEOUT, what=what)


async def run_demo(out: TextIO | None = None) -> int:
    """Run the scripted conversation and print the channel; return 0 when every step happened."""
    out = out or sys.stdout
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vpn-bot-demo-") as tmp:
        stack = await start_local_stack(
            database_url=f"sqlite:///{Path(tmp) / 'demo.db'}",
            update_seconds=2.0,
            settings={
                "approvers": [BOB],
                "poll_interval_seconds": 0.5,
                "approval_rules": f"cn-shanghai=S0NETADM+{SECURITY}",
            },
        )
        try:
            out.write("vpn-bot demo: the real bot on loopback, a local VPC sandbox and a Slack stand-in.\n\n")
            await _script(stack, out)
            timeline = render_timeline(stack.slack.state, CHANNEL)
            batch = await _site_decommission(stack, out)
        except TimeoutError as exc:
            out.write(f"\nThe demo stopped: {exc}\n")
            out.write(render_timeline(stack.slack.state, CHANNEL))
            return 1
        finally:
            await stack.aclose()
        out.write(
            "\nWhat people saw in steps 1-10, in the order it happened (an edit shows only the lines that "
            "changed):\n"
        )
        out.write(f"{RULE}\n{timeline}{RULE}\n")
        out.write("Step 11's card as it ended (each connection's progress is in its thread):\n")
        out.write("".join(f"  {line}\n" for line in render_message(batch, stack.slack.state)))
        out.write(f"Done in {time.monotonic() - started:.1f} s. Nothing left this machine.\n")
    return 0
