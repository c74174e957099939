"""Alibaba Cloud checks: where the AccessKey comes from, whether the API accepts it, the region,
and every RAM permission the bot needs (the probes in :mod:`.permissions`).

Failures are read through the bot's error table (``CloudError.info``, from
:mod:`bot.cloud.codes`): its friendly text, its action and whether the error passes by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Final

from bot.cloud.credentials import CredentialsProvider, StaticCredentialsProvider
from bot.cloud.endpoints import EndpointResolver, sts_endpoint
from bot.doctor.model import CLOUD, Check, Status, plural, unexpected
from bot.doctor.permissions import PROBES, DoctorVpc, code_of, is_denied, permission_fix, probe
from bot.errors import CloudError, CloudTransportError, RetryClass, UsageError

if TYPE_CHECKING:
    from bot.cloud.accounts import AccountClients
    from bot.config import Settings

__all__ = ["check_cloud"]

log = logging.getLogger("bot.doctor")

_CHAIN: Final = (
    "OIDC/RRSA, ~/.aliyun/config.json profile, ~/.alibabacloud/credentials.ini, ECS RAM role, "
    "ALIBABA_CLOUD_CREDENTIALS_URI"
)
_FIX_NO_CREDENTIALS: Final = (
    "Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (in .env or the environment) to "
    "the AccessKey of the bot's RAM user, or configure a profile, RAM role or credentials URI (see the "
    "README). Off ECS, set ALIBABA_CLOUD_ECS_METADATA_DISABLED=true so the chain skips the metadata service."
)
_FIX_NETWORK: Final = (
    "Check DNS, proxy and firewall for outbound HTTPS to vpc.aliyuncs.com; if VPNBOT_VPC_ENDPOINT is set, "
    "check that it is right (unset it to use Alibaba Cloud's own endpoints)."
)


async def check_cloud(
    settings: Settings,
    *,
    credentials: CredentialsProvider | None,
    problems: tuple[str, ...] = (),
    vpc: DoctorVpc | None,
    accounts: AccountClients | None = None,
) -> list[Check]:
    """The Alibaba Cloud rows; ``problems`` are the credential settings' own (a half AccessKey pair).

    With several accounts (``accounts``), the bot's own credentials only assume roles: each
    account's role is assumed and every permission probed through it, in rows named after it.
    """
    return [_endpoints_row(settings), *await _cloud_rows(settings, credentials, problems, vpc, accounts)]


async def _cloud_rows(
    settings: Settings,
    credentials: CredentialsProvider | None,
    problems: tuple[str, ...],
    vpc: DoctorVpc | None,
    accounts: AccountClients | None,
) -> list[Check]:
    found = await _credentials_row(credentials, problems)
    if found.status is not Status.PASS or vpc is None:
        return _skipped(found, "skipped: no usable Alibaba Cloud credentials.", signature=True)
    if accounts is None:
        return [found, *await _api_rows(settings, vpc)]
    per_account = await asyncio.gather(*(_account_rows(settings, accounts, name) for name in accounts.names))
    return [found, *(row for rows in per_account for row in rows)]


def _endpoints_row(settings: Settings) -> Check:
    """The host each configured region's calls go to (and STS's with several accounts), as resolved."""
    resolver = EndpointResolver(
        override=settings.vpc_endpoint, per_region=settings.vpc_endpoints, network=settings.alibaba_network
    )
    regions = [settings.default_region, *settings.allowed_regions, *settings.vpc_endpoints]
    try:
        hosts = "; ".join(f"{region}: {url.split('://', 1)[1]}" for region, url in resolver.describe(regions))
    except UsageError as err:  # a region the settings let through but no host can be made of
        return Check(CLOUD, "Endpoints", Status.FAIL, str(err))
    text = f"network {settings.alibaba_network} (VPNBOT_ALIBABA_NETWORK): {hosts}"
    if settings.multi_account:
        sts = sts_endpoint(settings.sts_endpoint, settings.default_region, settings.alibaba_network)
        text += f"; STS: {sts or 'sts.aliyuncs.com'}"
    return Check(CLOUD, "Endpoints", Status.PASS, f"{text}.")


def _named(rows: list[Check], account: str) -> list[Check]:
    return [dataclasses.replace(r, name=f"[{account}] {r.name}") for r in rows]


async def _account_rows(settings: Settings, accounts: AccountClients, account: str) -> list[Check]:
    """AssumeRole for ``account``, then the same API rows as for one account, through its role."""
    arn = accounts.role_arn(account) or "?"
    try:
        await accounts.credentials(account).get()
    except CloudError as err:
        log.debug("doctor: AssumeRole failed for %s", account, exc_info=True)
        assumed = Check(
            CLOUD,
            "AssumeRole",
            Status.FAIL,
            f"{arn}: {err.info.friendly} ({code_of(err)}).",
            f"{err.info.action} Let the bot's identity in the role's trust policy and grant it sts:AssumeRole "
            "on the role (README: Several Alibaba Cloud accounts).",
        )
        return _named(_skipped(assumed, "skipped: the role could not be assumed.", signature=True), account)
    assumed = Check(CLOUD, "AssumeRole", Status.PASS, f"assumed {arn} (STS, session vpnbot).")
    return _named([assumed, *await _api_rows(settings, accounts.client(account))], account)


async def _credentials_row(credentials: CredentialsProvider | None, problems: tuple[str, ...]) -> Check:
    name = "Credentials"
    if problems or credentials is None:
        return Check(
            CLOUD,
            name,
            Status.FAIL,
            "; ".join(problems) or "no credentials provider.",
            "Set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or unset both to use "
            f"the credential chain ({_CHAIN}).",
        )
    if isinstance(credentials, StaticCredentialsProvider):
        sts = " with an STS token" if (await credentials.get()).security_token else ""
        return Check(
            CLOUD,
            name,
            Status.PASS,
            f"AccessKey pair from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET{sts}.",
        )
    try:
        await credentials.get()
    except CloudError as err:
        log.debug("doctor: the credential chain found no key", exc_info=True)
        return Check(
            CLOUD,
            name,
            Status.FAIL,
            "no Alibaba Cloud credentials found: no AccessKey pair in the environment or .env, and the "
            f"credential chain ({_CHAIN}) found none ({err.code}).",
            _FIX_NO_CREDENTIALS,
        )
    return Check(
        CLOUD, name, Status.PASS, f"an AccessKey from the Alibaba Cloud credential chain ({_CHAIN})."
    )


def _skipped(first: Check, why: str, *, signature: bool) -> list[Check]:
    rows = [first]
    if signature:
        rows.append(Check(CLOUD, "Signature", Status.SKIP, why))
    rows.append(Check(CLOUD, "vpc:DescribeRegions", Status.SKIP, why))
    rows += [Check(CLOUD, f"vpc:{p.action}", Status.SKIP, why) for p in PROBES]
    return rows


async def _api_rows(settings: Settings, vpc: DoctorVpc) -> list[Check]:
    where = f" at {settings.vpc_endpoint} (VPNBOT_VPC_ENDPOINT)" if settings.vpc_endpoint else ""
    accepted = Check(CLOUD, "Signature", Status.PASS, f"Alibaba Cloud accepted the signed request{where}.")
    regions: list[str] | None = None
    try:
        regions = [r.region_id for r in await vpc.describe_regions()]
    except CloudError as err:
        log.debug("doctor: DescribeRegions failed", exc_info=True)
        if not is_denied(err):
            return _skipped(
                _signature_failure(err, where), "skipped: the API did not accept the key.", signature=False
            )
        regions_row = Check(
            CLOUD,
            "vpc:DescribeRegions",
            Status.FAIL,
            f"missing ({code_of(err)}).",
            permission_fix("DescribeRegions"),
            needs_ram=True,
        )
    # The doctor's contract is a table, never a traceback: any crash becomes a row.
    except Exception as exc:
        log.debug("doctor: DescribeRegions failed", exc_info=True)
        return _skipped(
            unexpected(CLOUD, "Signature", exc), "skipped: DescribeRegions failed.", signature=False
        )
    else:
        regions_row = Check(
            CLOUD, "vpc:DescribeRegions", Status.PASS, f"allowed ({plural(len(regions), 'region')})."
        )
    rows = [accepted, regions_row]
    if regions is not None:
        rows.append(_region_row(settings.default_region, regions))
    rows += await asyncio.gather(*(probe(vpc, settings.default_region, p) for p in PROBES))
    return rows


def _signature_failure(err: CloudError, where: str) -> Check:
    if isinstance(err, CloudTransportError):
        return Check(
            CLOUD, "Signature", Status.FAIL, f"{err.info.friendly}{where} ({err.code}).", _FIX_NETWORK
        )
    if err.retry is not RetryClass.NEVER:
        detail = f"no usable answer yet: {err.info.friendly} ({code_of(err)})."
        return Check(
            CLOUD, "Signature", Status.FAIL, detail, "It passes by itself: run the doctor again in a minute."
        )
    return Check(CLOUD, "Signature", Status.FAIL, f"{err.info.friendly} ({code_of(err)}).", err.info.action)


def _region_row(region: str, regions: list[str]) -> Check:
    if region in regions:
        return Check(CLOUD, "Default region", Status.PASS, f"{region} is a VPC region.")
    shown = ", ".join(regions[:12]) + ("…" if len(regions) > 12 else "")
    return Check(
        CLOUD,
        "Default region",
        Status.FAIL,
        f"{region} is not among the regions DescribeRegions lists.",
        f"Set VPNBOT_DEFAULT_REGION to one of: {shown}",
    )
