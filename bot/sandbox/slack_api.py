"""A local Slack Web API stand-in: the wire protocol slack_sdk speaks, an in-memory workspace.

It serves ``/api/<method>`` (query, form or JSON parameters, ``Authorization: Bearer``) and
``/response/<id>`` (the ``response_url`` webhooks ``respond()`` posts to), Socket Mode
(``apps.connections.open`` and the WebSocket of :mod:`bot.sandbox.slack_socket`), records every call,
keeps channels, threads, edits, ephemerals, message metadata and files (the files.uploadV2 flow:
files.getUploadURLExternal, the upload to the returned URL, files.completeUploadExternal), reads
them back (conversations.history and conversations.replies), refuses messages over Slack's size
limits, and injects faults (rate limits, 5xx, latency, Slack error codes, channels the bot is not
in, a call carried out whose answer is lost). It runs in the caller's event loop.

Where Slack's behaviour is not documented the stand-in is stricter than Slack, so a bug shows up
here rather than in production: unknown ``thread_ts`` is ``thread_not_found``, scopes are enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, overload

from aiohttp import web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.views import View

from bot.sandbox.slack_socket import SOCKET_MODE_PATH, SocketModeServer

__all__ = [
    "DEFAULT_APP_TOKEN",
    "DEFAULT_SCOPES",
    "UPLOAD",
    "ApiCall",
    "Channel",
    "Interaction",
    "Message",
    "ResponsePost",
    "Revision",
    "SlackStandin",
    "StandinState",
    "User",
    "Usergroup",
    "Workspace",
    "demo_workspace",
    "file_content",
    "message_size_error",
    "start_slack_standin",
]

T = TypeVar("T")
Json = dict[str, Any]

# Scopes each method needs; conversations.info depends on the channel type (see _conversation_scope).
_METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "apps.connections.open": None,  # app-level tokens carry their own scope (connections:write)
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.getPermalink": None,
    "users.info": "users:read",
    "usergroups.list": "usergroups:read",
    "usergroups.users.list": "usergroups:read",
    "conversations.info": None,
    # conversations.history and conversations.replies depend on the channel type (_history_scope).
    "conversations.history": None,
    "conversations.replies": None,
    "conversations.open": "im:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    # Opening and publishing views needs no scope (a trigger id or the Home tab is the permission).
    "views.open": None,
    "views.update": None,
    "views.publish": None,
}
DEFAULT_SCOPES = (  # as manifest.yml
    "commands",
    "chat:write",
    "chat:write.public",
    "usergroups:read",
    "channels:read",
    "groups:read",
    "channels:history",
    "groups:history",
    "im:history",
    "im:write",
    "files:write",
)
DEFAULT_APP_TOKEN = "xapp-1-A0VPNBOT-1-standin"  # noqa: S105  # a fake app-level token for a local stand-in
TRIGGER_TTL_SECONDS = 3.0
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL_SECONDS = 30 * 60
# Slack's size limits on a message. The 12,000 characters of block text in all
# (msg_blocks_too_long) are not in Slack's reference: observed, reported in slackapi/bolt-js
# issues #2509 and #2867. The others are in the Block Kit and chat.postMessage references.
BLOCKS_PER_MESSAGE_MAX = 50
BLOCKS_TEXT_MAX = 12_000
SECTION_TEXT_MAX = 3_000
MESSAGE_TEXT_MAX = 40_000
HISTORY_PAGE_MAX = 1000
# The fault-injection name of the upload to the URL files.getUploadURLExternal gives out.
UPLOAD = "files.upload"


# ---------------------------------------------------------------------------- workspace


@dataclass(frozen=True, slots=True)
class User:
    """A workspace member."""

    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    deleted: bool = False
    tz: str = "UTC"

    def to_api(self, team_id: str) -> Json:
        """Return the ``users.info`` shape."""
        real = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": real,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "tz": self.tz,
            "profile": {"display_name": self.name, "real_name": real},
        }


@dataclass(frozen=True, slots=True)
class Channel:
    """A conversation; ``bot_is_member`` decides whether the bot may post without chat:write.public."""

    id: str
    name: str
    is_private: bool = False
    is_im: bool = False
    bot_is_member: bool = True
    is_archived: bool = False
    # The people in it (users.conversations); None: every member of the workspace, like #general.
    members: tuple[str, ...] | None = None

    def to_api(self) -> Json:
        """Return the ``conversations.info`` shape."""
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private and not self.is_im,
            "is_group": self.is_private,
            "is_im": self.is_im,
            "is_private": self.is_private or self.is_im,
            "is_member": self.bot_is_member,
            "is_archived": self.is_archived,
        }


@dataclass(frozen=True, slots=True)
class Usergroup:
    """A user group (``@handle``) and its members."""

    id: str
    handle: str
    name: str
    users: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Workspace:
    """The fixed facts of the fake workspace: team, app, bot identity, people, channels, groups."""

    team_id: str = "T0VPNDEMO"
    team_domain: str = "vpn-demo"
    app_id: str = "A0VPNBOT"
    bot_user_id: str = "U0VPNBOT"
    bot_id: str = "B0VPNBOT"
    bot_name: str = "vpn-bot"
    users: tuple[User, ...] = ()
    channels: tuple[Channel, ...] = ()
    usergroups: tuple[Usergroup, ...] = ()
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    verification_token: str = "legacy-verification-token"  # noqa: S105  # a fake, deprecated field Slack still sends


def demo_workspace(**overrides: Any) -> Workspace:
    """Return a small workspace: alice requests, bob approves (in @network-admins), carol watches."""
    base = Workspace(
        users=(
            User("U0ALICE", "alice", "Alice Example"),
            User("U0BOB", "bob", "Bob Example"),
            User("U0CAROL", "carol", "Carol Example"),
            User("U0VPNBOT", "vpn-bot", "VPN Bot", is_bot=True),
        ),
        channels=(
            Channel("C0VPNOPS", "vpn-ops"),
            # Where auditors read one line per decision (VPNBOT_AUDIT_CHANNEL).
            Channel("C0AUDIT", "vpn-audit"),
            Channel("C0RANDOM", "random", bot_is_member=False),
            Channel("G0SECRET", "secret-ops", is_private=True, bot_is_member=False),
        ),
        usergroups=(Usergroup("S0NETADM", "network-admins", "Network admins", ("U0BOB",)),),
    )
    return replace(base, **overrides)


# ---------------------------------------------------------------------------- recorded state


@dataclass(frozen=True, slots=True)
class Revision:
    """A previous version of an edited message."""

    text: str
    blocks: tuple[Json, ...]
    replaced_at: str  # the ts of the moment it was replaced


@dataclass(slots=True)
class Message:
    """A message as Slack stores it; ``visible_to`` is set for ephemerals."""

    channel: str
    ts: str
    text: str
    blocks: list[Json]
    user: str
    bot_id: str | None = None
    thread_ts: str | None = None
    visible_to: str | None = None
    via: Literal["api", "response_url", "ack"] = "api"
    edits: list[Revision] = field(default_factory=list)
    deleted: bool = False
    # Message metadata ({"event_type": …, "event_payload": {…}}), and files shared with the message.
    metadata: Json | None = None
    files: list[Json] = field(default_factory=list)

    @property
    def is_ephemeral(self) -> bool:
        """Whether only ``visible_to`` sees it."""
        return self.visible_to is not None

    @property
    def is_reply(self) -> bool:
        """Whether it lives inside a thread rather than in the channel."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def edited(self) -> bool:
        """Whether it was changed after posting."""
        return bool(self.edits)

    def to_api(self, *, metadata: bool = False) -> Json:
        """Return the shape Slack returns in ``message`` fields and interaction payloads.

        ``metadata``: include the message metadata, as conversations.history and
        conversations.replies do with ``include_all_metadata``.
        """
        out: Json = {"type": "message", "ts": self.ts, "text": self.text, "user": self.user}
        if self.blocks:
            out["blocks"] = [dict(b) for b in self.blocks]
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.files:
            out["files"] = [dict(f) for f in self.files]
        if metadata and self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One Web API request as the stand-in saw it."""

    method: str
    params: Json
    status: int
    ok: bool
    error: str | None = None
    # The caller's TCP port: calls on one kept-alive connection share it.
    client_port: int | None = None


@dataclass(frozen=True, slots=True)
class ResponsePost:
    """One POST to a ``response_url``."""

    url_id: str
    payload: Json
    status: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Interaction:
    """Something a person did in Slack's UI: a slash command or a button click."""

    kind: Literal["slash_command", "button"]
    ts: str
    user: str
    channel: str
    text: str  # the command line, or the button label
    message_ts: str | None = None
    status: int | None = None


