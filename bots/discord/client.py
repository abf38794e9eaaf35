"""The discord.py client: intents, mention policy, cogs and slash-command sync; sharded
(`commands.AutoShardedBot`) when DISCORD_SHARD_COUNT is set (`bots.discord.shards`)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
from discord.ext import commands

from bots.config import Settings
from bots.discord.chat import ChatCog
from bots.discord.commands import SettingsCog
from bots.discord.proxy import ProxiedConnector
from bots.discord.ratelimits import count_rate_limits
from bots.discord.shards import ShardPlan, shard_plan, syncs_commands
from bots.discord.surface import NO_PINGS, DiscordBudgets
from bots.errors import NotTheApi
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from core.conversation import ConversationService

log = logging.getLogger(__name__)


def intents() -> discord.Intents:
    """Default intents plus Message Content (privileged: it must be on in the Developer Portal),
    without which Discord sends guild messages that do not mention the bot with empty text."""
    wanted = discord.Intents.default()
    wanted.message_content = True
    return wanted


class ParleyDiscordClient(commands.Bot):
    """A `commands.Bot` for its cogs and app-command tree; Parley has no prefix commands."""

    def __init__(
        self,
        settings: Settings,
        service: ConversationService,
        budgets: DiscordBudgets | None = None,
        platform_observer: PlatformObserver = NO_PLATFORM_OBSERVER,
        **sharding: Any,
    ) -> None:
        """Build inside the event loop: the proxy's connector, when DISCORD_PROXY is set, binds
        to the running loop. `budgets`: the channels' write budgets, kept by the bot across
        clients (a new login must not forget the writes of the last seconds). `sharding`:
        `shard_count` and `shard_ids`, for `ShardedParleyClient` only."""
        proxy = settings.discord_proxy
        if proxy is not None:
            log.info("Discord: connecting through the proxy %s", proxy.address)
        trace = count_rate_limits(platform_observer)
        trace.on_request_end.append(self._saw_answer)
        super().__init__(
            command_prefix=[],  # none: see on_message
            intents=intents(),
            allowed_mentions=NO_PINGS,
            help_command=None,
            # REST and the gateway both: discord.py opens them on one session.
            connector=None if proxy is None else ProxiedConnector(proxy),
            http_trace=trace,
            **sharding,
        )
        self.settings = settings
        self.service = service
        self.budgets = budgets or DiscordBudgets()
        #: The listener answering messages, once `setup_hook` added it (the shutdown asks it
        #: to take no more and waits for its replies in flight).
        self.chat: ChatCog | None = None
        #: The last answer that was not the API's JSON: when the login then fails, what
        #: answered is the cause (discord.py takes a 200 in HTML for a user, and fails on it).
        self.foreign_answer: NotTheApi | None = None

    async def _saw_answer(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        response = params.response
        answered = response.status >= 200 and response.status != 204  # not the gateway's 101
        if answered and response.content_type != "application/json":
            self.foreign_answer = NotTheApi(response.status, response.content_type)

    async def setup_hook(self) -> None:
        self.chat = ChatCog(self, self.settings, self.service, self.budgets)
        await self.add_cog(self.chat)
        await self.add_cog(SettingsCog(self.settings, self.service))
        if not syncs_commands(shard_plan(self.settings)):
            log.info("slash commands: left to the process running shard 0")
            return
        synced = await self.tree.sync()
        log.info("synced slash commands: %s", ", ".join(f"/{c.name}" for c in synced))

    async def on_message(self, message: discord.Message, /) -> None:
        """Mentions are chat for the model, never prefix commands: ChatCog handles them."""


class ShardedParleyClient(ParleyDiscordClient, commands.AutoShardedBot):
    """The same bot on discord.py's `AutoShardedClient`: one gateway session per shard it
    runs, all feeding the same cogs (its MRO puts `AutoShardedClient` under `BotBase`)."""


def new_client(
    settings: Settings,
    service: ConversationService,
    budgets: DiscordBudgets | None = None,
    platform_observer: PlatformObserver = NO_PLATFORM_OBSERVER,
) -> ParleyDiscordClient:
    """A sharded client when DISCORD_SHARD_COUNT is set, else the plain one (one connection,
    no `shard` in IDENTIFY, as before sharding existed)."""
    plan: ShardPlan | None = shard_plan(settings)
    if plan is None:
        return ParleyDiscordClient(settings, service, budgets, platform_observer)
    log.info("Discord: running %s", plan.describe())
    return ShardedParleyClient(
        settings,
        service,
        budgets,
        platform_observer,
        shard_count=plan.count,
        shard_ids=list(plan.ids),
    )
