"""Prices: the presets, the providers file's `[models]` prices, and the cost of a call."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core import errors
from core.config import CoreSettings
from core.pricing import FREE, PRICE_PRESETS, PRICES_AS_OF, Price, PriceTable, cost_of
from core.providers.registry import ProviderRegistry


def table_from(tmp_path: Path, text: str) -> PriceTable:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return PriceTable.from_settings(CoreSettings(_env_file=None, providers_file=path))


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4o-2024-08-06", 2.50, 10.00),
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4o-mini-2024-07-18", 0.15, 0.60),
        ("GPT-4.1-nano", 0.10, 0.40),
        ("gpt-4.1", 2.00, 8.00),
        ("gpt-5-mini", 0.25, 2.00),
        ("gpt-5", 1.25, 10.00),
        ("o3", 2.00, 8.00),
        ("o4-mini", 1.10, 4.40),
        ("claude-3-5-sonnet-latest", 3.00, 15.00),
        ("claude-sonnet-4-5", 3.00, 15.00),
        ("claude-3-5-haiku-20241022", 0.80, 4.00),
        ("claude-opus-4-1", 15.00, 75.00),
        ("claude-opus-4-5-20251101", 5.00, 25.00),
        ("gemini-2.5-flash", 0.30, 2.50),
        ("gemini-2.5-flash-lite", 0.10, 0.40),
        ("openai/gpt-4o", 2.50, 10.00),  # OpenRouter's vendor prefix
    ],
)
def test_presets_price_well_known_models(model: str, input_price: float, output_price: float):
    price = PriceTable().price(model)
    assert price is not None
    assert (price.input_per_mtok, price.output_per_mtok) == (input_price, output_price)


def test_presets_price_audio_and_drawn_images_per_unit() -> None:
    table = PriceTable()
    assert table.price("whisper-1") == Price(per_audio_minute=0.006)
    assert table.price("dall-e-3") == Price(per_generated_image=0.04)
    assert table.price("gpt-image-1") == Price(per_generated_image=0.042)


def test_the_presets_are_dated_and_every_price_is_sane() -> None:
    assert PRICES_AS_OF[:2] == "20" and len(PRICES_AS_OF) == 10
    for pattern, price in PRICE_PRESETS:
        assert all(0 <= value < 100 for value in vars_of(price)), pattern


def vars_of(price: Price) -> list[float]:
    return [getattr(price, name) for name in Price.__slots__]


def test_a_local_server_costs_nothing_and_an_unknown_model_is_logged_once(caplog) -> None:
    table = PriceTable()
    assert table.price("llama3.1:8b", "Ollama") is FREE
    assert table.price("gpt-4o", "llamacpp") is FREE  # whatever a local server calls its model
    with caplog.at_level(logging.WARNING, logger="core.pricing"):
        assert table.price("llama3.1:8b", "Groq") is None
        assert table.price("llama3.1:8b") is None
    assert len([r for r in caplog.records if "No price for model 'llama3.1:8b'" in r.message]) == 1
    assert table.price(None) is None


def test_the_file_prices_come_first_and_a_missing_key_is_zero(tmp_path: Path) -> None:
    table = table_from(
        tmp_path,
        '[models."gpt-4o*"]\ninput = 1.5\noutput = 6\n'
        '[models."house-*"]\nvision = true\ninput = 0\ngenerated_image = 0.5\n'
        '[models."llava*"]\nvision = true\n',
    )
    assert table.price("gpt-4o-mini") == Price(1.5, 6.0)  # the file's wider pattern wins
    assert table.price("house-model", "Ollama") == Price(per_generated_image=0.5)
    assert table.price("claude-sonnet-4") == Price(3.0, 15.0)  # the presets still apply
    assert table.price("llava:13b") is None  # vision alone sets no price


def test_a_pattern_that_matches_nothing_known_is_the_operators_business(tmp_path: Path) -> None:
    assert table_from(tmp_path, '[models."no-such-*"]\ninput = 2\n').price("no-such-x") == Price(
        2.0
    )


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('[models."x"]\ninput = -1\n', r"\[models.'x'\] input must be from 0 to 10,000 dollars"),
        ('[models."x"]\noutput = "cheap"\n', r"\[models.'x'\] output must be a number"),
        ('[models."x"]\nimage = true\n', r"\[models.'x'\] image must be a number"),
        ('[models."x"]\naudio_minute = 1e12\n', "audio_minute must be from 0 to 10,000"),
        ('[models."x"]\ngenerated_image = nan\n', "generated_image must be from 0"),
        ('[models."x"]\ninput = inf\n', "input must be from 0"),
        ('[models."x"]\nprice = 1\n', "unknown key 'price'"),
    ],
)
def test_a_bad_price_is_a_clear_error_naming_the_key(tmp_path: Path, text: str, detail: str):
    with pytest.raises(errors.ProvidersFileError, match=detail):
        table_from(tmp_path, text)
    # The registry reads the same file at start-up, so a bad price stops the bot there too.
    with pytest.raises(errors.ProvidersFileError, match=detail):
        ProviderRegistry.from_settings(
            CoreSettings(_env_file=None, providers_file=tmp_path / "providers.toml")
        )


def test_the_cost_of_a_call_is_in_micro_dollars() -> None:
    gpt_4o = Price(2.50, 10.00)
    assert cost_of(gpt_4o, prompt_tokens=1_000, completion_tokens=500) == 7_500  # $0.0075
    assert cost_of(Price(per_audio_minute=0.006), audio_seconds=90) == 9_000
    assert cost_of(Price(per_generated_image=0.042), images_out=2) == 84_000
    assert (
        cost_of(Price(0.15, per_image=0.001), prompt_tokens=3, images_in=2) == 2_000
    )  # 0.45 rounds
    assert cost_of(FREE, prompt_tokens=10**9, completion_tokens=10**9) == 0
