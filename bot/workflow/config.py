"""The workflow's timings, taken from the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.config import Settings
from bot.schedule import Window

__all__ = ["WorkflowConfig"]


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """The timing knobs of the workflow, in seconds."""

    poll_interval_s: float = 5.0
    # From approval to a final state: the one total give-up time (VPNBOT_DELETE_TIMEOUT_SECONDS).
    delete_timeout_s: float = 900.0
    confirmation_ttl_s: float = 900.0
    lease_s: float = 30.0
    # Operations this instance drives at once (VPNBOT_MAX_DRIVEN_OPERATIONS); the rest wait for room.
    max_driven: int = 200
    # Sends of DeleteVpnConnection after definite rejections (busy, throttled), each with a new token.
    busy_retry_attempts: int = 5
    busy_retry_base_s: float = 10.0
    busy_retry_max_s: float = 120.0
    # How often the background loops run (resume, expiry, outbox); default lease_s / 3.
    loop_interval_s: float | None = None
    # How many times VERIFYING looks again before calling a still-present connection a failure:
    # right after the call the gateway may still say ``active`` before it switches to ``updating``.
    verify_checks: int = 3
    # Unexpected failures of one operation's driver before it is failed with an error id.
    crash_budget: int = 3
    # How long the outbox keeps trying to tell Slack before it gives up (with an ERROR log line).
    slack_give_up_s: float = 6 * 3600.0
    # The outbox's first wait before telling Slack again after a transient failure (doubling per
    # attempt up to slack_retry_max_s; VPNBOT_SLACK_RETRY_BASE_SECONDS, VPNBOT_SLACK_RETRY_MAX_SECONDS).
    slack_retry_base_s: float = 2.0
    slack_retry_max_s: float = 300.0
    # Each part of the confirmation's impact preview (status, routes, ...) gets this long; a part
    # that takes longer is shown as "could not be read" rather than holding up the confirmation.
    impact_deadline_s: float = 3.0
    # Reading the configuration snapshot just before the first delete gets this long per part; past
    # it the deletion goes on without it and the thread later says it could not be taken.
    snapshot_deadline_s: float = 5.0
    # How long a deleted card offers Recreate… (VPNBOT_UNDO_WINDOW_SECONDS; 0 turns it off).
    undo_window_s: float = 86400.0
    # Remind the approvers once after this long unanswered (VPNBOT_REMIND_AFTER_SECONDS; 0: never),
    # mentioning ``approvers`` (VPNBOT_APPROVERS' ids; empty for ``*``).
    remind_after_s: float = 0.0
    approvers: tuple[str, ...] = ()
    # Call this user group once ``escalate_before_s`` before an unanswered confirmation expires.
    escalate_to: str | None = None
    escalate_before_s: float = 225.0
    # Whether decisions are announced in VPNBOT_AUDIT_CHANNEL (the outbox's AUDIT_LINE effects).
    audit_channel: bool = False
    # Change windows by account (VPNBOT_CHANGE_WINDOWS; ``*``: every other account): an approved
    # deletion runs inside its account's windows only (bot.schedule).
    change_windows: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkflowConfig:
        """Take the workflow's timings from the bot's settings."""
        return cls(
            poll_interval_s=settings.poll_interval_seconds,
            delete_timeout_s=settings.delete_timeout_seconds,
            confirmation_ttl_s=settings.confirmation_ttl_seconds,
            lease_s=settings.lease_seconds,
            max_driven=settings.max_driven_operations,
            busy_retry_attempts=settings.busy_retry_attempts,
            busy_retry_base_s=settings.busy_retry_base_seconds,
            undo_window_s=settings.undo_window_seconds,
            slack_retry_base_s=settings.slack_retry_base_seconds,
            slack_retry_max_s=settings.slack_retry_max_seconds,
            remind_after_s=settings.remind_after_seconds,
            approvers=() if settings.anyone_may_approve else tuple(settings.approvers),
            escalate_to=settings.escalate_to,
            escalate_before_s=settings.escalate_before_s,
            audit_channel=settings.audit_channel is not None,
            change_windows=settings.change_windows_parsed(),
        )

    @property
    def loop_s(self) -> float:
        return self.loop_interval_s if self.loop_interval_s is not None else self.lease_s / 3
