"""Who may use the bot (DISCORD_ALLOWED_IDS, ALLOW_GUESTS), as what (`bots.access`), and who
may change a chat's settings (ADMIN_IDS)."""

from __future__ import annotations

from collections.abc import Collection

import discord

from bots.access import Access, access, standing
from bots.config import Settings
from bots.discord.messages import author_of
from core.conversation import Author


def is_allowed(
    allowed_ids: Collection[int],
    user: discord.abc.User,
    channel: object,
    guild: discord.Guild | None,
    *,
    allow_guests: bool = False,
) -> bool:
    """True for a member or a guest (`access_of`)."""
    return access_of(allowed_ids, user, channel, guild, allow_guests) is not Access.REFUSED


def access_of(
    allowed_ids: Collection[int],
    user: discord.abc.User,
    channel: object,
    guild: discord.Guild | None,
    allow_guests: bool,
) -> Access:
    """A member when the list names the user, one of their roles, the channel (a thread
    counts as its parent channel too) or the guild; otherwise a guest or refused.

    Discord ids never collide across kinds, so one flat list is unambiguous for operators.
    """
    listed = bool(allowed_ids) and _listed(allowed_ids, user, channel, guild)
    return access(listed=listed, allowed_ids=allowed_ids, allow_guests=allow_guests)


def asker_of(
    user: discord.abc.User, channel: object, guild: discord.Guild | None, settings: Settings
) -> Author:
    """The author of a question to answer, marked as guest or admin for the budgets
    (DISCORD_ALLOWED_IDS, ALLOW_GUESTS, ADMIN_IDS)."""
    level = access_of(settings.discord_allowed_ids, user, channel, guild, settings.allow_guests)
    return standing(author_of(user), user.id, level, settings.admin_ids)


def _listed(
    allowed_ids: Collection[int],
    user: discord.abc.User,
    channel: object,
    guild: discord.Guild | None,
) -> bool:
    ids = {user.id}
    if isinstance(user, discord.Member):
        ids.update(role.id for role in user.roles)
    if channel is not None:
        ids.add(getattr(channel, "id", 0))
        ids.add(getattr(channel, "parent_id", None) or 0)
    if guild is not None:
        ids.add(guild.id)
    return not ids.isdisjoint(allowed_ids)


def may_change_settings(interaction: discord.Interaction, admin_ids: Collection[int]) -> bool:
    """In a server: Manage Server in that channel, or an id in ADMIN_IDS. In a DM: the user,
    since the chat is theirs alone."""
    if interaction.guild_id is None:
        return True
    return interaction.user.id in admin_ids or interaction.permissions.manage_guild
