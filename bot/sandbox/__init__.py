"""Local stand-ins speaking the real wire protocols, so tests and the demo need no accounts.

:mod:`bot.sandbox.vpc` serves Alibaba Cloud's VPC OpenAPI (2016-04-28) over the state in
:mod:`bot.sandbox.vpc_state`; :mod:`bot.sandbox.slack` is the Slack stand-in; and
:func:`bot.sandbox.local.serve_local_tools` runs both for ``vpn-bot sandbox [--slack]``.
"""

from __future__ import annotations

from bot.sandbox.vpc import (
    API_VERSION,
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    RunningSandbox,
    create_vpc_sandbox,
    serve_forever,
    start_vpc_sandbox,
)
from bot.sandbox.vpc_state import Fault, FaultSet, RecordedRequest, SandboxApiError, SandboxState

__all__ = [
    "API_VERSION",
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCESS_KEY_SECRET",
    "Fault",
    "FaultSet",
    "RecordedRequest",
    "RunningSandbox",
    "SandboxApiError",
    "SandboxState",
    "create_vpc_sandbox",
    "serve_forever",
    "start_vpc_sandbox",
]
