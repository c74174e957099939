"""The store's freezes on both backends: scope, replacement, lifting with audit, and the approval's CAS."""

from __future__ import annotations

from datetime import timedelta

from test_store import T0, make_op

from bot.domain import AuditEntry, Freeze, OpState
from bot.store import Store
from bot.workflow.freeze import active_freeze

HOUR = timedelta(hours=1)


def _freeze(freeze_id: str, account: str | None, *, hours: int = 1, by: str = "U0ADMIN") -> Freeze:
    return Freeze(freeze_id, account, f"reason {freeze_id}", by, T0, T0 + hours * HOUR)


def _entry(action: str, freeze: Freeze) -> AuditEntry:
    return AuditEntry(
        at=T0, action=action, actor_id=freeze.created_by, detail=freeze.id, account=freeze.account
    )


async def test_freezes_by_scope_and_time(store: Store) -> None:
    prod = _freeze("prod", "prod", hours=3)
    everything = _freeze("all", None)
    assert await store.add_freeze(prod, audit_entry=_entry("frozen", prod)) == []
    assert await store.add_freeze(everything, audit_entry=_entry("frozen", everything)) == []
    assert [f.id for f in await store.active_freezes(now=T0)] == ["prod", "all"]  # the one ending last first
    assert await store.active_freezes(now=T0 - timedelta(seconds=1)) == []
    assert (await active_freeze(store, "prod", T0)) == prod
    assert (await active_freeze(store, "staging", T0)) == everything
    assert (await active_freeze(store, "", T0)) == everything
    # Past the every-account freeze's end only prod's is in force.
    assert (await active_freeze(store, "staging", T0 + 2 * HOUR)) is None
    assert (await active_freeze(store, "prod", T0 + 2 * HOUR)) == prod
    assert await store.active_freezes(now=T0 + 3 * HOUR) == []
    assert [e.action for e in await store.recent_audit(limit=10)] == ["frozen", "frozen"]


async def test_a_new_freeze_of_the_same_scope_replaces_the_one_in_force(store: Store) -> None:
    old = _freeze("old", "prod", hours=5)
    await store.add_freeze(old, audit_entry=_entry("frozen", old))
    other = _freeze("other", "staging")
    await store.add_freeze(other, audit_entry=_entry("frozen", other))
    new = _freeze("new", "prod", by="U0OTHER")
    [replaced] = await store.add_freeze(new, audit_entry=_entry("frozen", new))
    assert (replaced.id, replaced.lifted_by, replaced.lifted_at) == ("old", "U0OTHER", T0)
    assert sorted(f.id for f in await store.active_freezes(now=T0)) == ["new", "other"]


async def test_lifting_one_account_or_everything_audits_each(store: Store) -> None:
    for freeze in (_freeze("prod", "prod"), _freeze("staging", "staging"), _freeze("all", None)):
        await store.add_freeze(freeze, audit_entry=_entry("frozen", freeze))
    now = T0 + timedelta(minutes=5)

    def entry(freeze: Freeze) -> AuditEntry:
        return AuditEntry(at=now, action="unfrozen", actor_id="U0ADMIN", detail=freeze.id)

    lifted = await store.lift_freezes(
        account="prod", everything=False, by="U0ADMIN", now=now, audit_entry=entry
    )
    assert [(f.id, f.lifted_by, f.lifted_at) for f in lifted] == [("prod", "U0ADMIN", now)]
    assert (await active_freeze(store, "prod", now)) is not None  # the every-account one still covers it
    rest = await store.lift_freezes(account=None, everything=True, by="U0ADMIN", now=now, audit_entry=entry)
    assert sorted(f.id for f in rest) == ["all", "staging"]
    assert await store.active_freezes(now=now) == []
    nothing = await store.lift_freezes(
        account=None, everything=True, by="U0ADMIN", now=now, audit_entry=entry
    )
    assert nothing == []
    unfrozen = [e.detail for e in await store.recent_audit(limit=20) if e.action == "unfrozen"]
    assert sorted(unfrozen) == ["all", "prod", "staging"]


async def test_an_approval_loses_its_compare_and_set_while_frozen(store: Store) -> None:
    await store.create_operation(op=make_op("op-prod", account="prod"))
    await store.create_operation(op=make_op("op-staging", vco_id="vco-2", account="staging"))
    prod = _freeze("prod", "prod")
    await store.add_freeze(prod, audit_entry=_entry("frozen", prod))

    async def approve(op_id: str, minutes: int) -> bool:
        moved = await store.transition_and_claim(
            op_id,
            claim=("me", T0 + HOUR),
            from_states={OpState.AWAITING_APPROVAL},
            to=OpState.APPROVED,
            now=T0 + timedelta(minutes=minutes),
            approver_id="U0APP",
            unfrozen=True,
        )
        return moved is not None

    assert not await approve("op-prod", 1)
    assert await approve("op-staging", 1)  # another account's freeze does not stop it
    loaded = await store.get_operation(op_id="op-prod")
    assert loaded is not None
    assert loaded.state is OpState.AWAITING_APPROVAL
    assert await approve("op-prod", 61)  # the freeze has ended


async def test_channel_history_lists_freezes_of_its_accounts(store: Store) -> None:
    await store.create_operation(op=make_op("op-prod", account="prod"))
    for freeze in (_freeze("prod", "prod"), _freeze("staging", "staging"), _freeze("all", None)):
        await store.add_freeze(freeze, audit_entry=_entry("frozen", freeze))
    await store.add_audit(AuditEntry(at=T0, action="refused", actor_id="U0X", detail="request: no"))
    plain = await store.recent_audit(channel_id="C0OPS", accounts=["prod"])
    assert plain == []
    listed = await store.recent_audit(channel_id="C0OPS", accounts=["prod"], unbound=("frozen", "unfrozen"))
    assert sorted(e.detail for e in listed) == ["all", "prod"]
