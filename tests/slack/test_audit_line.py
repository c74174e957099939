"""The audit channel's line (bot/slack/blocks/audit_line.py): one per announced action, valid, inert."""

from __future__ import annotations

from dataclasses import replace

from slack_sdk.models.blocks import Block
from slackfakes import T0, make_op

from bot.domain import ANNOUNCED_ACTIONS, KIND_RECREATE, Announced
from bot.slack.blocks.audit_line import WORDING, build_audit_line

LINK = "https://vpn-demo.slack.com/archives/C0CHANNEL/p1700000000000100"


def _valid(message: dict[str, object]) -> None:
    assert message["text"]
    blocks = message["blocks"]
    assert isinstance(blocks, list)
    assert blocks
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()


def test_every_announced_action_and_an_unworded_one_get_a_valid_line() -> None:
    """ANNOUNCED_ACTIONS is the one table: an action added there without wording still gets a line."""
    op = make_op(reason="CHG-1 `rm` <!here>", ticket="CHG-1", account="prod")
    op = replace(op, connection=replace(op.connection, name="*x* <!channel>"))
    recreation = replace(op, kind=KIND_RECREATE, new_vco_id="vco-new1")
    for action in [*sorted(ANNOUNCED_ACTIONS), "freeze", "changed_since_approval"]:
        target = recreation if action.startswith("recreate") else op
        event = Announced(action=action, actor_id="U0BOB", at=T0, note="a *note* <!here>")
        message = build_audit_line(target, event, permalink=LINK)
        _valid(message)
        text = str(message["text"])
        assert "<!here>" not in text, text
        assert "<!channel>" not in text, text
        bare = action.removeprefix("recreate_")
        if bare in WORDING:
            assert WORDING[bare][1] in text
        else:
            assert bare.replace("_", " ") in text
        assert ("Recreation" if action.startswith("recreate") else "Deletion") in text
        assert "by <@U0BOB>" in text
        assert f"<{LINK}|Open the card>" in str(message["blocks"])


def test_a_line_without_an_operation_or_a_safe_link() -> None:
    """An action of no operation (a freeze, say) and a link that could break the mrkdwn."""
    event = Announced(action="freeze", actor_id="U0BOB", at=T0, note="until Monday")
    message = build_audit_line(None, event, permalink="https://evil.example/|x>")
    _valid(message)
    assert "freeze by <@U0BOB>" in str(message["text"])
    assert "evil" not in str(message["blocks"])
    system = build_audit_line(make_op(), replace(event, action="expired", actor_id="vpn-bot"), permalink=None)
    assert "by" not in str(system["text"]).split("expired")[1]
    assert "UTC" in str(system["blocks"])
