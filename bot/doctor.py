"""``vpn-bot doctor``: check a real setup before the first real deletion.

Four groups of checks, each row ``PASS``/``WARN``/``FAIL``/``SKIP`` with the fix for what is wrong:

- **Settings**: the Slack tokens for the chosen mode, where the Alibaba Cloud AccessKey comes
  from, the default region, who may approve.
- **Slack**: ``auth.test``, the granted bot scopes (``x-oauth-scopes``) against the manifest's,
  and every user group named in ``VPNBOT_APPROVERS``/``VPNBOT_REQUESTERS``.
- **Alibaba Cloud**: the credentials (``DescribeRegions``) and every VPC action the bot uses.
  The permissions are probed with ids that cannot exist, so nothing real is read or changed.
  Alibaba Cloud authorises a call before it looks the resource up: an ``….NotFound`` answer
  proves the action is allowed, ``Forbidden``/``Forbidden.RAM``/``Forbbiden.SubUser`` proves it
  is not. In particular **DeleteVpnConnection is probed without deleting anything**: it is called
  for ``vco-vpnbotdoctorprobe00000000`` (with a fresh ClientToken), which no account can have.
- **Database**: reachable, and migrated (opening the store applies pending migrations).

One failing check never stops the others; no traceback is printed (details go to the DEBUG log).
The exit status is 1 when any row is ``FAIL``, else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol, TextIO

from bot.errors import BotError, CloudApiError, CloudError, CloudTransportError, ConfigError
from bot.logs import secret_values
from bot.slack.scopes import BOT_SCOPES

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.cloud.client import VpcClient
    from bot.config import Settings

__all__ = [
    "NEEDED_SCOPES",
    "PROBE_GATEWAY_ID",
    "PROBE_VCO_ID",
    "RAM_ACTIONS",
    "Check",
    "DoctorVpc",
    "Status",
    "diagnose",
    "mask_database_url",
    "ram_policy",
    "render",
    "run_doctor",
]

log = logging.getLogger("bot.doctor")

NEEDED_SCOPES: Final = BOT_SCOPES
# Ids no account can have: the permission probes answer NotFound (allowed) or Forbidden (missing).
PROBE_VCO_ID: Final = "vco-vpnbotdoctorprobe00000000"
PROBE_GATEWAY_ID: Final = "vpn-vpnbotdoctorprobe00000000"
RAM_ACTIONS: Final = (
    "vpc:DescribeVpnConnection",
    "vpc:DescribeVpnConnections",
    "vpc:DescribeVpnGateway",
    "vpc:DeleteVpnConnection",
    "vpc:DescribeRegions",
    "vpc:DescribeVpnRouteEntries",
    "vpc:DescribeVpnPbrRouteEntries",
)
# A doctor should answer within seconds, not wait out the bot's full retry budget.
_CLOUD_DEADLINE_S: Final = 20.0
_GROUP_TIMEOUT_S: Final = 45.0
_SLACK_TIMEOUT_S: Final = 15
_WIDTH: Final = 110
_MASK: Final = "***"

_SETTINGS, _SLACK, _CLOUD, _DATABASE = "Settings", "Slack", "Alibaba Cloud", "Database"
_SECTIONS: Final = (_SETTINGS, _SLACK, _CLOUD, _DATABASE)

_REINSTALL = (
    "then reinstall the app to the workspace (api.slack.com/apps → your app → Install App → "
    "Reinstall to Workspace); if Slack shows a new Bot User OAuth Token, put it in SLACK_BOT_TOKEN."
)
_FIX_BOT_CREDENTIAL = (
    "Set SLACK_BOT_TOKEN to the Bot User OAuth Token (xoxb-…) from api.slack.com/apps → your app → "
    "OAuth & Permissions; if the app was uninstalled, install it again first."
)
_BAD_TOKEN_ERRORS: Final = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "not_allowed_token_type",
    }
)
_PERMISSION_PREFIXES: Final = ("Forbidden", "Forbbiden", "NoPermission", "UnauthorizedOperation")
# Forbidden-shaped codes that are about the key itself, not about a missing RAM action.
_KEY_CODES: Final = frozenset({"Forbidden.AccessKeyDisabled", "InvalidAccessKeyId.NotFound"})


class Status(StrEnum):
    """The outcome of one check."""

    PASS = "PASS"  # noqa: S105 - a check result, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the doctor's table; ``fix`` says what to do when it is not PASS."""

    section: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    needs_ram: bool = False  # a missing RAM permission: the table then prints the policy to grant


