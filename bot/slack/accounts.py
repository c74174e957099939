"""Which Alibaba Cloud account a command acts on: ``account=NAME``, else the channel's default.

With ``VPNBOT_ACCOUNTS`` unset there is one account and the name is ``""``. With it set:

- a channel bound in ``VPNBOT_CHANNEL_ACCOUNTS`` may act only on its accounts; bound to one, that
  one is its default;
- an unbound channel may act on every account; with only one configured, that is the default;
- several to choose from and none chosen: the reply lists the accounts this person may use here.

Checked on the server for every command and every click that starts something (the picker's
submit, a listing's Delete…), like the rest of the policy.
"""

from __future__ import annotations

from bot.config import Settings
from bot.errors import NotAllowed, UsageError
from bot.slack.blocks import ONE_ACCOUNT_TEXT, account_choice_text

__all__ = ["allowed_accounts", "choose_account"]


def allowed_accounts(settings: Settings, channel_id: str) -> tuple[tuple[str, ...], bool]:
    """The accounts ``channel_id`` may act on, and whether the channel is bound to them."""
    bound = settings.channel_accounts.get(channel_id)
    if bound:
        return tuple(bound), True
    return tuple(settings.accounts), False


def choose_account(settings: Settings, *, channel_id: str, asked: str | None) -> str:
    """The account to act on; UsageError when none can be chosen, NotAllowed outside the channel's."""
    if not settings.multi_account:
        if asked is not None:
            raise UsageError(ONE_ACCOUNT_TEXT)
        return ""
    allowed, bound = allowed_accounts(settings, channel_id)
    if asked is None:
        if len(allowed) == 1:
            return allowed[0]
        raise UsageError(account_choice_text(allowed, asked=None, bound=bound))
    if asked in allowed:
        return asked
    if bound and asked in settings.accounts:
        raise NotAllowed(account_choice_text(allowed, asked=asked, bound=True))
    raise UsageError(account_choice_text(allowed, asked=asked, bound=False))
