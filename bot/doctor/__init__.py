"""``vpn-bot doctor``: check a real setup before the first real deletion, changing nothing.

Four groups of checks, each row ``PASS``/``WARN``/``FAIL``/``SKIP`` with the fix for what is wrong,
one module per area:

- :mod:`.settings`: the Slack tokens for the chosen mode, the default region, who may approve.
- :mod:`.slack`: ``auth.test``, the granted bot scopes (``x-oauth-scopes``) against the manifest's,
  and every user group named in ``VPNBOT_APPROVERS``/``VPNBOT_REQUESTERS``.
- :mod:`.alibaba` and :mod:`.permissions`: whether an AccessKey is found, whether the API accepts
  it (``DescribeRegions``), and every VPC action the bot uses, probed with ids that cannot exist
  — **DeleteVpnConnection is probed without deleting anything**.
- :mod:`.database`: reachable and at which schema version, read only: a database that does not
  exist yet is reported, not created, and nothing is migrated.

:mod:`.run` builds the bot's own clients once and runs the areas concurrently; :mod:`.report`
prints the table with secrets masked. One failing check never stops the others; no traceback or
library chatter is printed (details go to the DEBUG log, :mod:`.quiet`). The exit status is 1
when any row is ``FAIL``, else 0.
"""

from __future__ import annotations

from bot.doctor.database import mask_database_url
from bot.doctor.model import Check, Status
from bot.doctor.permissions import PROBE_GATEWAY_ID, PROBE_VCO_ID, RAM_ACTIONS, DoctorVpc, ram_policy
from bot.doctor.report import render
from bot.doctor.run import DoctorClients, diagnose, open_clients, run_doctor
from bot.doctor.slack import NEEDED_SCOPES

__all__ = [
    "NEEDED_SCOPES",
    "PROBE_GATEWAY_ID",
    "PROBE_VCO_ID",
    "RAM_ACTIONS",
    "Check",
    "DoctorClients",
    "DoctorVpc",
    "Status",
    "diagnose",
    "mask_database_url",
    "open_clients",
    "ram_policy",
    "render",
    "run_doctor",
]
