"""Names from the cloud are inert in every message, modal and Home view: property-based over any name.

A connection or gateway may be named with Slack's formatting characters (``*bold*``, ``_it_``,
``~strike~``, backticks and fences, ``> quote``, ``:emoji:``, ``<!channel>``). Whatever the name,
each builder's mrkdwn must carry exactly the formatting the bot itself wrote: the same markup as
for a plain name, with the name inside code spans it cannot close. And every payload must still
be valid Block Kit by slack_sdk's own models, with names at Alibaba's 128-character limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block, Option
from slack_sdk.models.views import View
from slackfakes import T0, make_op

from bot.domain import (
    KIND_RECREATE,
    Announced,
    Operation,
    OpState,
    Snapshot,
    SnapshotRoute,
    SnapshotTaken,
    VpnGateway,
)
from bot.slack.blocks import (
    build_confirmation,
    build_parent,
    build_recreate_modal,
    build_thread_reply,
    code,
    inert_name,
)
from bot.slack.blocks.audit_line import build_audit_line
from bot.slack.blocks.find import build_connection_status, build_list_page, build_operation_status
from bot.slack.blocks.views import build_connection_options, build_home
from bot.slack.inventory import ConnectionRow
from bot.slack.parsing import ListPage

NAME_MAX = 128  # Alibaba: connection and gateway names are at most 128 characters
PLAIN = "office-tunnel"
HOSTILE = "*_~`>:&<!@#|\n\r\u2028 "

DELETE_STATES = (
    OpState.AWAITING_APPROVAL,
    OpState.APPROVED,
    OpState.DELETING,
    OpState.WAITING_GATEWAY,
    OpState.VERIFYING,
    OpState.DELETED,
    OpState.FAILED,
    OpState.TIMED_OUT,
    OpState.CANCELLED,
    OpState.EXPIRED,
)
RECREATE_STATES = (
    OpState.AWAITING_APPROVAL,
    OpState.APPROVED,
    OpState.CREATING,
    OpState.WAITING_GATEWAY,
    OpState.ROUTING,
    OpState.RECREATED,
    OpState.FAILED,
    OpState.TIMED_OUT,
    OpState.CANCELLED,
    OpState.EXPIRED,
)

# Names: any text up to 128 characters, weighted towards Slack's formatting characters.
names = st.text(
    alphabet=st.one_of(st.sampled_from(HOSTILE), st.characters(codec="utf-8")),
    min_size=1,
    max_size=NAME_MAX,
).filter(lambda s: s.strip())


# --- what Slack would read as formatting -----------------------------------------------------------

_CODE_RE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)
_EMOJI_RE = re.compile(r":[a-z0-9_+'-]+:")
_ANGLE_RE = re.compile(r"<[^>]*>")


def markup(mrkdwn: str) -> list[str]:
    """The formatting outside code spans in ``mrkdwn``: every emoji, link or mention, ``*``, ``_``,
    ``~`` and line-start quote, in order. Fails on a stray backtick (a span left open or closed early).

    How many spans there are is not compared: a subnet list splits a name at its commas, each part
    in its own span."""
    tokens: list[str] = []
    for i, part in enumerate(_CODE_RE.split(mrkdwn)):
        if i % 2:
            continue
        assert "`" not in part, f"a backtick outside a code span: {mrkdwn!r}"
        for line_no, line in enumerate(part.split("\n")):
            if line_no and (line.startswith(("&gt;", ">"))):
                tokens.append("quote")
            tokens += [f"<{m[1:3]}" for m in _ANGLE_RE.findall(line)]
            tokens += ["emoji" for _ in _EMOJI_RE.findall(line)]
            line = _ANGLE_RE.sub("", _EMOJI_RE.sub("", line))
            tokens += [c for c in line if c in "*_~<>"]
    return tokens


def mrkdwn_texts(payload: Any) -> Iterator[str]:
    """Every text Slack parses as mrkdwn: a message's fallback ``text`` and every mrkdwn object."""
    if isinstance(payload, dict):
        if payload.get("type") == "mrkdwn" or ("blocks" in payload and isinstance(payload.get("text"), str)):
            yield payload["text"]
        for value in payload.values():
            yield from mrkdwn_texts(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from mrkdwn_texts(item)


# --- every builder that shows a name ------------------------------------------------------------------


def _snapshot(name: str) -> Snapshot:
    return Snapshot(
        vco_id="vco-bp1abc2def3gh",
        region="cn-hangzhou",
        name=name,
        gateway_id="vpn-bp1gw0001",
        customer_gateway_id="cgw-bp1cgw0001",
        local_subnet="10.0.0.0/24",
        remote_subnet="192.168.0.0/16",
        config={"name": name, "vpn_gateway_id": "vpn-bp1gw0001", "ike_config": {"ike_version": "ikev2"}},
        routes=(SnapshotRoute(kind="custom", destination="192.168.10.0/24"),),
    )


def _decided(op: Operation, state: OpState) -> Operation:
    return replace(
        op,
        state=state,
        approver_id="U0APPROVER",
        approved_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=40),
        cancelled_by="U0CANCEL" if state is OpState.CANCELLED else None,
        error_code="Forbidden" if state is OpState.FAILED else None,
        new_vco_id="vco-bp1new0000000001" if state is OpState.RECREATED else None,
        undo_until=T0 + timedelta(hours=1) if state is OpState.DELETED else None,
    )


