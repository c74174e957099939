"""Which approver counts for which user group of a group quorum (pure; no Slack, no store).

A group rule (``prod=S0NETOPS+S0SECURITY``) needs one approver from each group, each a different
person. Someone in two of the groups may count for either, so the approvals are a bipartite
matching of approvers to groups, not a first-come assignment: Dave (netops and security) approving
first must not shut out Bob (netops only) when Bob and Dave together cover both groups. The sizes
are tiny (at most ten groups), so a plain augmenting-path search (Kuhn's algorithm) does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["assign", "is_met", "open_groups"]


def _augment(who: int, memberships: Sequence[Collection[str]], owner: dict[str, int], seen: set[str]) -> bool:
    """Give approver ``who`` a group, moving earlier approvers to other groups of theirs if need be."""
    # A free group first: nobody is moved (and the card does not reshuffle) when nobody has to be.
    for group in memberships[who]:
        if group not in seen and group not in owner:
            seen.add(group)
            owner[group] = who
            return True
    for group in memberships[who]:
        if group in seen:
            continue
        seen.add(group)
        holder = owner.get(group)
        if holder is None or _augment(holder, memberships, owner, seen):
            owner[group] = who
            return True
    return False


def _matching(memberships: Sequence[Collection[str]]) -> dict[str, int]:
    """A maximum matching, group -> approver index; approvers tried in order, groups in their order."""
    owner: dict[str, int] = {}
    for who in range(len(memberships)):
        _augment(who, memberships, owner, set())
    return owner


def assign(memberships: Sequence[Collection[str]]) -> tuple[str, ...] | None:
    """A different group for each approver (``memberships[i]``: the rule's groups approver i is in).

    None when there is none: some approver would not count for any group the others leave free.
    Deterministic (approvers in order, each one's groups in order), so the card does not reshuffle.
    """
    owner = _matching(memberships)
    if len(owner) < len(memberships):
        return None
    by_approver = {who: group for group, who in owner.items()}
    return tuple(by_approver[who] for who in range(len(memberships)))


def is_met(memberships: Sequence[Collection[str]], groups: Collection[str]) -> bool:
    """Every group of ``groups`` has its own approver (a matching that covers all of them)."""
    wanted = set(groups)
    owner = _matching([[g for g in m if g in wanted] for m in memberships])
    return len(owner) == len(wanted)


def open_groups(memberships: Sequence[Collection[str]], groups: Sequence[str]) -> tuple[str, ...]:
    """The groups of ``groups`` an approver in that one group would still count for, in order.

    Those no approver covers, and those whose approver could move to another group of theirs.
    """
    return tuple(g for g in groups if assign([*memberships, (g,)]) is not None)
