"""Who is let in, in both bots' terms: a member, a guest, or refused.

A platform's own check says whether its user is listed (`TELEGRAM_ALLOWED_IDS`,
`DISCORD_ALLOWED_IDS`: the user, or their chat, channel, role or guild); this module turns that
into an `Access` by one rule, so both bots let guests in alike, and marks the `Author` the
conversation service gets: a guest spends from the shared guest budget too, an admin
(`ADMIN_IDS`) from no budget at all (`core.budgets`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from enum import StrEnum

from core.conversation import Author


class Access(StrEnum):
    #: Listed in the platform's *_ALLOWED_IDS.
    MEMBER = "member"
    #: Not listed, let in: the list is empty (the bot is open), or ALLOW_GUESTS=true.
    GUEST = "guest"
    REFUSED = "refused"


def access(*, listed: bool, allowed_ids: Collection[int], allow_guests: bool) -> Access:
    """The access of someone whom the platform's list names (`listed`) or not."""
    if allowed_ids and listed:
        return Access.MEMBER
    if not allowed_ids or allow_guests:
        return Access.GUEST
    return Access.REFUSED


def standing(
    author: Author, user_id: int | None, level: Access, admin_ids: Collection[int]
) -> Author:
    """`author` marked as a guest or an admin, for the budgets. An admin is never a guest."""
    admin = user_id is not None and user_id in admin_ids
    return dataclasses.replace(author, guest=level is Access.GUEST and not admin, admin=admin)
