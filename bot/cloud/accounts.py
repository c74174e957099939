"""Several Alibaba Cloud accounts: a RAM role per account, assumed through STS.

With ``VPNBOT_ACCOUNTS`` set, the bot's own credentials (the env pair or the chain, as
:func:`bot.cloud.credentials.build_credentials_provider` finds them) only assume roles:
:class:`AccountClients` hands out a :class:`bot.cloud.adapter.VpcAdapter` per (account, session
name), signed with that role's temporary credentials. The session name carries the person a
change is made for (``vpnbot-U012ABC``), so ActionTrail records the approver of each
DeleteVpnConnection; read-only lookups share the session ``vpnbot``.

AssumeRole is made by the ``alibabacloud_credentials`` RAM-role provider (it signs the RPC way and
always speaks HTTPS, to ``VPNBOT_STS_ENDPOINT``, else ``sts.aliyuncs.com``, or with
``VPNBOT_ALIBABA_NETWORK=vpc`` ``sts-vpc.<default region>.aliyuncs.com``). Its cache treats
credentials as stale 15 minutes before they expire, which for a lifetime shorter than that means
"assume again on every call"; :class:`RoleCredentialsProvider` therefore keeps what it got until
a quarter of its lifetime (at most 15 minutes) is left, so AssumeRole calls stay bounded: one per
(account, session) per lifetime.

Without ``VPNBOT_ACCOUNTS``, :class:`OneAccount` hands out the one client, exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from bot.cloud.adapter import VpcAdapter
from bot.cloud.codes import ACCOUNT_NOT_CONFIGURED, STS_UNREACHABLE, lookup
from bot.cloud.credentials import CredentialsProvider
from bot.cloud.endpoints import sts_endpoint
from bot.cloud.ratelimit import AdaptiveRateLimiter
from bot.cloud.signer import Credentials
from bot.errors import CloudError, RoleNotAssumed
from bot.ids import is_role_session_name

if TYPE_CHECKING:
    from bot.cloud.client import VpcClient
    from bot.config import Settings
    from bot.ports import VpcApi

__all__ = [
    "READ_SESSION",
    "AccountClients",
    "OneAccount",
    "RoleCredentialsProvider",
    "session_name",
]

log = logging.getLogger("bot.cloud")

READ_SESSION: Final = "vpnbot"
# The library's own stale margin: it re-assumes 15 minutes before expiry.
_MAX_MARGIN_S: Final = 15 * 60.0
_CODE_RE = re.compile(r'"Code"\s*:\s*"([A-Za-z0-9_.-]{1,100})"')
_REQUEST_ID_RE = re.compile(r'"RequestId"\s*:\s*"([A-Za-z0-9-]{1,64})"')
_STATUS_RE = re.compile(r"http_code:\s*([0-9]{3})")


class _ToDebug(logging.Filter):
    """Drop the credential library's records (it logs tracebacks through a stderr handler of its
    own); at DEBUG, log them again under ``bot.cloud``, through the bot's handler and masking."""

    def filter(self, record: logging.LogRecord) -> bool:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("credentials: %s", record.getMessage())
        return False


_QUIET = _ToDebug()


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    # Our own warning (account, session, STS code, RequestId) says what happened, once.
    library = logging.getLogger("credentials")
    library.addFilter(_QUIET)
    try:
        yield
    finally:
        library.removeFilter(_QUIET)


def session_name(acting_user: str | None) -> str:
    """The RoleSessionName for a call made for ``acting_user`` (``vpnbot-U012ABC``), else ``vpnbot``.

    STS takes 2-64 letters, digits and ``.@-_``; Slack user ids always fit, anything else falls
    back to the shared read session rather than a name STS would refuse.
    """
    if not acting_user:
        return READ_SESSION
    name = f"{READ_SESSION}-{acting_user}"[:64]
    return name if is_role_session_name(name) else READ_SESSION


