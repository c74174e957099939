"""Shared helpers for the VPC sandbox tests: a plain signed httpx caller and a polling wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from bot.cloud.signer import AcsV3Auth, Credentials, canonical_query
from bot.sandbox.vpc import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET

DEMO = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
UPDATE_SECONDS = 0.2


@dataclass
class Caller:
    """Signs and sends VPC API calls with httpx + AcsV3Auth, as the bot's client does on the wire."""

    http: httpx.AsyncClient
    base: str
    credentials: Credentials = DEMO

    async def call(
        self,
        action: str,
        params: dict[str, str] | None = None,
        *,
        credentials: Credentials | None = None,
        nonce: Callable[[], str] | None = None,
        clock: Callable[[], datetime] | None = None,
        version: str = "2016-04-28",
        tamper: Callable[[httpx.Request], None] | None = None,
    ) -> httpx.Response:
        auth_kwargs: dict[str, Any] = {}
        if nonce is not None:
            auth_kwargs["nonce"] = nonce
        if clock is not None:
            auth_kwargs["clock"] = clock
        auth = AcsV3Auth(credentials or self.credentials, **auth_kwargs)
        request = self.http.build_request(
            "POST",
            f"{self.base}/?{canonical_query(params or {})}",
            headers={"x-acs-action": action, "x-acs-version": version, "accept": "application/json"},
        )
        if tamper is None:
            return await self.http.send(request, auth=auth)
        signed = next(auth.auth_flow(request))
        tamper(signed)
        return await self.http.send(signed)

    async def ok(self, action: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.call(action, params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def eventually(predicate: Callable[[], Any], *, within: float = 5.0) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
