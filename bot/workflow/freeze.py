"""Change freezes: ``/vpn freeze`` and ``/vpn unfreeze`` (an admin's), and what a freeze stops.

A freeze is a row in the store (:class:`bot.domain.Freeze`), so every replica sees it at once and it
survives restarts. While one covers an operation's account:

- an approval is refused (:class:`bot.errors.Frozen`, audited like any refused click, see
  :meth:`bot.workflow.delete.DeleteRequests._open_for_approval`); new requests are still recorded and
  their card posted, to be approved once the freeze ends;
- an approved operation that has sent nothing yet is held at its approved step
  (:meth:`bot.workflow.delete.DeleteSteps.hold_if_frozen`): one thread reply says so, the freeze is
  looked at again on each poll, and the time held is given back to its deadline when it goes on.

Who may freeze is the Slack layer's policy (VPNBOT_ADMINS); the workflow records and applies it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bot.domain import FREEZE_MAX, AuditEntry, Freeze
from bot.ports import OperationStore
from bot.workflow.runner import Runner

__all__ = ["FREEZE_ACTIONS", "FreezeRequests", "active_freeze"]

# The audit actions of freezes (no operation's): /vpn history lists them in every channel.
FREEZE_ACTIONS = ("frozen", "unfrozen")


async def active_freeze(store: OperationStore, account: str, now: datetime) -> Freeze | None:
    """The freeze covering ``account`` ("" for the single-account bot) at ``now``, the one ending last; or None."""
    for freeze in await store.active_freezes(now=now):
        if freeze.applies_to(account):
            return freeze
    return None


def _detail(freeze: Freeze) -> str:
    scope = f"account {freeze.account}" if freeze.account is not None else "all accounts"
    return f"{scope} until {freeze.until.isoformat(timespec='minutes')}; reason: {freeze.reason}"


class FreezeRequests(Runner):
    """The Slack layer's calls for freezes: set one, lift them, and whether one is in force."""

    async def freeze(
        self, *, user_id: str, duration: timedelta, account: str | None, reason: str
    ) -> tuple[Freeze, list[Freeze]]:
        """Freeze ``account`` (None: every account) for ``duration`` from now, audited as ``frozen``.

        A freeze of the same scope still in force is replaced (lifted at this one's start). Return the
        new freeze and those it replaced. The caller checked that ``user_id`` is an admin.
        """
        if not timedelta(0) < duration <= FREEZE_MAX:
            raise ValueError(f"a freeze lasts more than 0 and at most {FREEZE_MAX}")
        now = self._clock.now()
        freeze = Freeze(
            id=uuid.uuid4().hex,
            account=account,
            reason=reason,
            created_by=user_id,
            starts_at=now,
            until=now + duration,
        )
        entry = AuditEntry(at=now, action="frozen", actor_id=user_id, detail=_detail(freeze), account=account)
        replaced = await self._store.add_freeze(
            freeze, audit_entry=entry, effects=self._steps.announce(entry, note=entry.detail)
        )
        return freeze, replaced

    async def unfreeze(self, *, user_id: str, account: str | None, everything: bool) -> list[Freeze]:
        """Lift the freezes in force: all of them (``everything``) or ``account``'s; each audited as ``unfrozen``.

        Held operations notice on their next poll. Return the freezes lifted (none: nothing was frozen).
        """
        now = self._clock.now()

        def entry(freeze: Freeze) -> AuditEntry:
            return AuditEntry(
                at=now, action="unfrozen", actor_id=user_id, detail=_detail(freeze), account=freeze.account
            )

        return await self._store.lift_freezes(
            account=account,
            everything=everything,
            by=user_id,
            now=now,
            audit_entry=entry,
            effects=lambda lifted: self._steps.announce(lifted, note=lifted.detail),
        )

    async def frozen(self, account: str, now: datetime | None = None) -> Freeze | None:
        """The freeze covering ``account`` at ``now`` (default: the workflow's clock), or None."""
        return await active_freeze(self._store, account, now if now is not None else self._clock.now())

    async def active_freezes(self) -> list[Freeze]:
        """Every freeze in force now, the one ending last first (the Home tab)."""
        return await self._store.active_freezes(now=self._clock.now())
