"""The Slack layer: ``register(app, ...)`` is the only place listener ids meet their callbacks.

Nothing here creates an app or registers anything on import; the composition root builds the
``AsyncApp`` and calls :func:`register`. The HTTP entry point is
:func:`bot.slack.http.make_aiohttp_handler`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from slack_bolt.app.async_app import AsyncApp

from bot.config import Settings
from bot.slack.actions import make_approve_listener, make_override_listener, make_withdraw_listener
from bot.slack.batch import (
    make_batch_approve_listener,
    make_batch_cancel_listener,
    make_batch_override_listener,
    make_batch_withdraw_listener,
)
from bot.slack.block_ids import SLASH_COMMAND, ActionId, CallbackId
from bot.slack.cancel import make_cancel_listener, make_cancel_submit_listener
from bot.slack.commands import make_vpn_command_listener
from bot.slack.deps import (
    AdminPolicy,
    CancelPolicy,
    InFlight,
    OperationLookup,
    ReadPolicy,
    Regions,
    SlackDeps,
    WorkflowApi,
)
from bot.slack.errors import register_error_handler
from bot.slack.find import make_list_delete_listener, make_list_page_listener
from bot.slack.home import ActiveFreezes, ApprovalPolicy, RecentOperations, make_home_listener
from bot.slack.inventory import ConnectionRow, Inventory, ListingCache
from bot.slack.limits import UserRate
from bot.slack.picker import make_picker_submit_listener, make_picker_suggest_listener
from bot.slack.policy import approval_count_text
from bot.slack.recreate import make_recreate_open_listener, make_recreate_submit_listener
from bot.slack.visibility import Visibility

__all__ = [
    "ApprovalPolicy",
    "ConnectionRow",
    "InFlight",
    "Inventory",
    "OperationLookup",
    "ReadPolicy",
    "RecentOperations",
    "Regions",
    "SlackDeps",
    "WorkflowApi",
    "register",
]


def register(
    app: AsyncApp,
    *,
    workflow: WorkflowApi,
    settings: Settings,
    regions: Regions,
    operation: OperationLookup | None = None,
    inflight: InFlight | None = None,
    inventory: Inventory | None = None,
    read_policy: ReadPolicy | None = None,
    cancel_policy: CancelPolicy | None = None,
    recent_operations: RecentOperations | None = None,
    approvals: ApprovalPolicy | None = None,
    visibility: Visibility | None = None,
    now: Callable[[], datetime] | None = None,
    admin_policy: AdminPolicy | None = None,
    freezes: ActiveFreezes | None = None,
) -> None:
    """Register the /vpn command, the confirmation and list buttons and the error funnel on ``app``.

    ``operation`` (optional) loads an operation by id so a click can be checked against the
    message the operation was posted in; without it the click is checked against Slack's copy
    of the clicked message only. ``inflight`` collects listener work still running after
    ``ack()``, so the caller can wait for it on shutdown. ``inventory`` and ``read_policy`` serve
    ``/vpn list`` and ``/vpn status`` (listings are cached briefly for paging) and the
    ``/vpn delete`` picker. ``recent_operations`` (one store call) and ``approvals`` feed the Home tab. ``visibility`` (the
    one visibility rule) decides which operations the Home tab and ``/vpn status`` show to whom.
    ``now`` (the workflow's clock) is what a requested run time (``at …``) is checked against.
    ``admin_policy`` decides who may ``/vpn freeze`` (nobody without it); ``freezes`` shows those in
    force on the Home tab.
    """
    deps = SlackDeps(
        workflow=workflow,
        settings=settings,
        regions=regions,
        operation=operation,
        inflight=inflight if inflight is not None else InFlight(),
        inventory=inventory,
        listings=ListingCache(inventory) if inventory is not None else None,
        read_policy=read_policy,
        cancel_policy=cancel_policy,
        visibility=visibility,
        admin_policy=admin_policy,
        rate=UserRate(settings.user_rate_per_minute),
    )
    if now is not None:
        deps = dataclasses.replace(deps, now=now)
    app.command(SLASH_COMMAND)(make_vpn_command_listener(deps))
    app.action(ActionId.APPROVE.value)(make_approve_listener(deps))
    app.action(ActionId.OVERRIDE_WINDOW.value)(make_override_listener(deps))
    app.action(ActionId.WITHDRAW.value)(make_withdraw_listener(deps))
    app.action(ActionId.CANCEL.value)(make_cancel_listener(deps))
    app.action(ActionId.BATCH_APPROVE.value)(make_batch_approve_listener(deps))
    app.action(ActionId.BATCH_CANCEL.value)(make_batch_cancel_listener(deps))
    app.action(ActionId.BATCH_OVERRIDE_WINDOW.value)(make_batch_override_listener(deps))
    app.action(ActionId.BATCH_WITHDRAW.value)(make_batch_withdraw_listener(deps))
    app.view(CallbackId.CANCEL.value)(make_cancel_submit_listener(deps))
    page_listener = make_list_page_listener(deps)
    app.action(ActionId.LIST_NEXT.value)(page_listener)
    app.action(ActionId.LIST_PREVIOUS.value)(page_listener)
    app.action(ActionId.LIST_DELETE.value)(make_list_delete_listener(deps))
    app.options(ActionId.PICK_CONNECTION.value)(make_picker_suggest_listener(deps))
    app.options(ActionId.PICK_MORE.value)(make_picker_suggest_listener(deps))
    app.view(CallbackId.PICKER.value)(make_picker_submit_listener(deps))
    app.action(ActionId.RECREATE_OPEN.value)(make_recreate_open_listener(deps))
    app.view(CallbackId.RECREATE.value)(make_recreate_submit_listener(deps))
    if recent_operations is not None:
        app.event("app_home_opened")(
            make_home_listener(
                recent=recent_operations,
                read_policy=read_policy,
                approvals=approvals,
                visibility=visibility,
                freezes=freezes,
                progress=lambda op: approval_count_text(settings, op),
            )
        )
    register_error_handler(app)
