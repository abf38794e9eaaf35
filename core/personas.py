"""Personas: named presets of a system prompt, and optionally a model and a temperature, that a
chat picks with /persona. The operator writes them in a TOML file (`PERSONAS_FILE`):

    [[persona]]
    name = "pirate"                      # what /persona NAME and the buttons use
    description = "Answers like a pirate" # shown on the button or in Discord's list
    system_prompt = "You are a pirate. Answer in pirate speak."
    model = "gpt-4o"                     # optional: the operator's DEFAULT_MODEL otherwise
    temperature = 1.1                    # optional, 0 to 2: the provider's default otherwise

The file is read once, at start-up, and checked whole: a typo in a key, a prompt over the
`/system` cap, two personas of one name or a temperature out of range stops the start with a
line naming the file, the persona and the fix, rather than a bot that quietly ignores half of
a persona. The prompt and the model obey the same rules as `/system` and `/model`
(`core.chat_settings`), so a persona sets nothing a chat could not set itself.

Precedence, for each part of a reply's request: the chat's own `/system` or `/model`, then the
chosen persona's, then the operator's SYSTEM_PROMPT or DEFAULT_MODEL. A chat's own setting is
the more specific wish (someone typed it for this chat), so choosing a persona does not undo
it; the confirmation says when one is in the way (`persona_changed`), and `/model default` or
`/system default` lets the persona's show. The temperature comes only from the persona.

A persona removed from the file while chats still name it stops applying (the chat is back to
the operator's defaults), and /persona says so; nothing fails.

Names fit the platforms' menus: Telegram's callback data is at most 64 bytes and Discord's
choice values 100 characters, so a name is at most `MAX_NAME_CHARS` ASCII letters, digits,
`-` or `_`; a description is one line of at most `MAX_DESCRIPTION_CHARS` (a Discord choice's
name).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from core.chat_settings import DEFAULT_WORDS, parse_model, parse_system_prompt
from core.errors import InvalidSettingError, PersonasFileError
from core.text import has_controls

if TYPE_CHECKING:
    from storage import ChatConfig

MAX_NAME_CHARS = 32
MAX_DESCRIPTION_CHARS = 100
#: OpenAI's range; Anthropic takes 0 to 1 and says so if a persona asks for more.
MAX_TEMPERATURE = 2.0
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_NAME_CHARS - 1}}}")

NO_PERSONAS = "No personas are set up here (the operator's PERSONAS_FILE)."
CHOOSE = "Choose a persona:"


@dataclass(frozen=True, slots=True)
class Persona:
    """One persona as the file gave it, checked."""

    name: str
    description: str
    system_prompt: str
    #: None: the chat's or the operator's model.
    model: str | None = None
    #: None: the provider's default temperature.
    temperature: float | None = None


class Personas:
    """The personas of the file, in its order, found by name whatever its case."""

    def __init__(self, personas: tuple[Persona, ...] = ()) -> None:
        self._list = personas
        self._by_name = {persona.name.casefold(): persona for persona in personas}

    def __iter__(self) -> Iterator[Persona]:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def get(self, name: str | None) -> Persona | None:
        """The persona named `name` (any case); None for None or a name the file lacks."""
        return None if name is None else self._by_name.get(name.casefold())

    def matching(self, typed: str, limit: int) -> list[Persona]:
        """Up to `limit` personas whose name or description contains `typed` (autocomplete)."""
        needle = typed.strip().casefold()
        return [
            p
            for p in self._list
            if needle in p.name.casefold() or needle in p.description.casefold()
        ][:limit]


class _Entry(BaseModel):
    """One `[[persona]]` table as TOML gives it; the rules beyond the types are in `_checked`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    system_prompt: str
    model: str | None = None
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=MAX_TEMPERATURE)] | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persona: list[dict[str, Any]] = []


def _problem(error: ValidationError, model: type[BaseModel]) -> str:
    """The first of pydantic's complaints about `model` (a persona, or the file), in the
    operator's words."""
    first = error.errors()[0]
    # The field's name alone: pydantic adds the union member tried ("temperature.float").
    key = str(first["loc"][0]) if first["loc"] else "the file"
    if first["type"] == "extra_forbidden":
        return f"unknown key {key!r} (known: {', '.join(model.model_fields)})"
    if first["type"] == "missing":
        return f"{key!r} is missing"
    if key == "temperature":
        return f"temperature must be a number from 0 to {MAX_TEMPERATURE:g}"
    return f"{key}: {first['msg']}"


