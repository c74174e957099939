"""HTTP mode: verify Slack's signature, parse the body correctly, hand the request to Bolt.

Bolt's own body parser treats any form body that *contains* the text ``payload`` as an
interaction and reads ``params["payload"]``; a slash command like ``/vpn delete payload-x``
has no such field, so Bolt sees ``{}`` and answers 404 (reference §1.11). We parse the form
ourselves and give Bolt the right dict. Because we replace what Bolt would derive from the raw
body, we verify the signature first ourselves (Bolt checks it again on the unchanged raw body).

A signature only proves that Slack sent the body once: a captured request stays valid for the
5 minutes Slack's timestamp check allows. :class:`ReplayGuard` accepts each (timestamp, signature)
once, across replicas through the store; a replay is answered 200 with an empty body and no
effect (what Slack expects for a delivery it made twice; a 401 would make the Events API retry).

Every body we cannot read (not UTF-8, not JSON or a form, nested too deep, a wrong content type, a
field of the wrong type) is a 400 with a one-line JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import Clock, SignatureVerifier

from bot.errors import StoreUnavailable
from bot.logs import LogThrottle

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "ReplayGuard",
    "dispatch_http",
    "make_aiohttp_handler",
    "parse_slack_body",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024
# Slack's payloads nest about a dozen levels (a message's rich text inside a block_actions payload).
MAX_DEPTH = 48
# The most form fields a Slack request has is a few dozen (a slash command has about 15).
_MAX_FORM_FIELDS = 200
# A body must arrive within this many seconds once its headers did (a slow sender holds a connection).
BODY_TIMEOUT_SECONDS = 10.0
# Slack's signature check accepts a timestamp this far from now; a replay is refused for as long.
SIGNATURE_WINDOW_SECONDS = 5 * 60
# How long the replay check may wait for the store before it trusts this replica's memory alone.
REPLAY_CHECK_TIMEOUT_SECONDS = 1.0
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}", re.ASCII)
_SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}", re.ASCII)

AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _invalid() -> BoltResponse:
    return BoltResponse(status=401, body={"error": "invalid request"})


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # nested deeper than the interpreter's stack: nobody's real payload
        raise ValueError("the JSON is nested too deep") from None


def _check_tree(value: Any) -> None:
    """Raise ValueError for JSON nested deeper than MAX_DEPTH or text that is not valid Unicode.

    Iterative, so a deep body cannot exhaust the stack here; a lone surrogate (``"\\ud800"``) is
    valid JSON but fails later, when it is encoded for the log or for Slack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                node.encode("utf-8")  # UnicodeEncodeError is a ValueError
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        items = list(node.items()) if isinstance(node, dict) else [(None, v) for v in node]
        for key, item in items:
            if key is not None:
                stack.append((key, depth))
            stack.append((item, depth + 1))


