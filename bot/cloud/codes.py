"""The Alibaba Cloud error table: what each ``Code`` means to a person and how it is retried.

Dispatch is on ``Code``, never on the HTTP status (the docs list the same code under different
statuses). :func:`lookup` also matches every ``Throttling*`` code and both spellings of the
sub-user code (``Forbbiden.SubUser`` as DeleteVpnConnection spells it, and ``Forbidden.SubUser``).
Codes starting with ``Transport.`` are ours: no usable answer arrived; ``Credentials.Unavailable``
is ours too: the credential chain gave no AccessKey; so are ``Sts.Unreachable`` (no usable answer
from STS) and ``Account.NotConfigured`` (an operation's account is gone from VPNBOT_ACCOUNTS). The
STS rows explain why an account's RAM role could not be assumed (AssumeRole, STS 2015-04-01).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from bot.errors import ErrorInfo, RetryClass, Who
from bot.inert import neutralise

__all__ = [
    "ACCOUNT_NOT_CONFIGURED",
    "CREDENTIALS_UNAVAILABLE",
    "ERROR_TABLE",
    "STS_UNREACHABLE",
    "TRANSPORT_BAD_RESPONSE",
    "TRANSPORT_CONNECT_ERROR",
    "TRANSPORT_TIMEOUT",
    "is_throttling",
    "lookup",
]

TRANSPORT_TIMEOUT = "Transport.Timeout"
TRANSPORT_CONNECT_ERROR = "Transport.ConnectError"
TRANSPORT_BAD_RESPONSE = "Transport.BadResponse"
CREDENTIALS_UNAVAILABLE = "Credentials.Unavailable"
# Ours, for several accounts: STS gave no usable answer; an operation names an account no longer set.
STS_UNREACHABLE = "Sts.Unreachable"
ACCOUNT_NOT_CONFIGURED = "Account.NotConfigured"

_T = RetryClass.TRANSIENT
_B = RetryClass.BUSY
_N = RetryClass.NEVER

_THROTTLED = (
    "Alibaba Cloud is rate-limiting the bot's API calls right now.",
    "The bot retries by itself after a short wait; if it keeps happening, space out requests.",
)
_BUSY_GATEWAY = (
    "The VPN gateway is busy applying another change.",
    "The bot waits and tries again; nothing to do unless it keeps failing for many minutes.",
)
_PERMISSION_ACTION = (
    "The bot administrator must grant the bot's RAM identity vpc:DeleteVpnConnection, "
    "vpc:DescribeVpnConnection(s), vpc:DescribeVpnGateway(s), vpc:DescribeVpnRouteEntries, "
    "vpc:DescribeVpnPbrRouteEntries and vpc:DescribeRegions on this resource."
)


def _e(
    code: str, status: int | None, message: str, friendly: str, action: str, who: Who, retry: RetryClass
) -> ErrorInfo:
    return ErrorInfo(
        code=code,
        http_status=status,
        api_message=message,
        friendly=friendly,
        action=action,
        who=who,
        retry=retry,
    )


_ENTRIES: tuple[ErrorInfo, ...] = (
    # --- DeleteVpnConnection's own table ----------------------------------------------------------
    _e(
        "VpnGateway.Configuring", 400, "The specified service is configuring.", *_BUSY_GATEWAY, Who.NOBODY, _B
    ),
    _e(
        "VpnTask.CONFLICT",
        400,
        "Vpn task has conflict.",
        "Another task is running on the same VPN gateway.",
        "The bot waits for it to finish and tries again.",
        Who.NOBODY,
        _B,
    ),
    _e(
        "VpnGateway.FinancialLocked",
        400,
        "The specified service is financial locked.",
        "The VPN gateway is locked because the Alibaba Cloud account has an overdue payment.",
        "The account owner must top up the account (Billing Management); then request the deletion again.",
        Who.ACCOUNT_OWNER,
        _N,
    ),
    _e(
        "InternalError",
        None,
        "The request processing has failed due to some unknown error, exception or failure.",
        "Alibaba Cloud had an internal error.",
        "The bot retries with the same ClientToken; if it persists, try again later.",
        Who.NOBODY,
        _T,
    ),
    _e(
        "InvalidVpnGatewayInstanceId.NotFound",
        400,
        "The specified vpn gateway instance id does not exist.",
        "The VPN gateway was not found in this region.",
        "Check the connection id and the region (it may already be deleted).",
        Who.REQUESTER,
        _N,
    ),
    _e(
        "InvalidCustomerGatewayInstanceId.NotFound",
        404,
        "The specified customer gateway instance id does not exist.",
        "The customer gateway was not found in this region.",
        "It may have been deleted; Recreate uses the connection's own customer gateway, so create it by hand.",
        Who.REQUESTER,
        _N,
    ),
    _e(
        "Forbbiden.SubUser",
        403,
        "User not authorized to operate on the specified resource as your account is created by another user.",
        "The bot's RAM user may not act on this resource because it belongs to another account.",
        "Use an AccessKey of the account that owns the VPN gateway, or have the bot administrator grant access.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "Forbidden.SubUser",
        403,
        "User not authorized to operate on the specified resource as your account is created by another user.",
        "The bot's RAM user may not act on this resource because it belongs to another account.",
        "Use an AccessKey of the account that owns the VPN gateway, or have the bot administrator grant access.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "Forbidden",
        403,
        "User not authorized to operate on the specified resource.",
        "The bot is not allowed to manage this resource.",
        _PERMISSION_ACTION,
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidVpnConnectionInstanceId.NotFound",
        404,
        "The specified vpn connection instance id does not exist.",
        "No IPsec-VPN connection with this id exists in this region.",
        "Check the id (vco-…) and the region; it may already be deleted.",
        Who.REQUESTER,
        _N,
    ),
    # --- throttling and availability ---------------------------------------------------------------
    _e("Throttling", 400, "Request was denied due to request throttling.", *_THROTTLED, Who.NOBODY, _T),
    _e("Throttling.User", 400, "Request was denied due to user flow control.", *_THROTTLED, Who.NOBODY, _T),
    _e("Throttling.Api", 400, "Request was denied due to api flow control.", *_THROTTLED, Who.NOBODY, _T),
    _e("Rejected.Throttling", 400, "Request was denied due to flow control.", *_THROTTLED, Who.NOBODY, _T),
    _e(
        "ServiceUnavailable",
        503,
        "The request has failed due to a temporary failure of the server.",
        "The Alibaba Cloud VPC service is temporarily unavailable.",
        "The bot retries by itself; if it persists, check the Alibaba Cloud status page.",
        Who.NOBODY,
        _T,
    ),
    _e(
        "UnknownError",
        500,
        "The request processing has failed due to some unknown error.",
        "Alibaba Cloud had an unknown server error.",
        "The bot retries with the same ClientToken; if it persists, try again later.",
        Who.NOBODY,
        _T,
    ),
    # --- signing and credentials ---------------------------------------------------------------------
    _e(
        "SignatureDoesNotMatch",
        400,
        "Specified signature is not matched with our calculation.",
        "Alibaba Cloud rejected the request signature.",
        "The bot administrator must check ALIBABA_CLOUD_ACCESS_KEY_SECRET (wrong secret or a pasted space).",
        Who.ADMIN,
        _N,
    ),
    _e(
        "IncompleteSignature",
        400,
        "The request signature does not conform to Alibaba Cloud standards.",
        "Alibaba Cloud found the request signature incomplete.",
        "The bot administrator should report this as a bot bug, with the RequestId.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidAccessKeyId.NotFound",
        404,
        "Specified access key is not found.",
        "Alibaba Cloud does not know the bot's AccessKey id.",
        "The bot administrator must set a valid ALIBABA_CLOUD_ACCESS_KEY_ID (or fix the credentials profile).",
        Who.ADMIN,
        _N,
    ),
    _e(
        "Forbidden.RAM",
        403,
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
        "The bot's RAM identity lacks a permission for this call.",
        _PERMISSION_ACTION,
        Who.ADMIN,
        _N,
    ),
    _e(
        "Forbidden.AccessKeyDisabled",
        403,
        "The Access Key is disabled.",
        "The bot's AccessKey is disabled.",
        "The bot administrator must enable it in the RAM console or configure a new AccessKey.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "SignatureNonceUsed",
        400,
        "Specified signature nonce was used already.",
        "Alibaba Cloud saw the request's nonce before.",
        "The bot re-signs with a fresh nonce and retries; if it repeats, report it as a bot bug.",
        Who.NOBODY,
        _T,
    ),
    _e(
        "InvalidTimeStamp.Expired",
        400,
        "Specified time stamp or date value is expired.",
        "Alibaba Cloud rejected the request's timestamp.",
        "The bot re-signs and retries; if it persists, the bot administrator must fix the host clock (NTP).",
        Who.NOBODY,
        _T,
    ),
    # --- bad input -------------------------------------------------------------------------------------
    _e(
        "IdempotentParameterMismatch",
        400,
        "The specified parameter has changed while using an already used clientToken.",
        "This ClientToken was already used for a different request.",
        "Start a new deletion request (it gets a new token).",
        Who.REQUESTER,
        _N,
    ),
    _e(
        "MissingParameter",
        400,
        "The input parameter that is mandatory for processing this request is not supplied.",
        "The request lacked a required parameter.",
        "Check the command; if it looks right, the bot administrator should report a bot bug.",
        Who.REQUESTER,
        _N,
    ),
    _e(
        "InvalidParameter",
        400,
        "The specified parameter is not valid.",
        "Alibaba Cloud rejected a parameter of the request.",
        "Check the connection id and region in the command.",
        Who.REQUESTER,
        _N,
    ),
    _e(
        "InvalidRegionId.NotFound",
        404,
        "The specified RegionId does not exist.",
        "Alibaba Cloud does not know this region.",
        "Use a region id such as cn-hangzhou or ap-southeast-1.",
        Who.REQUESTER,
        _N,
    ),
    # --- busy codes from Terraform's DeleteVpnConnection retry list ----------------------------------
    _e(
        "VpnConnection.Configuring",
        400,
        "The specified vpn connection is configuring.",
        "The IPsec-VPN connection is busy applying another change.",
        "The bot waits and tries again.",
        Who.NOBODY,
        _B,
    ),
    _e(
        "Appliance.Configuring",
        400,
        "The specified appliance is configuring.",
        "The VPN appliance behind the gateway is busy applying another change.",
        "The bot waits and tries again.",
        Who.NOBODY,
        _B,
    ),
    _e(
        "TaskConflict",
        400,
        "The operation conflicts with another running task.",
        "Another task is running on the same resource.",
        "The bot waits for it to finish and tries again.",
        Who.NOBODY,
        _B,
    ),
    # --- ours: no usable answer ------------------------------------------------------------------------
    _e(
        TRANSPORT_TIMEOUT,
        None,
        "",
        "Alibaba Cloud did not answer in time.",
        "The bot retries; if it persists, check the network path to the VPC endpoint.",
        Who.NOBODY,
        _T,
    ),
    _e(
        TRANSPORT_CONNECT_ERROR,
        None,
        "",
        "The bot could not reach the Alibaba Cloud VPC endpoint.",
        "The bot retries; if it persists, the bot administrator must check DNS, proxy and firewall settings.",
        Who.NOBODY,
        _T,
    ),
    _e(
        TRANSPORT_BAD_RESPONSE,
        None,
        "",
        "Alibaba Cloud sent an answer the bot could not read (not JSON).",
        "The bot retries; if it persists, the bot administrator must check VPNBOT_VPC_ENDPOINT and any proxy.",
        Who.NOBODY,
        _T,
    ),
    _e(
        CREDENTIALS_UNAVAILABLE,
        None,
        "",
        "The bot has no usable Alibaba Cloud credentials.",
        "The bot administrator must set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, "
        "or configure a profile, RAM role or credentials URI (see the README).",
        Who.ADMIN,
        _N,
    ),
)

# --- STS AssumeRole: an account's RAM role (VPNBOT_ACCOUNTS) ----------------------------------------
_STS_ENTRIES: tuple[ErrorInfo, ...] = (
    _e(
        "EntityNotExist.Role",
        404,
        "The role not exists.",
        "The RAM role this account's VPNBOT_ACCOUNTS entry names does not exist.",
        "The account's administrator must create the role (README: Several accounts) or the bot "
        "administrator must correct its ARN in VPNBOT_ACCOUNTS.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "NoPermission",
        403,
        "You are not authorized to do this action. You should be authorized by RAM.",
        "The bot may not assume this account's RAM role.",
        "The account's administrator must let the bot's RAM identity in the role's trust policy, and "
        "the bot's own identity needs sts:AssumeRole on the role's ARN (README: Several accounts).",
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidParameter.RoleArn",
        400,
        "The parameter RoleArn is wrongly formed.",
        "The role ARN set for this account is not valid.",
        "The bot administrator must correct it in VPNBOT_ACCOUNTS (acs:ram::ACCOUNT_ID:role/ROLE_NAME).",
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidParameter.DurationSeconds",
        400,
        "The Min/Max value of DurationSeconds is 15min/1hr.",
        "The session length the bot asks for is longer than this role allows.",
        "The account's administrator must raise the role's maximum session duration, or the bot "
        "administrator must lower VPNBOT_STS_DURATION_SECONDS.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidParameter.RoleSessionName",
        400,
        "The parameter RoleSessionName is wrongly formed.",
        "STS refused the session name the bot chose.",
        "The bot administrator should report this: session names are vpnbot or vpnbot- and a Slack user id.",
        Who.ADMIN,
        _N,
    ),
    _e(
        "InvalidSecurityToken.Expired",
        400,
        "Specified SecurityToken is expired.",
        "The bot's own temporary credentials have expired, so it cannot assume the account's role.",
        "The bot administrator must renew the bot's base credentials (ALIBABA_CLOUD_SECURITY_TOKEN "
        "or the credential chain's source).",
        Who.ADMIN,
        _N,
    ),
    _e(
        STS_UNREACHABLE,
        None,
        "",
        "The bot could not get an answer from Alibaba Cloud STS to assume the account's role.",
        "The bot retries; if it persists, the bot administrator must check VPNBOT_STS_ENDPOINT, DNS, "
        "proxy and the trusted CA certificates.",
        Who.ADMIN,
        _T,
    ),
    _e(
        ACCOUNT_NOT_CONFIGURED,
        None,
        "",
        "This operation's account is no longer in the bot's settings.",
        "The bot administrator must add the account back to VPNBOT_ACCOUNTS to finish it.",
        Who.ADMIN,
        _N,
    ),
)

ERROR_TABLE: Mapping[str, ErrorInfo] = MappingProxyType(
    {info.code: info for info in (*_ENTRIES, *_STS_ENTRIES)}
)


def is_throttling(code: str) -> bool:
    """Alibaba Cloud's flow control answered: the account or API is over its request rate."""
    return code.startswith("Throttling") or code == "Rejected.Throttling"


