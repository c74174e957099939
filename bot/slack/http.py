"""HTTP mode: verify Slack's signature, parse the body correctly, hand the request to Bolt.

Bolt's own body parser treats any form body that *contains* the text ``payload`` as an
interaction and reads ``params["payload"]``; a slash command like ``/vpn delete payload-x``
has no such field, so Bolt sees ``{}`` and answers 404 (reference §1.11). We parse the form
ourselves and give Bolt the right dict. Because we replace what Bolt would derive from the raw
body, we verify the signature first ourselves (Bolt checks it again on the unchanged raw body).
"""

from __future__ import annotations

import json
import logging
import re
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

__all__ = ["MAX_BODY_BYTES", "dispatch_http", "make_aiohttp_handler", "parse_slack_body"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}", re.ASCII)
_SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}", re.ASCII)

AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _invalid() -> BoltResponse:
    return BoltResponse(status=401, body={"error": "invalid request"})


def parse_slack_body(raw_body: str, content_type: str | None) -> dict[str, Any]:
    """Parse a Slack request body: JSON, a form with a ``payload`` field, or a plain form.

    Raises ValueError for a ``payload`` field that is not a JSON object.
    """
    if not raw_body:
        return {}
    if content_type == "application/json" or raw_body.startswith("{"):
        parsed = json.loads(raw_body)
    else:
        params = dict(parse_qsl(raw_body, keep_blank_values=True))
        # Interactions arrive as one form field named "payload"; slash commands never have it.
        parsed = json.loads(params["payload"]) if "payload" in params else params
    if not isinstance(parsed, dict):
        raise ValueError("the body is not an object")
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
    return value.split(";")[0] if value else None


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


async def dispatch_http(
    app: AsyncApp,
    raw_body: str,
    headers: Mapping[str, str],
    *,
    verifier: SignatureVerifier,
    query: str = "",
) -> BoltResponse:
    """Verify, parse and dispatch one HTTP request from Slack; 401 if it is not signed by Slack."""
    lowered = {k.lower(): v for k, v in headers.items()}
    problem = _verify(verifier, raw_body, lowered)
    if problem is not None:
        # Never log the body: it may carry a response_url, user text or a token.
        log.warning(
            "rejected a request not signed by Slack", extra={"reason": problem, "bytes": len(raw_body)}
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
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        log.warning("rejected a signed request with an unreadable body", extra={"bytes": len(raw_body)})
        return BoltResponse(status=400, body={"error": "unreadable body"})
    return await app.async_dispatch(request)


def make_aiohttp_handler(app: AsyncApp, *, signing_secret: str, clock: Clock | None = None) -> AiohttpHandler:
    """Return an aiohttp handler to mount at ``POST /slack/events``."""
    verifier = SignatureVerifier(signing_secret, clock=clock or Clock())

    async def handle_slack_request(request: web.Request) -> web.StreamResponse:
        """Handle one POST from Slack."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            return web.json_response({"error": "request too large"}, status=413)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("rejected a request that is not UTF-8", extra={"bytes": len(raw)})
            return web.json_response({"error": "invalid request"}, status=400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        bolt_response = await dispatch_http(app, text, headers, verifier=verifier, query=request.query_string)
        return await to_aiohttp_response(bolt_response)

    return handle_slack_request
