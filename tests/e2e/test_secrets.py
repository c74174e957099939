"""Secrets never leave the bot: not in Slack, not in an API call, not in a log line, even at DEBUG.

A full flow runs (a request, a refused click, an approval, a deletion, a failure with an Alibaba
error code) against the sandbox, whose connections carry real-looking pre-shared keys and BGP
AuthKeys. Then every Slack message (and every earlier version of it), every ephemeral, every
response_url post, every stand-in API call, every HTTP reply and every log line is searched for
the bot token, the signing secret, the AccessKey secret, each Psk and each BGP AuthKey.

Logging is checked twice:

- ``configured``: the production setup, ``configure_logging(level="DEBUG", secrets=...)``, which
  caps chatty libraries (slack_sdk, slack_bolt, httpx, httpcore, ...) at INFO and masks known
  secrets. Every line it writes, from any logger, is checked.
- ``unfiltered``: a plain handler at DEBUG on the root logger, no RedactingFilter, nothing capped.
  This proves our own code never logs a secret in the first place rather than relying on the
  filter. Our ``bot.*`` records are the point of it (and must include DEBUG ones). Library
  records are checked too, because today none leaks even at DEBUG (slack_sdk redacts the
  Authorization header; httpx logs no bodies). The choice if that ever changes: do not weaken
  the ``configured`` check; cap that library in ``configure_logging`` and narrow this
  unfiltered check to ``bot.*``, which is all our code is answerable for.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import asdict

import pytest

from bot.logs import configure_logging, secret_values
from bot.sandbox.local import LOCAL_BOT_TOKEN, LOCAL_SIGNING_SECRET, LocalStack
from bot.sandbox.slack_api import Message
from bot.sandbox.vpc import DEMO_ACCESS_KEY_SECRET
from bot.sandbox.vpc_state import SEED_VCO_HANGZHOU_BGP, SEED_VCO_HANGZHOU_TUNNELS
from bot.slack.block_ids import ActionId

from .conftest import ALICE, BOB, CAROL, CHANNEL
from .support import all_text as _all_text
from .support import local_stack, logging_restored


class _Records(logging.Handler):
    """Keep every record, unformatted and unfiltered."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a formatter could print from a record: message, args, extras, traceback."""
    exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
    return f"{record.getMessage()} {record.__dict__!r} {exc} {record.exc_text or ''}"


async def _wait_parent(stack: LocalStack, ts: str, needle: str) -> None:
    def done() -> bool:
        message = stack.slack.state.message(CHANNEL, ts)
        return message is not None and needle in _all_text(message)

    await stack.slack.state.wait_for(done, timeout=15, what=f"parent saying {needle!r}")


async def _confirmation(stack: LocalStack, vco_id: str) -> Message:
    def found() -> Message | None:
        return next(
            (
                m
                for m in stack.slack.state.messages(CHANNEL)
                if vco_id in _all_text(m) and any(b.get("type") == "actions" for b in m.blocks)
            ),
            None,
        )

    return await stack.slack.state.wait_for(found, timeout=10, what=f"confirmation for {vco_id}")


async def _run_flow(stack: LocalStack) -> list[str]:
    """Request, refused click, approval, deletion, then a failing deletion; return the HTTP replies."""
    replies: list[str] = []
    reply = await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_BGP}")
    replies.append(reply.body)
    first = await _confirmation(stack, SEED_VCO_HANGZHOU_BGP)
    replies.append((await stack.agent.click(CAROL, CHANNEL, first.ts, ActionId.APPROVE)).body)
    await stack.slack.state.wait_for(
        lambda: stack.slack.state.ephemerals(CAROL), timeout=5, what="refusal for carol"
    )
    replies.append((await stack.agent.click(BOB, CHANNEL, first.ts, ActionId.APPROVE)).body)
    await _wait_parent(stack, first.ts, "Deleted")

    stack.vpc.state.faults.add(action="DeleteVpnConnection", code="Forbidden.RAM", times=1)
    replies.append(
        (await stack.agent.slash_command(ALICE, CHANNEL, f"delete {SEED_VCO_HANGZHOU_TUNNELS}")).body
    )
    second = await _confirmation(stack, SEED_VCO_HANGZHOU_TUNNELS)
    replies.append((await stack.agent.click(BOB, CHANNEL, second.ts, ActionId.APPROVE)).body)
    await _wait_parent(stack, second.ts, "Forbidden.RAM")
    replies.append((await stack.agent.slash_command(BOB, CHANNEL, "history 20")).body)
    await stack.slack.state.wait_for(
        lambda: any("Last" in m.text for m in stack.slack.state.ephemerals(BOB)), timeout=5, what="history"
    )
    return replies