@dataclass(slots=True)
class _ResponseUrl:
    id: str
    channel: str
    user: str
    message_ts: str | None
    created: float
    uses: int = 0
    last_posted_ts: str | None = None


@dataclass(slots=True)
class _Fault:
    kind: Literal["ratelimit", "server_error", "error", "drop_answer"]
    remaining: int
    status: int = 200
    retry_after: int = 1
    error: str = ""
    after: float = 0.0


@dataclass(slots=True)
class _Upload:
    """A file announced by files.getUploadURLExternal; ``content`` once uploaded to its URL."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    completed: bool = False


class StandinState:
    """The workspace, its messages and everything the bot did to it, plus fault injection."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        bot_token: str,
        clock: Callable[[], float] = time.time,
        app_token: str = DEFAULT_APP_TOKEN,
    ) -> None:
        self.workspace = workspace
        self.bot_token = bot_token
        self.app_token = app_token  # the xapp-… token that opens Socket Mode connections
        self.socket_mode = SocketModeServer(app_id=workspace.app_id)
        self.base_url = ""  # set when the server is listening
        self._clock = clock
        self._last_ts = 0.0
        self.users: dict[str, User] = {u.id: u for u in workspace.users}
        self.channels: dict[str, Channel] = {c.id: c for c in workspace.channels}
        self.usergroups: dict[str, Usergroup] = {g.id: g for g in workspace.usergroups}
        self.scopes: tuple[str, ...] = workspace.scopes
        self.enforce_scopes = True
        self.api_calls: list[ApiCall] = []
        self.response_posts: list[ResponsePost] = []
        self.interactions: list[Interaction] = []
        self._messages: dict[str, list[Message]] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._ids = itertools.count(1)
        # Modals opened by the bot, by view id; the Home tab each user was last shown.
        self.views: dict[str, Json] = {}
        self.home_views: dict[str, Json] = {}
        self._triggers: dict[str, float] = {}
        # Files by id, from files.getUploadURLExternal on.
        self.uploads: dict[str, _Upload] = {}

    # ------------------------------------------------------------------ clocks and ids

    def next_ts(self) -> str:
        """Return a fresh, strictly increasing Slack ``ts`` ("seconds.micros")."""
        now = max(self._clock(), self._last_ts + 0.000001)
        self._last_ts = round(now, 6)
        return f"{self._last_ts:.6f}"

    def new_trigger_id(self) -> str:
        """Return a trigger id shaped like Slack's (usable once, for 3 seconds, by views.open)."""
        trigger = f"{next(self._ids)}.{self.workspace.team_id}.{secrets.token_hex(8)}"
        self._triggers[trigger] = self._clock()
        return trigger

    # ------------------------------------------------------------------ workspace helpers

    def user_name(self, user_id: str) -> str:
        """Return the display name for a user id (the id itself when unknown)."""
        user = self.users.get(user_id)
        return user.name if user else user_id

    def channel_name(self, channel_id: str) -> str:
        """Return the channel name for an id (the id itself when unknown)."""
        channel = self.channels.get(channel_id)
        return channel.name if channel else channel_id

    def add_user(self, user_id: str, name: str, **fields: Any) -> User:
        """Add (or replace) a workspace member."""
        self.users[user_id] = User(user_id, name, **fields)
        return self.users[user_id]

    def add_channel(self, channel: Channel) -> None:
        """Add (or replace) a conversation."""
        self.channels[channel.id] = channel

    def set_usergroup(self, group_id: str, users: Iterable[str], *, handle: str | None = None) -> None:
        """Create a user group or replace its members."""
        old = self.usergroups.get(group_id)
        name = handle or (old.handle if old else group_id.lower())
        self.usergroups[group_id] = Usergroup(group_id, name, old.name if old else name, tuple(users))

    def set_bot_membership(self, channel: str, is_member: bool) -> None:
        """Invite the bot to, or remove it from, a channel."""
        self.channels[channel] = replace(self.channels[channel], bot_is_member=is_member)

    def set_members(self, channel: str, members: Iterable[str]) -> None:
        """Say who is in a channel (users.conversations answers from it)."""
        self.channels[channel] = replace(self.channels[channel], members=tuple(members))

    def resolve_channel(self, ref: str) -> Channel | None:
        """Find a channel by id, ``#name``/name, or a user id (which opens the app's DM with them)."""
        if ref in self.channels:
            return self.channels[ref]
        name = ref.removeprefix("#")
        for channel in self.channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        if ref in self.users:
            dm = Channel(f"D{ref}", ref, is_im=True)
            self.channels.setdefault(dm.id, dm)
            return self.channels[dm.id]
        return None

    # ------------------------------------------------------------------ fault injection

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" for any) with 429 and ``Retry-After``."""
        self._faults.setdefault(method, []).append(_Fault("ratelimit", times, 429, retry_after))

    def server_error(self, method: str, *, times: int = 1, status: int = 503) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" for any) with an HTTP 5xx."""
        self._faults.setdefault(method, []).append(_Fault("server_error", times, status))

    def fail(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._faults.setdefault(method, []).append(_Fault("error", times, error=error))

    def drop_answer(self, method: str, *, times: int = 1, after: float = 0.0) -> None:
        """Carry out the next ``times`` calls of ``method``, then reset the connection unanswered.

        What a lost answer looks like: the message is posted, the caller never hears so. ``after``
        seconds pass (a hang) before the reset.
        """
        self._faults.setdefault(method, []).append(_Fault("drop_answer", times, after=after))

    def set_latency(self, seconds: float, method: str = "*") -> None:
        """Delay every answer to ``method`` ("*" for any) by ``seconds``."""
        self._latency[method] = seconds

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key, [])
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.pop(0)
                return fault
        return None

    # ------------------------------------------------------------------ messages

    def add_message(
        self,
        channel: str,
        *,
        text: str,
        blocks: Iterable[Json] = (),
        user: str | None = None,
        thread_ts: str | None = None,
        visible_to: str | None = None,
        via: Literal["api", "response_url", "ack"] = "api",
        metadata: Json | None = None,
        files: Iterable[Json] = (),
    ) -> Message:
        """Store a message (by the bot unless ``user`` is given) and return it."""
        by_bot = user is None
        msg = Message(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            blocks=[dict(b) for b in blocks],
            user=self.workspace.bot_user_id if by_bot else str(user),
            bot_id=self.workspace.bot_id if by_bot else None,
            thread_ts=thread_ts,
            visible_to=visible_to,
            via=via,
            metadata=metadata,
            files=[dict(f) for f in files],
        )
        self._messages.setdefault(channel, []).append(msg)
        return msg

    def edit_message(self, msg: Message, *, text: str | None, blocks: Iterable[Json] | None) -> None:
        """Replace a message's text and/or blocks, keeping the old version in ``edits``."""
        msg.edits.append(Revision(msg.text, tuple(msg.blocks), self.next_ts()))
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = [dict(b) for b in blocks]

    def message(self, channel: str, ts: str) -> Message | None:
        """Return the message (ephemeral or not, deleted or not) with this ts."""
        for msg in self._messages.get(channel, []):
            if msg.ts == ts:
                return msg
        return None

    def arrived(self, channel: str, start: int = 0) -> list[Message]:
        """Return a channel's stored messages in the order they arrived, from the ``start``-th on.

        Cheap to call again and again with the count already read (a benchmark's wait).
        """
        return self._messages.get(channel, [])[start:]

    def all_messages(self, channel: str) -> list[Message]:
        """Return every stored message of a channel, replies and ephemerals included, by ts."""
        return sorted(self._messages.get(channel, []), key=lambda m: float(m.ts))

    def messages(self, channel: str) -> list[Message]:
        """Return the channel's visible top-level messages, oldest first."""
        return [
            m for m in self.all_messages(channel) if not m.is_reply and not m.is_ephemeral and not m.deleted
        ]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Return the visible, non-ephemeral replies in the thread under ``ts``, oldest first."""
        return [
            m
            for m in self.all_messages(channel)
            if m.thread_ts == ts and m.ts != ts and not m.is_ephemeral and not m.deleted
        ]

    def ephemerals(self, user: str, channel: str | None = None) -> list[Message]:
        """Return the ephemerals only ``user`` sees (optionally in one channel), oldest first."""
        chans = [channel] if channel else list(self._messages)
        found = [
            m for c in chans for m in self._messages.get(c, []) if m.visible_to == user and not m.deleted
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def calls(self, method: str | None = None) -> list[ApiCall]:
        """Return the recorded Web API calls, optionally of one method."""
        return [c for c in self.api_calls if method is None or c.method == method]

    def record_interaction(self, interaction: Interaction) -> None:
        """Remember a slash command or click (for transcripts and assertions)."""
        self.interactions.append(interaction)

    @overload
    async def wait_for(
        self,
        predicate: Callable[[], Awaitable[T | None]],
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        interval: float = 0.01,
        what: str = "condition",
    ) -> T: ...

    @overload
    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        interval: float = 0.01,
        what: str = "condition",
    ) -> T: ...

    async def wait_for(
        self,
        predicate: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
        timeout: float = 5.0,  # noqa: ASYNC109  # the familiar wait_for(predicate, timeout) shape
        *,
        interval: float = 0.01,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy and return that; raise TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            if loop.time() >= deadline:
                recent = ", ".join(f"{c.method}={'ok' if c.ok else c.error}" for c in self.api_calls[-8:])
                raise TimeoutError(f"{what} not met within {timeout}s; last API calls: [{recent}]")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ response_url

    def new_response_url(self, *, channel: str = "", user: str = "", message_ts: str | None = None) -> str:
        """Return a fresh response_url tied to a channel, the acting user and (for clicks) a message."""
        url_id = secrets.token_hex(8)
        self._response_urls[url_id] = _ResponseUrl(url_id, channel, user, message_ts, self._clock())
        return f"{self.base_url}/response/{url_id}"

    def responses(self) -> list[ResponsePost]:
        """Return every POST made to a response_url."""
        return list(self.response_posts)

    def apply_response(self, url_id: str, payload: Json) -> tuple[int, str | None]:
        """Apply a response_url POST the way Slack does; return (HTTP status, error)."""
        target = self._response_urls.get(url_id)
        if target is None:
            return 404, "invalid_url"
        if self._clock() - target.created > RESPONSE_URL_TTL_SECONDS:
            return 404, "expired_url"
        if target.uses >= RESPONSE_URL_MAX_USES:
            return 404, "used_url"
        target.uses += 1
        original_ts = target.message_ts or target.last_posted_ts
        original = self.message(target.channel, original_ts) if original_ts else None
        if payload.get("delete_original"):
            if original is None:
                return 404, "message_not_found"
            original.deleted = True
            return 200, None
        text = str(payload.get("text", ""))
        blocks = _blocks(payload.get("blocks"))
        if not text and not blocks:
            return 400, "no_text"
        too_big = message_size_error(text, blocks)
        if too_big is not None:
            return 400, too_big
        if payload.get("replace_original"):
            if original is None:
                return 404, "message_not_found"
            self.edit_message(original, text=text, blocks=blocks)
            return 200, None
        # A new message: ephemeral by default, and Slack lets it through even where the bot is not a member.
        in_channel = payload.get("response_type") == "in_channel"
        msg = self.add_message(
            target.channel,
            text=text,
            blocks=blocks,
            thread_ts=_str_or_none(payload.get("thread_ts")),
            visible_to=None if in_channel else target.user,
            via="response_url",
        )
        target.last_posted_ts = msg.ts
        return 200, None

    def apply_command_ack(self, *, channel: str, user: str, body: str, response_url: str) -> Message | None:
        """Show a slash command's HTTP reply like Slack: JSON text/blocks, ephemeral unless in_channel."""
        if not body.strip():
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"text": body}
        if not isinstance(payload, dict):
            return None
        text, blocks = str(payload.get("text", "")), _blocks(payload.get("blocks"))
        if not text and not blocks:
            return None
        in_channel = payload.get("response_type") == "in_channel"
        msg = self.add_message(
            channel, text=text, blocks=blocks, visible_to=None if in_channel else user, via="ack"
        )
        # Slack treats the ack as the first response: a later replace_original edits it.
        url_id = response_url.rsplit("/", 1)[-1]
        if url_id in self._response_urls:
            self._response_urls[url_id].last_posted_ts = msg.ts
        return msg

    # ------------------------------------------------------------------ Web API methods

    def handle_api(self, method: str, params: Json) -> Json:
        """Run one Web API method on the state and return its JSON body."""
        handler = _HANDLERS.get(method)
        if handler is None:
            return _err("unknown_method")
        needed = _METHOD_SCOPES.get(method)
        if method == "conversations.info":
            channel = self.resolve_channel(str(params.get("channel", "")))
            needed = _conversation_scope(channel)
        if method in ("conversations.history", "conversations.replies"):
            needed = _history_scope(self.resolve_channel(str(params.get("channel", ""))))
        if self.enforce_scopes and needed and needed not in self.scopes:
            return {**_err("missing_scope"), "needed": needed, "provided": ",".join(self.scopes)}
        return handler(self, params)

    def _postable(self, ref: str) -> tuple[Channel | None, str | None]:
        channel = self.resolve_channel(ref)
        if channel is None:
            return None, "channel_not_found"
        if channel.is_archived:
            return None, "is_archived"
        if channel.bot_is_member:
            return channel, None
        if channel.is_private or channel.is_im:
            # Slack hides private conversations the bot is not in.
            return None, "channel_not_found"
        if "chat:write.public" in self.scopes:
            return channel, None
        return None, "not_in_channel"

    def _auth_test(self, params: Json) -> Json:
        ws = self.workspace
        return {
            "ok": True,
            "url": f"https://{ws.team_domain}.slack.com/",
            "team": ws.team_domain,
            "user": ws.bot_name,
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: Json) -> Json:
        return {"ok": True, "url": self.socket_mode.open_url(self.base_url)}

    def _post_message(self, params: Json) -> Json:
        channel, error = self._postable(str(params.get("channel", "")))
        if channel is None:
            return _err(error or "channel_not_found")
        text, blocks = str(params.get("text") or ""), _blocks(params.get("blocks"))
        if not text and not blocks:
            return _err("no_text")
        too_big = message_size_error(text, blocks)
        if too_big is not None:
            return _err(too_big)
        metadata, bad = _metadata(params.get("metadata"))
        if bad is not None:
            return _err(bad)
        thread_ts = _str_or_none(params.get("thread_ts"))
        if thread_ts is not None:
            parent = self.message(channel.id, thread_ts)
            if parent is None or parent.is_ephemeral:
                return _err("thread_not_found")
            thread_ts = parent.thread_ts or parent.ts  # a reply to a reply joins the parent's thread
        msg = self.add_message(channel.id, text=text, blocks=blocks, thread_ts=thread_ts, metadata=metadata)
        return {"ok": True, "channel": channel.id, "ts": msg.ts, "message": msg.to_api()}

    def _update(self, params: Json) -> Json:
        channel = self.resolve_channel(str(params.get("channel", "")))
        if channel is None:
            return _err("channel_not_found")
        msg = self.message(channel.id, str(params.get("ts", "")))
        if msg is None or msg.is_ephemeral or msg.deleted:
            return _err("message_not_found")
        if msg.bot_id != self.workspace.bot_id:
            return _err("cant_update_message")
        text = _str_or_none(params.get("text"))
        blocks = _blocks(params.get("blocks")) if "blocks" in params else None
        if not text and not blocks and not msg.text:
            return _err("no_text")
        too_big = message_size_error(text or "", blocks or [])
        if too_big is not None:
            return _err(too_big)
        self.edit_message(msg, text=text, blocks=blocks)
        return {"ok": True, "channel": channel.id, "ts": msg.ts, "text": msg.text, "message": msg.to_api()}

    def _post_ephemeral(self, params: Json) -> Json:
        channel, error = self._postable(str(params.get("channel", "")))
        if channel is None:
            return _err(error or "channel_not_found")
        user = str(params.get("user", ""))
        if user not in self.users:
            return _err("user_not_found")
        text, blocks = str(params.get("text") or ""), _blocks(params.get("blocks"))
        if not text and not blocks:
            return _err("no_text")
        too_big = message_size_error(text, blocks)
        if too_big is not None:
            return _err(too_big)
        msg = self.add_message(
            channel.id,
            text=text,
            blocks=blocks,
            thread_ts=_str_or_none(params.get("thread_ts")),
            visible_to=user,
        )
        return {"ok": True, "message_ts": msg.ts}

    def _permalink(self, params: Json) -> Json:
        channel = self.resolve_channel(str(params.get("channel", "")))
        if channel is None:
            return _err("channel_not_found")
        ts = str(params.get("message_ts", ""))
        msg = self.message(channel.id, ts)
        if msg is None or msg.is_ephemeral:
            return _err("message_not_found")
        link = f"https://{self.workspace.team_domain}.slack.com/archives/{channel.id}/p{ts.replace('.', '')}"
        if msg.is_reply:
            link += f"?thread_ts={msg.thread_ts}&cid={channel.id}"
        return {"ok": True, "channel": channel.id, "permalink": link}

    def _users_info(self, params: Json) -> Json:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            return _err("user_not_found")
        return {"ok": True, "user": user.to_api(self.workspace.team_id)}

    def _usergroups_list(self, params: Json) -> Json:
        include_users = str(params.get("include_users", "")).lower() in {"1", "true"}
        groups = []
        for g in self.usergroups.values():
            item: Json = {
                "id": g.id,
                "team_id": self.workspace.team_id,
                "handle": g.handle,
                "name": g.name,
                "user_count": len(g.users),
            }
            if include_users:
                item["users"] = list(g.users)
            groups.append(item)
        return {"ok": True, "usergroups": groups}

    def _usergroup_users(self, params: Json) -> Json:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            return _err("no_such_subteam")
        return {"ok": True, "users": list(group.users)}

    def _conversations_info(self, params: Json) -> Json:
        channel = self.resolve_channel(str(params.get("channel", "")))
        if channel is None or ((channel.is_private or channel.is_im) and not channel.bot_is_member):
            return _err("channel_not_found")
        return {"ok": True, "channel": channel.to_api()}


