"""Parley's Discord bot (discord.py 2): mentions, DMs and replies, streamed by editing messages.

`DiscordBot(settings, service).run()` connects and runs until cancelled, then closes cleanly.
The REST and gateway addresses come from DISCORD_API_BASE and DISCORD_GATEWAY_URL (see
`bots.discord.endpoints` for how discord.py is pointed at them).

Decisions worth knowing:
- History is per channel, and per thread inside threads (ChatRef thread_id = the thread).
- Attachments are read (`bots.discord.media`, `bots.attachments.gather`): images go to the
  model, voice messages and audio are transcribed, text files are put into the prompt; a
  mention replying to a message with attachments reads that message's. A sticker alone gets a
  one-line answer.
- Every message the bot sends pings no one (AllowedMentions.none(), on the client and on each
  call): model output saying @everyone or <@id> notifies nobody.
- A channel where the bot may not write (403) is logged once and otherwise ignored.
- Edited messages are ignored: the answer to the original stands.
- Start-up: login (REST) is retried while Discord cannot be reached, or something else answers
  in its place (`bots.startup`, `NotTheApi`); the gateway then reconnects by itself
  (`bots.discord.reconnect` keeps its log to one line per try). The replies a previous run left
  cut off are marked from the run's first READY, as a reply in flight the shutdown waits for.
- DISCORD_SHARD_COUNT runs the bot sharded (`bots.discord.shards`): this process serves the
  shards DISCORD_SHARD_IDS names, and only the one with shard 0 syncs the slash commands.
- At shutdown, new messages get no answer; replies in flight get SHUTDOWN_GRACE_SECONDS to
  finish, then are cut short with the shutdown note (`bots.shutdown`).
"""

from __future__ import annotations

from functools import partial

import discord

from bots.backoff import Backoff
from bots.config import Settings
from bots.discord import reconnect
from bots.discord.client import ParleyDiscordClient, new_client
from bots.discord.endpoints import use_endpoints
from bots.discord.messages import PLATFORM
from bots.discord.surface import CHANNEL_LIMITS, DiscordBudgets, DiscordSurface
from bots.errors import BotStartupError
from bots.platform_observer import NO_PLATFORM_OBSERVER, PlatformObserver
from bots.repair import repair_replies
from bots.shutdown import Grace, finish_in_flight
from bots.startup import DEFAULT_BACKOFF, Link, connect_with_retries, host_of, network_cause
from bots.write_budget import WriteLimits
from core.conversation import ConversationService

#: Where the operator turns the Message Content intent on (`parley doctor` says it too).
MESSAGE_CONTENT_FIX = (
    "Enable it in the Discord Developer Portal (https://discord.com/developers/applications) "
    "-> your application -> Bot -> Privileged Gateway Intents -> Message Content Intent, save, "
    "and start Parley again."
)
MESSAGE_CONTENT_HELP = (
    "Discord refused the bot's connection: it needs the Message Content intent, which is off "
    f"for this application. {MESSAGE_CONTENT_FIX}"
)
BAD_TOKEN_HELP = (
    "Discord rejected DISCORD_BOT_TOKEN. Copy the token again from the Developer Portal "
    "-> your application -> Bot -> Reset Token."
)
NOT_THE_API_HELP = (
    "{base} answered the login with 404 Not Found: it is not Discord's API. Check "
    "DISCORD_API_BASE (default https://discord.com/api/v10, the version path included)."
)
SHARD_REFUSED_HELP = (
    "Discord refused a shard of DISCORD_SHARD_COUNT={count} (gateway close 4010, Invalid "
    "shard). Give every process the same DISCORD_SHARD_COUNT and ids within 0 to count - 1."
)
SHARDING_REQUIRED_HELP = (
    "Discord requires sharding: the bot is in too many servers for {what} (gateway close "
    "4011, at most 2,500 servers per shard). Set DISCORD_SHARD_COUNT to at least the number "
    "Discord recommends (GET /gateway/bot, `shards`) and start Parley again."
)
#: The gateway's close codes for a token it refuses, a shard it does not know, and a session
#: that would carry too many guilds.
AUTHENTICATION_FAILED = 4004
INVALID_SHARD = 4010
SHARDING_REQUIRED = 4011


