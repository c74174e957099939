"""The deletion workflow: request, approval, one DeleteVpnConnection per gateway, then watching it finish.

``api`` holds :class:`Workflow` (the API the Slack layer calls); ``runner`` the leases, resume
and expiry passes that drive operations; ``delete`` and ``recreate`` each feature's requests and
steps, ``steps`` what their steps share, ``binding`` the approval bound to the preview (its
fingerprint and what changed), ``config`` the timings and ``polling`` the poll delays.
"""

from bot.workflow.api import Workflow
from bot.workflow.config import WorkflowConfig
from bot.workflow.steps import CONNECTION_NOT_FOUND, SYSTEM_ACTOR

__all__ = ["CONNECTION_NOT_FOUND", "SYSTEM_ACTOR", "Workflow", "WorkflowConfig"]