class _BaseCredentials:
    """Our base :class:`CredentialsProvider` as the library's ``ICredentialsProvider``."""

    def __init__(self, base: CredentialsProvider) -> None:
        self._base = base

    def get_credentials(self) -> Any:  # pragma: no cover - the bot only uses the async path
        raise NotImplementedError("vpn-bot assumes roles asynchronously")

    async def get_credentials_async(self) -> Any:
        from alibabacloud_credentials.provider.refreshable import Credentials as LibCredentials

        creds = await self._base.get()
        return LibCredentials(
            access_key_id=creds.access_key_id,
            access_key_secret=creds.access_key_secret,
            security_token=creds.security_token,
            provider_name="vpn-bot",
        )

    def get_provider_name(self) -> str:
        return "vpn-bot"


class RoleCredentialsProvider:
    """Temporary credentials of one RAM role for one session name, refreshed before they expire.

    Implements :class:`bot.cloud.credentials.CredentialsProvider`. A role that cannot be assumed
    raises :class:`bot.errors.RoleNotAssumed` naming the account, with STS's code when it gave one.
    """

    def __init__(
        self,
        *,
        base: CredentialsProvider,
        account: str,
        role_arn: str,
        session: str,
        sts_endpoint: str | None = None,
        duration_s: int = 3600,
        wall: Callable[[], float] = time.time,
        on_assume: Callable[[str, str], None] | None = None,
    ) -> None:
        self.account = account
        self.role_arn = role_arn
        self.session = session
        self._base = base
        self._sts_endpoint = sts_endpoint
        self._duration_s = duration_s
        self._wall = wall
        self._on_assume = on_assume
        self._provider: Any | None = None
        self._cached: Credentials | None = None
        self._refresh_at = float("-inf")
        # The library refreshes under a threading.Lock held across an await: serialise callers here.
        self._lock = asyncio.Lock()

    def _library_provider(self) -> Any:
        if self._provider is None:
            # Lazy: the library reads ALIBABA_CLOUD_* from the environment when first imported.
            from alibabacloud_credentials.provider import RamRoleArnCredentialsProvider

            self._provider = RamRoleArnCredentialsProvider(
                credentials_provider=_BaseCredentials(self._base),
                role_arn=self.role_arn,
                role_session_name=self.session,
                duration_seconds=self._duration_s,
                sts_endpoint=self._sts_endpoint,
            )
        return self._provider

    async def get(self) -> Credentials:
        async with self._lock:
            if self._cached is not None and self._wall() < self._refresh_at:
                return self._cached
            try:
                with _library_quiet():
                    model = await self._library_provider().get_credentials_async()
            except CloudError as err:
                # The base credentials themselves failed (the chain found none).
                raise RoleNotAssumed(
                    f"account {self.account}: no base credentials to assume {self.role_arn}",
                    info=err.info,
                    account=self.account,
                    role_arn=self.role_arn,
                ) from err
            except Exception as exc:
                raise self._translate(exc) from exc
            creds = Credentials(
                str(model.get_access_key_id()),
                str(model.get_access_key_secret()),
                str(model.get_security_token() or "") or None,
            )
            fresh = self._cached is None or creds.access_key_id != self._cached.access_key_id
            expiration = model.get_expiration()
            now = self._wall()
            if isinstance(expiration, int | float) and expiration > now:
                margin = min(_MAX_MARGIN_S, (expiration - now) / 4)
                self._refresh_at = expiration - margin
            else:
                self._refresh_at = now + 60.0
            self._cached = creds
        if fresh:
            log.info(
                "assumed role",
                extra={
                    "account": self.account,
                    "session": self.session,
                    "expires_in": round(self._refresh_at - now),
                },
            )
            if self._on_assume is not None:
                self._on_assume(self.account, "ok")
        return creds

    def _translate(self, exc: Exception) -> RoleNotAssumed:
        """The library's exception as a RoleNotAssumed with STS's code (its body is never shown)."""
        text = str(getattr(exc, "message", "") or exc)
        code_match = _CODE_RE.search(text)
        if code_match is not None:
            status_match = _STATUS_RE.search(text)
            info = lookup(
                code_match.group(1), http_status=int(status_match.group(1)) if status_match else None
            )
            request_id = _REQUEST_ID_RE.search(text)
            rid = request_id.group(1) if request_id else None
        else:
            info, rid = lookup(STS_UNREACHABLE, message=type(exc).__name__), None
        log.warning(
            "could not assume the role",
            extra={"account": self.account, "session": self.session, "code": info.code, "request_id": rid},
        )
        if self._on_assume is not None:
            self._on_assume(self.account, info.code)
        return RoleNotAssumed(
            f"account {self.account}: AssumeRole {self.role_arn} failed ({info.code})",
            info=info,
            request_id=rid,
            account=self.account,
            role_arn=self.role_arn,
        )

    def __repr__(self) -> str:
        return f"RoleCredentialsProvider({self.account}, {self.role_arn}, session={self.session})"


