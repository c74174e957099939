"""A fake Slack client side: sends slash commands and button clicks to a bot, as Slack does.

Two transports, one set of payloads (the ``*_payload`` functions below):

- :class:`SlackUserAgent` posts them over HTTP in Slack's wire format (form-encoded slash
  commands, ``payload=<JSON>`` for block_actions), signed with slack_sdk's own
  :class:`SignatureVerifier`;
- :class:`SocketModeUser` delivers them as Socket Mode envelopes through the stand-in's WebSocket
  (:mod:`bot.sandbox.slack_socket`) to a bot connected with ``apps.connections.open``.

Each request gets a fresh ``response_url`` on the stand-in, and the bot's reply to a slash command
(HTTP body or ack payload) is shown the way Slack shows it (ephemeral unless ``in_channel``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack_api import Interaction, Message, StandinState
from bot.sandbox.slack_socket import ACK_TIMEOUT_SECONDS, SocketAck

__all__ = [
    "HttpReply",
    "SlackUserAgent",
    "SocketModeUser",
    "app_home_opened_payload",
    "block_actions_payload",
    "block_suggestion_payload",
    "button_action",
    "clickable_message",
    "find_button",
    "selected_option",
    "slash_command_payload",
    "view_submission_payload",
]


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


def slash_command_payload(
    state: StandinState, *, user_id: str, channel_id: str, text: str, command: str, response_url: str
) -> dict[str, str]:
    """Return the fields Slack sends for a slash command (form fields over HTTP, JSON over a socket)."""
    ws = state.workspace
    return {
        "token": ws.verification_token,
        "team_id": ws.team_id,
        "team_domain": ws.team_domain,
        "channel_id": channel_id,
        "channel_name": state.channel_name(channel_id),
        "user_id": user_id,
        "user_name": state.user_name(user_id),
        "command": command,
        "text": text,
        "api_app_id": ws.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": state.new_trigger_id(),
    }


def clickable_message(state: StandinState, user_id: str, channel_id: str, message_ts: str) -> Message:
    """Return the message ``user_id`` sees at ``message_ts``; LookupError if they cannot see it."""
    msg = state.message(channel_id, message_ts)
    if msg is None or msg.deleted or (msg.visible_to not in (None, user_id)):
        raise LookupError(f"{user_id} cannot see message {message_ts} in {channel_id}")
    return msg


def button_action(
    state: StandinState, msg: Message, action_id: str, value: str | None, *, require_button: bool
) -> tuple[str, dict[str, Any]]:
    """Return (button label, the ``actions[]`` item Slack sends) for a click on ``msg``.

    A person can only click a button that is on the message, so a missing button raises
    LookupError unless ``require_button`` is False (to replay a click on a stale copy).
    """
    found = find_button(msg.blocks, action_id)
    if found is None and require_button:
        raise LookupError(f"no button {action_id!r} on message {msg.ts} in {msg.channel}")
    block_id, element = found or ("", {"text": {"type": "plain_text", "text": action_id}})
    label = str(element.get("text", {}).get("text", action_id))
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value if value is not None else str(element.get("value", "")),
        "type": "button",
        "action_ts": state.next_ts(),
    }
    if "style" in element:
        action["style"] = element["style"]
    return label, action


def block_actions_payload(
    state: StandinState, user_id: str, msg: Message, action: dict[str, Any]
) -> dict[str, Any]:
    """Return the block_actions payload Slack sends when ``user_id`` clicks ``action`` on ``msg``."""
    ws = state.workspace
    name = state.user_name(user_id)
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
        "trigger_id": state.new_trigger_id(),
        "team": {"id": ws.team_id, "domain": ws.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": msg.channel, "name": state.channel_name(msg.channel)},
        "state": {"values": {}},
        "response_url": state.new_response_url(channel=msg.channel, user=user_id, message_ts=msg.ts),
        "actions": [action],
    }
    if msg.thread_ts:
        payload["container"]["thread_ts"] = msg.thread_ts
    if not msg.is_ephemeral:
        # Slack omits the message for ephemerals; for others it carries the blocks as posted.
        payload["message"] = msg.to_api()
    return payload


def _user(state: StandinState, user_id: str) -> dict[str, Any]:
    name = state.user_name(user_id)
    return {"id": user_id, "username": name, "name": name, "team_id": state.workspace.team_id}


def _open_view(state: StandinState, view_id: str) -> dict[str, Any]:
    view = state.views.get(view_id)
    if view is None:
        raise LookupError(f"no open view {view_id}")
    return view


def selected_option(option: dict[str, Any], kind: str = "static_select") -> dict[str, Any]:
    """Return a select's entry in ``view.state.values`` once ``option`` is chosen."""
    return {"type": kind, "selected_option": option}


