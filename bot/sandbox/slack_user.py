"""A fake Slack client side: sends signed slash commands and button clicks to a bot over HTTP.

Payloads follow Slack's wire format (form-encoded slash commands, ``payload=<JSON>`` for
block_actions) and are signed with slack_sdk's own :class:`SignatureVerifier`. Each request gets a
fresh ``response_url`` on the stand-in, and the bot's HTTP reply to a slash command is shown the
way Slack shows it (ephemeral unless ``response_type`` is ``in_channel``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack_api import Interaction, Message, StandinState

__all__ = ["HttpReply", "SlackUserAgent", "find_button"]


class HttpReply(NamedTuple):
    """The bot's HTTP answer to one request."""

    status: int
    body: str

    def json(self) -> Any:
        """Parse the body as JSON (an empty body is ``None``)."""
        return json.loads(self.body) if self.body.strip() else None


def find_button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]] | None:
    """Return (block_id, element) of the button with ``action_id`` in ``blocks``, if any."""
    for block in blocks:
        elements: list[dict[str, Any]] = list(block.get("elements", []))
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    return None


class SlackUserAgent:
    """Drives a bot's events endpoint as Slack does on behalf of people in the workspace."""

    def __init__(
        self,
        *,
        events_url: str,
        signing_secret: str,
        state: StandinState,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events_url = events_url
        self.state = state
        self._verifier = SignatureVerifier(signing_secret)
        self._clock = clock
        # trust_env=False: a developer's HTTP(S)_PROXY must not capture loopback traffic.
        self._http = httpx.AsyncClient(transport=transport, trust_env=False, timeout=10.0)

    def __repr__(self) -> str:
        return f"SlackUserAgent(events_url={self.events_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def __aenter__(self) -> SlackUserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def slash_command(
        self,
        user_id: str,
        channel_id: str,
        text: str,
        command: str = "/vpn",
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> HttpReply:
        """Send a slash command; ``timestamp``/``signature`` override the real ones to test rejection."""
        ws = self.state.workspace
        response_url = self.state.new_response_url(channel=channel_id, user=user_id)
        fields = {
            "token": ws.verification_token,
            "team_id": ws.team_id,
            "team_domain": ws.team_domain,
            "channel_id": channel_id,
            "channel_name": self.state.channel_name(channel_id),
            "user_id": user_id,
            "user_name": self.state.user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": ws.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self.state.new_trigger_id(),
        }
        ts = self.state.next_ts()
        reply = await self._post(urlencode(fields), timestamp=timestamp, signature=signature)
        self.state.record_interaction(
            Interaction(
                "slash_command", ts, user_id, channel_id, f"{command} {text}".strip(), status=reply.status
            )
        )
        if reply.status == 200:
            self.state.apply_command_ack(
                channel=channel_id, user=user_id, body=reply.body, response_url=response_url
            )
        return reply

    async def click(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        *,
        require_button: bool = True,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> HttpReply:
        """Click a button on a stored message; ``value`` defaults to the button's own value.

        A person can only click a button that is on the message, so a missing button raises
        LookupError unless ``require_button`` is False (to replay a click on a stale copy).
        """
        msg = self.state.message(channel_id, message_ts)
        if msg is None or msg.deleted or (msg.visible_to not in (None, user_id)):
            raise LookupError(f"{user_id} cannot see message {message_ts} in {channel_id}")
        found = find_button(msg.blocks, action_id)
        if found is None and require_button:
            raise LookupError(f"no button {action_id!r} on message {message_ts} in {channel_id}")
        block_id, element = found or ("", {"text": {"type": "plain_text", "text": action_id}})
        label = str(element.get("text", {}).get("text", action_id))
        action_ts = self.state.next_ts()
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id,
            "text": {"type": "plain_text", "text": label, "emoji": True},
            "value": value if value is not None else str(element.get("value", "")),
            "type": "button",
            "action_ts": action_ts,
        }
        if "style" in element:
            action["style"] = element["style"]
        payload = self._block_actions_payload(user_id, msg, action)
        reply = await self._post(
            urlencode({"payload": json.dumps(payload, separators=(",", ":"))}),
            timestamp=timestamp,
            signature=signature,
        )
        self.state.record_interaction(
            Interaction(
                "button", action_ts, user_id, channel_id, label, message_ts=message_ts, status=reply.status
            )
        )
        return reply

    def _block_actions_payload(self, user_id: str, msg: Message, action: dict[str, Any]) -> dict[str, Any]:
        ws = self.state.workspace
        name = self.state.user_name(user_id)
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user_id, "username": name, "name": name, "team_id": ws.team_id},
            "api_app_id": ws.app_id,
            "token": ws.verification_token,
            "container": {
                "type": "message",
                "message_ts": msg.ts,
                "channel_id": msg.channel,
                "is_ephemeral": msg.is_ephemeral,
            },
            "trigger_id": self.state.new_trigger_id(),
            "team": {"id": ws.team_id, "domain": ws.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": msg.channel, "name": self.state.channel_name(msg.channel)},
            "state": {"values": {}},
            "response_url": self.state.new_response_url(channel=msg.channel, user=user_id, message_ts=msg.ts),
            "actions": [action],
        }
        if msg.thread_ts:
            payload["container"]["thread_ts"] = msg.thread_ts
        if not msg.is_ephemeral:
            # Slack omits the message for ephemerals; for others it carries the blocks as posted.
            payload["message"] = msg.to_api()
        return payload

    async def _post(self, body: str, *, timestamp: int | None, signature: str | None) -> HttpReply:
        ts = str(timestamp if timestamp is not None else int(self._clock()))
        sig = signature or self._verifier.generate_signature(timestamp=ts, body=body) or ""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        response = await self._http.post(self.events_url, content=body.encode(), headers=headers)
        return HttpReply(response.status_code, response.text)
