"""The inline keyboards of /persona and /model, and what their buttons' callback data says.

A button carries its choice in its callback data, which Telegram caps at 64 bytes: `persona:`
and a persona's name (at most 32 ASCII characters, `core.personas`), or `model:` and a model's
name. A model whose name does not fit is left off the keyboard (it is still set with
`/model NAME`): a number standing for it would name another model after the operator changed
the configuration under a keyboard already on screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from core.personas import Personas

#: Telegram's limit on a button's callback data.
MAX_CALLBACK_DATA_BYTES = 64
#: Buttons per keyboard: Telegram takes 100, a phone screen shows far fewer.
MAX_BUTTONS = 50
#: The value of the button that goes back to the operator's default (one of
#: `core.chat_settings.DEFAULT_WORDS`, so the settings' own rules clear with it).
DEFAULT = "default"


class Menu(Enum):
    """Which setting a button changes; its value is the callback data's prefix."""

    PERSONA = "persona"
    MODEL = "model"


@dataclass(frozen=True, slots=True)
class Choice:
    """What a pressed button asks for: `value` for the setting, 'default' to clear it."""

    menu: Menu
    value: str


def _data(menu: Menu, value: str) -> str | None:
    data = f"{menu.value}:{value}"
    return data if len(data.encode()) <= MAX_CALLBACK_DATA_BYTES else None


def parse(data: str | None) -> Choice | None:
    """The choice a button's callback data names; None for data no keyboard of ours sends."""
    prefix, _, value = (data or "").partition(":")
    menu = next((m for m in Menu if m.value == prefix), None)
    return None if menu is None or not value else Choice(menu, value)


def _keyboard(buttons: Iterable[tuple[str, str | None]]) -> InlineKeyboardMarkup:
    """One button a row (names and descriptions are too long to share a row)."""
    rows = [
        [InlineKeyboardButton(text=text, callback_data=data)]
        for text, data in buttons
        if data is not None
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows[:MAX_BUTTONS])


def persona_keyboard(personas: Personas, chosen: str | None) -> InlineKeyboardMarkup:
    """A button per persona (the chosen one ticked), then one for no persona."""
    buttons = [
        (
            f"{'✓ ' if chosen == p.name else ''}{p.name}: {p.description}",
            _data(Menu.PERSONA, p.name),
        )
        for p in personas
    ]
    buttons.append(("No persona", _data(Menu.PERSONA, DEFAULT)))
    return _keyboard(buttons)


def model_keyboard(models: Iterable[str], own: str | None) -> InlineKeyboardMarkup:
    """A button per offered model (the chat's own ticked), then the operator's default."""
    buttons = [(f"{'✓ ' if own == m else ''}{m}", _data(Menu.MODEL, m)) for m in models]
    buttons.append(("Default", _data(Menu.MODEL, DEFAULT)))
    return _keyboard(buttons)