class DiscordBot:
    """Owns one discord.py client for the life of `run()`."""

    def __init__(
        self,
        settings: Settings,
        service: ConversationService,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        channel_limits: WriteLimits = CHANNEL_LIMITS,
        platform_observer: PlatformObserver = NO_PLATFORM_OBSERVER,
    ) -> None:
        """`platform_observer` hears of Discord's 429s (the metrics). `backoff` (the waits
        between login tries) and `channel_limits` (each channel's writes) exist for tests,
        which may not want to wait Discord's real pace."""
        if settings.discord_bot_token is None:
            raise BotStartupError("DISCORD_BOT_TOKEN is not set.")
        self.settings = settings
        self.service = service
        self._backoff = backoff
        self._link = Link("Discord", host_of(settings.discord_api_base))
        self._client: ParleyDiscordClient | None = None
        self._grace = Grace(settings.shutdown_grace_seconds)
        self._repairing = False
        self._budgets = DiscordBudgets(channel_limits)
        self._platform_observer = platform_observer

    platform = PLATFORM

    @property
    def connected(self) -> bool:
        """True from READY (the gateway confirmed the bot) while the gateway session is up: False
        from a disconnect until READY or RESUMED again."""
        return self._link.up

    def hurry(self) -> None:
        """Cut the shutdown grace short: the replies in flight stop now."""
        self._grace.end_now()

    async def run(self) -> None:
        """Log in (retried while Discord cannot be reached), then serve until cancelled (or
        until Discord refuses us for good); then stop as `bots.shutdown` says."""
        use_endpoints(self.settings.discord_api_base, self.settings.discord_gateway_url)
        reconnect.use_capped_backoff()
        lines = reconnect.install(host_of(self.settings.discord_gateway_url))
        try:
            client = await connect_with_retries(
                self._link, self._log_in, network_cause, self._backoff
            )
            try:
                await client.connect()
            except discord.PrivilegedIntentsRequired:
                raise BotStartupError(MESSAGE_CONTENT_HELP) from None
            except discord.ConnectionClosed as closed:
                refusal = self._refusal(closed)
                if refusal is None:
                    raise
                raise refusal from None
            finally:
                await self._stop(client)
        finally:
            reconnect.uninstall(lines)

    def _refusal(self, closed: discord.ConnectionClosed) -> BotStartupError | None:
        """Discord's closes that no reconnect can fix, told as what to change; None for others."""
        count = self.settings.discord_shard_count
        if closed.code == AUTHENTICATION_FAILED:
            return BotStartupError(BAD_TOKEN_HELP)
        if closed.code == INVALID_SHARD:
            return BotStartupError(SHARD_REFUSED_HELP.format(count=count))
        if closed.code == SHARDING_REQUIRED:
            what = "one connection" if count is None else f"DISCORD_SHARD_COUNT={count}"
            return BotStartupError(SHARDING_REQUIRED_HELP.format(what=what))
        return None

    async def _log_in(self) -> ParleyDiscordClient:
        """A new client, logged in (the token checked, commands synced); closed again if that
        fails, so a retry starts clean."""
        token = self.settings.discord_bot_token
        assert token is not None
        client = new_client(self.settings, self.service, self._budgets, self._platform_observer)
        client.add_listener(self._on_ready, "on_ready")
        client.add_listener(self._on_resumed, "on_resumed")
        client.add_listener(self._on_shard_ready, "on_shard_ready")
        client.add_listener(self._on_disconnect, "on_disconnect")
        try:
            await client.login(token.get_secret_value())
        except BaseException as exc:
            await client.close()
            if isinstance(exc, discord.LoginFailure):
                raise BotStartupError(BAD_TOKEN_HELP) from None
            answer = client.foreign_answer
            if isinstance(exc, discord.NotFound) or (answer is not None and answer.wrong_address):
                base = self.settings.discord_api_base
                raise BotStartupError(NOT_THE_API_HELP.format(base=base)) from None
            if answer is not None and isinstance(exc, Exception) and network_cause(exc) is None:
                # Not the API's answer (a captive portal, a proxy): retried, by `NotTheApi`'s rule.
                raise answer from exc
            raise
        self._client = client
        return client

    async def _stop(self, client: ParleyDiscordClient) -> None:
        """Take no new message, give the replies in flight their grace, then close."""
        self._link.closed()
        chat = client.chat
        if chat is not None:
            chat.stop_taking()
            await finish_in_flight("Discord", chat.in_flight, self._grace)
        await client.close()

    async def _on_ready(self) -> None:
        client = self._client
        if client is None or client.user is None:
            return
        self._link.confirmed(client.user.name)
        if not self._repairing and client.chat is not None:
            # Once per run, on the client that connected: a login retried after its commands'
            # sync failed would lose a repair started before (its client's cog stops it).
            self._repairing = True
            surface_for = partial(DiscordSurface.resuming, client, self._budgets)
            client.chat.start(repair_replies(self.service, PLATFORM, surface_for))

    async def _on_resumed(self) -> None:
        self._link.answered()

    async def _on_shard_ready(self, shard_id: int) -> None:
        """A shard identified again (its session was not resumable): discord.py dispatches
        `on_ready` only once all of the process's shards are ready, so this says it is back."""
        self._link.answered()

    async def _on_disconnect(self) -> None:
        self._link.lost()


__all__ = ["DiscordBot"]
