"""The deletion workflow: request, approval, one DeleteVpnConnection per gateway, then watching it finish.

``core`` holds :class:`Workflow` (the API the Slack layer calls, leases and background passes),
``steps`` the steps that drive one operation, ``config`` its timings.
"""

from bot.workflow.config import WorkflowConfig
from bot.workflow.core import Workflow
from bot.workflow.steps import CONNECTION_NOT_FOUND, SYSTEM_ACTOR

__all__ = ["CONNECTION_NOT_FOUND", "SYSTEM_ACTOR", "Workflow", "WorkflowConfig"]
