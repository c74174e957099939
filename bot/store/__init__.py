"""The durable store: operations, leases, gateway locks, audit and the Slack outbox.

``core`` holds :class:`Store` (one transaction per method), ``outbox`` the outbox half of it,
``tables`` the schema and its migrations.
"""

from bot.store.core import Store
from bot.store.engine import async_url
from bot.store.tables import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store", "async_url"]
