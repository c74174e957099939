"""Helpers for the cloud client tests: a recording fake VPC over httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from bot.cloud.signer import Credentials, canonical_headers, canonical_request, sign

AK = Credentials("testid", "testsecret")

Reply = httpx.Response | Exception
Handler = Callable[[httpx.Request], Reply]


def json_reply(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


def error_reply(
    code: str, status: int = 400, message: str = "msg", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"RequestId": f"req-{code}", "HostId": "vpc.aliyuncs.com", "Code": code, "Message": message}
    return json_reply(body, status, headers)


def params_of(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))


def verify_signature(request: httpx.Request, secret: str = AK.access_key_secret) -> bool:
    """Recompute the ACS3 signature the way the server does, from the headers the request names."""
    auth = request.headers["authorization"]
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    headers = dict(request.headers)
    headers["host"] = request.url.netloc.decode()
    canon, signed_names = canonical_headers(headers, signed)
    canonical = canonical_request(
        method=request.method,
        path=request.url.raw_path.split(b"?", 1)[0].decode() or "/",
        query=request.url.query.decode(),
        headers=canon,
        signed_headers=signed_names,
        payload_hash=request.headers["x-acs-content-sha256"],
    )
    return auth.endswith(f"Signature={sign(secret, canonical)}")


@dataclass
class FakeVpc:
    """Answers requests from a script of replies (the last one repeats) and records every request."""

    replies: list[Reply] = field(default_factory=list)
    handler: Handler | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply: Reply
        if self.handler is not None:
            reply = self.handler(request)
        else:
            reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def actions(self) -> list[str]:
        return [r.headers["x-acs-action"] for r in self.requests]
