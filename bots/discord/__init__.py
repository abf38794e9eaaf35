"""Parley's Discord bot (discord.py 2): mentions, DMs and replies, streamed by editing messages.

`DiscordBot(settings, service).run()` connects and runs until cancelled, then closes cleanly.
The REST and gateway addresses come from DISCORD_API_BASE and DISCORD_GATEWAY_URL (see
`bots.discord.endpoints` for how discord.py is pointed at them).

Decisions worth knowing:
- History is per channel, and per thread inside threads (ChatRef thread_id = the thread).
- Messages with no text (a sticker, an image or file alone) get a one-line answer saying the
  bot reads text only; attachments next to text are named in the prompt, not read.
- Every message the bot sends pings no one (AllowedMentions.none(), on the client and on each
  call): model output saying @everyone or <@id> notifies nobody.
- A channel where the bot may not write (403) is logged once and otherwise ignored.
- Edited messages are ignored: the answer to the original stands.
- At shutdown, replies still streaming are stopped; each keeps its text so far.
"""

from __future__ import annotations

import discord

from bots.config import Settings
from bots.discord.client import ParleyDiscordClient
from bots.discord.endpoints import use_endpoints
from bots.discord.messages import PLATFORM
from bots.errors import BotStartupError
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


class DiscordBot:
    """Owns one discord.py client for the life of `run()`."""

    def __init__(self, settings: Settings, service: ConversationService) -> None:
        if settings.discord_bot_token is None:
            raise BotStartupError("DISCORD_BOT_TOKEN is not set.")
        self.settings = settings
        self.service = service
        self._client: ParleyDiscordClient | None = None

    platform = PLATFORM

    @property
    def connected(self) -> bool:
        """True while the gateway session is READY (discord.py clears it on a reconnect)."""
        client = self._client
        return client is not None and client.is_ready() and not client.is_closed()

    async def run(self) -> None:
        """Connect and serve until cancelled (or until Discord refuses us for good)."""
        use_endpoints(self.settings.discord_api_base, self.settings.discord_gateway_url)
        token = self.settings.discord_bot_token
        assert token is not None
        client = self._client = ParleyDiscordClient(self.settings, self.service)
        try:
            async with client:
                await client.start(token.get_secret_value())
        except discord.PrivilegedIntentsRequired:
            raise BotStartupError(MESSAGE_CONTENT_HELP) from None
        except discord.LoginFailure:
            raise BotStartupError(BAD_TOKEN_HELP) from None


__all__ = ["DiscordBot"]