class DoctorVpc(Protocol):
    """The VPC calls the doctor makes; :class:`bot.cloud.client.VpcClient` implements it."""

    async def list_regions(self) -> list[str]: ...

    async def describe_vpn_connections(
        self, *, region: str, vpn_connection_id: str | None = None
    ) -> Sequence[object]: ...

    async def describe_vpn_connection(self, *, region: str, vco_id: str) -> object: ...

    async def describe_vpn_gateway(self, *, region: str, gateway_id: str) -> object: ...

    async def describe_vpn_route_entries(self, *, region: str, gateway_id: str) -> Sequence[object]: ...

    async def describe_vpn_pbr_route_entries(self, *, region: str, gateway_id: str) -> Sequence[object]: ...

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str: ...


# --- settings ------------------------------------------------------------------------------------


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter()).strip() if callable(getter) else ""


def _check_settings(settings: Settings) -> list[Check]:
    rows = [_bot_token_row(settings), _mode_row(settings), _credentials_source_row(settings)]
    region = settings.default_region
    if settings.allowed_regions and region not in settings.allowed_regions:
        rows.append(
            Check(
                _SETTINGS,
                "Default region",
                Status.WARN,
                f"{region}, but VPNBOT_ALLOWED_REGIONS ({', '.join(settings.allowed_regions)}) does not "
                "include it: a request without a region will be refused.",
                f"Add {region} to VPNBOT_ALLOWED_REGIONS or set VPNBOT_DEFAULT_REGION to an allowed region.",
            )
        )
    else:
        rows.append(Check(_SETTINGS, "Default region", Status.PASS, f"{region} (VPNBOT_DEFAULT_REGION)"))
    rows.append(_approvers_row(settings))
    rows.append(_request_policy_row(settings))
    return rows


def _bot_token_row(settings: Settings) -> Check:
    name = "Slack bot token"
    token = _secret(settings.slack_bot_token)
    if not token:
        return Check(_SETTINGS, name, Status.FAIL, "SLACK_BOT_TOKEN is not set.", _FIX_BOT_CREDENTIAL)
    if token.startswith("xapp-"):
        return Check(
            _SETTINGS,
            name,
            Status.FAIL,
            "SLACK_BOT_TOKEN holds an app-level token (xapp-…), not a bot token.",
            "Move that value to SLACK_APP_TOKEN. " + _FIX_BOT_CREDENTIAL,
        )
    if not token.startswith("xoxb-"):
        return Check(
            _SETTINGS,
            name,
            Status.WARN,
            "SLACK_BOT_TOKEN is set but does not start with xoxb- (a user token acts as a person).",
            _FIX_BOT_CREDENTIAL,
        )
    return Check(_SETTINGS, name, Status.PASS, "SLACK_BOT_TOKEN is set (xoxb-…).")


def _mode_row(settings: Settings) -> Check:
    name = "Slack connection mode"
    app_token = _secret(settings.slack_app_token)
    signing = _secret(settings.slack_signing_secret)
    if app_token:
        if not app_token.startswith("xapp-"):
            return Check(
                _SETTINGS,
                name,
                Status.FAIL,
                "Socket Mode: SLACK_APP_TOKEN is set but is not an app-level token (xapp-…).",
                "Create an app-level token with the connections:write scope (api.slack.com/apps → your app → "
                "Basic Information → App-Level Tokens) and put it in SLACK_APP_TOKEN.",
            )
        also = " SLACK_SIGNING_SECRET is set too, for `serve --http`." if signing else ""
        return Check(_SETTINGS, name, Status.PASS, "Socket Mode: SLACK_APP_TOKEN is set (xapp-…)." + also)
    if signing:
        return Check(
            _SETTINGS,
            name,
            Status.PASS,
            "HTTP mode: SLACK_SIGNING_SECRET is set (only Slack can verify it: a wrong one shows as "
            "HTTP 401 answers to Slack's requests).",
        )
    return Check(
        _SETTINGS,
        name,
        Status.FAIL,
        "Neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP mode) is set.",
        "For Socket Mode set SLACK_APP_TOKEN (xapp-…, Basic Information → App-Level Tokens, scope "
        "connections:write); for HTTP mode set SLACK_SIGNING_SECRET (Basic Information → App Credentials).",
    )