def _checked(entry: _Entry) -> Persona:
    """The persona, or ValueError saying which rule its entry breaks."""
    if not NAME.fullmatch(entry.name) or entry.name.lower() in DEFAULT_WORDS:
        raise ValueError(
            f"the name must be 1 to {MAX_NAME_CHARS} letters, digits, '-' or '_' (ASCII), "
            f"starting with a letter or digit, and not {' or '.join(sorted(DEFAULT_WORDS))}"
        )
    description = entry.description.strip()
    if not description or len(description) > MAX_DESCRIPTION_CHARS or has_controls(description):
        raise ValueError(
            f"the description must be one line of 1 to {MAX_DESCRIPTION_CHARS} characters"
        )
    try:
        prompt = parse_system_prompt(entry.system_prompt)
        model = None if entry.model is None else parse_model(entry.model)
    except InvalidSettingError as exc:
        raise ValueError(str(exc)) from None
    if prompt is None:
        raise ValueError("the system prompt cannot be 'default' or 'reset'")
    temperature = None if entry.temperature is None else float(entry.temperature)
    return Persona(entry.name, description, prompt, model, temperature)


def load_personas(path: Path) -> Personas:
    """The personas of the file at `path`, or `PersonasFileError` naming what to fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PersonasFileError(f"Cannot read the personas file {path}: {exc.strerror}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PersonasFileError(f"The personas file {path} is not valid TOML: {exc}.") from None
    try:
        tables = _File.model_validate(data).persona
    except ValidationError as exc:
        raise PersonasFileError(
            f"The personas file {path}: {_problem(exc, _File)}; it holds only [[persona]] tables."
        ) from None
    personas: list[Persona] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        where = f"persona #{number}" + (
            f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        )
        try:
            persona = _checked(_Entry.model_validate(table))
        except ValidationError as exc:
            raise PersonasFileError(
                f"The personas file {path}, {where}: {_problem(exc, _Entry)}."
            ) from None
        except ValueError as exc:
            raise PersonasFileError(f"The personas file {path}, {where}: {exc}") from None
        if persona.name.casefold() in seen:
            raise PersonasFileError(
                f"The personas file {path}, {where}: the name {persona.name!r} is used twice "
                "(names are compared ignoring case)."
            )
        seen.add(persona.name.casefold())
        personas.append(persona)
    return Personas(tuple(personas))


def personas_at(path: Path | None) -> Personas:
    """The personas of PERSONAS_FILE; none when it is unset."""
    return Personas() if path is None else load_personas(path)


def parse_persona(personas: Personas, argument: str) -> Persona | None:
    """The persona `/persona ARGUMENT` chooses; None for 'default' or 'reset' (no persona).

    Raises `InvalidSettingError` whose message is the answer for the user.
    """
    name = argument.strip()
    if name.lower() in DEFAULT_WORDS:
        return None
    persona = personas.get(name)
    if persona is None:
        known = ", ".join(p.name for p in personas)
        raise InvalidSettingError(
            f"There is no persona named {name[:MAX_NAME_CHARS]!r}. "
            + (f"Choose one of: {known}." if known else NO_PERSONAS)
        )
    return persona


def describe_persona(chosen: str | None, personas: Personas) -> str:
    """The answer to /persona without a name: the chat's persona, and the menu's title."""
    if chosen is None:
        current = "Persona: none (the operator's defaults)."
    elif (persona := personas.get(chosen)) is None:
        current = f"Persona: {chosen}, no longer in the personas file (the operator's defaults)."
    else:
        current = f"Persona: {persona.name}, {persona.description}."
    return f"{current}\n{CHOOSE if len(personas) else NO_PERSONAS}"


def persona_changed(persona: Persona | None, config: ChatConfig) -> str:
    """The answer once a persona is chosen, saying which of the chat's own settings still win."""
    if persona is None:
        return "Persona cleared: the operator's defaults apply."
    lines = [f"Persona set to {persona.name}."]
    if config.system_prompt is not None:
        lines.append(
            "This chat's own system prompt still applies; /system default uses the persona's."
        )
    if config.model is not None and persona.model is not None:
        lines.append(
            f"This chat's own model ({config.model}) still applies; /model default uses the "
            f"persona's ({persona.model})."
        )
    return "\n".join(lines)
