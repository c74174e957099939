"""Settings: one ``BaseSettings`` built once at start and passed down.

Read from the environment and a ``.env`` file. Secrets are ``SecretStr``. :func:`load_settings`
turns pydantic's validation error into one :class:`bot.errors.ConfigError` listing each problem.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from bot import ids, schedule
from bot.approval_rules import parse_approval_rules
from bot.domain import ApprovalRule
from bot.errors import ConfigError

__all__ = ["ANYONE", "PLACEHOLDERS", "Settings", "explicit_settings", "load_settings"]

# VPNBOT_APPROVERS=* : anyone who sees the confirmation may approve (an explicit opt-in).
ANYONE = "*"

# The values .env.example ships with: a copied but unedited file must not start a bot.
PLACEHOLDERS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "xoxb-your-bot-token",
    "SLACK_SIGNING_SECRET": "your-signing-secret",
    "SLACK_APP_TOKEN": "xapp-your-app-token",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-your-access-key-id",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "your-access-key-secret",
}
_CHAIN_PREFIX = "alibaba_cloud_"

# Where each secret comes from, for the lines that reject a placeholder or a wrong kind of token.
_HOW = {
    "SLACK_BOT_TOKEN": "set the Bot User OAuth Token (xoxb-…, OAuth & Permissions)",
    "SLACK_SIGNING_SECRET": "set the Signing Secret (Basic Information → App Credentials)",
    "SLACK_APP_TOKEN": "set an app-level token (xapp-…, Basic Information → App-Level Tokens) or unset it",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "set the RAM user's AccessKey id, or comment out both AccessKey lines",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "set the RAM user's AccessKey secret, or comment out both lines",
}


def _masked(secret: str) -> str:
    """Enough of a secret to recognise its kind (a Slack token's prefix), never the secret itself."""
    kind = re.match(r"^(xox[a-z]-|xapp-)", secret)
    return f"'{kind.group(1)}…' (masked)" if kind else "the value (masked)"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of vpn-bot; the README has the same table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- Slack ---------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="VPNBOT_SLACK_API_URL")

    # --- Alibaba Cloud ---------------------------------------------------------------------------
    access_key_id: SecretStr | None = Field(default=None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_ID")
    access_key_secret: SecretStr | None = Field(
        default=None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    )
    security_token: SecretStr | None = Field(default=None, validation_alias="ALIBABA_CLOUD_SECURITY_TOKEN")
    default_region: str = Field(default="cn-hangzhou", validation_alias="VPNBOT_DEFAULT_REGION")
    vpc_endpoint: str | None = Field(default=None, validation_alias="VPNBOT_VPC_ENDPOINT")
    # public (default) or vpc: vpc-vpc.<region>.aliyuncs.com and sts-vpc.<region>.aliyuncs.com, for a
    # bot inside Alibaba Cloud (bot.cloud.endpoints: as the official SDK resolves them).
    alibaba_network: Literal["public", "vpc"] = Field(
        default="public", validation_alias="VPNBOT_ALIBABA_NETWORK"
    )
    # One region's VPC endpoint (region=host or region=URL, comma-separated), before the SDK's own table.
    vpc_endpoints: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_VPC_ENDPOINTS"
    )
    # Several accounts: name=RAM role ARN, each assumed through STS (unset: the one account of the key).
    accounts: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_ACCOUNTS"
    )
    # Channel -> the accounts it may act on, the first its default (C0PROD=prod,C0OPS=prod,C0OPS=staging).
    channel_accounts: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_CHANNEL_ACCOUNTS"
    )
    # Whether a channel binding reserves its accounts: "exclusive" (a bound account is usable only from
    # its bound channels; DMs and unbound channels see only unbound accounts) or "default-only".
    account_binding: Literal["exclusive", "default-only"] = Field(
        default="exclusive", validation_alias="VPNBOT_ACCOUNT_BINDING"
    )
    # host[:port] of STS (a private endpoint, the sandbox); default sts.aliyuncs.com. Always HTTPS.
    sts_endpoint: str | None = Field(default=None, validation_alias="VPNBOT_STS_ENDPOINT")
    # How long assumed-role credentials are asked for (STS allows 900 up to the role's maximum).
    sts_duration_seconds: int = Field(
        default=3600, ge=900, le=43200, validation_alias="VPNBOT_STS_DURATION_SECONDS"
    )

    # --- the bot -------------------------------------------------------------------------------
    database_url: str = Field(default="sqlite:///vpn-bot.db", validation_alias="VPNBOT_DATABASE_URL")
    # `serve` waits this long for a database server it cannot reach at start (0: exit at once);
    # a misconfiguration (bad URL, login refused, missing database) exits at once whatever this says.
    database_wait_seconds: float = Field(
        default=60.0, ge=0, le=3600, validation_alias="VPNBOT_DATABASE_WAIT_SECONDS"
    )
    port: int = Field(default=3000, ge=1, le=65535, validation_alias="VPNBOT_PORT")
    # The operations listener: /metrics and the probes (/livez, /readyz), never Slack's events.
    # Loopback by default: set VPNBOT_METRICS_HOST=0.0.0.0 where a scraper or the kubelet needs it.
    metrics_host: str = Field(default="127.0.0.1", min_length=1, validation_alias="VPNBOT_METRICS_HOST")
    metrics_port: int = Field(default=9464, ge=1, le=65535, validation_alias="VPNBOT_METRICS_PORT")
    # Open connections each listener accepts at once; more are closed at once (see bot/serving.py).
    max_connections: int = Field(default=256, ge=8, le=65535, validation_alias="VPNBOT_MAX_CONNECTIONS")
    # A client must send a whole request head within this many seconds of connecting (or of its
    # previous response); idle and slow ("slowloris") connections are closed after it.
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, validation_alias="VPNBOT_HEADER_TIMEOUT_SECONDS"
    )
    poll_interval_seconds: float = Field(
        default=5.0, gt=0, le=300, validation_alias="VPNBOT_POLL_INTERVAL_SECONDS"
    )
    delete_timeout_seconds: float = Field(
        default=900.0, gt=0, le=86400, validation_alias="VPNBOT_DELETE_TIMEOUT_SECONDS"
    )
    confirmation_ttl_seconds: float = Field(
        default=900.0, gt=0, le=7 * 86400, validation_alias="VPNBOT_CONFIRMATION_TTL_SECONDS"
    )
    # How long a deleted card offers Recreate…; 0 turns Recreate off.
    undo_window_seconds: float = Field(
        default=86400.0, ge=0, le=30 * 86400, validation_alias="VPNBOT_UNDO_WINDOW_SECONDS"
    )
    lease_seconds: float = Field(default=30.0, gt=0, le=3600, validation_alias="VPNBOT_LEASE_SECONDS")
    # Operations one process carries out at once; past it, approved ones wait in the database for
    # room here or on another replica. Bounds memory and spreads a burst over replicas.
    max_driven_operations: int = Field(
        default=200, ge=1, le=100_000, validation_alias="VPNBOT_MAX_DRIVEN_OPERATIONS"
    )
    # Site decommission: the most connections one request may ask to delete (ids, a gateway's all,
    # the picker's multi-select); more is refused. At most 40, so the batch card keeps a line each.
    max_batch: int = Field(default=20, ge=1, le=40, validation_alias="VPNBOT_MAX_BATCH")
    busy_retry_attempts: int = Field(default=5, ge=1, le=50, validation_alias="VPNBOT_BUSY_RETRY_ATTEMPTS")
    busy_retry_base_seconds: float = Field(
        default=10.0, gt=0, le=600, validation_alias="VPNBOT_BUSY_RETRY_BASE_SECONDS"
    )
    # The outbox's wait before telling Slack again after a transient failure (doubles per attempt,
    # Retry-After honoured), and the longest such wait.
    slack_retry_base_seconds: float = Field(
        default=2.0, gt=0, le=600, validation_alias="VPNBOT_SLACK_RETRY_BASE_SECONDS"
    )
    slack_retry_max_seconds: float = Field(
        default=300.0, gt=0, le=3600, validation_alias="VPNBOT_SLACK_RETRY_MAX_SECONDS"
    )
    api_deadline_seconds: float = Field(
        default=60.0, gt=0, le=3600, validation_alias="VPNBOT_API_DEADLINE_SECONDS"
    )
    api_rate_per_second: float = Field(
        default=100.0, gt=0, le=10_000, validation_alias="VPNBOT_API_RATE_PER_SECOND"
    )
    log_level: str = Field(default="INFO", validation_alias="VPNBOT_LOG_LEVEL")
    log_format: Literal["json", "text"] = Field(default="json", validation_alias="VPNBOT_LOG_FORMAT")

    # --- policy (who may do what) ----------------------------------------------------------------
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_APPROVERS"
    )
    requesters: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_REQUESTERS"
    )
    # Who may freeze and unfreeze changes (/vpn freeze): user and user-group ids; empty: nobody.
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="VPNBOT_ADMINS")
    allowed_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_ALLOWED_CHANNELS"
    )
    allowed_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_ALLOWED_REGIONS"
    )
    require_second_approver: bool = Field(default=False, validation_alias="VPNBOT_REQUIRE_SECOND_APPROVER")
    # SCOPE=RULE: how many approve, by account and region (see bot.approval_rules); unset: one approver.
    approval_rules: Annotated[dict[str, ApprovalRule], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_APPROVAL_RULES"
    )
    # Commands and lookups one person may make per minute (a token bucket in each process); 0: no limit.
    user_rate_per_minute: int = Field(
        default=20, ge=0, le=100_000, validation_alias="VPNBOT_USER_RATE_PER_MINUTE"
    )
    # A deletion must say why: ``true`` in every account, or the account names that require it.
    require_reason: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_REQUIRE_REASON"
    )
    # account=regex: a request in that account must name a change ticket matching it in its reason
    # (``*`` for every account, and the one of the single-account bot).
    ticket_patterns: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_TICKET_PATTERN"
    )
    # --- nobody left waiting ----------------------------------------------------------------------
    # Remind the approvers once in the card's thread after this long unanswered; 0: never.
    remind_after_seconds: float = Field(
        default=0.0, ge=0, le=7 * 86400, validation_alias="VPNBOT_REMIND_AFTER_SECONDS"
    )
    # A user group (S…) called once in the thread before an unanswered confirmation expires.
    escalate_to: str | None = Field(default=None, validation_alias="VPNBOT_ESCALATE_TO")
    # How long before expiry it is called; unset: a quarter of VPNBOT_CONFIRMATION_TTL_SECONDS.
    escalate_before_expiry_seconds: float | None = Field(
        default=None, gt=0, le=7 * 86400, validation_alias="VPNBOT_ESCALATE_BEFORE_EXPIRY_SECONDS"
    )
    # A channel (C…/G…) that gets one line per decision (requested, approved, denied, deleted, …).
    audit_channel: str | None = Field(default=None, validation_alias="VPNBOT_AUDIT_CHANNEL")
    # ``/vpn delete … at TIME``: how far ahead a deletion may be scheduled.
    max_schedule_days: float = Field(default=14.0, gt=0, le=366, validation_alias="VPNBOT_MAX_SCHEDULE_DAYS")
    # account=DAYS HH:MM-HH:MM Zone; … (``*`` for every account): approved deletions run inside these
    # windows only (see bot.schedule). Kept as written, each window checked; parsed by change_windows_parsed.
    change_windows: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, validation_alias="VPNBOT_CHANGE_WINDOWS"
    )

    # Other ALIBABA_CLOUD_* lines of the .env file (e.g. ALIBABA_CLOUD_ECS_METADATA_DISABLED), for the
    # credential chain library, which reads only the process environment (see bot.cloud.credentials).
    # Private: not a setting of the bot, only passed on.
    _credential_chain_env: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _chain_env(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Keep the .env file's undeclared ALIBABA_CLOUD_* lines (pydantic-settings passes them lowercased)."""
        settings = handler(data)
        if isinstance(data, dict):
            declared = {str(info.validation_alias).lower() for info in cls.model_fields.values()}
            settings._credential_chain_env = {
                str(key).upper(): str(value)
                for key, value in data.items()
                if str(key).startswith(_CHAIN_PREFIX) and str(key) not in declared and value is not None
            }
        return settings

    @property
    def credential_chain_env(self) -> dict[str, str]:
        """The ``.env`` file's ALIBABA_CLOUD_* lines that are not settings of the bot itself."""
        return dict(self._credential_chain_env)

    @property
    def anyone_may_approve(self) -> bool:
        """True when VPNBOT_APPROVERS is ``*``: whoever sees the confirmation may approve."""
        return self.approvers == [ANYONE]

    @field_validator(
        "approvers", "requesters", "admins", "allowed_channels", "allowed_regions", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("approvers", "requesters", "admins")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not ids.is_slack_principal(v)]
        if bad:
            raise ValueError(f"not Slack user ids (U…/W…) or user-group ids (S…): {', '.join(bad)}")
        return value

    @field_validator("allowed_channels")
    @classmethod
    def _channel_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not ids.is_channel_id(v)]
        if bad:
            raise ValueError(f"not Slack channel ids (C…/G…/D…): {', '.join(bad)}")
        return value

    @field_validator("escalate_to", "audit_channel", "escalate_before_expiry_seconds", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("escalate_to")
    @classmethod
    def _usergroup(cls, value: str | None) -> str | None:
        if value is not None and not ids.is_user_group_id(value.strip()):
            raise ValueError(f"not a Slack user-group id (S…): {value}")
        return value.strip() if value is not None else None

    @field_validator("audit_channel")
    @classmethod
    def _audit_channel(cls, value: str | None) -> str | None:
        # A channel (public C…, private G…), never a direct message (D…).
        if value is not None and not (ids.is_channel_id(value.strip()) and value.strip()[0] in "CG"):
            raise ValueError(f"not a Slack channel id (C…/G…): {value}")
        return value.strip() if value is not None else None

    @property
    def escalate_before_s(self) -> float:
        """How long before expiry VPNBOT_ESCALATE_TO is called (default: a quarter of the TTL)."""
        if self.escalate_before_expiry_seconds is not None:
            return self.escalate_before_expiry_seconds
        return self.confirmation_ttl_seconds / 4

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not ids.is_region(v)]
        if bad:
            raise ValueError(f"not region ids like cn-hangzhou: {', '.join(bad)}")
        return value

    @field_validator("accounts", mode="before")
    @classmethod
    def _accounts(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found: dict[str, str] = {}
        for part in _split_csv(value):
            name, sep, arn = (p.strip() for p in part.partition("="))
            if not sep or not ids.is_account_name(name):
                raise ValueError(
                    f"{part!r} is not name=role-ARN; names are 1-32 lowercase letters, digits, - or _, "
                    "e.g. prod=acs:ram::1234567890123456:role/vpn-bot"
                )
            if not ids.is_role_arn(arn):
                raise ValueError(
                    f"{arn!r} (account {name}) is not a RAM role ARN like acs:ram::1234567890123456:role/vpn-bot"
                )
            if name in found:
                raise ValueError(f"the account {name} is given twice")
            found[name] = arn
        return found

    @field_validator("require_reason", mode="before")
    @classmethod
    def _require_reason(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word in {"true", "1", "yes", "on"}:
            return [ANYONE]
        if word in {"", "false", "0", "no", "off"}:
            return []
        names = _split_csv(value)
        bad = [n for n in names if not ids.is_account_name(n)]
        if bad:
            raise ValueError(f"not true, false or account names: {', '.join(bad)}")
        return names

    @field_validator("ticket_patterns", mode="before")
    @classmethod
    def _ticket_patterns(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found: dict[str, str] = {}
        for part in _split_csv(value):
            name, sep, pattern = (p.strip() for p in part.partition("="))
            if not sep or not pattern or not (name == ANYONE or ids.is_account_name(name)):
                raise ValueError(f"{part!r} is not account=regex (or *=regex), e.g. prod=CHG-[0-9]+")
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} (account {name}) is not a regular expression: {err}") from None
            if name in found:
                raise ValueError(f"the account {name} is given twice")
            found[name] = pattern
        return found

    @field_validator("change_windows", mode="before")
    @classmethod
    def _change_windows(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = (n for n in (p.partition("=")[0].strip() for p in value.split(";")) if n and n != ANYONE)
        try:
            parsed = schedule.parse_windows(value, account_ok=[n for n in names if ids.is_account_name(n)])
        except schedule.ScheduleError as err:
            raise ValueError(str(err)) from None
        return {name: [str(w) for w in windows] for name, windows in parsed.items()}

    def change_windows_parsed(self) -> dict[str, tuple[schedule.Window, ...]]:
        """VPNBOT_CHANGE_WINDOWS as windows by account name (``*``: every other account)."""
        return {
            name: tuple(schedule.parse_window(spec) for spec in specs)
            for name, specs in self.change_windows.items()
        }

    @field_validator("approval_rules", mode="before")
    @classmethod
    def _approval_rules(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        # Declared before this field, so already checked (absent if it was refused: reported on its own).
        accounts = info.data.get("accounts") or {}
        return parse_approval_rules(value, accounts=accounts)

    def reason_required(self, account: str) -> bool:
        """Whether a deletion in ``account`` ("" for the single-account bot) must give a reason."""
        return ANYONE in self.require_reason or (bool(account) and account in self.require_reason)

    def ticket_pattern(self, account: str) -> str | None:
        """The change-ticket regex a reason in ``account`` must match, if any (the account's, else ``*``)."""
        return (
            self.ticket_patterns.get(account)
            if account in self.ticket_patterns
            else self.ticket_patterns.get(ANYONE)
        )

    @field_validator("vpc_endpoints", mode="before")
    @classmethod
    def _vpc_endpoints(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found: dict[str, str] = {}
        for part in _split_csv(value):
            region, sep, where = (p.strip() for p in part.partition("="))
            if not sep or not ids.is_region(region):
                raise ValueError(f"{part!r} is not region=host, e.g. cn-shanghai-finance-1=vpc.aliyuncs.com")
            if not re.fullmatch(r"(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?", where):
                raise ValueError(f"{where!r} (region {region}) is not a host, host:port or http(s) URL")
            if region in found:
                raise ValueError(f"the region {region} is given twice")
            found[region] = where
        return found

    @field_validator("channel_accounts", mode="before")
    @classmethod
    def _channel_accounts(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        bound: dict[str, list[str]] = {}
        for part in _split_csv(value):
            channel, sep, name = (p.strip() for p in part.partition("="))
            if not sep or not ids.is_channel_id(channel) or not ids.is_account_name(name):
                raise ValueError(f"{part!r} is not CHANNEL_ID=account, e.g. C0PROD=prod")
            names = bound.setdefault(channel, [])
            if name not in names:
                names.append(name)
        return bound

    @field_validator("sts_endpoint")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
            raise ValueError(f"{value!r} must be host or host:port (no scheme: STS is always HTTPS)")
        return value

    @model_validator(mode="after")
    def _bound_accounts_exist(self) -> Settings:
        if self.channel_accounts and not self.accounts:
            raise ValueError("VPNBOT_CHANNEL_ACCOUNTS needs VPNBOT_ACCOUNTS (name=role-ARN for each account)")
        unknown = sorted({n for names in self.channel_accounts.values() for n in names} - set(self.accounts))
        if unknown:
            raise ValueError(
                f"VPNBOT_CHANNEL_ACCOUNTS names accounts VPNBOT_ACCOUNTS does not define: {', '.join(unknown)}"
            )
        unwindowed = sorted(set(self.change_windows) - set(self.accounts) - {ANYONE})
        if unwindowed:
            raise ValueError(
                f"VPNBOT_CHANGE_WINDOWS names accounts VPNBOT_ACCOUNTS does not define: {', '.join(unwindowed)}"
                + ("" if self.accounts else " (a single-account bot takes *=…)")
            )
        return self

    @property
    def multi_account(self) -> bool:
        """Whether VPNBOT_ACCOUNTS is set: every operation then runs in a named account, through its role."""
        return bool(self.accounts)

    @property
    def unbound_accounts(self) -> tuple[str, ...]:
        """The accounts a DM or a channel without a binding may use (all of them with ``default-only``)."""
        if self.account_binding == "default-only":
            return tuple(self.accounts)
        bound = {name for names in self.channel_accounts.values() for name in names}
        return tuple(name for name in self.accounts if name not in bound)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not ids.is_region(value):
            raise ValueError(f"{value!r} is not a region id like cn-hangzhou")
        return value

    @field_validator("approvers", mode="wrap")
    @classmethod
    def _anyone(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[str]:
        """``*`` alone opts in to "anyone who sees the confirmation"; the id checks see the rest."""
        ids = _split_csv(value)
        if isinstance(ids, list) and ANYONE in ids:
            if ids != [ANYONE]:
                raise ValueError("'*' (anyone) cannot be combined with ids; set either * or a list of ids")
            return [ANYONE]
        result: list[str] = handler(value)
        return result

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "access_key_id", "access_key_secret"
    )
    @classmethod
    def _not_placeholder(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        env = _env_name(str(info.field_name))
        if value is not None and value.get_secret_value().strip() == PLACEHOLDERS.get(env):
            raise ValueError(f"{value.get_secret_value()!r} is the .env.example placeholder; {_HOW[env]}")
        return value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        token = value.get_secret_value().strip() if value is not None else ""
        if value is not None and not token.startswith("xoxb-"):
            kind = "an app-level token" if token.startswith("xapp-") else "not a bot token"
            raise ValueError(f"{_masked(token)} is {kind}; {_HOW['SLACK_BOT_TOKEN']}")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        token = value.get_secret_value().strip() if value is not None else ""
        if value is not None and not token.startswith("xapp-"):
            raise ValueError(f"{_masked(token)} is not an app-level token; {_HOW['SLACK_APP_TOKEN']}")
        return value

    @field_validator("vpc_endpoint", "slack_api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} must be a full URL with scheme, e.g. http://127.0.0.1:9000")
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgres(ql)?)(\+\w+)?://", value):
            # The URL may hold a password: name only its scheme.
            scheme = value.partition("://")[0] if "://" in value else "a value without a scheme"
            raise ValueError(f"{scheme!r} is not accepted; use sqlite:///path/to/file.db or postgresql://…")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"{value!r} is not accepted; use DEBUG, INFO, WARNING or ERROR")
        return level


class _ExplicitSettings(Settings):
    """Settings built from explicit values only: no environment, no ``.env`` file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def explicit_settings(**values: Any) -> Settings:
    """Settings from ``values`` (by field name) alone, ignoring the environment (demo, tests)."""
    return _ExplicitSettings(**values)


# Env names by field, for error messages that name what the user actually sets.
def _env_name(field_name: str) -> str:
    info = Settings.model_fields.get(field_name)
    if info is None:
        return field_name
    alias = info.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return field_name.upper()


def _field_of(loc_name: str) -> str | None:
    """The field name for an error's location, which is the env name or (for overrides) the field."""
    if loc_name in Settings.model_fields:
        return loc_name
    return next((name for name in Settings.model_fields if _env_name(name) == loc_name), None)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _accepted(field_name: str | None) -> str:
    """The accepted form of a setting, from its type and bounds: "an integer from 1 to 65535"."""
    info = Settings.model_fields.get(field_name or "")
    if info is None:
        return "a valid value"
    kinds = {int: "an integer", float: "a number", bool: "true or false"}
    kind = kinds.get(info.annotation, "a valid value")  # type: ignore[arg-type]  # annotation is a type here
    bounds: dict[str, object] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt | annotated_types.Le):
            bounds.update({k: getattr(item, k) for k in ("ge", "gt", "le") if hasattr(item, k)})
    if "ge" in bounds and "le" in bounds:
        return f"{kind} from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    parts = [f"greater than {_number(bounds['gt'])}"] if "gt" in bounds else []
    parts += [f"at most {_number(bounds['le'])}"] if "le" in bounds else []
    return f"{kind} {' and '.join(parts)}".strip()


def _problem(err: ErrorDetails) -> tuple[str, str]:
    """(env name, one line naming the setting, the bad value and the accepted form) for one error."""
    loc = str((err.get("loc") or ("?",))[0])
    field = _field_of(loc)
    env_name = _env_name(field) if field else loc
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":  # our own validators' sentences already name the values and the form
        return env_name, f"{env_name}: {ctx.get('error', err['msg'])}"
    info = Settings.model_fields.get(field or "")
    secret = info is not None and SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
    raw = err.get("input")
    shown = _masked(str(raw)) if secret else repr(raw if isinstance(raw, str) else str(raw))
    if kind == "literal_error":
        return env_name, f"{env_name}: {shown} is not accepted; use {ctx.get('expected', 'a listed value')}"
    return env_name, f"{env_name}: {shown} is not accepted; use {_accepted(field)}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from env, ``.env`` and ``overrides``; raise ConfigError listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        named = [_problem(err) for err in exc.errors(include_url=False)]
        raise ConfigError([line for _, line in named], fields=[name for name, _ in named]) from None