class _Unconfigured:
    """The credentials of an account the settings no longer name: every call refuses, naming it."""

    def __init__(self, account: str) -> None:
        self.account = account

    async def get(self) -> Credentials:
        raise RoleNotAssumed(
            f"account {self.account} is not in VPNBOT_ACCOUNTS",
            info=lookup(ACCOUNT_NOT_CONFIGURED),
            account=self.account,
            role_arn="",
        )


class OneAccount:
    """The single-account bot: one VPC client whatever is asked (``account`` is always ``""``)."""

    def __init__(self, vpc: VpcApi) -> None:
        self.vpc = vpc

    @property
    def names(self) -> tuple[str, ...]:
        return ()

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi:
        return self.vpc


class AccountClients:
    """A VPC client per (account, session name), each signed with its role's temporary credentials.

    Implements :class:`bot.ports.VpcApis`. Clients share the HTTP pool; each account has its own
    rate limiter (Alibaba throttles per account). The cache grows with the approvers who act, not
    with calls: one entry per (account, person).
    """

    def __init__(
        self,
        *,
        base: VpcClient,
        base_credentials: CredentialsProvider,
        roles: Mapping[str, str],
        sts_endpoint: str | None = None,
        duration_s: int = 3600,
        rate_per_second: float = 100.0,
        wall: Callable[[], float] = time.time,
        on_assume: Callable[[str, str], None] | None = None,
    ) -> None:
        self._base = base
        self._base_credentials = base_credentials
        self._roles = dict(roles)
        self._sts_endpoint = sts_endpoint
        self._duration_s = duration_s
        self._wall = wall
        self._on_assume = on_assume
        self._limiters = {name: AdaptiveRateLimiter(rate_per_second) for name in self._roles}
        self._clients: dict[tuple[str, str], VpcAdapter] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        base: VpcClient,
        base_credentials: CredentialsProvider,
        on_assume: Callable[[str, str], None] | None = None,
    ) -> AccountClients:
        return cls(
            base=base,
            base_credentials=base_credentials,
            roles=settings.accounts,
            sts_endpoint=sts_endpoint(
                settings.sts_endpoint, settings.default_region, settings.alibaba_network
            ),
            duration_s=settings.sts_duration_seconds,
            rate_per_second=settings.api_rate_per_second,
            on_assume=on_assume,
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The configured account names, in the order the settings give them."""
        return tuple(self._roles)

    def role_arn(self, account: str) -> str | None:
        return self._roles.get(account)

    def credentials(self, account: str, *, acting_user: str | None = None) -> CredentialsProvider:
        """The (cached) credentials of ``account``'s role for ``acting_user``'s session."""
        return self._client(account, session_name(acting_user)).wire._credentials_provider

    def for_account(self, account: str, *, acting_user: str | None = None) -> VpcApi:
        return self._client(account, session_name(acting_user))

    def client(self, account: str, *, acting_user: str | None = None) -> VpcClient:
        """The full client of ``account`` (listings need calls beyond :class:`bot.ports.VpcApi`)."""
        return self._client(account, session_name(acting_user)).wire

    def _client(self, account: str, session: str) -> VpcAdapter:
        key = (account, session)
        client = self._clients.get(key)
        if client is None:
            arn = self._roles.get(account)
            credentials: CredentialsProvider
            if arn is None:
                credentials = _Unconfigured(account)
            else:
                credentials = RoleCredentialsProvider(
                    base=self._base_credentials,
                    account=account,
                    role_arn=arn,
                    session=session,
                    sts_endpoint=self._sts_endpoint,
                    duration_s=self._duration_s,
                    wall=self._wall,
                    on_assume=self._on_assume,
                )
            client = VpcAdapter(self._base.with_credentials(credentials, limiter=self._limiters.get(account)))
            self._clients[key] = client
        return client

    def __repr__(self) -> str:
        return f"AccountClients({', '.join(self._roles)})"
