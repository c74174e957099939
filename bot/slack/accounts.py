"""Which Alibaba Cloud account a command acts on: ``account=NAME``, else the channel's default.

With ``VPNBOT_ACCOUNTS`` unset there is one account and the name is ``""``. With it set:

- a channel bound in ``VPNBOT_CHANNEL_ACCOUNTS`` may act only on its accounts; bound to one, that
  one is its default;
- a binding is exclusive by default (``VPNBOT_ACCOUNT_BINDING=exclusive``): an account bound to some
  channel may be used only from its bound channels, so a DM or an unbound channel may act only on
  the accounts no channel is bound to (with ``default-only``, on every account);
- several to choose from and none chosen: the reply lists the accounts this person may use here.

Checked on the server for every command and every click that starts something (the picker's
submit, a listing's Delete…), like the rest of the policy; :mod:`bot.slack.visibility` applies
the same rule to what people may see.
"""

from __future__ import annotations

from bot.config import Settings
from bot.errors import NotAllowed, UsageError
from bot.slack.blocks import ONE_ACCOUNT_TEXT, account_choice_text, code

__all__ = ["account_usable", "allowed_accounts", "bound_channels", "check_freeze_account", "choose_account"]

_CHANNELS_SHOWN = 10


def allowed_accounts(settings: Settings, channel_id: str) -> tuple[tuple[str, ...], bool]:
    """The accounts ``channel_id`` may act on, and whether the channel is bound to them."""
    bound = settings.channel_accounts.get(channel_id)
    if bound:
        return tuple(bound), True
    return settings.unbound_accounts, False


def account_usable(settings: Settings, channel_id: str, account: str) -> bool:
    """Whether ``channel_id`` may act on (and see operations in) ``account``."""
    if not settings.multi_account:
        return True
    return account in allowed_accounts(settings, channel_id)[0]


def bound_channels(settings: Settings, account: str) -> tuple[str, ...]:
    """The channels bound to ``account``, in the order VPNBOT_CHANNEL_ACCOUNTS names them."""
    return tuple(channel for channel, names in settings.channel_accounts.items() if account in names)


def _reserved_text(settings: Settings, account: str, allowed: tuple[str, ...]) -> str:
    channels = bound_channels(settings, account)
    where = ", ".join(f"<#{c}>" for c in channels[:_CHANNELS_SHOWN])
    here = (
        f" Here you may use {', '.join(code(n, 40) for n in allowed)}."
        if allowed
        else " No account may be used here."
    )
    return (
        f"The account {code(account, 40)} is reserved for {where}: run the command there "
        f"(VPNBOT_CHANNEL_ACCOUNTS binds it).{here}"
    )


def check_freeze_account(settings: Settings, account: str | None) -> None:
    """A freeze's account (None: all) must be one of the bot's: any of them, a freeze is no channel's."""
    if account is None:
        return
    quotes = ' (A reason of several words goes in quotes: `reason="…"`.)'
    if not settings.multi_account:
        raise UsageError(f"{ONE_ACCOUNT_TEXT} A freeze without one covers everything.{quotes}")
    if account not in settings.accounts:
        names = ", ".join(code(a, 40) for a in settings.accounts)
        raise UsageError(f"This bot has no account {code(account, 40)}; its accounts are {names}.{quotes}")


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
        if not allowed:
            raise NotAllowed(
                "Every Alibaba Cloud account of this bot is reserved for its own channels; "
                "run the command in one of "
                + ", ".join(f"<#{c}>" for c in list(settings.channel_accounts)[:_CHANNELS_SHOWN])
                + "."
            )
        raise UsageError(account_choice_text(allowed, asked=None, bound=bound))
    if asked in allowed:
        return asked
    if bound and asked in settings.accounts:
        raise NotAllowed(account_choice_text(allowed, asked=asked, bound=True))
    if asked in settings.accounts:
        raise NotAllowed(_reserved_text(settings, asked, allowed))
    raise UsageError(account_choice_text(allowed, asked=asked, bound=False))
