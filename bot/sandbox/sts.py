"""A local STS (2015-04-01) AssumeRole endpoint over TLS, and the accounts behind the VPC sandbox.

Several Alibaba Cloud accounts on loopback: each :class:`SandboxAccount` has its own VPC resources
(a :class:`bot.sandbox.vpc_state.SandboxState`) and RAM roles. The bot's own AccessKey assumes a
role here and gets temporary credentials (``STS.…`` id, secret, SecurityToken, Expiration) which
the VPC sandbox then accepts for that account only, until they expire: a connection of one account
is not found with another account's credentials.

Wire protocol as the real STS answers both official clients, each signature checked here:

- the ``alibabacloud_credentials`` RAM-role provider: ``GET /`` with every parameter in the query
  and an RPC signature (``SignatureMethod=HMAC-SHA1``, version 1.0, key ``secret + "&"``);
- the official STS SDK (``alibabacloud-sts20150401``, through ``alibabacloud-tea-openapi`` 0.4,
  whose ``do_request`` signs ``ACS3-HMAC-SHA256`` unless told otherwise): ``POST /`` with the
  parameters in the query, ``x-acs-action``/``x-acs-version`` headers and an ``Authorization``
  header, verified with :mod:`bot.cloud.signer` as the VPC sandbox does.

Only AssumeRole's own parameters (:data:`bot.sandbox.vpc_params.STS_PARAMETERS`) and the RPC
signature's are taken; another is ``InvalidParameter``. ``Format=JSON`` answers, errors as ``{"RequestId", "HostId",
"Code", "Message", "Recommend"}``. The provider always speaks HTTPS, so the server serves TLS
with a certificate from a local CA made by ``trustme``; its PEM is written to a file the bot trusts
through ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` (verification is never turned off).

Roles: ``acs:ram::<uid>:role/<name>`` exists when the account ``uid`` has the role; a role whose
``trusted`` is False refuses the bot (``NoPermission``, as a trust policy that does not name it).
``lifetime_s`` shortens the credentials' life (tests of refresh across expiry); otherwise they
live ``DurationSeconds`` (900-3600, as a role's default maximum session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web

from bot.cloud.signer import (
    ALGORITHM,
    Credentials,
    canonical_headers,
    canonical_query,
    canonical_request,
    sign,
)
from bot.ids import is_role_arn, is_role_session_name
from bot.sandbox.vpc_params import STS_PARAMETERS
from bot.sandbox.vpc_state import SandboxState, new_request_id

__all__ = [
    "STS_VERSION",
    "IssuedKey",
    "KeyRing",
    "RunningSts",
    "SandboxAccount",
    "SandboxRole",
    "start_sts_sandbox",
]

log = logging.getLogger(__name__)

STS_VERSION = "2015-04-01"
_TIMESTAMP_WINDOW = timedelta(minutes=15)
_MIN_DURATION, _MAX_DURATION = 900, 3600
# The RPC (v1) signature's own parameters, besides the action's (alibabacloud_credentials sends these).
_RPC_COMMON = frozenset(
    {
        "AccessKeyId",
        "Action",
        "Format",
        "SecurityToken",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureType",
        "SignatureVersion",
        "Timestamp",
        "Version",
    }
)
# Headers an ACS3 signature must cover.
_ACS3_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
_STS_CODES: Mapping[str, tuple[int, str]] = {
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "SignatureDoesNotMatch": (400, "Specified signature is not matched with our calculation."),
    "SignatureNonceUsed": (400, "Specified signature nonce was used already."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "InvalidSecurityToken.Expired": (400, "Specified SecurityToken is expired."),
    "InvalidSecurityToken.MismatchWithAccessKey": (
        400,
        "Specified SecurityToken mismatch with the AccessKey.",
    ),
    "MissingParameter": (
        400,
        "The input parameter that is mandatory for processing this request is not supplied.",
    ),
    "InvalidParameter.RoleArn": (400, "The parameter RoleArn is wrongly formed."),
    "InvalidParameter.RoleSessionName": (400, "The parameter RoleSessionName is wrongly formed."),
    "InvalidParameter.DurationSeconds": (400, "The Min/Max value of DurationSeconds is 15min/1hr."),
    "EntityNotExist.Role": (404, "The role not exists."),
    "NoPermission": (403, "You are not authorized to do this action. You should be authorized by RAM."),
    "InvalidAction.NotFound": (404, "Specified api is not found, please check your url and method."),
    "InvalidVersion": (400, "Specified parameter Version is not valid."),
    "IncompleteSignature": (400, "The request signature does not conform to Alibaba Cloud standards."),
    "InvalidParameter": (400, "The specified parameter is not valid."),
}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key the sandboxes accept: the account it opens and, for STS keys, when it stops working."""

    credentials: Credentials
    account: str = ""
    expires_at: datetime | None = None
    # The bot's long-term key may assume roles; temporary keys may not (no role chaining here).
    may_assume: bool = False