def _match(code: str) -> ErrorInfo | None:
    exact = ERROR_TABLE.get(code)
    if exact is not None:
        return exact
    if code.startswith("Throttling"):
        return ERROR_TABLE["Throttling"]
    if code.startswith("ServiceUnavailable") or code == "ServiceUnAvailable":
        return ERROR_TABLE["ServiceUnavailable"]
    if code.lower() in {"forbbiden.subuser", "forbidden.subuser"}:
        return ERROR_TABLE["Forbidden.SubUser"]
    return None


def lookup(code: str, *, message: str = "", http_status: int | None = None) -> ErrorInfo:
    """Return what ``code`` means, keeping the actual code, Alibaba's message and the status seen."""
    known = _match(code)
    if known is not None:
        return dataclasses.replace(
            known,
            code=code,
            api_message=message or known.api_message,
            http_status=http_status if http_status is not None else known.http_status,
        )
    server_side = http_status is not None and 500 <= http_status <= 599
    # Both come from the answer, not from this table: shown inert, so they cannot restyle the reply.
    shown = f" It said: `{neutralise(message[:300])}`" if message else ""
    return ErrorInfo(
        code=code,
        http_status=http_status,
        api_message=message,
        friendly=f"Alibaba Cloud returned an error the bot does not know (`{neutralise(code)}`).{shown}",
        action=(
            "The bot retries it as a server-side failure; if it persists, the bot administrator should look it up."
            if server_side
            else "The bot administrator should look the code up in the Alibaba Cloud API troubleshooting page."
        ),
        who=Who.ADMIN,
        retry=RetryClass.TRANSIENT if server_side else RetryClass.NEVER,
    )