# ---------------------------------------------------------------------------- message limits


def _texts(node: object) -> list[str]:
    """Every ``text`` string under ``node`` (text objects, buttons, confirm dialogs)."""
    if isinstance(node, dict):
        found: list[str] = []
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            else:
                found += _texts(value)
        return found
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    return []


def message_size_error(text: str, blocks: list[Json]) -> str | None:
    """The error Slack answers a message too large with, or None if it fits.

    50 blocks at most and 3,000 characters per section text (``invalid_blocks``), 12,000
    characters of block text in all (``msg_blocks_too_long``, observed rather than documented),
    40,000 characters of ``text`` (``msg_too_long``).
    """
    if len(text) > MESSAGE_TEXT_MAX:
        return "msg_too_long"
    if len(blocks) > BLOCKS_PER_MESSAGE_MAX:
        return "invalid_blocks"
    for block in blocks:
        if block.get("type") != "section":
            continue
        inner = block.get("text")
        if isinstance(inner, dict) and len(str(inner.get("text", ""))) > SECTION_TEXT_MAX:
            return "invalid_blocks"
    if sum(len(t) for t in _texts(blocks)) > BLOCKS_TEXT_MAX:
        return "msg_blocks_too_long"
    return None


def _metadata(value: object) -> tuple[Json | None, str | None]:
    """Parse chat.postMessage's ``metadata``: ``{"event_type": str, "event_payload": {...}}``."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, "invalid_metadata_format"
    if not isinstance(value, dict):
        return None, "invalid_metadata_format"
    event_type, payload = value.get("event_type"), value.get("event_payload")
    if not isinstance(event_type, str) or not event_type or not isinstance(payload, dict):
        return None, "invalid_metadata_schema"
    return {"event_type": event_type, "event_payload": dict(payload)}, None


# ---------------------------------------------------------------------------- reading messages back


def _history_scope(channel: Channel | None) -> str | None:
    if channel is None:
        return None
    if channel.is_im:
        return "im:history"
    return "groups:history" if channel.is_private else "channels:history"


def _readable(state: StandinState, ref: str) -> tuple[Channel | None, str | None]:
    channel = state.resolve_channel(ref)
    if channel is None or ((channel.is_private or channel.is_im) and not channel.bot_is_member):
        return None, "channel_not_found"
    if not channel.bot_is_member:
        return None, "not_in_channel"
    return channel, None


def _page(state: StandinState, params: Json, found: list[Message], *, newest_first: bool) -> Json:
    """One page of ``found`` (filtered by ``oldest``/``latest``), as history and replies answer."""
    try:
        limit = min(HISTORY_PAGE_MAX, max(1, int(params.get("limit") or 100)))
        start = int(str(params.get("cursor") or "0"))
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
    except ValueError:
        return _err("invalid_arguments")
    with_metadata = str(params.get("include_all_metadata", "")).lower() in {"1", "true"}
    chosen = [m for m in found if oldest <= float(m.ts) <= latest]
    if newest_first:
        chosen.reverse()
    window = chosen[start : start + limit]
    more = start + limit < len(chosen)
    return {
        "ok": True,
        "messages": [m.to_api(metadata=with_metadata) for m in window],
        "has_more": more,
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }


def _conversations_history(state: StandinState, params: Json) -> Json:
    """A channel's top-level messages, newest first (threads' replies are not in it)."""
    channel, error = _readable(state, str(params.get("channel", "")))
    if channel is None:
        return _err(error or "channel_not_found")
    return _page(state, params, state.messages(channel.id), newest_first=True)


def _conversations_open(state: StandinState, params: Json) -> Json:
    """Open (or find) the app's DM with one user, as Slack does for ``users=U…``; answers its id."""
    users = [u for u in str(params.get("users", "")).split(",") if u]
    if len(users) != 1:
        return _err("not_enough_users" if not users else "too_many_users")
    if users[0] not in state.users:
        return _err("user_not_found")
    channel = state.resolve_channel(users[0])
    if channel is None:  # pragma: no cover - a known user always resolves to the DM
        return _err("channel_not_found")
    return {"ok": True, "channel": {"id": channel.id}}