class KeyRing:
    """Every AccessKey the VPC sandbox and the STS sandbox accept, shared by both."""

    def __init__(self) -> None:
        self._keys: dict[str, IssuedKey] = {}

    def add(self, key: IssuedKey) -> None:
        self._keys[key.credentials.access_key_id] = key

    def get(self, access_key_id: str) -> IssuedKey | None:
        return self._keys.get(access_key_id)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(slots=True)
class SandboxRole:
    """A RAM role; ``trusted`` False models a trust policy that does not name the bot."""

    name: str
    trusted: bool = True


@dataclass(slots=True)
class SandboxAccount:
    """One Alibaba Cloud account: its id, its VPC resources and its roles."""

    uid: str
    state: SandboxState
    roles: dict[str, SandboxRole] = field(default_factory=dict)

    def role_arn(self, name: str) -> str:
        return f"acs:ram::{self.uid}:role/{name}"


@dataclass(frozen=True, slots=True)
class AssumeRecord:
    """One AssumeRole the sandbox answered (tests count them)."""

    at: datetime
    role_arn: str
    session: str
    caller: str
    code: str | None
    access_key_id: str | None = None
    # How the request was signed: "HMAC-SHA1" (RPC v1) or "ACS3-HMAC-SHA256".
    signature: str = "HMAC-SHA1"
    # AssumeRole's own parameters as sent (no signature parameters, no SecurityToken).
    params: Mapping[str, str] = field(default_factory=dict)


def _pct(value: str) -> str:
    return quote(value, safe="-_.~")


def rpc_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """The RPC (v1) signature: HMAC-SHA1 of METHOD&%2F&encoded-sorted-query with ``secret&``."""
    query = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted(params.items()) if k != "Signature")
    to_sign = f"{method}&{_pct('/')}&{_pct(query)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _own(params: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in _RPC_COMMON}


def _acs3_key_id(authorization: str) -> str:
    try:
        return _parse_acs3(authorization)[0]
    except _StsError:
        return ""


def _parse_acs3(value: str) -> tuple[str, list[str], str]:
    """``(access_key_id, signed header names, signature)`` of an ACS3 ``Authorization`` header."""
    _, _, rest = value.strip().partition(" ")
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    credential, signed, signature = (parts.get(n, "") for n in ("Credential", "SignedHeaders", "Signature"))
    if not credential or not signed or not signature:
        raise _StsError(
            "IncompleteSignature", "Authorization must carry Credential, SignedHeaders and Signature."
        )
    return credential, [n.strip().lower() for n in signed.split(";")], signature