def parse_slack_body(raw_body: str, content_type: str | None) -> dict[str, Any]:
    """Parse a Slack request body: JSON, a form with a ``payload`` field, or a plain form.

    Raises ValueError for anything else: a media type Slack does not send, JSON or form encoding
    that does not parse, nesting deeper than MAX_DEPTH, a ``payload`` field that is not a JSON object.
    """
    if not raw_body:
        return {}
    if content_type not in (_FORM, _JSON):
        raise ValueError(f"Slack sends {_FORM} or {_JSON}, not {content_type}")
    if content_type == _JSON or raw_body.startswith("{"):  # Bolt reads a "{" body as JSON too
        parsed = _json(raw_body)
    else:
        fields = parse_qsl(
            raw_body,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
        params = dict(fields)
        # Interactions arrive as one form field named "payload"; slash commands never have it.
        parsed = _json(params["payload"]) if "payload" in params else params
    if not isinstance(parsed, dict):
        raise ValueError("the body is not an object")
    _check_tree(parsed)
    return parsed


def _check_shape(body: Mapping[str, Any]) -> None:
    """Raise ValueError for wrong types in fields Bolt reads without checking (it would crash with a 500)."""
    for key in ("user", "channel", "team", "enterprise"):
        if body.get(key) is not None and not isinstance(body[key], str | dict):
            raise ValueError(f"{key} is neither an id nor an object")
    for key in ("container", "message", "view", "event"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise ValueError(f"{key} is not an object")
    authorizations = body.get("authorizations")
    if authorizations is not None and not (
        isinstance(authorizations, list) and all(isinstance(a, dict) for a in authorizations)
    ):
        raise ValueError("authorizations is not a list of objects")
    if body.get("type") == "block_actions":
        actions = body.get("actions")
        if not (
            isinstance(actions, list)
            and actions
            and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
        ):
            raise ValueError("actions is not a list of actions")


def _content_type(headers: Mapping[str, str]) -> str | None:
    """The media type without parameters, the way Bolt reads it."""
    value = headers.get("content-type")
    return value.split(";")[0].strip().lower() if value else None


def _verify(verifier: SignatureVerifier, raw_body: str, headers: Mapping[str, str]) -> str | None:
    """Return None if the request is signed by Slack, else why not (for the log)."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not _TIMESTAMP_RE.fullmatch(timestamp) or not _SIGNATURE_RE.fullmatch(signature):
        return "missing or malformed signature headers"
    if abs(verifier.clock.now() - int(timestamp)) > 5 * 60:
        return "stale timestamp"
    if not verifier.is_valid(raw_body, timestamp, signature):
        return "bad signature"
    return None


def _warn(throttle: LogThrottle | None, kind: str, message: str, **extra: Any) -> None:
    if throttle is None:
        log.warning(message, extra=extra)
    else:
        throttle.log(logging.WARNING, kind, message, **extra)


RecordDelivery = Callable[[int, str, int], Awaitable[bool]]
"""``(timestamp, signature, forget_before) -> first time?``: the store's shared replay record."""


class ReplayGuard:
    """Accept each signed request once: by (timestamp, signature), for Slack's 5-minute window.

    The store's record (``record``) is shared by every replica. This replica's memory answers
    first, and alone while the store does not answer within REPLAY_CHECK_TIMEOUT_SECONDS: a
    replay on another replica can then get through, but everything with an effect (a card, an
    approval) needs the store and fails there anyway.
    """

    def __init__(self, record: RecordDelivery | None, *, clock: Clock, max_remembered: int = 100_000) -> None:
        self._record = record
        self._clock = clock
        self._max = max_remembered
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self.throttle = LogThrottle(log)

    @property
    def remembered(self) -> int:
        """How many requests this replica's memory holds now."""
        return len(self._seen)

    def _forget_before(self) -> int:
        # A little beyond the window, so a request at its very edge is still remembered.
        return int(self._clock.now()) - SIGNATURE_WINDOW_SECONDS - 60

    async def first_time(self, timestamp: int, signature: str) -> bool:
        """Whether this signed request is seen for the first time (False: a replay)."""
        key = (timestamp, signature)
        if key in self._seen:
            return False
        forget_before = self._forget_before()
        while self._seen and (next(iter(self._seen))[0] < forget_before or len(self._seen) >= self._max):
            self._seen.popitem(last=False)
        self._seen[key] = None
        if self._record is None:
            return True
        try:
            async with asyncio.timeout(REPLAY_CHECK_TIMEOUT_SECONDS):
                return await self._record(timestamp, signature, forget_before)
        except (StoreUnavailable, TimeoutError) as exc:
            self.throttle.log(
                logging.WARNING,
                "replay check",
                "replay check: the store did not answer (%s); this replica's memory alone decides",
                type(exc).__name__,
            )
            return True


async def dispatch_http(
    app: AsyncApp,
    raw_body: str,
    headers: Mapping[str, str],
    *,
    verifier: SignatureVerifier,
    query: str = "",
    replays: ReplayGuard | None = None,
    throttle: LogThrottle | None = None,
) -> BoltResponse:
    """Verify, parse and dispatch one HTTP request from Slack.

    401 if it is not signed by Slack, 400 if its body cannot be read, 200 with no effect if it
    is a replay of a request already accepted. With ``throttle``, each kind of refusal is logged
    once per interval rather than once per request (anyone on the network can send them).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    problem = _verify(verifier, raw_body, lowered)
    if problem is not None:
        # Never log the body: it may carry a response_url, user text or a token.
        _warn(
            throttle, problem, "rejected a request not signed by Slack", reason=problem, bytes=len(raw_body)
        )
        return _invalid()
    # Parse before building the Bolt request: its constructor runs Bolt's own parser, which
    # raises on a ``payload`` field that is not JSON and would turn into a 500 with a traceback.
    try:
        body = parse_slack_body(raw_body, _content_type(lowered))
        _check_shape(body)
        request = AsyncBoltRequest(body=raw_body, query=query, headers=dict(lowered))
        if body != request.body:
            # Bolt misread it (the "payload" quirk): give Bolt the right body and the context built from it.
            request.body = body
            request.context = build_async_context(AsyncBoltContext({}), body)
    # Bolt's parser and context builder index into the body unchecked; a signed but malformed
    # body is the sender's error (400), never a 500 with a traceback.
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
        _warn(
            throttle,
            "unreadable body",
            "rejected a signed request with an unreadable body",
            bytes=len(raw_body),
        )
        return BoltResponse(status=400, body={"error": "unreadable body"})
    timestamp, signature = lowered["x-slack-request-timestamp"], lowered["x-slack-signature"]
    if replays is not None and not await replays.first_time(int(timestamp), signature):
        _warn(throttle, "replay", "ignored a replayed Slack request (accepted once already)")
        return BoltResponse(status=200, body="")
    return await app.async_dispatch(request)


def make_aiohttp_handler(
    app: AsyncApp,
    *,
    signing_secret: str,
    clock: Clock | None = None,
    record_delivery: RecordDelivery | None = None,
) -> AiohttpHandler:
    """Return an aiohttp handler to mount at ``POST /slack/events``.

    ``record_delivery`` is the store's replay record, shared by the replicas; without it each
    handler remembers the requests it accepted itself.
    """
    clock = clock or Clock()
    verifier = SignatureVerifier(signing_secret, clock=clock)
    replays = ReplayGuard(record_delivery, clock=clock)
    throttle = replays.throttle

    async def handle_slack_request(request: web.Request) -> web.StreamResponse:
        """Handle one POST from Slack."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                raw = await request.read()
        except TimeoutError:
            _warn(throttle, "slow body", "dropped a request whose body did not arrive in time")
            return web.json_response({"error": "request body too slow"}, status=408)
        if len(raw) > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _warn(throttle, "not UTF-8", "rejected a request that is not UTF-8", bytes=len(raw))
            return web.json_response({"error": "invalid request"}, status=400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        bolt_response = await dispatch_http(
            app,
            text,
            headers,
            verifier=verifier,
            query=request.query_string,
            replays=replays,
            throttle=throttle,
        )
        return await to_aiohttp_response(bolt_response)

    return handle_slack_request