def _conversations_replies(state: StandinState, params: Json) -> Json:
    """A thread: its parent, then its replies, oldest first."""
    channel, error = _readable(state, str(params.get("channel", "")))
    if channel is None:
        return _err(error or "channel_not_found")
    parent = state.message(channel.id, str(params.get("ts", "")))
    if parent is None or parent.is_ephemeral or parent.deleted:
        return _err("thread_not_found")
    root = state.message(channel.id, parent.thread_ts) if parent.is_reply and parent.thread_ts else parent
    assert root is not None  # noqa: S101 - a reply's parent was stored before it
    return _page(state, params, [root, *state.thread(channel.id, root.ts)], newest_first=False)


# ---------------------------------------------------------------------------- files.uploadV2


def _get_upload_url(state: StandinState, params: Json) -> Json:
    """files.getUploadURLExternal: a file id and a URL on this stand-in to upload its bytes to."""
    filename = str(params.get("filename") or "")
    try:
        length = int(params.get("length") or -1)
    except ValueError:
        length = -1
    if not filename or length < 0:
        return _err("invalid_arguments")
    file_id = f"F{next(state._ids):010d}"
    state.uploads[file_id] = _Upload(file_id, filename, length)
    return {"ok": True, "file_id": file_id, "upload_url": f"{state.base_url}/upload/{file_id}"}


