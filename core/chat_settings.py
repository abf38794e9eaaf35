"""What a chat may set with /model and /system, and what every surface answers: one rule.

Telegram, Discord and `parley chat` each used to check these their own way (Telegram took
"default" or "reset" and 4,000 characters, Discord only "default" and 6,000, the console
nothing). Now they hand the user's argument to the conversation service, which stores only
what `parse_model` / `parse_system_prompt` return, so a value breaking a rule cannot reach the
store from any side; and they answer with the texts below, so all three say the same.

The rules, in the order they apply:
- A blank argument asks for the current value (`asks_current`); the surfaces show it.
- Leading and trailing whitespace is trimmed; the trimmed text is what counts and is stored.
- `default` or `reset`, in any case, goes back to the operator's setting (stored as None).
- A model name has no control character (its own answer says so), then is one word of the
  characters providers use in names, at most 100 (gpt-4o-mini, meta-llama/llama-3.1-8b,
  llama3.1:8b, claude@2024). A name that passes may still be unknown to the provider, which
  says so on the next message.
- A system prompt has no control character but line feeds and tabs (C0, DEL and C1, as
  `core.text` defines them, are refused: a terminal obeys them when `parley chat` shows the
  prompt, and no model needs them), and at most 4,000 characters, so "/system " and the
  prompt fit one Telegram message.

The commands' flow is here too (`apply` with `MODEL` or `SYSTEM_PROMPT`): show the current
value, or store a new one through the service and confirm it or say why not. A surface keeps
what is its own: how it reads the argument, who may change a setting, how it sends the answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import InvalidSettingError
from core.text import LINE_FEED_AND_TAB, has_controls

if TYPE_CHECKING:  # the service imports this module's rule: only a type import goes back
    from core.config import CoreSettings
    from core.conversation import ChatRef, ConversationService
    from storage import ChatConfig

#: Arguments (compared case-insensitively) that put a setting back to the operator's default.
DEFAULT_WORDS = frozenset({"default", "reset"})
MAX_MODEL_NAME_CHARS = 100
MAX_SYSTEM_PROMPT_CHARS = 4000
#: One word of the characters providers use in model names.
MODEL_NAME = re.compile(rf"[\w.:/@+-]{{1,{MAX_MODEL_NAME_CHARS}}}")

MODEL_USAGE = (
    f"A model name is one word of at most {MAX_MODEL_NAME_CHARS} characters, e.g. "
    "gpt-4o-mini; 'default' goes back to the operator's model."
)
MODEL_CONTROL_CHARACTERS = (
    "A model name cannot contain control characters; it is one word, e.g. gpt-4o-mini."
)
SYSTEM_PROMPT_EMPTY = "A system prompt cannot be empty; 'default' goes back to the operator's."
SYSTEM_PROMPT_TOO_LONG = (
    f"That system prompt is too long: at most {MAX_SYSTEM_PROMPT_CHARS:,} characters."
)
SYSTEM_PROMPT_CONTROL_CHARACTERS = (
    "A system prompt cannot contain control characters (line feeds and tabs are fine)."
)


def asks_current(argument: str | None) -> bool:
    """True when the command carries no value: it asks what the setting is."""
    return not (argument or "").strip()


def _default_or(text: str) -> str | None:
    return None if text.lower() in DEFAULT_WORDS else text


def parse_model(argument: str) -> str | None:
    """The model name to store for `argument`, or None for the operator's default.

    Raises `InvalidSettingError` whose message is the answer for the user.
    """
    name = argument.strip()
    if has_controls(name):
        raise InvalidSettingError(MODEL_CONTROL_CHARACTERS)
    if not MODEL_NAME.fullmatch(name):
        raise InvalidSettingError(MODEL_USAGE)
    return _default_or(name)


def parse_system_prompt(argument: str) -> str | None:
    """The system prompt to store for `argument`, or None for the operator's default.

    Raises `InvalidSettingError` whose message is the answer for the user.
    """
    prompt = argument.strip()
    if not prompt:
        raise InvalidSettingError(SYSTEM_PROMPT_EMPTY)
    if has_controls(prompt, but=LINE_FEED_AND_TAB):
        raise InvalidSettingError(SYSTEM_PROMPT_CONTROL_CHARACTERS)
    if len(prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise InvalidSettingError(SYSTEM_PROMPT_TOO_LONG)
    return _default_or(prompt)


def describe_model(own: str | None, default: str) -> str:
    """The answer to /model without a name: the chat's model, or the operator's."""
    return f"Model: {own}" if own is not None else f"Model: {default} (default)"


def describe_system_prompt(own: str | None, default: str) -> str:
    """The answer to /system without a text; a surface may clip it to its message limit."""
    if own is not None:
        return f"System prompt:\n{own}"
    return f"System prompt (default):\n{default}"


def model_changed(stored: str | None, default: str) -> str:
    """The answer once /model NAME is stored (`stored` None: back to the operator's)."""
    return (
        f"Model set to {stored}."
        if stored is not None
        else f"Model back to the default ({default})."
    )


def system_prompt_changed(stored: str | None) -> str:
    """The answer once /system TEXT is stored (`stored` None: back to the operator's)."""
    return "System prompt set." if stored is not None else "System prompt back to the default."


@dataclass(frozen=True)
class Setting:
    """One setting a chat may change: where its value is, and what the answers say."""

    #: The chat's own value in its config (None: the operator's).
    own: Callable[[ChatConfig], str | None]
    #: The operator's value.
    default: Callable[[CoreSettings], str]
    #: Stores the user's argument through the service (which parses it); returns what it stored.
    store: Callable[[ConversationService, ChatRef, str], Awaitable[str | None]]
    #: The answer showing the value: (own, default) -> text.
    describe: Callable[[str | None, str], str]
    #: The answer once a value is stored: (stored, default) -> text.
    changed: Callable[[str | None, str], str]


MODEL = Setting(
    own=lambda config: config.model,
    default=lambda settings: settings.default_model,
    store=lambda service, chat, argument: service.set_model(chat, argument),
    describe=describe_model,
    changed=model_changed,
)
SYSTEM_PROMPT = Setting(
    own=lambda config: config.system_prompt,
    default=lambda settings: settings.system_prompt,
    store=lambda service, chat, argument: service.set_system_prompt(chat, argument),
    describe=describe_system_prompt,
    changed=lambda stored, _default: system_prompt_changed(stored),
)


@dataclass(frozen=True)
class Answer:
    """What a /model or /system command answers."""

    text: str
    #: The chat's setting changed. That concerns everyone in it, so Discord shows it to the
    #: channel; the other answers go only to whoever asked.
    changed: bool


async def apply(
    setting: Setting,
    service: ConversationService,
    chat: ChatRef,
    argument: str | None,
    settings: CoreSettings,
) -> Answer:
    """Run /model or /system with `argument` (None or blank: show the value) for `chat`.

    A surface checks that the user may change the setting before it calls this with a value
    (`asks_current` tells which); a refused value is an answer here, not an exception.
    """
    default = setting.default(settings)
    if argument is None or asks_current(argument):
        own = setting.own(await service.chat_config(chat))
        return Answer(setting.describe(own, default), changed=False)
    try:
        stored = await setting.store(service, chat, argument)
    except InvalidSettingError as exc:
        return Answer(str(exc), changed=False)
    return Answer(setting.changed(stored, default), changed=True)
