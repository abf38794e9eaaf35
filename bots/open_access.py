"""Open by default, said out loud: which bots anyone may use, and the line that says so.

An empty `*_ALLOWED_IDS` lets everyone in, which is right for a bot on a free local model and
costly for one on a paid key: a Telegram bot is found by its username, a Discord bot by anyone
sharing a server with it. Parley keeps the default (a first run should answer) but says it at
every start: `parley run` logs one warning per open platform, `parley doctor` prints it as a
warning line, both naming the setting that closes the bot and the guest budget that bounds
what the people let in this way may spend.
"""

from __future__ import annotations

from dataclasses import dataclass

from bots.config import Settings

#: The setting that bounds what the people let in by an empty list may spend (`core.budgets`).
GUEST_BUDGET_SETTING = "GUEST_DAILY_TOKENS"


@dataclass(frozen=True, slots=True)
class OpenPlatform:
    """A platform whose bot runs with an empty access list."""

    #: As people know it: "Telegram", "Discord".
    name: str
    #: The setting that closes it: "TELEGRAM_ALLOWED_IDS".
    setting: str
    #: How strangers find the bot there.
    found_by: str

    @property
    def risk(self) -> str:
        return (
            f"{self.setting} is empty, so anyone who finds the bot ({self.found_by}) can use "
            "it and spend your API key"
        )

    @property
    def fix(self) -> str:
        return (
            f"Set {self.setting} to the ids allowed to use it; "
            f"{GUEST_BUDGET_SETTING} bounds what everyone else may spend a day."
        )

    @property
    def warning(self) -> str:
        """The one line `parley run` logs."""
        return f"{self.name}: {self.risk}. {self.fix}"


def open_platforms(settings: Settings) -> list[OpenPlatform]:
    """Each platform with a token and an empty access list, Telegram first."""
    found: list[OpenPlatform] = []
    if settings.telegram_bot_token is not None and not settings.telegram_allowed_ids:
        found.append(
            OpenPlatform("Telegram", "TELEGRAM_ALLOWED_IDS", "Telegram bots are found by username")
        )
    if settings.discord_bot_token is not None and not settings.discord_allowed_ids:
        found.append(
            OpenPlatform(
                "Discord",
                "DISCORD_ALLOWED_IDS",
                "in any server it is in, or by a DM from anyone who shares one",
            )
        )
    return found
