"""Where the bot's Alibaba Cloud AccessKey comes from.

:func:`build_credentials_provider` picks, in order:

1. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` + ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (+ optional
   ``ALIBABA_CLOUD_SECURITY_TOKEN``) from :class:`bot.config.Settings` (environment or ``.env``):
   :class:`StaticCredentialsProvider`;
2. otherwise the standard Alibaba Cloud chain of ``alibabacloud_credentials`` (OIDC/RRSA, CLI
   profile ``~/.aliyun/config.json``, INI file ``~/.alibabacloud/credentials.ini``, ECS RAM role,
   ``ALIBABA_CLOUD_CREDENTIALS_URI``), which refreshes expiring STS credentials:
   :class:`ChainCredentialsProvider`.

About the chain library (imported lazily, on the first :meth:`ChainCredentialsProvider.get`):

- it reads its ``ALIBABA_CLOUD_*`` environment variables once, when it is first imported, from
  the process environment only. The ``.env`` file's ``ALIBABA_CLOUD_*`` lines
  (``Settings.credential_chain_env``) are therefore exported to ``os.environ`` here, in one place,
  just before that import, without overriding a variable the environment already sets (the same
  precedence as the settings). Passing them explicitly is not possible without re-building the
  library's chain: its default chain takes no arguments and each provider reads module constants;
- unless ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`` is set, the default chain probes the ECS
  metadata service (100.100.100.200, 1 s timeouts) and starts an APScheduler background thread.
  Off ECS, set ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`` (environment or ``.env``) to skip both;
  that is the operator's choice, so the bot never sets it itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from bot.cloud.codes import CREDENTIALS_UNAVAILABLE, lookup
from bot.cloud.signer import Credentials
from bot.errors import CloudError, ConfigError

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "ChainCredentialsProvider",
    "CredentialsProvider",
    "StaticCredentialsProvider",
    "build_credentials_provider",
]


class CredentialsProvider(Protocol):
    """Give the credentials to sign the next request with (called once per attempt)."""

    async def get(self) -> Credentials: ...


class StaticCredentialsProvider:
    """A fixed AccessKey pair, optionally with an STS token."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> StaticCredentialsProvider | None:
        """Return a provider when both halves of the env pair are set, ``None`` when neither is."""
        key_id = settings.access_key_id.get_secret_value().strip() if settings.access_key_id else ""
        secret = settings.access_key_secret.get_secret_value().strip() if settings.access_key_secret else ""
        token = settings.security_token.get_secret_value().strip() if settings.security_token else ""
        if not key_id and not secret:
            return None
        if not key_id or not secret:
            missing = "ALIBABA_CLOUD_ACCESS_KEY_SECRET" if key_id else "ALIBABA_CLOUD_ACCESS_KEY_ID"
            raise ConfigError(
                [f"{missing}: must be set together with its pair (or unset both to use the profile chain)"]
            )
        return cls(Credentials(key_id, secret, token or None))

    async def get(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentialsProvider({self._credentials!r})"


class ChainCredentialsProvider:
    """The standard Alibaba Cloud credential chain, or one explicit ``alibabacloud_credentials`` Config.

    ``config`` is an ``alibabacloud_credentials.models.Config`` (e.g. ``type="credentials_uri"``);
    without it the library's default chain is used. ``environ`` holds ``ALIBABA_CLOUD_*`` settings
    from the ``.env`` file, exported before the library is imported. Expiring STS credentials are
    refreshed by the library; each :meth:`get` returns the current ones.
    """

    def __init__(self, config: Any | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._environ = dict(environ or {})
        self._client: Any | None = None
        # The library holds a threading.Lock across an await while refreshing: a second
        # concurrent caller would block the event loop, so calls are serialised here.
        self._lock = asyncio.Lock()

    def _ensure_client(self) -> Any:
        if self._client is None:
            # The library reads os.environ when first imported: the .env lines must be there first.
            for name, value in self._environ.items():
                os.environ.setdefault(name, value)
            # Lazy: importing the library reads the environment and may start a scheduler thread.
            from alibabacloud_credentials.client import Client

            self._client = Client(self._config) if self._config is not None else Client()
        return self._client

    async def get(self) -> Credentials:
        async with self._lock:
            try:
                model = await self._ensure_client().get_credential_async()
            except Exception as exc:
                # The library's message may quote a credentials server's body: keep it out of the text.
                info = lookup(CREDENTIALS_UNAVAILABLE, message=type(exc).__name__)
                raise CloudError(
                    f"no Alibaba Cloud credentials from the chain ({type(exc).__name__})", info=info
                ) from exc
        key_id = getattr(model, "access_key_id", None)
        secret = getattr(model, "access_key_secret", None)
        if not key_id or not secret:
            info = lookup(CREDENTIALS_UNAVAILABLE, message="empty AccessKey")
            raise CloudError("the credential chain returned an empty AccessKey", info=info)
        token = getattr(model, "security_token", None)
        return Credentials(str(key_id), str(secret), str(token) if token else None)

    def __repr__(self) -> str:
        kind = getattr(self._config, "type", None) or "default chain"
        return f"ChainCredentialsProvider({kind})"


def build_credentials_provider(settings: Settings) -> CredentialsProvider:
    """Return the env-pair provider if the pair is set, else the standard chain."""
    static = StaticCredentialsProvider.from_settings(settings)
    if static is not None:
        return static
    return ChainCredentialsProvider(environ=settings.credential_chain_env)
