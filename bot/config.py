"""Settings: one ``BaseSettings`` built once at start and passed down.

Read from the environment and a ``.env`` file. Secrets are ``SecretStr``. :func:`load_settings`
turns pydantic's validation error into one :class:`bot.errors.ConfigError` listing each problem.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from bot import ids
from bot.errors import ConfigError

__all__ = ["Settings", "explicit_settings", "load_settings"]


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

    # --- the bot -------------------------------------------------------------------------------
    database_url: str = Field(default="sqlite:///vpn-bot.db", validation_alias="VPNBOT_DATABASE_URL")
    port: int = Field(default=3000, ge=1, le=65535, validation_alias="VPNBOT_PORT")
    # Socket Mode only: where /metrics and /healthz listen (default: VPNBOT_PORT).
    metrics_port: int | None = Field(default=None, ge=1, le=65535, validation_alias="VPNBOT_METRICS_PORT")
    poll_interval_seconds: float = Field(
        default=5.0, gt=0, le=300, validation_alias="VPNBOT_POLL_INTERVAL_SECONDS"
    )
    delete_timeout_seconds: float = Field(
        default=900.0, gt=0, le=86400, validation_alias="VPNBOT_DELETE_TIMEOUT_SECONDS"
    )
    confirmation_ttl_seconds: float = Field(
        default=900.0, gt=0, le=7 * 86400, validation_alias="VPNBOT_CONFIRMATION_TTL_SECONDS"
    )
    lease_seconds: float = Field(default=30.0, gt=0, le=3600, validation_alias="VPNBOT_LEASE_SECONDS")
    busy_retry_attempts: int = Field(default=5, ge=1, le=50, validation_alias="VPNBOT_BUSY_RETRY_ATTEMPTS")
    busy_retry_base_seconds: float = Field(
        default=10.0, gt=0, le=600, validation_alias="VPNBOT_BUSY_RETRY_BASE_SECONDS"
    )
    api_deadline_seconds: float = Field(
        default=60.0, gt=0, le=3600, validation_alias="VPNBOT_API_DEADLINE_SECONDS"
    )
    log_level: str = Field(default="INFO", validation_alias="VPNBOT_LOG_LEVEL")
    log_format: str = Field(default="json", pattern="^(json|text)$", validation_alias="VPNBOT_LOG_FORMAT")

    # --- policy (who may do what) ----------------------------------------------------------------
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_APPROVERS"
    )
    requesters: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_REQUESTERS"
    )
    allowed_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_ALLOWED_CHANNELS"
    )
    allowed_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="VPNBOT_ALLOWED_REGIONS"
    )
    require_second_approver: bool = Field(default=False, validation_alias="VPNBOT_REQUIRE_SECOND_APPROVER")

    @field_validator("approvers", "requesters", "allowed_channels", "allowed_regions", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("approvers", "requesters")
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

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not ids.is_region(v)]
        if bad:
            raise ValueError(f"not region ids like cn-hangzhou: {', '.join(bad)}")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not ids.is_region(value):
            raise ValueError(f"{value!r} is not a region id like cn-hangzhou")
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
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
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


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from env, ``.env`` and ``overrides``; raise ConfigError listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems, fields = [], []
        for err in exc.errors(include_url=False, include_input=False):
            loc = err.get("loc") or ("?",)
            env_name = _env_name(str(loc[0]))
            fields.append(env_name)
            msg = str(err.get("msg", "invalid"))
            problems.append(f"{env_name}: {msg.removeprefix('Value error, ')}")
        raise ConfigError(problems, fields=fields) from None
