"""Slash commands: /reset /model /system /persona /stop /image /usage /stats /budget, for the
channel (or thread) they are used in.

/persona and /model offer their values as autocomplete (the personas, and the configured
models of `core.model_menu`), rather than as fixed choices: Discord caps fixed choices at 25
and fixes them when the commands are synced, while autocomplete filters by what is typed and
follows the personas file. A typed value that is not offered is still taken, as before.
"""

from __future__ import annotations

import io
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bots.config import Settings
from bots.discord.access import asker_of, is_allowed, may_change_settings
from bots.discord.messages import chat_of
from bots.discord.surface import NO_PINGS, clip
from bots.drawing import IMAGE_USAGE, Switch, draw, parse_image_args, switch_image_generation
from bots.usage_view import limits_in_force, stats_text, usage_text
from core import budget_command, chat_settings
from core.conversation import Author, ChatRef, ConversationService, describe_reset, describe_stop
from core.errors import InvalidSettingError, ParleyError, describe
from core.model_menu import matching
from core.personas import describe_persona, persona_changed
from core.usage import utc_now

log = logging.getLogger(__name__)

NOT_ALLOWED = "You are not allowed to use this bot here."
ADMINS_ONLY = "Only members with Manage Server (or listed in ADMIN_IDS) can change this."
FAILED = "That did not work. Please try again."
STATS_ADMINS_ONLY = (
    "Only members with Manage Server (or listed in ADMIN_IDS) can see /stats, in a server."
)
#: Discord refused the drawn image's upload: over the channel's upload limit (10 MiB without
#: boosts), which only a huge IMAGE_SIZE reaches.
IMAGE_TOO_LARGE = "The image was too large to send here."
#: Discord's answer to an upload over the limit.
_ENTITY_TOO_LARGE = 413
#: Discord shows at most 25 autocomplete choices.
MAX_CHOICES = 25
#: A choice's name is 1 to 100 characters.
MAX_CHOICE_NAME = 100


def _chat(interaction: discord.Interaction) -> ChatRef:
    """The chat a command is about (discord.py resolves the channel, threads included)."""
    return chat_of(interaction.channel or discord.Object(interaction.channel_id or 0))


async def _say(interaction: discord.Interaction, text: str, *, ephemeral: bool = False) -> None:
    await interaction.response.send_message(
        clip(text), ephemeral=ephemeral, allowed_mentions=NO_PINGS
    )


async def _acknowledged(interaction: discord.Interaction, whose: str | None) -> str | None:
    """`whose`, once Discord knows an answer to `interaction` is coming."""
    await interaction.response.defer()
    return whose


def _choice_name(text: str) -> str:
    """`text` cut to a choice's 100 characters."""
    return text if len(text) <= MAX_CHOICE_NAME else text[: MAX_CHOICE_NAME - 1] + "…"