def renderings(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(what, kind, payload) for every message, modal and Home view that can show ``name``."""
    base = make_op()
    op = replace(
        base,
        connection=replace(base.connection, name=name, local_subnet=name, remote_subnet=f"10.0.0.0/8,{name}"),
        gateway=VpnGateway(id="vpn-bp1gw0001", region="cn-hangzhou", name=name, status=name),
        snapshot=_snapshot(name),
    )
    recreation = replace(op, kind=KIND_RECREATE, parent_op_id="op-0", thread_ts="1700000000.000001")
    row = ConnectionRow(
        id="vco-bp1abc2def3gh",
        name=name,
        gateway_id="vpn-bp1gw0001",
        status=name,
        remote_subnet=name,
        local_subnet=name,
        tunnels=(name, "ipsec_sa_established"),
    )
    gateway = VpnGateway("vpn-bp1gw0001", "cn-hangzhou", name, name, name)
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("confirmation", "message", build_confirmation(op)),
        ("recreation confirmation", "message", build_confirmation(recreation)),
        ("recreate modal", "view", build_recreate_modal(_decided(op, OpState.DELETED))),
        ("snapshot reply", "message", build_thread_reply(SnapshotTaken(snapshot=_snapshot(name)))),
        (
            "home",
            "view",
            build_home(
                pending=[op],
                running=[_decided(op, OpState.DELETING), _decided(recreation, OpState.ROUTING)],
                finished=[_decided(op, OpState.DELETED)],
                links={},
                now=T0,
            ),
        ),
        ("list page", "message", build_list_page([row], ListPage(r="cn-hangzhou", p=0), total=1)),
        (
            "status",
            "message",
            build_connection_status(row, gateway, region="cn-hangzhou", routes=3, account="prod"),
        ),
        ("operation status", "message", build_operation_status(op, permalink=None, now=T0)),
        (
            "audit line",
            "message",
            build_audit_line(
                op, Announced(action="cancelled", actor_id="U0BOB", at=T0, note=name), permalink=None
            ),
        ),
    ]
    out += [(f"card {s.value}", "message", build_parent(_decided(op, s), now=T0)) for s in DELETE_STATES]
    out += [
        (f"recreation card {s.value}", "message", build_parent(_decided(recreation, s), now=T0))
        for s in RECREATE_STATES
    ]
    return out


def _headers_keep_emoji_codes(payload: dict[str, Any]) -> None:
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert block["text"]["emoji"] is False  # a name ":boom:" stays text in plain_text too


def _valid(kind: str, payload: dict[str, Any]) -> None:
    _headers_keep_emoji_codes(payload)
    if kind == "view":
        View(**payload).validate_json()
        return
    assert payload["text"].strip()
    assert len(payload["blocks"]) <= 50
    for raw in payload["blocks"]:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()


# --- the properties -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(name=names)
@example(name="*" * NAME_MAX)
@example(name="`" * NAME_MAX)
@example(name="```" + "x" * (NAME_MAX - 6) + "```")
@example(name="_italic_ *bold* ~strike~ `code` :boom:")
@example(name="x\n&gt; quoted\n> quoted")
@example(name="<!channel> <@U0BOB> <https://evil|click>")
@example(name="vco-" + "a" * (NAME_MAX - 4))
def test_a_name_adds_no_formatting_anywhere(name: str) -> None:
    """Whatever the name, each payload is valid and its mrkdwn has the markup a plain name gives."""
    plain = renderings(PLAIN)
    hostile = renderings(name)
    assert [what for what, _, _ in hostile] == [what for what, _, _ in plain]
    for (what, kind, payload), (_, _, expected) in zip(hostile, plain, strict=True):
        _valid(kind, payload)
        got = [markup(text) for text in mrkdwn_texts(payload)]
        want = [markup(text) for text in mrkdwn_texts(expected)]
        assert got == want, f"{what}: the name {name!r} changed the formatting"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_code_is_one_span_the_text_cannot_close(text: str) -> None:
    rendered = code(text, NAME_MAX)
    if not text.strip():
        assert rendered == "—"
        return
    assert rendered.startswith("`")
    assert rendered.endswith("`")
    inner = rendered[1:-1]
    assert "`" not in inner
    assert "\n" not in inner
    assert "<" not in inner
    assert ">" not in inner
    assert len(inner.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")) <= NAME_MAX


def test_a_128_character_name_is_shown_whole_and_ids_copy_exactly() -> None:
    name = "n" * NAME_MAX
    assert inert_name(name) == f"`{name}`"
    assert code("vco-bp1abc2def3gh") == "`vco-bp1abc2def3gh`"
    fields = "\n".join(
        f["text"]
        for b in build_confirmation(replace(make_op(), connection=replace(make_op().connection, name=name)))[
            "blocks"
        ]
        for f in b.get("fields", [])
    )
    assert f"`{name}`" in fields


def test_options_show_hostile_names_as_plain_text_within_slacks_limit() -> None:
    row = ConnectionRow("vco-bp1abc2def3gh", "*x* `y` " + "n" * 120, "vpn-bp1gw0001", "", "")
    options = build_connection_options([row])["options"]
    for raw in options:
        assert raw["text"]["type"] == "plain_text"
        Option(text=raw["text"]["text"], value=raw["value"]).validate_json()