def block_suggestion_payload(
    state: StandinState,
    user_id: str,
    view: dict[str, Any],
    action_id: str,
    value: str,
    values: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the block_suggestion Slack sends while ``user_id`` types ``value`` in an external select.

    ``values`` is what the other inputs hold so far (Slack sends them in ``view.state.values``).
    """
    ws = state.workspace
    block_id = next(
        (
            str(b.get("block_id", ""))
            for b in view.get("blocks", [])
            if isinstance(b.get("element"), dict) and b["element"].get("action_id") == action_id
        ),
        "",
    )
    return {
        "type": "block_suggestion",
        "user": _user(state, user_id),
        "container": {"type": "view", "view_id": view.get("id", "")},
        "api_app_id": ws.app_id,
        "token": ws.verification_token,
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "team": {"id": ws.team_id, "domain": ws.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": {**view, "state": {"values": values or {}}},
    }


def view_submission_payload(
    state: StandinState, user_id: str, view: dict[str, Any], values: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Return the view_submission Slack sends when ``user_id`` submits ``view`` with ``values``."""
    ws = state.workspace
    return {
        "type": "view_submission",
        "team": {"id": ws.team_id, "domain": ws.team_domain},
        "user": _user(state, user_id),
        "api_app_id": ws.app_id,
        "token": ws.verification_token,
        "trigger_id": state.new_trigger_id(),
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "enterprise": None,
        "is_enterprise_install": False,
    }


def app_home_opened_payload(state: StandinState, user_id: str) -> dict[str, Any]:
    """Return the Events API body Slack sends when ``user_id`` opens the app's Home tab."""
    ws = state.workspace
    ts = state.next_ts()
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": f"D{user_id[1:]}",
        "tab": "home",
        "event_ts": ts,
    }
    if user_id in state.home_views:
        event["view"] = state.home_views[user_id]
    return {
        "token": ws.verification_token,
        "team_id": ws.team_id,
        "api_app_id": ws.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(float(ts)),
        "authorizations": [
            {"team_id": ws.team_id, "user_id": ws.bot_user_id, "is_bot": True, "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False,
    }


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
        response_url = self.state.new_response_url(channel=channel_id, user=user_id)
        fields = slash_command_payload(
            self.state,
            user_id=user_id,
            channel_id=channel_id,
            text=text,
            command=command,
            response_url=response_url,
        )
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
        msg = clickable_message(self.state, user_id, channel_id, message_ts)
        label, action = button_action(self.state, msg, action_id, value, require_button=require_button)
        payload = block_actions_payload(self.state, user_id, msg, action)
        reply = await self._post(
            urlencode({"payload": json.dumps(payload, separators=(",", ":"))}),
            timestamp=timestamp,
            signature=signature,
        )
        self.state.record_interaction(
            Interaction(
                "button",
                str(action["action_ts"]),
                user_id,
                channel_id,
                label,
                message_ts=message_ts,
                status=reply.status,
            )
        )
        return reply

    async def suggest(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        value: str,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> HttpReply:
        """Type ``value`` in the external select ``action_id`` of an open modal (block_suggestion)."""
        payload = block_suggestion_payload(
            self.state, user_id, _open_view(self.state, view_id), action_id, value, values
        )
        return await self._post_payload(payload)

    async def submit(self, user_id: str, view_id: str, values: dict[str, dict[str, Any]]) -> HttpReply:
        """Submit an open modal with ``values`` (``view.state.values`` as Slack sends it)."""
        payload = view_submission_payload(self.state, user_id, _open_view(self.state, view_id), values)
        reply = await self._post_payload(payload)
        if reply.status == 200 and not (reply.json() or {}).get("response_action"):
            self.state.views.pop(view_id, None)  # a plain ack closes the modal
        return reply

    async def open_home(self, user_id: str) -> HttpReply:
        """Open the app's Home tab (an ``app_home_opened`` event)."""
        body = json.dumps(app_home_opened_payload(self.state, user_id), separators=(",", ":"))
        return await self._post(body, timestamp=None, signature=None, content_type="application/json")

    async def post_payload(self, payload: dict[str, Any]) -> HttpReply:
        """Post an arbitrary (e.g. forged) interactive payload, signed."""
        return await self._post_payload(payload)

    async def _post_payload(self, payload: dict[str, Any]) -> HttpReply:
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return await self._post(body, timestamp=None, signature=None)

    async def _post(
        self,
        body: str,
        *,
        timestamp: int | None,
        signature: str | None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> HttpReply:
        ts = str(timestamp if timestamp is not None else int(self._clock()))
        sig = signature or self._verifier.generate_signature(timestamp=ts, body=body) or ""
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        response = await self._http.post(self.events_url, content=body.encode(), headers=headers)
        return HttpReply(response.status_code, response.text)


class SocketModeUser:
    """Drives a bot connected over Socket Mode, as Slack does on behalf of people in the workspace.

    Each call sends one envelope through the stand-in's WebSocket (to whichever connection's turn
    it is) and returns the bot's ack; a missing ack raises TimeoutError after ``ack_timeout``.
    """

    def __init__(
        self,
        *,
        state: StandinState,
        ack_timeout: float = ACK_TIMEOUT_SECONDS,
        connect_timeout: float = 5.0,
    ) -> None:
        self.state = state
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"SocketModeUser(connections={len(self.state.socket_mode.connections)})"

    async def slash_command(
        self, user_id: str, channel_id: str, text: str, command: str = "/vpn"
    ) -> SocketAck:
        """Send a slash command envelope; the ack's text/blocks are shown as Slack shows them."""
        response_url = self.state.new_response_url(channel=channel_id, user=user_id)
        payload = slash_command_payload(
            self.state,
            user_id=user_id,
            channel_id=channel_id,
            text=text,
            command=command,
            response_url=response_url,
        )
        ts = self.state.next_ts()
        self.state.record_interaction(
            Interaction("slash_command", ts, user_id, channel_id, f"{command} {text}".strip())
        )
        ack = await self._deliver("slash_commands", payload, accepts_response_payload=True)
        if ack.payload:
            self.state.apply_command_ack(
                channel=channel_id, user=user_id, body=json.dumps(ack.payload), response_url=response_url
            )
        return ack

    async def click(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        *,
        require_button: bool = True,
    ) -> SocketAck:
        """Click a button on a stored message; ``value`` defaults to the button's own value.

        A missing button raises LookupError unless ``require_button`` is False (a stale copy).
        """
        msg = clickable_message(self.state, user_id, channel_id, message_ts)
        label, action = button_action(self.state, msg, action_id, value, require_button=require_button)
        payload = block_actions_payload(self.state, user_id, msg, action)
        self.state.record_interaction(
            Interaction("button", str(action["action_ts"]), user_id, channel_id, label, message_ts=message_ts)
        )
        # Slack accepts no response payload in a block_actions ack; replies go through response_url.
        return await self._deliver("interactive", payload, accepts_response_payload=False)

    async def suggest(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        value: str,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> SocketAck:
        """Type ``value`` in an external select of an open modal; the ack carries the options."""
        payload = block_suggestion_payload(
            self.state, user_id, _open_view(self.state, view_id), action_id, value, values
        )
        return await self._deliver("interactive", payload, accepts_response_payload=True)

    async def submit(self, user_id: str, view_id: str, values: dict[str, dict[str, Any]]) -> SocketAck:
        """Submit an open modal; the ack may carry ``response_action: errors``."""
        payload = view_submission_payload(self.state, user_id, _open_view(self.state, view_id), values)
        ack = await self._deliver("interactive", payload, accepts_response_payload=True)
        if not (ack.payload or {}).get("response_action"):
            self.state.views.pop(view_id, None)
        return ack

    async def open_home(self, user_id: str) -> SocketAck:
        """Open the app's Home tab (an ``events_api`` envelope)."""
        payload = app_home_opened_payload(self.state, user_id)
        return await self._deliver("events_api", payload, accepts_response_payload=False)

    async def _deliver(
        self,
        kind: Literal["slash_commands", "interactive", "events_api"],
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
    ) -> SocketAck:
        return await self.state.socket_mode.deliver(
            kind,
            payload,
            accepts_response_payload=accepts_response_payload,
            ack_timeout=self.ack_timeout,
            connect_timeout=self.connect_timeout,
        )
