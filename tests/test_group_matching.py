"""A group quorum's approvers matched to its groups: augmenting paths, checked against brute force."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.group_matching import assign, is_met, open_groups

NET, SEC, DB = "S0NET", "S0SEC", "S0DB"
GROUPS = (NET, SEC, DB, "S0APP", "S0OPS")


def test_dave_in_both_groups_moves_over_for_bob() -> None:
    # Dave first counts for netops; Bob (netops only) takes it and Dave counts for security.
    assert assign([(NET, SEC)]) == (NET,)
    assert assign([(NET, SEC), (NET,)]) == (SEC, NET)
    assert is_met([(NET, SEC), (NET,)], (NET, SEC))
    # Nobody moves when a free group is there: Erin (both too) takes security, Dave keeps netops.
    assert assign([(NET, SEC), (NET, SEC)]) == (NET, SEC)


def test_an_approver_with_no_free_group_is_refused() -> None:
    assert assign([(NET,), (NET,)]) is None
    assert assign([(NET, SEC), (NET,), (SEC,)]) is None
    assert assign([(NET,), ()]) is None
    assert assign([]) == ()


def test_met_only_when_every_group_has_its_own_approver() -> None:
    assert not is_met([(NET, SEC)], (NET, SEC))
    assert not is_met([], (NET,))
    assert is_met([(SEC,), (NET, SEC)], (NET, SEC))
    # Groups outside the rule never count.
    assert not is_met([(DB,), (NET,)], (NET, SEC))


def test_open_groups_include_a_group_whose_approver_can_move() -> None:
    assert open_groups([], (NET, SEC)) == (NET, SEC)
    assert open_groups([(NET, SEC)], (NET, SEC)) == (NET, SEC)
    assert open_groups([(NET,)], (NET, SEC)) == (SEC,)
    assert open_groups([(NET,), (SEC,)], (NET, SEC)) == ()


def _brute_force(memberships: Sequence[Sequence[str]]) -> bool:
    """Some choice of distinct groups, one per approver, each a group the approver is in."""
    if len(memberships) > len(GROUPS):
        return False
    return any(
        all(g in m for g, m in zip(choice, memberships, strict=True))
        for choice in permutations(GROUPS, len(memberships))
    )


def _brute_force_met(memberships: Sequence[Sequence[str]], groups: Sequence[str]) -> bool:
    """Some ordered choice of len(groups) approvers, the i-th in groups[i]."""
    return any(
        all(g in memberships[i] for g, i in zip(groups, chosen, strict=True))
        for chosen in permutations(range(len(memberships)), len(groups))
    )


_memberships = st.lists(st.lists(st.sampled_from(GROUPS), unique=True, max_size=4), max_size=6)


@settings(max_examples=300, deadline=None)
@given(_memberships)
def test_assign_agrees_with_brute_force(memberships: list[list[str]]) -> None:
    found = assign(memberships)
    assert (found is not None) == _brute_force(memberships)
    if found is not None:
        assert len(set(found)) == len(found)
        assert all(g in m for g, m in zip(found, memberships, strict=True))


@settings(max_examples=300, deadline=None)
@given(_memberships, st.lists(st.sampled_from(GROUPS), unique=True, min_size=1, max_size=4))
def test_met_agrees_with_brute_force(memberships: list[list[str]], groups: list[str]) -> None:
    assert is_met(memberships, groups) == _brute_force_met(memberships, groups)


@settings(max_examples=200, deadline=None)
@given(_memberships, st.lists(st.sampled_from(GROUPS), unique=True, min_size=1, max_size=4))
def test_accepting_one_at_a_time_never_blocks_a_quorum_that_exists(
    memberships: list[list[str]], groups: list[str]
) -> None:
    """Approvals accepted as they come (any assignment) meet the rule whenever their set could."""
    accepted: list[list[str]] = []
    for m in memberships:
        inside = [g for g in m if g in groups]
        if is_met(accepted, groups):
            break
        if assign([*accepted, inside]) is not None:
            accepted.append(inside)
    if _brute_force_met([[g for g in m if g in groups] for m in memberships], groups):
        assert is_met(accepted, groups)