def _complete_upload(state: StandinState, params: Json) -> Json:
    """files.completeUploadExternal: share uploaded files, in a thread if ``thread_ts`` is given."""
    raw = params.get("files")
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return _err("invalid_arguments")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return _err("invalid_arguments")
    uploads = [state.uploads.get(str(i.get("id", ""))) for i in items]
    if any(u is None or u.content is None or u.completed for u in uploads):
        return _err("file_not_found")
    shared: list[Json] = []
    for item, upload in zip(items, uploads, strict=True):
        assert upload is not None  # noqa: S101 - checked above
        assert upload.content is not None  # noqa: S101 - checked above
        upload.completed = True
        shared.append(
            {
                "id": upload.id,
                "name": upload.filename,
                "title": str(item.get("title") or upload.filename),
                "size": len(upload.content),
                "mimetype": "text/plain",
            }
        )
    channel_ref = _str_or_none(params.get("channel_id"))
    if channel_ref is not None:
        channel, error = state._postable(channel_ref)
        if channel is None:
            return _err(error or "channel_not_found")
        thread_ts = _str_or_none(params.get("thread_ts"))
        if thread_ts is not None:
            parent = state.message(channel.id, thread_ts)
            if parent is None or parent.is_ephemeral:
                return _err("thread_not_found")
            thread_ts = parent.thread_ts or parent.ts
        comment = str(params.get("initial_comment") or "")
        state.add_message(channel.id, text=comment, thread_ts=thread_ts, files=shared)
    return {"ok": True, "files": shared}


