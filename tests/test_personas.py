"""The personas file (`core.personas`): what a good one gives, and the line each bad one stops
the start with; the /persona rule and answers; the models /model offers (`core.model_menu`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import CoreSettings
from core.errors import InvalidSettingError, PersonasFileError
from core.model_menu import matching, offered_models
from core.personas import (
    NO_PERSONAS,
    Persona,
    Personas,
    describe_persona,
    load_personas,
    parse_persona,
    persona_changed,
    personas_at,
)
from core.providers.registry import ProviderRegistry
from storage import ChatConfig

GOOD = """
[[persona]]
name = "pirate"
description = "Answers like a pirate"
system_prompt = "You are a pirate."
model = "gpt-4o"
temperature = 1.2

[[persona]]
name = "Terse"
description = "  One line answers  "
system_prompt = "Answer in one line."
temperature = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "personas.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_gives_its_personas_in_order(tmp_path: Path) -> None:
    personas = load_personas(write(tmp_path, GOOD))
    assert list(personas) == [
        Persona("pirate", "Answers like a pirate", "You are a pirate.", "gpt-4o", 1.2),
        Persona("Terse", "One line answers", "Answer in one line.", None, 0.0),
    ]
    assert personas.get("TERSE") is personas.get("terse") is list(personas)[1]
    assert personas.get("nobody") is None and personas.get(None) is None
    assert [p.name for p in personas.matching("LINE", 25)] == ["Terse"]


def test_no_file_no_personas_and_an_empty_file_none_either(tmp_path: Path) -> None:
    assert len(personas_at(None)) == 0
    assert len(load_personas(write(tmp_path, ""))) == 0


PERSONA = '[[persona]]\nname = "x"\ndescription = "d"\nsystem_prompt = "p"\n'


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (PERSONA + "temprature = 1\n", "persona #1 ('x'): unknown key 'temprature'"),
        ('[persona]\nname = "x"\n', "persona: Input should be a valid list"),
        ("[[personas]]\n", "unknown key 'personas' (known: persona)"),
        ('[[persona]]\nname = "x"\nsystem_prompt = "p"\n', "'description' is missing"),
        (PERSONA.replace('"p"', '"' + "y" * 100_000 + '"'), "too long: at most 4,000"),
        (PERSONA + PERSONA.replace('"x"', '"X"'), "persona #2 ('X'): the name 'X' is used twice"),
        (PERSONA + "temperature = 2.5\n", "temperature must be a number from 0 to 2"),
        (PERSONA + "temperature = -1\n", "temperature must be a number from 0 to 2"),
        (PERSONA + 'temperature = "hot"\n', "temperature must be a number from 0 to 2"),
        (PERSONA + "temperature = true\n", "temperature must be a number from 0 to 2"),
        (PERSONA.replace('"x"', '"two words"'), "the name must be 1 to 32 letters"),
        (PERSONA.replace('"x"', '"' + "n" * 33 + '"'), "the name must be 1 to 32 letters"),
        (PERSONA.replace('"x"', '"default"'), "and not default or reset"),
        (PERSONA.replace('"x"', '"pirâte"'), "(ASCII)"),
        (PERSONA.replace('"d"', '"' + "d" * 101 + '"'), "1 to 100 characters"),
        (PERSONA.replace('"d"', '"a\\u0007b"'), "one line of 1 to 100"),
        (PERSONA.replace('"p"', '"   "'), "A system prompt cannot be empty"),
        (PERSONA.replace('"p"', '"\\u001b[2J"'), "cannot contain control characters"),
        (PERSONA + 'model = "two words"\n', "A model name is one word"),
        ("[[persona]\n", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_with_a_line_naming_the_fix(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PersonasFileError) as caught:
        load_personas(path)
    assert says in str(caught.value)
    assert str(path) in str(caught.value)
    assert len(str(caught.value)) < 600  # the 100 KB prompt is not echoed back


def test_a_file_that_cannot_be_read_or_decoded_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PersonasFileError, match="Cannot read the personas file"):
        load_personas(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[persona]]\nname = "caf\xe9"\n')
    with pytest.raises(PersonasFileError, match="not valid TOML"):
        load_personas(path)


def test_the_persona_rule_and_answers(tmp_path: Path) -> None:
    personas = load_personas(write(tmp_path, GOOD))
    assert parse_persona(personas, " PIRATE ") is personas.get("pirate")
    assert parse_persona(personas, "Reset") is None
    with pytest.raises(
        InvalidSettingError, match=r"no persona named 'ghost'\. Choose one of: pirate, Terse\."
    ):
        parse_persona(personas, "ghost")
    with pytest.raises(InvalidSettingError, match=re.escape(NO_PERSONAS)):
        parse_persona(Personas(), "ghost")
    assert describe_persona(None, personas).startswith("Persona: none")
    assert describe_persona("pirate", personas).startswith(
        "Persona: pirate, Answers like a pirate."
    )
    assert "no longer in the personas file" in describe_persona("gone", personas)
    assert describe_persona(None, Personas()).endswith(NO_PERSONAS)
    pirate = personas.get("pirate")
    assert persona_changed(pirate, ChatConfig()) == "Persona set to pirate."
    said = persona_changed(pirate, ChatConfig(model="m", system_prompt="s"))
    assert "own system prompt still applies" in said and "own model (m) still applies" in said
    assert persona_changed(None, ChatConfig()).startswith("Persona cleared")


def test_the_offered_models_are_the_configured_ones(tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[provider]]\nname = "Local"\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'needs_auth = false\ndefault_model = "local-big"\nmodels = ["local-*"]\n'
        '[routes]\n"local-small" = "Local"\n"qwen-*" = "Local"\n',
        encoding="utf-8",
    )
    settings = CoreSettings(_env_file=None, default_model="fake-model", providers_file=providers)  # type: ignore[call-arg]
    personas = load_personas(write(tmp_path, GOOD))
    offered = offered_models(ProviderRegistry.from_settings(settings), personas)
    assert offered[0] == "fake-model"
    assert {"local-big", "local-small", "gpt-4o"} <= set(offered)
    assert not any("*" in name for name in offered)
    assert len(offered) == len(set(offered))
    assert matching(offered, "LOCAL", 1) == ["local-big"]
