"""/budget, one rule for both bots: what the arguments mean, and what the command answers.

    /budget                                   the limits in force here, and the asker's
    /budget chat NAME VALUE                   this chat's (or topic's, or thread's) budget NAME
    /budget user ID NAME VALUE                user ID's (Telegram: or as a reply to their
                                              message, Discord: the user option, without ID)
    /budget user ID                           that user's limits
    ... off                                   back to the operator's setting

NAME is one of `core.budgets.LIMITS` (daily_tokens, monthly_tokens, daily_cost, monthly_cost);
VALUE a whole number of tokens, or dollars for a cost (`2.5`, `$2.50`), above 0 and at most
`MAX_LIMIT`. Changing a budget is for the operator's ADMIN_IDS only, not a group's admins: a
budget guards the operator's key, and anyone can make a group and be its admin (or change
their own private chat), so that would let anyone lift their own limit. Anyone may look.

A surface parses with `parse` (the target user it resolved itself: the replied-to message's
author, Discord's user option), checks who may change a budget, and answers with `apply`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from core.budgets import LIMITS, BudgetPolicy, Limit, OverridableScope
from core.config import MAX_LIMIT
from core.conversation.chat import ChatRef
from core.errors import InvalidSettingError
from core.usage import MICROS_PER_DOLLAR, UsageKey

#: Values that put a budget back to the operator's setting.
OFF_WORDS = frozenset({"off", "default", "reset"})
USAGE = (
    "Usage: /budget (the limits here); /budget chat NAME VALUE; /budget user ID NAME VALUE "
    "(or as a reply to their message); VALUE 'off' goes back to the operator's setting. "
    f"NAME is one of {', '.join(LIMITS)}."
)
ADMINS_ONLY = "Only the bot's operators (ADMIN_IDS) can change budgets."
_TOKENS = re.compile(r"[0-9][0-9_,]*")
_DOLLARS = re.compile(r"\$?([0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True, slots=True)
class Show:
    """Show the limits in force in the chat, and for `user_id` (None: the asker's)."""

    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """Set (`value`, tokens or micro-dollars) or clear (None) one budget of a chat or user."""

    scope: OverridableScope
    #: The user's id; None for the chat's.
    user_id: str | None
    limit: Limit
    value: int | None


def parse(argument: str | None, target_user: str | None = None) -> Show | Change:
    """The command `argument` asks for; `target_user` stands in for a missing user ID.

    Raises `InvalidSettingError` whose message is the answer for the user.
    """
    words = (argument or "").split()
    if not words:
        return Show(target_user)
    scope, rest = words[0].lower(), words[1:]
    if scope == "chat" and len(rest) == 2:
        limit = _limit(rest[0])
        return Change("chat", None, limit, _value(limit, rest[1]))
    if scope == "user":
        user: str | None = target_user
        if rest and rest[0].isdigit() and (len(rest) in (1, 3)):
            user, rest = rest[0], rest[1:]
        if user is None:
            raise InvalidSettingError("Which user? Give their id, or reply to their message.")
        if not rest:
            return Show(user)
        if len(rest) == 2:
            limit = _limit(rest[0])
            return Change("user", user, limit, _value(limit, rest[1]))
    raise InvalidSettingError(USAGE)


def _limit(name: str) -> Limit:
    limit = LIMITS.get(name.lower())
    if limit is None:
        raise InvalidSettingError(f"There is no budget {name!r}: use one of {', '.join(LIMITS)}.")
    return limit


def _value(limit: Limit, text: str) -> int | None:
    """Tokens, or dollars as micro-dollars; None for 'off'."""
    if text.lower() in OFF_WORDS:
        return None
    if limit.money:
        match = _DOLLARS.fullmatch(text)
        try:
            dollars = Decimal(match.group(1)) if match else None
        except InvalidOperation:
            dollars = None
        if dollars is None or not 0 < dollars <= MAX_LIMIT:
            raise InvalidSettingError(
                f"{limit.name} is in dollars, above 0 and at most {MAX_LIMIT:,} (e.g. 2.50), "
                f"or 'off'; not {text!r}."
            )
        return max(1, int(dollars * MICROS_PER_DOLLAR))
    value = int(text.replace("_", "").replace(",", "")) if _TOKENS.fullmatch(text) else 0
    if not 0 < value <= MAX_LIMIT:
        raise InvalidSettingError(
            f"{limit.name} is a whole number of tokens, above 0 and at most {MAX_LIMIT:,}, "
            f"or 'off'; not {text!r}."
        )
    return value


async def apply(policy: BudgetPolicy, chat: ChatRef, command: Show | Change, asker_id: str) -> str:
    """Show the limits, or store the change (the surface checked the asker may) and confirm."""
    if isinstance(command, Show):
        return await describe(
            policy, chat, command.user_id or asker_id, own=command.user_id is None
        )
    key = (
        UsageKey.chat(chat, "day").key
        if command.user_id is None
        else UsageKey.user(chat.platform, command.user_id, "day").key
    )
    await policy.set_override(command.scope, key, command.limit.name, command.value)
    whose = "This chat's" if command.user_id is None else f"User {command.user_id}'s"
    name = command.limit.name.replace("_", " ")
    if command.value is None:
        return f"{whose} {name} budget is back to the operator's setting."
    return f"{whose} {name} budget is now {command.limit.amount(command.value)}."


async def describe(policy: BudgetPolicy, chat: ChatRef, user_id: str, *, own: bool) -> str:
    """The budgets in force here: the chat's, the user's, the guests'."""
    sections = [
        ("This chat", await policy.limits("chat", UsageKey.chat(chat, "day").key)),
        (
            "You" if own else f"User {user_id}",
            await policy.limits("user", UsageKey.user(chat.platform, user_id, "day").key),
        ),
        ("Guests, all together", await policy.limits("guests", UsageKey.guests("day").key)),
    ]
    lines = ["Budgets (days and months are UTC):"]
    for title, limits in sections:
        shown = [
            f"{LIMITS[name].adjective} {LIMITS[name].amount(value)}"
            + (" (set here by an admin)" if overridden else "")
            for name, (value, overridden) in sorted(limits.items(), key=_order)
        ]
        lines.append(f"{title}: {', '.join(shown) if shown else 'no limit'}")
    return "\n".join(lines)


def _order(item: tuple[str, tuple[int, bool]]) -> int:
    return list(LIMITS).index(item[0])
