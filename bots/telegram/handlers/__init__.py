"""The bot's routers, one per module, in the order the dispatcher tries them."""

from __future__ import annotations

from aiogram import Router

from bots.telegram.handlers import chat, commands, drafts, errors, media, menus, other


def routers() -> list[Router]:
    """Commands first (so `/reset` is never taken for a question; /persona and the menus'
    buttons just after), then media (so a caption's `/ask` comes with its photo), then text
    questions, then the catch-all for what the bot cannot read, and the error handler; the
    drafts' stop button has its own update type."""
    return [m.make_router() for m in (commands, menus, media, chat, other, drafts, errors)]