def _credentials_source_row(settings: Settings) -> Check:
    from bot.cloud.credentials import StaticCredentialsProvider

    name = "Alibaba credentials source"
    try:
        static = StaticCredentialsProvider.from_settings(settings)
    except ConfigError as exc:
        return Check(
            _SETTINGS,
            name,
            Status.FAIL,
            "; ".join(exc.problems),
            "Set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or unset both to use "
            "the credential chain (profile, RAM role, OIDC, credentials URI).",
        )
    if static is not None:
        sts = " with ALIBABA_CLOUD_SECURITY_TOKEN (STS)" if _secret(settings.security_token) else ""
        return Check(
            _SETTINGS,
            name,
            Status.PASS,
            f"AccessKey pair from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET{sts}.",
        )
    return Check(
        _SETTINGS,
        name,
        Status.PASS,
        "No AccessKey pair in the environment: the Alibaba Cloud credential chain is used (OIDC/RRSA, "
        "~/.aliyun/config.json profile, ~/.alibabacloud/credentials.ini, ECS RAM role, "
        "ALIBABA_CLOUD_CREDENTIALS_URI). The Alibaba Cloud checks below show whether it finds a key.",
    )


def _approvers_row(settings: Settings) -> Check:
    name = "Approvers"
    approvers = settings.approvers
    if not approvers:
        return Check(
            _SETTINGS,
            name,
            Status.WARN,
            "VPNBOT_APPROVERS is empty: anyone who sees the message may approve.",
            "Set VPNBOT_APPROVERS to the Slack user ids (U…) and/or user-group ids (S…) allowed to approve, "
            "comma-separated.",
        )
    groups = [a for a in approvers if a.startswith("S")]
    users = len(approvers) - len(groups)
    detail = f"{_plural(users, 'user')}, {_plural(len(groups), 'user group')} (VPNBOT_APPROVERS)"
    if settings.require_second_approver and not groups and users < 2:
        return Check(
            _SETTINGS,
            name,
            Status.WARN,
            detail + "; VPNBOT_REQUIRE_SECOND_APPROVER is on but only one approver is listed: "
            "no deletion can ever be approved.",
            "Add a second approver to VPNBOT_APPROVERS, or turn VPNBOT_REQUIRE_SECOND_APPROVER off.",
        )
    second = "; a second approver is required" if settings.require_second_approver else ""
    return Check(_SETTINGS, name, Status.PASS, detail + second + ".")