def file_content(state: StandinState, file_id: str) -> str:
    """The text of an uploaded file (tests read what a person would download)."""
    upload = state.uploads[file_id]
    assert upload.content is not None  # noqa: S101 - a test helper: the file must have arrived
    return upload.content.decode()


def _checked_view(value: object) -> tuple[Json | None, str | None]:
    """Parse a ``view`` argument and validate it with slack_sdk's own model, as Slack would."""
    try:
        view = json.loads(value) if isinstance(value, str) else value
        if not isinstance(view, dict):
            return None, "invalid_arguments"
        View(**view).validate_json()
    except (ValueError, TypeError, SlackObjectFormationError):
        return None, "invalid_arguments"
    return view, None


def _views_open(state: StandinState, params: Json) -> Json:
    trigger = str(params.get("trigger_id", ""))
    issued = state._triggers.pop(trigger, None)
    if issued is None:
        return _err("invalid_trigger_id")
    if state._clock() - issued > TRIGGER_TTL_SECONDS:
        return _err("expired_trigger_id")
    view, error = _checked_view(params.get("view"))
    if view is None:
        return _err(error or "invalid_arguments")
    view_id = f"V{next(state._ids):08d}"
    stored = {**view, "id": view_id, "hash": secrets.token_hex(6), "team_id": state.workspace.team_id}
    state.views[view_id] = stored
    return {"ok": True, "view": stored}


