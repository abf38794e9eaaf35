"""Slash commands: /reset /model /system /stop, for the channel (or thread) they are used in."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bots.discord.access import is_allowed, may_change_settings
from bots.discord.messages import chat_of
from bots.discord.surface import MAX_LENGTH, NO_PINGS
from core.config import Settings
from core.conversation import ChatRef, ConversationService
from core.models import MODEL_NAME

log = logging.getLogger(__name__)

#: Option value that puts a setting back to the operator's default.
DEFAULT_WORD = "default"
#: Longest model name accepted; real names are far shorter.
MAX_MODEL_NAME = 100
#: Discord's own limit for a string option.
MAX_OPTION = 6000
NOT_ALLOWED = "You are not allowed to use this bot here."
ADMINS_ONLY = "Only members with Manage Server (or listed in ADMIN_IDS) can change this."
FAILED = "That did not work. Please try again."
MODEL_USAGE = f"A model name is one word, e.g. gpt-4o-mini, or '{DEFAULT_WORD}'."


def _clip(text: str) -> str:
    """Fit `text` in one message (a long system prompt is shown in part)."""
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1] + "…"


def _chat(interaction: discord.Interaction) -> ChatRef:
    """The chat a command is about (discord.py resolves the channel, threads included)."""
    return chat_of(interaction.channel or discord.Object(interaction.channel_id or 0))


def _chosen(value: str) -> str | None:
    """An option's value as a setting: None (the operator's default) for the default word."""
    value = value.strip()
    return None if value.lower() == DEFAULT_WORD else value or None


async def _say(interaction: discord.Interaction, text: str, *, ephemeral: bool = False) -> None:
    await interaction.response.send_message(
        _clip(text), ephemeral=ephemeral, allowed_mentions=NO_PINGS
    )


class SettingsCog(commands.Cog):
    """Chat settings. Changes are visible to the channel, since they change everyone's chat."""

    def __init__(self, settings: Settings, service: ConversationService) -> None:
        self.settings = settings
        self.service = service

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        allowed = is_allowed(
            self.settings.discord_allowed_ids,
            interaction.user,
            interaction.channel,
            interaction.guild,
        )
        if not allowed:
            raise app_commands.CheckFailure(NOT_ALLOWED)
        return True

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            text = str(error) or NOT_ALLOWED
        else:
            log.exception("/%s failed", interaction.command.name if interaction.command else "?")
            text = FAILED
        if not interaction.response.is_done():
            await _say(interaction, text, ephemeral=True)

    @app_commands.command(name="reset", description="Start a new conversation here")
    async def reset(self, interaction: discord.Interaction) -> None:
        await self.service.reset(_chat(interaction))
        await _say(
            interaction, "Started a new conversation. Earlier messages are kept but no longer used."
        )

    @app_commands.command(name="stop", description="Stop the reply being written here")
    async def stop(self, interaction: discord.Interaction) -> None:
        stopped = await self.service.stop(_chat(interaction))
        await _say(
            interaction, "Stopped." if stopped else "Nothing to stop.", ephemeral=not stopped
        )

    @app_commands.command(name="model", description="Show or set the model used here")
    @app_commands.describe(name=f"Model name, or '{DEFAULT_WORD}' for the default")
    async def model(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_MODEL_NAME] | None = None,
    ) -> None:
        chat = _chat(interaction)
        if name is None:
            current = (await self.service.chat_config(chat)).model or self.settings.default_model
            await _say(interaction, f"Model: {current}", ephemeral=True)
            return
        if not MODEL_NAME.fullmatch(name.strip()):
            await _say(interaction, MODEL_USAGE, ephemeral=True)
            return
        if not may_change_settings(interaction, self.settings.admin_ids):
            raise app_commands.CheckFailure(ADMINS_ONLY)
        chosen = _chosen(name)
        await self.service.set_model(chat, chosen)
        await _say(interaction, f"Model set to {chosen or self.settings.default_model}.")

    @app_commands.command(name="system", description="Show or set the system prompt used here")
    @app_commands.describe(prompt=f"The new system prompt, or '{DEFAULT_WORD}' for the default")
    async def system(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_OPTION] | None = None,
    ) -> None:
        chat = _chat(interaction)
        if prompt is None:
            current = (await self.service.chat_config(chat)).system_prompt
            await _say(
                interaction,
                f"System prompt: {current or self.settings.system_prompt}",
                ephemeral=True,
            )
            return
        if not may_change_settings(interaction, self.settings.admin_ids):
            raise app_commands.CheckFailure(ADMINS_ONLY)
        chosen = _chosen(prompt)
        await self.service.set_system_prompt(chat, chosen)
        await _say(
            interaction,
            "System prompt reset to the default." if chosen is None else "System prompt set.",
        )
