"""The Slack scopes the bot asks for, and why: one row per Web API method the code calls.

``manifest.yml`` asks for exactly :data:`BOT_SCOPES`; ``tests/test_manifest.py`` checks that every
method called on the Web API client is in :data:`METHOD_SCOPES` and that no scope is asked for
which no method (or the slash command) needs. The doctor compares the granted scopes with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["BOT_SCOPES", "COMMAND_SCOPE", "METHOD_SCOPES"]

# Receiving /vpn needs the commands scope; it is the only scope not tied to a Web API method.
COMMAND_SCOPE: Final = "commands"

METHOD_SCOPES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "auth.test": (),
        # The app-level token (xapp-…) carries connections:write; no bot scope is involved.
        "apps.connections.open": (),
        # chat:write.public lets the bot post in public channels it has not been invited to.
        "chat.postMessage": ("chat:write", "chat:write.public"),
        "chat.update": ("chat:write",),
        # The picker tells the requester privately when a request fails after the modal closed.
        "chat.postEphemeral": ("chat:write",),
        # The /vpn delete picker modal and the Home tab: a trigger id or the Home tab is the permission.
        "views.open": (),
        "views.publish": (),
        # /vpn status links an operation's thread; Slack requires no scope for it.
        "chat.getPermalink": (),
        # Approver and requester lists may name user groups (S…).
        "usergroups.users.list": ("usergroups:read",),
        # The visibility rule: which channels a person is in, and whether an operation's channel is
        # private (public channels need channels:read, private ones groups:read).
        "users.conversations": ("channels:read", "groups:read"),
        "conversations.info": ("channels:read", "groups:read"),
        # Posts happen once: after a post whose answer was lost, the outbox reads the thread or the
        # channel for the message's metadata before posting again (public and private channels).
        "conversations.replies": ("channels:history", "groups:history"),
        # ... and the requester's DM (im:history) for the outcome's direct message.
        "conversations.history": ("channels:history", "groups:history", "im:history"),
        # The requester is told the outcome in a direct message: the DM is opened first.
        "conversations.open": ("im:write",),
        # A configuration snapshot too long for one message goes as a file in the thread
        # (slack_sdk's files_upload_v2 calls these two, with an upload to the URL between them).
        "files.getUploadURLExternal": ("files:write",),
        "files.completeUploadExternal": ("files:write",),
    }
)

BOT_SCOPES: Final[tuple[str, ...]] = (
    COMMAND_SCOPE,
    *dict.fromkeys(scope for scopes in METHOD_SCOPES.values() for scope in scopes),
)
