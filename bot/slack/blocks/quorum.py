"""What a quorum rule (VPNBOT_APPROVAL_RULES) says on a card: the rule, the progress, a refused click."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain import Approval, ApprovalRule, Operation
from bot.errors import ApprovalRefused
from bot.group_matching import open_groups
from bot.ids import is_user_group_id
from bot.slack.blocks.text import code, mention

__all__ = ["approval_refused_text", "quorum_count_text", "quorum_progress_text", "quorum_rule_text"]

_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NAMED_MAX = 5


def _number(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _ref(slack_id: str) -> str:
    # Ids from the settings, checked at start: a group or a user, never outside text.
    return f"<!subteam^{slack_id}>" if is_user_group_id(slack_id) else mention(slack_id)


def _people(approvers: Sequence[str]) -> str:
    """``<!subteam^S1>`` / ``one of <@U1>, <@U2>`` for the approver list ("" for anyone)."""
    if not approvers:
        return ""
    refs = [_ref(a) for a in approvers[:_NAMED_MAX]]
    more = f" (and {len(approvers) - _NAMED_MAX} more)" if len(approvers) > _NAMED_MAX else ""
    if len(refs) == 1:
        return refs[0]
    return f"{', '.join(refs)}{more}"


def _and(refs: Sequence[str]) -> str:
    return refs[0] if len(refs) == 1 else f"{', '.join(refs[:-1])} and {refs[-1]}"


def _scope(rule: ApprovalRule) -> str:
    return "every operation" if rule.scope == "*" else code(rule.scope, 100)


def quorum_rule_text(rule: ApprovalRule, approvers: Sequence[str] | None) -> str:
    """``*Approval:* 2 approvals from <!subteam^S1>; the requester cannot approve (rule for `prod`).``

    ``approvers``: VPNBOT_APPROVERS ([] for anyone); None leaves a count rule's people unnamed.
    """
    if rule.groups:
        who = f"one approval from each of {_and([_ref(g) for g in rule.groups])}"
        if len(rule.groups) == 1:
            who = f"one approval from {_ref(rule.groups[0])}"
    else:
        plural = "approval" if rule.count == 1 else "approvals"
        people = _people(approvers) if approvers is not None else ""
        anyone = " from anyone who can see this message" if approvers is not None else ""
        who = f"{rule.count} {plural}" + (f" from {people}" if people else anyone)
        if rule.count > 1:
            who += ", each by a different person"
    return (
        f"*Approval:* {who}; the requester cannot approve (VPNBOT_APPROVAL_RULES, rule for {_scope(rule)})."
    )


def quorum_progress_text(op: Operation, rule: ApprovalRule, approvers: Sequence[str]) -> str:
    """``*1 of 2 approvals:* <@U1> ✓ — waiting for one more from <!subteam^S1>``.

    A group rule says which groups are covered (each approver's group in a matching of approvers to
    groups, :mod:`bot.group_matching`) and which an approver may still come from.
    """
    done = op.approvals
    given = ", ".join(
        f"{mention(a.user_id)} ✓" + (f" ({_ref(a.group)})" if a.group else "") for a in done[: rule.count]
    )
    head = f"*{len(done)} of {rule.count} approvals*" + (f": {given}" if given else "")
    if rule.groups:
        return head + _groups_left(done, rule.groups)
    left = rule.count - len(done)
    if left <= 0:
        return head
    more = " more" if done else ""
    # Those who approved already (and the requester) cannot be the one awaited.
    gone = {a.user_id for a in done} | {op.requester_id}
    people = _people([a for a in approvers if a not in gone])
    source = f" from {people}" if people else ""
    noun = "" if left == 1 and done else (" approval" if left == 1 else " approvals")
    return f"{head} — waiting for {_number(left)}{more}{noun}{source}"


def quorum_count_text(op: Operation, rule: ApprovalRule) -> str:
    """``1 of 2 approvals`` (a group rule: ``, <!subteam^S1> covered``), for the Home tab."""
    done = op.approvals
    text = f"{len(done)} of {rule.count} approvals"
    covered = [g for g in rule.groups if g in {a.group for a in done}]
    return text + (f", {_and([_ref(g) for g in covered])} covered" if covered else "")


def _groups_left(done: Sequence[Approval], groups: tuple[str, ...]) -> str:
    """`` — covered: A; waiting for one from B, or from A (<@U1> then counts for another group)``."""
    covered = [g for g in groups if g in {a.group for a in done}]
    missing = [g for g in groups if g not in covered]
    if not missing:
        return ""
    # Someone in two groups can move over: a covered group may still take an approver (a matching).
    memberships = [a.groups or ((a.group,) if a.group else ()) for a in done]
    movable = [g for g in open_groups(memberships, groups) if g in covered]
    text = (
        f" — covered: {_and([_ref(g) for g in covered])};" if covered else " —"
    ) + f" waiting for one from {'each of ' if len(missing) > 1 else ''}{_and([_ref(g) for g in missing])}"
    if movable:
        movers = [a.user_id for a in done if a.group in movable]
        text += (
            f", or from {_or([_ref(g) for g in movable])} "
            f"({_and([mention(u) for u in movers])} then {'count' if len(movers) > 1 else 'counts'} "
            "for another group)"
        )
    return text


def _or(refs: Sequence[str]) -> str:
    return refs[0] if len(refs) == 1 else f"{', '.join(refs[:-1])} or {refs[-1]}"


def approval_refused_text(err: ApprovalRefused) -> str:
    """Why an approval click (or a withdrawal) changed nothing, with the rule that applies."""
    match err.reason:
        case "repeated":
            why = "You have already approved this request; each approval must come from a different person."
        case "covered":
            why = (
                "Your approval would not count: each user group of the rule that you are in already has "
                "an approver, and none of them can count for another group instead. Someone from a group "
                "still missing must approve."
            )
        case "not_approved":
            why = "You have not approved this request, so there is no approval of yours to withdraw."
        case "met":
            who = mention(err.op.approver_id) if err.op is not None else "someone"
            why = (
                f"The approvals were complete (the last by {who}), so the request is approved and can no "
                "longer be withdrawn."
            )
        case _:
            why = "No approval rule applies to this request: there is nothing to withdraw."
    return f"{why}\n{quorum_rule_text(err.rule, None)}" if err.rule is not None else why
