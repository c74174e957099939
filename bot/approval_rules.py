"""VPNBOT_APPROVAL_RULES: how many people must approve, by scope (pure; no Slack, no store).

``SCOPE=RULE`` pairs, comma-separated. SCOPE is ``*``, an account name (VPNBOT_ACCOUNTS), a region,
or ``account/region``; the most specific one that matches an operation wins (account/region, then
account, then region, then ``*``). RULE is a number of distinct approvers (``2``) or one approver
from each of several Slack user groups (``S0NETOPS+S0SECURITY``). An operation no scope matches
keeps the one-approver rule of VPNBOT_APPROVERS (and four-eyes where set).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from bot import ids
from bot.domain import ApprovalRule, Operation

__all__ = ["ANY_SCOPE", "MAX_APPROVALS", "parse_approval_rules", "rule_for", "scope_key"]

ANY_SCOPE = "*"
# More than this many approvals for one deletion is a typo, not a policy.
MAX_APPROVALS = 10


def _rule(scope: str, text: str) -> ApprovalRule:
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= MAX_APPROVALS:
            raise ValueError(
                f"{scope}={text}: the number of approvals must be from 1 to {MAX_APPROVALS} (0 would let "
                "nobody approve)"
            )
        return ApprovalRule(count=count, scope=scope)
    groups = tuple(g.strip() for g in text.split("+"))
    bad = [g for g in groups if not ids.is_user_group_id(g)]
    if bad:
        shown = ", ".join(repr(g) for g in bad)
        raise ValueError(
            f"{scope}={text}: {shown} is not a number of approvals or a Slack user-group id (S…); "
            "write e.g. prod=2 or prod=S0NETOPS+S0SECURITY"
        )
    if len(set(groups)) != len(groups):
        raise ValueError(f"{scope}={text}: a user group is named twice")
    if len(groups) > MAX_APPROVALS:
        raise ValueError(f"{scope}={text}: at most {MAX_APPROVALS} groups")
    return ApprovalRule.of_groups(groups, scope=scope)


def _check_scope(scope: str, accounts: Collection[str]) -> None:
    if scope == ANY_SCOPE:
        return
    account, slash, region = scope.partition("/")
    if slash:
        if account not in accounts:
            raise ValueError(f"{scope}: {account!r} is not an account VPNBOT_ACCOUNTS defines")
        if not ids.is_region(region):
            raise ValueError(f"{scope}: {region!r} is not a region id like cn-hangzhou")
        return
    # A name VPNBOT_ACCOUNTS defines is an account (even one spelt like a region), else a region.
    if scope in accounts or ids.is_region(scope):
        return
    if ids.is_account_name(scope):
        known = ", ".join(accounts) if accounts else "none: VPNBOT_ACCOUNTS is not set"
        raise ValueError(f"{scope}: not an account VPNBOT_ACCOUNTS defines (known: {known}) nor a region id")
    raise ValueError(f"{scope}: not *, an account name, a region id or account/region")


def parse_approval_rules(text: str, *, accounts: Collection[str] = ()) -> dict[str, ApprovalRule]:
    """``*=2,prod=S0NETOPS+S0SECURITY`` as ``{scope: rule}``; ValueError names the first bad pair."""
    rules: dict[str, ApprovalRule] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        scope, sep, rule = (p.strip() for p in part.partition("="))
        if not sep or not scope or not rule:
            raise ValueError(f"{part!r} is not SCOPE=RULE, e.g. *=2, prod=2 or prod=S0NETOPS+S0SECURITY")
        _check_scope(scope, accounts)
        if scope in rules:
            raise ValueError(f"the scope {scope} is given twice")
        rules[scope] = _rule(scope, rule)
    return rules


def scope_key(account: str, region: str) -> tuple[str, ...]:
    """The scopes that may match an operation in ``account`` ("": none) and ``region``, most specific first."""
    if account:
        return (f"{account}/{region}", account, region, ANY_SCOPE)
    return (region, ANY_SCOPE)


def rule_for(rules: Mapping[str, ApprovalRule], op: Operation) -> ApprovalRule | None:
    """The rule for ``op`` (the most specific scope that matches), or None: no rule, one approver."""
    for scope in scope_key(op.account, op.region):
        rule = rules.get(scope)
        if rule is not None:
            return rule
    return None
