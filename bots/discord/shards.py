"""Which of the bot's Discord shards this process runs (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS).

Discord sends each guild's events to one gateway session only, the one whose shard is
`(guild_id >> 22) % shard_count`, and DMs to shard 0; a bot in more than 2,500 guilds must
shard (close 4011 otherwise). discord.py's `AutoShardedClient` runs several shards on one
client, so one process may run them all or a share: processes started with the same count
and disjoint DISCORD_SHARD_IDS together cover every guild, each answering its own.

Slash commands are the application's, not a shard's: one PUT replaces the whole list. Only
the process running shard 0 syncs them, so a fleet of N processes starting together makes
one sync, not N racing ones against Discord's command limits; shard 0 exists exactly once
in every valid split (it is also the one that gets DMs), and a bot without shards is its own
shard 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from bots.config import Settings


@dataclass(frozen=True)
class ShardPlan:
    """`count` shards in all; this process runs `ids`."""

    count: int
    ids: tuple[int, ...]

    @property
    def syncs_commands(self) -> bool:
        return 0 in self.ids

    def describe(self) -> str:
        shown = ", ".join(map(str, self.ids))
        return f"shard{'s' if len(self.ids) > 1 else ''} {shown} of {self.count}"


def shard_plan(settings: Settings) -> ShardPlan | None:
    """The shards to run, or None for one unsharded connection (DISCORD_SHARD_COUNT unset).
    The settings already refused ids outside the count (`bots.config.check_shard_ids`)."""
    count = settings.discord_shard_count
    if count is None:
        return None
    ids = settings.discord_shard_ids
    return ShardPlan(count, tuple(range(count) if ids is None else ids))


def syncs_commands(plan: ShardPlan | None) -> bool:
    """True for the one process that syncs the slash commands (see the module's docstring)."""
    return plan is None or plan.syncs_commands