def _views_update(state: StandinState, params: Json) -> Json:
    view_id = str(params.get("view_id", ""))
    if view_id not in state.views:
        return _err("not_found")
    view, error = _checked_view(params.get("view"))
    if view is None:
        return _err(error or "invalid_arguments")
    stored = {**view, "id": view_id, "hash": secrets.token_hex(6), "team_id": state.workspace.team_id}
    state.views[view_id] = stored
    return {"ok": True, "view": stored}


def _views_publish(state: StandinState, params: Json) -> Json:
    user_id = str(params.get("user_id", ""))
    if user_id not in state.users:
        return _err("user_not_found")
    view, error = _checked_view(params.get("view"))
    if view is None:
        return _err(error or "invalid_arguments")
    if view.get("type") != "home":
        return _err("invalid_arguments")
    stored = {**view, "id": f"V{next(state._ids):08d}", "team_id": state.workspace.team_id}
    state.home_views[user_id] = stored
    return {"ok": True, "view": stored}


_HANDLERS: dict[str, Callable[[StandinState, Json], Json]] = {
    "views.open": _views_open,
    "views.update": _views_update,
    "views.publish": _views_publish,
    "auth.test": StandinState._auth_test,
    "apps.connections.open": StandinState._apps_connections_open,
    "chat.postMessage": StandinState._post_message,
    "chat.update": StandinState._update,
    "chat.postEphemeral": StandinState._post_ephemeral,
    "chat.getPermalink": StandinState._permalink,
    "users.info": StandinState._users_info,
    "usergroups.list": StandinState._usergroups_list,
    "usergroups.users.list": StandinState._usergroup_users,
    "conversations.info": StandinState._conversations_info,
    "conversations.history": _conversations_history,
    "conversations.open": _conversations_open,
    "conversations.replies": _conversations_replies,
    "files.getUploadURLExternal": _get_upload_url,
    "files.completeUploadExternal": _complete_upload,
}


def _conversation_scope(channel: Channel | None) -> str | None:
    if channel is None:
        return None
    if channel.is_im:
        return "im:read"
    return "groups:read" if channel.is_private else "channels:read"


def _err(error: str) -> Json:
    return {"ok": False, "error": error}