def _secrets(stack: LocalStack) -> dict[str, str]:
    """Every secret in play, by a name that says where it came from."""
    found = {
        "bot token": LOCAL_BOT_TOKEN,
        "signing secret": LOCAL_SIGNING_SECRET,
        "AccessKey secret": DEMO_ACCESS_KEY_SECRET,
    }
    for conn in stack.vpc.state.connections.values():
        # The sandbox answers with this value as IkeConfig.Psk and as each tunnel's Psk.
        found[f"Psk of {conn.id}"] = conn.psk
        if conn.bgp is not None:
            found[f"BGP AuthKey of {conn.id}"] = conn.bgp.auth_key
    assert all(len(v) >= 6 for v in found.values())
    assert any(name.startswith("BGP AuthKey") for name in found)
    return found


def _slack_side(stack: LocalStack, replies: list[str]) -> dict[str, str]:
    """Everything the bot sent towards Slack, by where it was seen."""
    state = stack.slack.state
    seen: dict[str, str] = {}
    for channel in state.channels:
        for message in state.all_messages(channel):
            where = f"{'ephemeral' if message.is_ephemeral else 'message'} {channel}/{message.ts}"
            seen[where] = _all_text(message)
            for i, old in enumerate(message.edits):
                seen[f"{where} (version {i})"] = json.dumps({"text": old.text, "blocks": list(old.blocks)})
    for i, post in enumerate(state.response_posts):
        seen[f"response_url post {i}"] = json.dumps(post.payload)
    for i, call in enumerate(state.api_calls):
        seen[f"API call {i} {call.method}"] = json.dumps(call.params, default=str)
    for i, body in enumerate(replies):
        seen[f"HTTP reply {i}"] = body
    return seen


def _stack(sqlite_url: str) -> contextlib.AbstractAsyncContextManager[LocalStack]:
    return local_stack(sqlite_url, update_seconds=0.3, settings={"approvers": [BOB]})


def _assert_clean(seen: dict[str, str], secrets: dict[str, str]) -> None:
    leaks = [
        (name, where) for where, text in seen.items() for name, value in secrets.items() if value in text
    ]
    assert leaks == []


@pytest.mark.parametrize("mode", ["configured", "unfiltered"])
async def test_no_secret_reaches_slack_or_the_logs(sqlite_url: str, mode: str) -> None:
    with logging_restored():
        stream = io.StringIO()
        collector = _Records()
        root = logging.getLogger()
        async with _stack(sqlite_url) as stack:
            secrets = _secrets(stack)  # read now: a deleted connection leaves the sandbox
            if mode == "configured":
                configure_logging(
                    level="DEBUG", fmt="json", secrets=secret_values(stack.settings), stream=stream
                )
            else:
                for handler in list(root.handlers):
                    root.removeHandler(handler)
                root.addHandler(collector)
                root.setLevel(logging.DEBUG)
            replies = await _run_flow(stack)

    seen = _slack_side(stack, replies)
    assert any("Forbidden.RAM" in text for text in seen.values())  # the failure really happened
    _assert_clean(seen, secrets)

    if mode == "configured":
        lines = stream.getvalue().splitlines()
        assert any('"logger": "bot.' in line for line in lines)  # DEBUG really reached our loggers
        _assert_clean({f"log line {i}": line for i, line in enumerate(lines)}, secrets)
    else:
        ours = [r for r in collector.records if r.name == "bot" or r.name.startswith("bot.")]
        assert any(r.levelno == logging.DEBUG for r in ours)  # DEBUG really reached our loggers
        assert any("op_id" in r.__dict__ for r in ours)
        assert any(r.name.startswith("slack_sdk") for r in collector.records)  # libraries were uncapped
        records = {f"{r.name} record {i}": _record_text(r) for i, r in enumerate(collector.records)}
        _assert_clean(records, secrets)


async def test_records_and_settings_never_show_secrets(sqlite_url: str) -> None:
    """The stored operations, the audit trail and the settings' repr hold no secret either."""
    async with _stack(sqlite_url) as stack:
        secrets = _secrets(stack)
        await _run_flow(stack)
        ops = await stack.bot.app.store.list_operations()
        audit = await stack.bot.app.store.recent_audit(limit=100)
    assert len(ops) == 2
    seen = {f"operation {op.id}": f"{op!r} {op} {asdict(op)}" for op in ops}
    seen |= {f"audit {i}": repr(entry) for i, entry in enumerate(audit)}
    seen["settings"] = f"{stack.settings!r} {stack.settings} {stack.settings.model_dump()}"
    _assert_clean(seen, secrets)
