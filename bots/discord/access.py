"""Who may use the bot (DISCORD_ALLOWED_IDS) and who may change a chat's settings (ADMIN_IDS)."""

from __future__ import annotations

from collections.abc import Collection

import discord


def is_allowed(
    allowed_ids: Collection[int],
    user: discord.abc.User,
    channel: object,
    guild: discord.Guild | None,
) -> bool:
    """True when the list is empty, or names the user, one of their roles, the channel
    (a thread counts as its parent channel too) or the guild.

    Discord ids never collide across kinds, so one flat list is unambiguous for operators.
    """
    if not allowed_ids:
        return True
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