class SettingsCog(commands.Cog):
    """Chat settings. Changes are visible to the channel, since they change everyone's chat."""

    def __init__(self, settings: Settings, service: ConversationService) -> None:
        self.settings = settings
        self.service = service

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        allowed = is_allowed(
            self.settings.discord_allowed_ids,
            interaction.user,
            interaction.channel,
            interaction.guild,
            allow_guests=self.settings.allow_guests,
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
        # Waiting for other people's replies may outlast the 3 s Discord gives a command to
        # answer: acknowledge first, but only once the reset has its place in the channel's
        # order (the service awaits this after taking it), then answer in a follow-up.
        whose = self._whose_replies(interaction)
        report = await self.service.reset(_chat(interaction), _acknowledged(interaction, whose))
        await interaction.followup.send(clip(describe_reset(report)), allowed_mentions=NO_PINGS)

    @app_commands.command(name="stop", description="Stop the reply being written here")
    async def stop(self, interaction: discord.Interaction) -> None:
        whose = self._whose_replies(interaction)
        stopped = await self.service.stop(_chat(interaction), whose)
        await _say(
            interaction, describe_stop(stopped, own_only=whose is not None), ephemeral=not stopped
        )

    @app_commands.command(name="model", description="Show or set the model used here")
    @app_commands.describe(name="Model name, or 'default' for the operator's")
    async def model(self, interaction: discord.Interaction, name: str | None = None) -> None:
        await self._configure(chat_settings.MODEL, interaction, name)

    @model.autocomplete("name")
    async def model_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        """The configured models containing what is typed; a name too long for a choice's
        value (100) is left out, and still taken typed in full."""
        models = [m for m in self.service.offered_models() if len(m) <= MAX_CHOICE_NAME]
        return [app_commands.Choice(name=m, value=m) for m in matching(models, typed, MAX_CHOICES)]

    @app_commands.command(name="persona", description="Show or choose the persona used here")
    @app_commands.describe(name="A persona, or 'default' for none")
    async def persona(self, interaction: discord.Interaction, name: str | None = None) -> None:
        """Anyone sees the persona; `may_change_settings` choose one (shown to the channel)."""
        chat = _chat(interaction)
        if chat_settings.asks_current(name):
            chosen = (await self.service.chat_config(chat)).persona
            await _say(interaction, describe_persona(chosen, self.service.personas), ephemeral=True)
            return
        if not may_change_settings(interaction, self.settings.admin_ids):
            raise app_commands.CheckFailure(ADMINS_ONLY)
        try:
            persona = await self.service.set_persona(chat, name)
        except InvalidSettingError as exc:
            await _say(interaction, str(exc), ephemeral=True)
            return
        await _say(interaction, persona_changed(persona, await self.service.chat_config(chat)))

    @persona.autocomplete("name")
    async def persona_choices(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        """The personas whose name or description contains what is typed, described."""
        return [
            app_commands.Choice(name=_choice_name(f"{p.name}: {p.description}"), value=p.name)
            for p in self.service.personas.matching(typed, MAX_CHOICES)
        ]

    @app_commands.command(name="system", description="Show or set the system prompt used here")
    @app_commands.describe(prompt="The new system prompt, or 'default' for the operator's")
    async def system(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        await self._configure(chat_settings.SYSTEM_PROMPT, interaction, prompt)

    @app_commands.command(name="image", description="Draw an image from a description")
    @app_commands.describe(prompt="What to draw; 'on' or 'off' turns /image on or off here")
    async def image(self, interaction: discord.Interaction, prompt: str) -> None:
        parsed = parse_image_args(prompt)
        if parsed is None:
            await _say(interaction, IMAGE_USAGE, ephemeral=True)
        elif isinstance(parsed, Switch):
            if not may_change_settings(interaction, self.settings.admin_ids):
                raise app_commands.CheckFailure(ADMINS_ONLY)
            await _say(
                interaction, await switch_image_generation(self.service, _chat(interaction), parsed)
            )
        else:
            # Drawing takes longer than the 3 s Discord gives an answer: "thinking..." first.
            await interaction.response.defer(thinking=True)
            await self._send_drawing(interaction, parsed)

    async def _send_drawing(self, interaction: discord.Interaction, prompt: str) -> None:
        """The image with its prompt as caption, or the line saying why there is none."""
        try:
            asker = self._asker(interaction)
            drawing = await draw(self.service, self.settings, _chat(interaction), prompt, asker)
        except ParleyError as exc:
            await interaction.followup.send(clip(describe(exc)), allowed_mentions=NO_PINGS)
            return
        file = discord.File(io.BytesIO(drawing.data), filename=drawing.file_name)
        try:
            await interaction.followup.send(
                clip(drawing.caption), file=file, allowed_mentions=NO_PINGS
            )
        except discord.HTTPException as exc:
            if exc.status != _ENTITY_TOO_LARGE:
                raise
            await interaction.followup.send(IMAGE_TOO_LARGE, allowed_mentions=NO_PINGS)

    def _asker(self, interaction: discord.Interaction) -> Author:
        """Who is asking, marked guest or admin as the budgets see them."""
        return asker_of(interaction.user, interaction.channel, interaction.guild, self.settings)

    @app_commands.command(name="usage", description="Your use and what is left of your budget")
    async def usage(self, interaction: discord.Interaction) -> None:
        """Only the caller sees it (ephemeral): their own use, budgets, and the channel's."""
        caller = self._asker(interaction)
        chat = _chat(interaction)
        text = await usage_text(
            self.service.store,
            chat,
            caller.id,
            await limits_in_force(self.service.gate.budgets, chat, caller),
            utc_now(),
            in_private=interaction.guild_id is None,
        )
        await _say(interaction, text, ephemeral=True)

    @app_commands.command(name="stats", description="Top users, models and cost (admins)")
    async def stats(self, interaction: discord.Interaction) -> None:
        """ADMIN_IDS see the whole bot, anywhere; Manage Server, this channel (a DM makes no
        one an admin). Ephemeral: the figures name people."""
        operator = interaction.user.id in self.settings.admin_ids
        if not operator and (
            interaction.guild_id is None or not interaction.permissions.manage_guild
        ):
            raise app_commands.CheckFailure(STATS_ADMINS_ONLY)
        chat = None if operator else _chat(interaction)
        text = await stats_text(self.service.store, utc_now(), chat=chat)
        await _say(interaction, text, ephemeral=True)

    @app_commands.command(name="budget", description="Show the budgets here (operators: set them)")
    @app_commands.describe(
        change="e.g. 'chat daily_tokens 50000', 'user monthly_cost 2.5', '... off'",
        user="The user a 'user ...' change is for",
    )
    async def budget(
        self,
        interaction: discord.Interaction,
        change: str | None = None,
        user: discord.User | None = None,
    ) -> None:
        """Anyone sees the budgets (only they do); ADMIN_IDS change them (`core.budget_command`)."""
        try:
            wish = budget_command.parse(change, None if user is None else str(user.id))
        except InvalidSettingError as exc:
            await _say(interaction, str(exc), ephemeral=True)
            return
        changing = isinstance(wish, budget_command.Change)
        if changing and interaction.user.id not in self.settings.admin_ids:
            raise app_commands.CheckFailure(budget_command.ADMINS_ONLY)
        answer = await budget_command.apply(
            self.service.gate.budgets, _chat(interaction), wish, str(interaction.user.id)
        )
        await _say(interaction, answer, ephemeral=not changing)

    def _whose_replies(self, interaction: discord.Interaction) -> str | None:
        """The author whose replies /stop and /reset act on: in a server, the caller's own (the
        id `messages.author_of` files them by); everyone's (None) for a DM and for those who may
        change the channel's settings."""
        if may_change_settings(interaction, self.settings.admin_ids):
            return None
        return str(interaction.user.id)

    async def _configure(
        self, setting: chat_settings.Setting, interaction: discord.Interaction, argument: str | None
    ) -> None:
        """/model or /system: anyone may ask for the value, only `may_change_settings` change it."""
        if not chat_settings.asks_current(argument) and not may_change_settings(
            interaction, self.settings.admin_ids
        ):
            raise app_commands.CheckFailure(ADMINS_ONLY)
        answer = await chat_settings.apply(
            setting, self.service, _chat(interaction), argument, self.settings
        )
        await _say(interaction, answer.text, ephemeral=not answer.changed)