class _StsError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class _StsSandbox:
    def __init__(
        self,
        *,
        keys: KeyRing,
        accounts: Mapping[str, SandboxAccount],
        clock: Callable[[], datetime],
        lifetime_s: float | None,
    ) -> None:
        self.keys = keys
        self.accounts = accounts
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.calls: list[AssumeRecord] = []
        self._nonces: set[str] = set()
        # An outage: every request gets a 503 with a body that is not JSON (a load balancer's page).
        self.down = False

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="<html><body>503 Service Unavailable</body></html>")
        params = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.update(
                parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True)
            )
        request_id = new_request_id()
        acs3 = request.headers.get("Authorization", "").startswith(ALGORITHM)
        if acs3:
            # The action and version travel in headers; the caller in the Authorization header.
            params["Action"] = request.headers.get("x-acs-action", "")
            params["Version"] = request.headers.get("x-acs-version", "")
        caller = params.get("AccessKeyId", "") or _acs3_key_id(request.headers.get("Authorization", ""))
        try:
            if acs3:
                key = await self._authenticate_acs3(request)
            else:
                key = self._authenticate(request.method, params)
            body = self._assume(key, params, request_id, signature=ALGORITHM if acs3 else "HMAC-SHA1")
        except _StsError as err:
            status, message = _STS_CODES.get(err.code, (400, err.code))
            self.calls.append(
                AssumeRecord(
                    at=self.clock(),
                    role_arn=params.get("RoleArn", ""),
                    session=params.get("RoleSessionName", ""),
                    caller=caller,
                    code=err.code,
                    signature=ALGORITHM if acs3 else "HMAC-SHA1",
                    params=_own(params),
                )
            )
            answer = {
                "RequestId": request_id,
                "HostId": request.host,
                "Code": err.code,
                "Message": err.message or message,
                "Recommend": f"https://api.alibabacloud.com/troubleshoot?q={err.code}&product=Sts",
            }
            return web.json_response(answer, status=status)
        return web.json_response(body)

    def _authenticate(self, method: str, params: Mapping[str, str]) -> IssuedKey:
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise _StsError("MissingParameter", f"The input parameter {name} is not supplied.")
        if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
            raise _StsError("SignatureDoesNotMatch", "Only HMAC-SHA1 signatures of version 1.0 are accepted.")
        key = self.keys.get(params["AccessKeyId"])
        if key is None:
            raise _StsError("InvalidAccessKeyId.NotFound")
        expected = rpc_signature(method, params, key.credentials.access_key_secret)
        if not hmac.compare_digest(expected, params["Signature"]):
            raise _StsError("SignatureDoesNotMatch")
        try:
            sent = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _StsError("InvalidTimeStamp.Expired", "Timestamp is not YYYY-MM-DDThh:mm:ssZ.") from None
        if abs(self.clock() - sent) > _TIMESTAMP_WINDOW:
            raise _StsError("InvalidTimeStamp.Expired")
        return self._check_key(key, params.get("SecurityToken"), params["SignatureNonce"])

    async def _authenticate_acs3(self, request: web.Request) -> IssuedKey:
        """Verify an ACS3-HMAC-SHA256 signature (the official STS SDK's default) and its replay guards."""
        key_id, signed, signature = _parse_acs3(request.headers["Authorization"])
        headers = request.headers
        absent = [n for n in _ACS3_SIGNED if n not in headers or n not in signed]
        if absent:
            raise _StsError("IncompleteSignature", f"Header(s) missing or unsigned: {', '.join(absent)}.")
        key = self.keys.get(key_id)
        if key is None:
            raise _StsError("InvalidAccessKeyId.NotFound")
        body = await request.read()
        payload_hash = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(headers["x-acs-content-sha256"].encode(), payload_hash.encode()):
            raise _StsError("SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body.")
        canon_headers, signed_headers = canonical_headers(headers, signed=signed)
        canonical = canonical_request(
            method=request.method,
            path=request.raw_path.split("?", 1)[0] or "/",
            query=canonical_query(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)),
            headers=canon_headers,
            signed_headers=signed_headers,
            payload_hash=payload_hash,
        )
        expected = sign(key.credentials.access_key_secret, canonical)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise _StsError("SignatureDoesNotMatch")
        try:
            sent = datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _StsError("InvalidTimeStamp.Expired", "x-acs-date is not YYYY-MM-DDThh:mm:ssZ.") from None
        if abs(self.clock() - sent) > _TIMESTAMP_WINDOW:
            raise _StsError("InvalidTimeStamp.Expired")
        return self._check_key(key, headers.get("x-acs-security-token"), headers["x-acs-signature-nonce"])

    def _check_key(self, key: IssuedKey, token: str | None, nonce: str) -> IssuedKey:
        if (token or None) != key.credentials.security_token:
            raise _StsError("InvalidSecurityToken.MismatchWithAccessKey")
        if key.expires_at is not None and self.clock() >= key.expires_at:
            raise _StsError("InvalidSecurityToken.Expired")
        if nonce in self._nonces:
            raise _StsError("SignatureNonceUsed")
        self._nonces.add(nonce)
        return key

    def _assume(
        self, key: IssuedKey, params: Mapping[str, str], request_id: str, *, signature: str
    ) -> dict[str, Any]:
        if params.get("Action") != "AssumeRole":
            raise _StsError("InvalidAction.NotFound")
        if params.get("Version") != STS_VERSION:
            raise _StsError("InvalidVersion")
        unknown = sorted(set(params) - _RPC_COMMON - STS_PARAMETERS["AssumeRole"])
        if unknown:
            raise _StsError("InvalidParameter", f'The specified parameter "{unknown[0]}" is not valid.')
        arn, session = params.get("RoleArn", ""), params.get("RoleSessionName", "")
        if not arn:
            raise _StsError("MissingParameter", "The input parameter RoleArn is not supplied.")
        if not is_role_arn(arn):
            raise _StsError("InvalidParameter.RoleArn")
        if not is_role_session_name(session):
            raise _StsError("InvalidParameter.RoleSessionName")
        try:
            duration = int(params.get("DurationSeconds", "3600"))
        except ValueError:
            raise _StsError("InvalidParameter.DurationSeconds") from None
        if not _MIN_DURATION <= duration <= _MAX_DURATION:
            raise _StsError("InvalidParameter.DurationSeconds")
        uid, role_name = arn.split(":")[3], arn.rsplit("/", 1)[1]
        account = self.accounts.get(uid)
        role = account.roles.get(role_name) if account is not None else None
        if role is None:
            raise _StsError("EntityNotExist.Role", f"The role not exists: {arn}.")
        if not role.trusted or not key.may_assume:
            raise _StsError("NoPermission")
        now = self.clock()
        expires = now + timedelta(seconds=self.lifetime_s if self.lifetime_s is not None else duration)
        issued = Credentials(
            f"STS.{secrets.token_hex(12)}", secrets.token_urlsafe(24), f"CAIS{secrets.token_urlsafe(48)}"
        )
        self.keys.add(IssuedKey(credentials=issued, account=uid, expires_at=expires))
        self.calls.append(
            AssumeRecord(
                at=now,
                role_arn=arn,
                session=session,
                caller=key.credentials.access_key_id,
                code=None,
                access_key_id=issued.access_key_id,
                signature=signature,
                params=_own(params),
            )
        )
        return {
            "RequestId": request_id,
            "AssumedRoleUser": {
                "Arn": f"acs:ram::{uid}:assumed-role/{role_name}/{session}",
                "AssumedRoleId": f"3{uid[:8]}{secrets.randbelow(10**8):08d}:{session}",
            },
            "Credentials": {
                "AccessKeyId": issued.access_key_id,
                "AccessKeySecret": issued.access_key_secret,
                "SecurityToken": issued.security_token,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }


@dataclass(slots=True)
class RunningSts:
    """The STS sandbox listening with TLS; ``endpoint`` is ``HOST:PORT`` for VPNBOT_STS_ENDPOINT."""

    endpoint: str
    ca_file: str
    sandbox: _StsSandbox
    _runner: web.AppRunner = field(repr=False)
    _tmpdir: tempfile.TemporaryDirectory[str] = field(repr=False)

    @property
    def calls(self) -> list[AssumeRecord]:
        """Every AssumeRole answered, in order (refusals included, with their code)."""
        return self.sandbox.calls

    def assumed(self, *, role_arn: str | None = None, session: str | None = None) -> list[AssumeRecord]:
        """The AssumeRole calls that issued credentials, optionally for one role and session."""
        return [
            c
            for c in self.sandbox.calls
            if c.code is None
            and (role_arn is None or c.role_arn == role_arn)
            and (session is None or c.session == session)
        ]

    def outage(self, down: bool) -> None:
        """Answer every request with a 503 page (True) or serve again (False)."""
        self.sandbox.down = down

    def set_lifetime(self, seconds: float | None) -> None:
        """How long credentials issued from now on live (None: DurationSeconds)."""
        self.sandbox.lifetime_s = seconds

    async def close(self) -> None:
        await self._runner.cleanup()
        self._tmpdir.cleanup()


async def start_sts_sandbox(
    *,
    keys: KeyRing,
    accounts: Mapping[str, SandboxAccount],
    host: str = "127.0.0.1",
    port: int = 0,
    lifetime_s: float | None = None,
    clock: Callable[[], datetime] | None = None,
) -> RunningSts:
    """Serve AssumeRole over TLS on ``host:port`` with a fresh local CA (its PEM in ``ca_file``)."""
    import trustme  # a local CA for loopback TLS: made for exactly this

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    tmpdir = tempfile.TemporaryDirectory(prefix="vpnbot-sts-")
    ca_file = os.path.join(tmpdir.name, "sandbox-ca.pem")
    ca.cert_pem.write_to_path(ca_file)

    sandbox = _StsSandbox(
        keys=keys, accounts=accounts, clock=clock or (lambda: datetime.now(UTC)), lifetime_s=lifetime_s
    )
    app = web.Application()
    app.router.add_get("/", sandbox.handle, allow_head=False)
    app.router.add_post("/", sandbox.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        tmpdir.cleanup()
        raise
    bound = runner.addresses[0]
    url_host = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return RunningSts(
        endpoint=f"{url_host}:{bound[1]}", ca_file=ca_file, sandbox=sandbox, _runner=runner, _tmpdir=tmpdir
    )