def _str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _blocks(value: object) -> list[Json]:
    """Accept blocks as a list or as the JSON string form-encoded calls carry."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    return [dict(b) for b in value if isinstance(b, dict)]


# ---------------------------------------------------------------------------- HTTP server


class SlackStandin:
    """A running stand-in: ``url`` is the Web API base_url, ``state`` the workspace."""

    def __init__(self, state: StandinState, runner: web.AppRunner, origin: str) -> None:
        self.state = state
        self.origin = origin
        self.url = f"{origin}/api/"
        self._runner = runner

    async def close(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()

    async def __aenter__(self) -> SlackStandin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _params(request: web.Request) -> Json:
    """Merge query, form and JSON parameters, as Slack accepts all three."""
    params: Json = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    for key in ("blocks", "attachments"):
        # Form-encoded calls carry these as JSON strings; record them as the JSON calls do.
        if isinstance(params.get(key), str):
            with contextlib.suppress(ValueError):
                params[key] = json.loads(params[key])
    return params


async def _drop_answer(
    request: web.Request, state: StandinState, method: str, params: Json, after: float
) -> web.StreamResponse:
    """Carry the call out, then reset the connection without an answer (after ``after`` seconds)."""
    body = state.handle_api(method, params)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None
    state.api_calls.append(ApiCall(method, params, 0, bool(body.get("ok")), "answer_dropped", port))
    if after:
        await asyncio.sleep(after)
    if request.transport is not None:
        request.transport.abort()
    # Nothing reaches the caller: the transport is gone before aiohttp could write this.
    return web.Response(status=204)


def _make_app(state: StandinState) -> web.Application:
    async def api(request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(params.pop("token", ""))
        params.pop("token", None)  # never keep a token in the call log
        scope_header = {"x-oauth-scopes": ",".join(state.scopes)}
        delay = state._latency.get(method, state._latency.get("*", 0.0))
        if delay:
            await asyncio.sleep(delay)

        def reply(body: Json, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
            error = None if body.get("ok") else str(body.get("error"))
            peer = request.transport.get_extra_info("peername") if request.transport else None
            port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None
            state.api_calls.append(ApiCall(method, params, status, bool(body.get("ok")), error, port))
            return web.json_response(body, status=status, headers={**scope_header, **(headers or {})})

        if not token:
            return reply(_err("not_authed"))
        # apps.connections.open takes the app-level token only; every other method the bot token only.
        wanted, other = (
            (state.app_token, state.bot_token)
            if method == "apps.connections.open"
            else (state.bot_token, state.app_token)
        )
        if not secrets.compare_digest(token, wanted):
            return reply(
                _err("not_allowed_token_type" if secrets.compare_digest(token, other) else "invalid_auth")
            )
        fault = state._take_fault(method)
        if fault is not None:
            if fault.kind == "ratelimit":
                return reply(_err("ratelimited"), 429, {"Retry-After": str(fault.retry_after)})
            if fault.kind == "server_error":
                return reply(_err("internal_error"), fault.status)
            if fault.kind == "drop_answer":
                return await _drop_answer(request, state, method, params, fault.after)
            return reply(_err(fault.error))
        return reply(state.handle_api(method, params))

    async def upload(request: web.Request) -> web.StreamResponse:
        # The URL files.getUploadURLExternal gave out is its own permission: no token.
        found = state.uploads.get(request.match_info["file_id"])
        if found is None or found.completed:
            return web.Response(status=404, text="file not found")
        fault = state._take_fault(UPLOAD)  # server_error(UPLOAD): the upload host fails
        if fault is not None and fault.kind == "server_error":
            return web.Response(status=fault.status, text="upload failed")
        found.content = await request.read()
        return web.Response(text=f"OK - {len(found.content)}")

    async def response_url(request: web.Request) -> web.StreamResponse:
        url_id = request.match_info["url_id"]
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            state.response_posts.append(ResponsePost(url_id, {}, 400, "invalid_payload"))
            return web.json_response(_err("invalid_payload"), status=400)
        status, error = state.apply_response(url_id, payload)
        state.response_posts.append(ResponsePost(url_id, payload, status, error))
        return web.json_response({"ok": True} if error is None else _err(error), status=status)

    async def close_sockets(_: web.Application) -> None:
        await state.socket_mode.close()  # open WebSockets would otherwise hold up the shutdown

    app = web.Application()
    app.router.add_route("*", "/api/{method}", api)
    app.router.add_post("/response/{url_id}", response_url)
    app.router.add_post("/upload/{file_id}", upload)
    app.router.add_get(SOCKET_MODE_PATH, state.socket_mode.handle)
    app.on_shutdown.append(close_sockets)
    return app


async def start_slack_standin(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    bot_token: str = "xoxb-test",  # noqa: S107  # a fake token for a local stand-in
    app_token: str = DEFAULT_APP_TOKEN,
    workspace: Workspace | None = None,
    scopes: Iterable[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> SlackStandin:
    """Start the stand-in on ``host:port`` (0 picks a free port) in the running event loop.

    ``app_token`` is the app-level token ``apps.connections.open`` accepts (Socket Mode).
    """
    ws = workspace or demo_workspace()
    if scopes is not None:
        ws = replace(ws, scopes=tuple(scopes))
    state = StandinState(ws, bot_token=bot_token, clock=clock, app_token=app_token)
    runner = web.AppRunner(_make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    origin = f"http://{bound_host}:{bound_port}"
    state.base_url = origin
    return SlackStandin(state, runner, origin)


# ---------------------------------------------------------------------------- channel membership
#
# users.conversations, for the bot's visibility rule. Kept apart from the handler table above: it
# checks its scopes per conversation type asked for, as Slack does.

_TYPE_SCOPES = {"public_channel": "channels:read", "private_channel": "groups:read", "im": "im:read"}


def _is_member(state: StandinState, channel: Channel, user_id: str) -> bool:
    if channel.is_im:
        return channel.name == user_id or channel.id == f"D{user_id}"
    if channel.members is None:
        return user_id in state.users
    return user_id in channel.members


def _conversation_type(channel: Channel) -> str:
    if channel.is_im:
        return "im"
    return "private_channel" if channel.is_private else "public_channel"


def _users_conversations(state: StandinState, params: Json) -> Json:
    """``users.conversations``: the conversations ``user`` is in (private ones only where the bot is too)."""
    types = [t for t in str(params.get("types") or "public_channel").split(",") if t]
    unknown = [t for t in types if t not in _TYPE_SCOPES]
    if unknown:
        return _err("invalid_types")
    if state.enforce_scopes:
        for kind in types:
            if _TYPE_SCOPES[kind] not in state.scopes:
                return {
                    **_err("missing_scope"),
                    "needed": _TYPE_SCOPES[kind],
                    "provided": ",".join(state.scopes),
                }
    user_id = str(params.get("user") or state.workspace.bot_user_id)
    if user_id not in state.users:
        return _err("user_not_found")
    exclude_archived = str(params.get("exclude_archived", "")).lower() in {"1", "true"}
    found = [
        c
        for c in state.channels.values()
        if _conversation_type(c) in types
        and _is_member(state, c, user_id)
        # Slack shows a bot token only the private conversations the bot is in.
        and (not (c.is_private or c.is_im) or c.bot_is_member)
        and not (exclude_archived and c.is_archived)
    ]
    try:
        limit = max(1, min(int(params.get("limit") or 100), 1000))
        start = int(params.get("cursor") or 0)
    except ValueError:
        return _err("invalid_cursor")
    page = found[start : start + limit]
    more = start + limit < len(found)
    return {
        "ok": True,
        "channels": [c.to_api() for c in page],
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }


_HANDLERS["users.conversations"] = _users_conversations
