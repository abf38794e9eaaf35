"""discord.py's gateway reconnects: told in one log line each, and never more than ~a minute apart.

discord.py reconnects by itself (`Client.connect(reconnect=True)`: RESUME first, a new session
if Discord refuses it, with full-jitter exponential backoff), but two of its choices do not suit
a bot run as a service:

- It reports every try with `_log.exception("Attempting a reconnect in %.2fs")`: a traceback per
  try for what is only an outage. `ReconnectLines` rewrites that one record, on discord.py's own
  logger, into the line the start-up retries write (`bots.startup`): where, why in a few words,
  and when the next try comes; at WARNING, as an outage is no bug. Other records pass unchanged.
- Its wait grows to a random time below 2^10 s (up to 17 minutes) after ten failed tries, so a
  bot could stay away that long after Discord came back. `use_capped_backoff` lowers that ceiling
  to 2^6 s, like `bots.startup.MAX_DELAY`, keeping the jitter. discord.py builds its backoff in
  `Client.connect` from the name `discord.client.ExponentialBackoff`, with no argument to pass
  another, so this rebinds that name, process-wide, as `bots.discord.endpoints` sets the
  addresses: one process runs one Discord bot.

A sharded client (`bots.discord.shards`) reconnects each shard on its own, with the same two
habits under other names: `Shard` builds `discord.shard.ExponentialBackoff` and logs "Attempting
a reconnect for shard ID %s in %.2fs" on `discord.shard`. Both are handled the same way, the
line naming the shard.
"""

from __future__ import annotations

import logging

import discord
import discord.client
import discord.shard
from discord.backoff import ExponentialBackoff

from bots.startup import network_cause, seconds

#: The logger and the message (its format string, before arguments) of discord.py's reconnect;
#: and of a shard's, whose arguments are the shard's id and the wait.
DISCORD_CLIENT_LOGGER = "discord.client"
RECONNECT_MESSAGE = "Attempting a reconnect in %.2fs"
DISCORD_SHARD_LOGGER = "discord.shard"
SHARD_RECONNECT_MESSAGE = "Attempting a reconnect for shard ID %s in %.2fs"
#: The largest wait between two reconnects is below 2 ** this many seconds (discord.py: 10).
RECONNECT_MAX_EXPONENT = 6


class CappedBackoff(ExponentialBackoff[bool]):
    """discord.py's reconnect backoff (a random wait below 1, 2, 4 ... s) capped at 64 s."""

    def __init__(self, base: int = 1, *, integral: bool = False) -> None:
        super().__init__(base, integral=integral)
        self._max = RECONNECT_MAX_EXPONENT


def use_capped_backoff() -> None:
    """Make every later `Client.connect` reconnect with `CappedBackoff`."""
    # mypy sees a class rebound (misc) to a subclass of another generic form (assignment):
    # that is the point here, and `connect` only calls it with no argument.
    discord.client.ExponentialBackoff = CappedBackoff  # type: ignore[misc, assignment]
    discord.shard.ExponentialBackoff = CappedBackoff  # type: ignore[misc, assignment]


def gateway_cause(exc: BaseException) -> str:
    """Why the gateway connection failed, in a few words."""
    if isinstance(exc, discord.ConnectionClosed):
        return f"gateway closed the connection with code {exc.code}"
    if isinstance(exc, discord.GatewayNotFound):
        return "gateway not found"
    return network_cause(exc) or type(exc).__name__


class ReconnectLines(logging.Filter):
    """Turns discord.py's reconnect traceback into one line naming the gateway's host."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self._host = host

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in (RECONNECT_MESSAGE, SHARD_RECONNECT_MESSAGE) or not record.exc_info:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        where = self._host
        if record.msg == SHARD_RECONNECT_MESSAGE and args:
            where, args = f"{self._host} for shard {args[0]}", args[1:]
        failure = record.exc_info[1]
        delay = args[0] if args else None
        cause = gateway_cause(failure) if failure is not None else "disconnected"
        record.msg = "Discord: cannot reach %s (%s); reconnecting in %s"
        record.args = (
            where,
            cause,
            seconds(delay) if isinstance(delay, int | float) else "a moment",
        )
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def install(host: str) -> ReconnectLines:
    """Rewrite discord.py's reconnect records from now on; `uninstall` undoes it."""
    lines = ReconnectLines(host)
    for name in (DISCORD_CLIENT_LOGGER, DISCORD_SHARD_LOGGER):
        logging.getLogger(name).addFilter(lines)
    return lines


def uninstall(lines: ReconnectLines) -> None:
    for name in (DISCORD_CLIENT_LOGGER, DISCORD_SHARD_LOGGER):
        logging.getLogger(name).removeFilter(lines)
