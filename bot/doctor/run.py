"""Running the doctor: build the bot's own clients once (:func:`open_clients`), run every area, print.

The clients are the bot's: :class:`bot.cloud.client.VpcClient` with the provider
:func:`bot.cloud.credentials.build_credentials_provider` picks, and slack_sdk's ``AsyncWebClient``
with the bot's retry handlers. Tests pass their own :class:`DoctorClients`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

from slack_sdk.web.async_client import AsyncWebClient

from bot.cloud.accounts import AccountClients
from bot.cloud.client import VpcClient
from bot.cloud.credentials import CredentialsProvider, build_credentials_provider
from bot.doctor.alibaba import check_cloud
from bot.doctor.database import check_database, database_password
from bot.doctor.model import CLOUD, DATABASE, SLACK, Check, Status, guarded
from bot.doctor.permissions import DoctorVpc
from bot.doctor.quiet import quiet_libraries
from bot.doctor.report import mask, render
from bot.doctor.settings import check_settings, secret_text
from bot.doctor.slack import check_slack
from bot.errors import ConfigError
from bot.logs import secret_values
from bot.slack.notifier import configure_retries

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = ["DoctorClients", "diagnose", "open_clients", "run_doctor"]

# A doctor should answer within seconds, not wait out the bot's full retry budget.
_CLOUD_DEADLINE_S: Final = 20.0
_SLACK_TIMEOUT_S: Final = 15


@dataclass(frozen=True, slots=True)
class DoctorClients:
    """What the doctor checks through; ``None`` where the settings give nothing to build it from."""

    slack: AsyncWebClient | None
    vpc: DoctorVpc | None
    credentials: CredentialsProvider | None
    credential_problems: tuple[str, ...] = ()
    # With several accounts: each account's role, assumed over ``credentials``.
    accounts: AccountClients | None = None


@contextlib.asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[DoctorClients]:
    """Build the bot's clients from ``settings`` (with the doctor's short deadlines); close them after."""
    slack: AsyncWebClient | None = None
    token = secret_text(settings.slack_bot_token)
    if token:
        slack = AsyncWebClient(
            token=token, base_url=_base_url(settings.slack_api_url), timeout=_SLACK_TIMEOUT_S
        )
        configure_retries(slack)
    credentials: CredentialsProvider | None = None
    problems: tuple[str, ...] = ()
    vpc: VpcClient | None = None
    accounts: AccountClients | None = None
    try:
        credentials = build_credentials_provider(settings)
    except ConfigError as exc:
        problems = tuple(exc.problems)
    else:
        deadline = min(settings.api_deadline_seconds, _CLOUD_DEADLINE_S)
        short = settings.model_copy(update={"api_deadline_seconds": deadline})
        vpc = VpcClient.from_settings(short, credentials=credentials)
        if settings.multi_account:
            accounts = AccountClients.from_settings(short, base=vpc, base_credentials=credentials)
    try:
        yield DoctorClients(
            slack=slack, vpc=vpc, credentials=credentials, credential_problems=problems, accounts=accounts
        )
    finally:
        if vpc is not None:
            await vpc.aclose()
        session = getattr(slack, "session", None)
        if session is not None and not session.closed:
            await session.close()


def _base_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


async def diagnose(settings: Settings, clients: DoctorClients) -> list[Check]:
    """Run every check (the network ones concurrently) and return the rows in table order."""
    rows = check_settings(settings)
    with quiet_libraries():
        groups = await asyncio.gather(
            guarded(SLACK, check_slack(settings, clients.slack)),
            guarded(
                CLOUD,
                check_cloud(
                    settings,
                    credentials=clients.credentials,
                    problems=clients.credential_problems,
                    vpc=clients.vpc,
                    accounts=clients.accounts,
                ),
            ),
            guarded(DATABASE, check_database(settings.database_url)),
        )
    for group in groups:
        rows.extend(group)
    return rows


async def run_doctor(
    settings: Settings, *, out: TextIO | None = None, clients: DoctorClients | None = None
) -> int:
    """Check the setup, print the table to ``out`` (stdout), return 1 if any check FAILed, else 0.

    Without ``clients`` the doctor builds the bot's own from ``settings`` and closes them after.
    """
    if clients is None:
        async with open_clients(settings) as built:
            rows = await diagnose(settings, built)
            token = built.slack.token if built.slack is not None else None
    else:
        rows = await diagnose(settings, clients)
        token = clients.slack.token if clients.slack is not None else None
    secrets = [*secret_values(settings), database_password(settings.database_url), token or ""]
    stream = out if out is not None else sys.stdout
    stream.write(mask(render(rows), secrets))
    stream.flush()
    return 1 if any(r.status is Status.FAIL for r in rows) else 0