def _request_policy_row(settings: Settings) -> Check:
    requesters = (
        f"{_plural(len(settings.requesters), 'id')} in VPNBOT_REQUESTERS" if settings.requesters else "anyone"
    )
    channels = ", ".join(settings.allowed_channels) if settings.allowed_channels else "any channel"
    regions = ", ".join(settings.allowed_regions) if settings.allowed_regions else "any region"
    return Check(
        _SETTINGS,
        "Who may request",
        Status.PASS,
        f"requesters: {requesters}; channels: {channels}; regions: {regions}.",
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- Slack ---------------------------------------------------------------------------------------


def _slack_error(exc: Exception) -> str:
    """Slack's error string for a SlackApiError, else ``""``."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "unknown_error")
    return ""


def _is_connection_error(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, OSError | TimeoutError | aiohttp.ClientError)


async def _check_slack(settings: Settings, slack: AsyncWebClient | None) -> list[Check]:
    if slack is None:
        if not _secret(settings.slack_bot_token):
            why = "skipped: SLACK_BOT_TOKEN is not set."
            return [
                Check(_SLACK, "auth.test", Status.SKIP, why),
                Check(_SLACK, "Bot scopes", Status.SKIP, why),
            ]
        from slack_sdk.web.async_client import AsyncWebClient

        slack = AsyncWebClient(
            token=_secret(settings.slack_bot_token), base_url=settings.slack_api_url, timeout=_SLACK_TIMEOUT_S
        )
    try:
        answer = await slack.auth_test()
    except Exception as exc:
        log.debug("doctor: auth.test failed", exc_info=True)
        row = _auth_failure_row(exc, settings)
        why = "skipped: auth.test failed."
        return [row, Check(_SLACK, "Bot scopes", Status.SKIP, why)]
    team = f"{answer.get('team') or '?'} ({answer.get('team_id') or '?'})"
    bot = f"@{answer.get('user') or '?'} ({answer.get('user_id') or '?'})"
    rows = [Check(_SLACK, "auth.test", Status.PASS, f"workspace {team}, bot user {bot}.")]
    rows.append(_scopes_row(_header(answer.headers, "x-oauth-scopes")))
    groups = list(dict.fromkeys(g for g in (*settings.approvers, *settings.requesters) if g.startswith("S")))
    for group in groups:
        rows.append(await _usergroup_row(slack, group, settings))
    return rows


def _header(headers: object, name: str) -> str | None:
    get = getattr(headers, "items", None)
    if not callable(get):
        return None
    for key, value in get():
        if str(key).lower() == name:
            return str(value)
    return None


def _auth_failure_row(exc: Exception, settings: Settings) -> Check:
    error = _slack_error(exc)
    if error in _BAD_TOKEN_ERRORS:
        return Check(
            _SLACK,
            "auth.test",
            Status.FAIL,
            f"Slack rejected SLACK_BOT_TOKEN ({error}).",
            _FIX_BOT_CREDENTIAL,
        )
    if error:
        return Check(
            _SLACK,
            "auth.test",
            Status.FAIL,
            f"Slack answered auth.test with the error {error}.",
            "Look the error up at api.slack.com/methods/auth.test; check SLACK_BOT_TOKEN.",
        )
    if _is_connection_error(exc):
        return Check(
            _SLACK,
            "auth.test",
            Status.FAIL,
            f"Could not reach the Slack Web API at {settings.slack_api_url} ({type(exc).__name__}).",
            "Check DNS, proxy and firewall for outbound HTTPS to slack.com; leave VPNBOT_SLACK_API_URL unset "
            "unless you test against a stand-in.",
        )
    return _unexpected(_SLACK, "auth.test", exc)


def _scopes_row(header: str | None) -> Check:
    name = "Bot scopes"
    if header is None:
        return Check(
            _SLACK,
            name,
            Status.WARN,
            "Slack did not report the granted scopes (no x-oauth-scopes header), so they could not be checked.",
            f"Check OAuth & Permissions → Bot Token Scopes lists: {', '.join(NEEDED_SCOPES)}.",
        )
    granted = {s.strip() for s in header.split(",") if s.strip()}
    missing = [s for s in NEEDED_SCOPES if s not in granted]
    if missing:
        return Check(
            _SLACK,
            name,
            Status.FAIL,
            f"missing: {', '.join(missing)} (granted: {', '.join(sorted(granted)) or 'none'}).",
            f"Add {', '.join(missing)} under oauth_config.scopes.bot in manifest.yml (or OAuth & Permissions → "
            "Bot Token Scopes), " + _REINSTALL,
        )
    extra = sorted(granted - set(NEEDED_SCOPES))
    also = f"; also granted, not needed: {', '.join(extra)}" if extra else ""
    return Check(_SLACK, name, Status.PASS, f"all {len(NEEDED_SCOPES)} needed scopes granted{also}.")


async def _usergroup_row(slack: AsyncWebClient, group: str, settings: Settings) -> Check:
    where = " and ".join(
        var
        for var, ids in (("VPNBOT_APPROVERS", settings.approvers), ("VPNBOT_REQUESTERS", settings.requesters))
        if group in ids
    )
    name = f"User group {group}"
    try:
        answer = await slack.usergroups_users_list(usergroup=group)
    except Exception as exc:
        log.debug("doctor: usergroups.users.list failed", exc_info=True)
        error = _slack_error(exc)
        if error == "missing_scope":
            return Check(
                _SLACK,
                name,
                Status.FAIL,
                f"usergroups.users.list is refused: the app lacks usergroups:read ({where}).",
                "Add usergroups:read under oauth_config.scopes.bot in manifest.yml, " + _REINSTALL,
            )
        if error in {"no_such_subteam", "subteam_not_found", "invalid_usergroup"}:
            return Check(
                _SLACK,
                name,
                Status.FAIL,
                f"Slack knows no user group {group} ({error}), named in {where}.",
                f"Fix the id in {where}: in Slack open the group (People → User groups), ⋯ → Copy group ID.",
            )
        if error:
            return Check(
                _SLACK,
                name,
                Status.FAIL,
                f"usergroups.users.list failed: {error} ({where}).",
                "Check the group id.",
            )
        if _is_connection_error(exc):
            return Check(
                _SLACK,
                name,
                Status.FAIL,
                f"Could not reach Slack ({type(exc).__name__}).",
                "Run the doctor again.",
            )
        return _unexpected(_SLACK, name, exc)
    users = answer.get("users") or []
    count = len(users) if isinstance(users, list) else 0
    if count == 0:
        return Check(
            _SLACK,
            name,
            Status.WARN,
            f"the group has no members ({where}): nobody can act through it.",
            "Add members to the group in Slack, or list user ids instead.",
        )
    return Check(_SLACK, name, Status.PASS, f"{_plural(count, 'member')} ({where}).")


# --- Alibaba Cloud -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Probe:
    action: str
    what: str
    call: Callable[[DoctorVpc, str], Awaitable[object]]


def _delete_probe(vpc: DoctorVpc, region: str) -> Awaitable[object]:
    # A fresh token: Alibaba caches only successful answers per token, and this one never succeeds.
    token = f"vpnbot-doctor-{uuid.uuid4().hex}"
    return vpc.delete_vpn_connection(region=region, vco_id=PROBE_VCO_ID, client_token=token)


_PROBES: Final = (
    _Probe(
        "DescribeVpnConnections",
        f"listing filtered to {PROBE_VCO_ID}",
        lambda vpc, region: vpc.describe_vpn_connections(region=region, vpn_connection_id=PROBE_VCO_ID),
    ),
    _Probe(
        "DescribeVpnConnection",
        f"read of {PROBE_VCO_ID}",
        lambda vpc, region: vpc.describe_vpn_connection(region=region, vco_id=PROBE_VCO_ID),
    ),
    _Probe(
        "DescribeVpnGateway",
        f"read of {PROBE_GATEWAY_ID}",
        lambda vpc, region: vpc.describe_vpn_gateway(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    _Probe(
        "DescribeVpnRouteEntries",
        f"read of {PROBE_GATEWAY_ID}'s routes",
        lambda vpc, region: vpc.describe_vpn_route_entries(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    _Probe(
        "DescribeVpnPbrRouteEntries",
        f"read of {PROBE_GATEWAY_ID}'s policy-based routes",
        lambda vpc, region: vpc.describe_vpn_pbr_route_entries(region=region, gateway_id=PROBE_GATEWAY_ID),
    ),
    _Probe(
        "DeleteVpnConnection",
        f"DeleteVpnConnection for {PROBE_VCO_ID}, an id that cannot exist",
        _delete_probe,
    ),
)


def _is_permission_code(code: str) -> bool:
    return code.startswith(_PERMISSION_PREFIXES) and code not in _KEY_CODES


def _is_not_found(code: str) -> bool:
    # Any resource NotFound means authorisation passed; a wrong region or key is something else.
    return code.endswith(".NotFound") and code not in {
        "InvalidRegionId.NotFound",
        "InvalidAccessKeyId.NotFound",
    }


def _permission_fix(action: str) -> str:
    return (
        f"Grant vpc:{action} to the bot's RAM user or role (RAM console → Users/Roles → Grant Permission), "
        "e.g. with the least-privilege policy printed below."
    )


async def _check_cloud(settings: Settings, vpc: DoctorVpc | None) -> list[Check]:
    owned: VpcClient | None = None
    if vpc is None:
        from bot.cloud.client import VpcClient

        try:
            owned = VpcClient.from_settings(
                settings.model_copy(
                    update={"api_deadline_seconds": min(settings.api_deadline_seconds, _CLOUD_DEADLINE_S)}
                )
            )
        except ConfigError as exc:
            return _cloud_skipped(
                Check(
                    _CLOUD,
                    "Credentials",
                    Status.FAIL,
                    "; ".join(exc.problems),
                    "Fix the Alibaba credentials settings (see the Settings rows above).",
                )
            )
        vpc = owned
    try:
        return await _cloud_rows(settings, vpc)
    finally:
        if owned is not None:
            await owned.aclose()


def _cloud_skipped(first: Check) -> list[Check]:
    why = "skipped: the credentials do not work."
    rows = [first, Check(_CLOUD, "vpc:DescribeRegions", Status.SKIP, why)]
    rows += [Check(_CLOUD, f"vpc:{p.action}", Status.SKIP, why) for p in _PROBES]
    return rows


async def _cloud_rows(settings: Settings, vpc: DoctorVpc) -> list[Check]:
    where = f" at {settings.vpc_endpoint} (VPNBOT_VPC_ENDPOINT)" if settings.vpc_endpoint else ""
    regions: list[str] | None = None
    regions_row: Check
    try:
        regions = await vpc.list_regions()
    except CloudError as err:
        log.debug("doctor: DescribeRegions failed", exc_info=True)
        if not (isinstance(err, CloudApiError) and _is_permission_code(err.code)):
            return _cloud_skipped(_credentials_failure(err, where))
        regions_row = Check(
            _CLOUD,
            "vpc:DescribeRegions",
            Status.FAIL,
            f"missing ({_code(err)}).",
            _permission_fix("DescribeRegions"),
            needs_ram=True,
        )
    except Exception as exc:
        log.debug("doctor: DescribeRegions failed", exc_info=True)
        return _cloud_skipped(_unexpected(_CLOUD, "Credentials", exc))
    else:
        regions_row = Check(
            _CLOUD, "vpc:DescribeRegions", Status.PASS, f"allowed ({_plural(len(regions), 'region')})."
        )
    rows = [
        Check(_CLOUD, "Credentials", Status.PASS, f"Alibaba Cloud accepted the request signature{where}."),
        regions_row,
    ]
    region = settings.default_region
    if regions is not None:
        if region in regions:
            rows.append(Check(_CLOUD, "Default region", Status.PASS, f"{region} is a VPC region."))
        else:
            rows.append(
                Check(
                    _CLOUD,
                    "Default region",
                    Status.FAIL,
                    f"{region} is not among the regions DescribeRegions lists.",
                    "Set VPNBOT_DEFAULT_REGION to one of: "
                    + ", ".join(regions[:12])
                    + ("…" if len(regions) > 12 else ""),
                )
            )
    results = await asyncio.gather(*(_probe(vpc, region, p) for p in _PROBES))
    rows.extend(results)
    return rows


def _code(err: CloudError) -> str:
    rid = f", RequestId {err.request_id}" if err.request_id else ""
    return f"code {err.code}{rid}"


def _credentials_failure(err: CloudError, where: str) -> Check:
    if isinstance(err, CloudTransportError):
        detail = f"{err.info.friendly}{where} ({err.code})."
        fix = (
            "Check DNS, proxy and firewall for outbound HTTPS to vpc.aliyuncs.com; if VPNBOT_VPC_ENDPOINT is set, "
            "check that it is right (unset it to use Alibaba Cloud's own endpoints)."
        )
        return Check(_CLOUD, "Credentials", Status.FAIL, detail, fix)
    return Check(_CLOUD, "Credentials", Status.FAIL, f"{err.info.friendly} ({_code(err)}).", err.info.action)


async def _probe(vpc: DoctorVpc, region: str, probe: _Probe) -> Check:
    name = f"vpc:{probe.action}"
    how = f"probe: {probe.what}"
    if probe.action == "DeleteVpnConnection":
        how += "; Alibaba Cloud checks the permission before it looks the id up, so nothing is deleted"
    try:
        await probe.call(vpc, region)
    except CloudApiError as err:
        log.debug("doctor: %s probe answered %s", probe.action, err.code, exc_info=True)
        if _is_not_found(err.code):
            return Check(_CLOUD, name, Status.PASS, f"allowed ({how}; answered {err.code}).")
        if _is_permission_code(err.code):
            fix = _permission_fix(probe.action)
            if probe.action == "DeleteVpnConnection":
                fix += (
                    " If your policy deliberately limits the bot to some connections (a Resource or Condition), "
                    "the probe id is outside it: make sure it covers the connections you mean to delete."
                )
            return Check(
                _CLOUD, name, Status.FAIL, f"missing ({how}; answered {_code(err)}).", fix, needs_ram=True
            )
        return Check(
            _CLOUD,
            name,
            Status.WARN,
            f"could not tell whether it is allowed ({how}; answered {_code(err)}): {err.info.friendly}",
            err.info.action,
        )
    except CloudError as err:
        log.debug("doctor: %s probe failed", probe.action, exc_info=True)
        return Check(
            _CLOUD,
            name,
            Status.FAIL,
            f"no usable answer ({how}): {err.info.friendly} ({err.code}).",
            err.info.action,
        )
    except Exception as exc:
        log.debug("doctor: %s probe failed", probe.action, exc_info=True)
        return _unexpected(_CLOUD, name, exc)
    if probe.action == "DeleteVpnConnection":
        return Check(
            _CLOUD,
            name,
            Status.WARN,
            f"Alibaba Cloud accepted the probe ({how}) instead of answering NotFound, so the permission "
            "could not be told apart.",
            "Check in the RAM console that the bot's identity has vpc:DeleteVpnConnection.",
        )
    return Check(_CLOUD, name, Status.PASS, f"allowed ({how}; answered with an empty result).")


# --- database ------------------------------------------------------------------------------------


def mask_database_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _database_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return ""
    return str(password) if password else ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]


def _database_failure(exc: BaseException, shown: str) -> Check:
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc)).lower()
    fix = "Check VPNBOT_DATABASE_URL."
    if names & {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        detail = "PostgreSQL refused the user or password."
        fix = "Fix the user and password in VPNBOT_DATABASE_URL (or pg_hba.conf on the server)."
    elif "InvalidCatalogNameError" in names or "does not exist" in text:
        detail = "the server is up but the database does not exist."
        fix = "Create it (e.g. `createdb NAME`) or fix the database name in VPNBOT_DATABASE_URL."
    elif any(isinstance(e, socket.gaierror) for e in _chain(exc)):
        detail = "the database host name does not resolve."
        fix = "Fix the host in VPNBOT_DATABASE_URL."
    elif any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
        detail = "nothing accepts connections at that host and port."
        fix = "Start PostgreSQL, or fix the host and port in VPNBOT_DATABASE_URL."
    elif any(isinstance(e, TimeoutError) for e in _chain(exc)):
        detail = "the database did not answer in time."
        fix = "Check that the host is reachable (firewall, security group) and PostgreSQL is running."
    elif "unable to open database file" in text:
        detail = "the SQLite file cannot be opened or created."
        fix = "Make sure the directory in VPNBOT_DATABASE_URL exists and the bot's user may write to it."
    elif "readonly" in text or "read-only" in text:
        detail = "the database is read-only, so migrations cannot be applied."
        fix = "Give the bot's user write access (the file and its directory, or the PostgreSQL role)."
    else:
        detail = f"could not open the database ({type(exc).__name__})."
        fix = "Check VPNBOT_DATABASE_URL; run with VPNBOT_LOG_LEVEL=DEBUG for the details."
    return Check(_DATABASE, "Database", Status.FAIL, f"{shown}: {detail}", fix)


async def _check_database(settings: Settings) -> list[Check]:
    from bot.store import SCHEMA_VERSION, Store

    shown = mask_database_url(settings.database_url)
    try:
        store = await Store.open(settings.database_url)
    except Exception as exc:
        log.debug("doctor: opening the database failed", exc_info=True)
        return [_database_failure(exc, shown)]
    try:
        versions = await store.schema_versions()
    except Exception as exc:
        log.debug("doctor: reading schema versions failed", exc_info=True)
        return [_database_failure(exc, shown)]
    finally:
        await store.close()
    current = max(versions, default=0)
    if current > SCHEMA_VERSION:
        return [
            Check(
                _DATABASE,
                "Database",
                Status.WARN,
                f"{shown}: schema version {current} is newer than this bot's {SCHEMA_VERSION}.",
                "Another, newer vpn-bot migrated this database: upgrade this one before serving.",
            )
        ]
    if current < SCHEMA_VERSION:
        return [
            Check(
                _DATABASE,
                "Database",
                Status.FAIL,
                f"{shown}: at schema version {current}, expected {SCHEMA_VERSION}.",
                "Run the doctor again; if it stays behind, check the DEBUG log for the migration error.",
            )
        ]
    return [
        Check(
            _DATABASE, "Database", Status.PASS, f"{shown}: reachable, schema version {current} (up to date)."
        )
    ]


# --- running and rendering -----------------------------------------------------------------------


def _unexpected(section: str, name: str, exc: BaseException) -> Check:
    friendly = exc.friendly if isinstance(exc, BotError) else "the check failed unexpectedly."
    return Check(
        section,
        name,
        Status.FAIL,
        f"{type(exc).__name__}: {friendly}",
        "Run again with VPNBOT_LOG_LEVEL=DEBUG to see the details in the log.",
    )


async def _guarded(section: str, run: Awaitable[list[Check]]) -> list[Check]:
    """Run one group of checks; a crash or a hang becomes one FAIL row, never a traceback."""
    try:
        async with asyncio.timeout(_GROUP_TIMEOUT_S):
            return await run
    except TimeoutError:
        return [
            Check(
                section,
                "Checks",
                Status.FAIL,
                f"no answer within {_GROUP_TIMEOUT_S:.0f} s.",
                "Check the network path, then run the doctor again.",
            )
        ]
    except Exception as exc:
        log.debug("doctor: %s checks crashed", section, exc_info=True)
        return [_unexpected(section, "Checks", exc)]


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """Mute the clients' own warning logs: the table reports the same failures, readably."""
    loggers = [logging.getLogger(n) for n in ("bot.cloud", "bot.store", "httpx", "slack_sdk")]
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


async def diagnose(
    settings: Settings, *, vpc: DoctorVpc | None = None, slack: AsyncWebClient | None = None
) -> list[Check]:
    """Run every check (the network ones concurrently) and return the rows in table order."""
    rows = _check_settings(settings)
    with _quiet_client_logs():
        groups = await asyncio.gather(
            _guarded(_SLACK, _check_slack(settings, slack)),
            _guarded(_CLOUD, _check_cloud(settings, vpc)),
            _guarded(_DATABASE, _check_database(settings)),
        )
    for group in groups:
        rows.extend(group)
    return rows


def ram_policy() -> str:
    """The least-privilege RAM policy document for the bot, as JSON."""
    document = {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": list(RAM_ACTIONS), "Resource": "*"}],
    }
    return json.dumps(document, indent=2)


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, width=max(40, _WIDTH - indent), break_on_hyphens=False) or [""]


def render(rows: Sequence[Check]) -> str:
    """Render the rows as an aligned table, with fixes, a RAM policy hint and a summary."""
    name_width = max((len(r.name) for r in rows), default=10)
    detail_col = 2 + 4 + 2 + name_width + 2
    pad = " " * detail_col
    out = [
        "vpn-bot doctor: settings, Slack, Alibaba Cloud and the database. Nothing is changed or deleted.",
        "",
    ]
    for section in _SECTIONS:
        in_section = [r for r in rows if r.section == section]
        if not in_section:
            continue
        out.append(section)
        for row in in_section:
            detail = _wrap(row.detail, detail_col)
            out.append(f"  {row.status.value:<4}  {row.name:<{name_width}}  {detail[0]}".rstrip())
            out += [pad + line for line in detail[1:]]
            if row.fix and row.status is not Status.PASS:
                fix = _wrap("fix: " + row.fix, detail_col)
                out += [pad + line for line in fix]
        out.append("")
    if any(r.needs_ram for r in rows):
        out += _wrap(
            "Least-privilege RAM policy for the bot (RAM console → Policies → Create Policy → JSON; then "
            "attach it to the bot's RAM user or role):",
            0,
        )
        out += ["  " + line for line in ram_policy().splitlines()]
        out.append("")
    counts = {s: sum(1 for r in rows if r.status is s) for s in Status}
    summary = f"{counts[Status.PASS]} passed, {_plural(counts[Status.WARN], 'warning')}, {counts[Status.FAIL]} failed"
    if counts[Status.SKIP]:
        summary += f", {counts[Status.SKIP]} skipped"
    if counts[Status.FAIL]:
        summary += ": fix the FAIL rows, then run `vpn-bot doctor` again."
    elif counts[Status.WARN]:
        summary += ": nothing blocks a first real deletion; read the WARN rows."
    else:
        summary += ": ready for a first real deletion."
    out.append(summary)
    return "\n".join(out) + "\n"


def _mask(text: str, secrets: Sequence[str]) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


async def run_doctor(
    settings: Settings,
    *,
    out: TextIO | None = None,
    vpc: DoctorVpc | None = None,
    slack: AsyncWebClient | None = None,
) -> int:
    """Check the setup, print the table to ``out`` (stdout), return 1 if any check FAILed, else 0.

    ``vpc`` and ``slack`` replace the clients built from ``settings`` (tests); the doctor closes only
    the clients it builds.
    """
    stream = out if out is not None else sys.stdout
    rows = await diagnose(settings, vpc=vpc, slack=slack)
    secrets = [*secret_values(settings), _database_password(settings.database_url)]
    if slack is not None and slack.token:
        secrets.append(slack.token)
    stream.write(_mask(render(rows), secrets))
    stream.flush()
    return 1 if any(r.status is Status.FAIL for r in rows) else 0


if TYPE_CHECKING:

    def _implements_doctor_vpc(client: VpcClient) -> DoctorVpc:
        return client
