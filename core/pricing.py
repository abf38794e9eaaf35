"""What a model call costs: prices per model name or pattern, and the cost of one call.

Prices come from two places, the first that matches winning: the operator's providers file
(`[models."pattern"]` with `input`, `output`, `image`, `audio_minute`, `generated_image`, in
USD; see `core.providers.providers_file`), then `PRICE_PRESETS`, the list prices of well-known
models as their vendors published them on `PRICES_AS_OF`. A model served by a local server
(Ollama, LM Studio, llama.cpp, vLLM) costs nothing unless the file says otherwise: its bill is
the operator's electricity. A model nobody priced has no cost (None), which is logged once:
its tokens still count against token budgets, so an unpriced model is never a free pass.

Money leaves this module as integer micro-dollars (`cost_of`), so sums are exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import CoreSettings
from .providers.presets import LOCAL
from .providers.providers_file import load_providers_file
from .usage import MICROS_PER_DOLLAR

log = logging.getLogger(__name__)

#: When the presets below were copied from the vendors' pricing pages (OpenAI's "API pricing",
#: Anthropic's "Pricing", Google's "Gemini Developer API pricing"): standard tier, no batch or
#: cache discounts, Gemini's prices for prompts up to 200k tokens. They were not re-checked
#: since (nothing here reaches the network); an operator whose bill differs sets the file's.
PRICES_AS_OF = "2025-11-25"


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices in USD: per million prompt and completion tokens, per image sent to
    it (on top of the tokens the provider counts for it; usually 0), per minute of audio
    transcribed, per image drawn."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_image: float = 0.0
    per_audio_minute: float = 0.0
    per_generated_image: float = 0.0


FREE = Price()
#: The providers file's price keys, and the `Price` field each one sets.
FILE_KEYS = {
    "input": "input_per_mtok",
    "output": "output_per_mtok",
    "image": "per_image",
    "audio_minute": "per_audio_minute",
    "generated_image": "per_generated_image",
}


def _tokens(input_per_mtok: float, output_per_mtok: float) -> Price:
    return Price(input_per_mtok, output_per_mtok)


#: Model name patterns (fnmatch, matched in this order: a narrower pattern before a wider one)
#: and their list prices on `PRICES_AS_OF`. A name with a vendor prefix ("openai/gpt-4o", as
#: OpenRouter names them) is matched by what follows the last "/".
PRICE_PRESETS: tuple[tuple[str, Price], ...] = (
    # OpenAI
    ("gpt-4o-mini-transcribe*", Price(per_audio_minute=0.003)),
    ("gpt-4o-transcribe*", Price(per_audio_minute=0.006)),
    ("whisper-1", Price(per_audio_minute=0.006)),
    ("gpt-image-1-mini*", Price(per_generated_image=0.011)),
    # Medium quality, 1024x1024: the size and quality IMAGE_SIZE defaults to.
    ("gpt-image-1*", Price(per_generated_image=0.042)),
    ("dall-e-3", Price(per_generated_image=0.04)),
    ("dall-e-2", Price(per_generated_image=0.02)),
    ("gpt-4o-mini*", _tokens(0.15, 0.60)),
    ("gpt-4o*", _tokens(2.50, 10.00)),
    ("gpt-4.1-nano*", _tokens(0.10, 0.40)),
    ("gpt-4.1-mini*", _tokens(0.40, 1.60)),
    ("gpt-4.1*", _tokens(2.00, 8.00)),
    ("gpt-5-nano*", _tokens(0.05, 0.40)),
    ("gpt-5-mini*", _tokens(0.25, 2.00)),
    ("gpt-5*", _tokens(1.25, 10.00)),
    ("o4-mini*", _tokens(1.10, 4.40)),
    ("o3-mini*", _tokens(1.10, 4.40)),
    ("o3-pro*", _tokens(20.00, 80.00)),
    ("o3*", _tokens(2.00, 8.00)),
    ("o1-mini*", _tokens(1.10, 4.40)),
    ("o1*", _tokens(15.00, 60.00)),
    # Anthropic
    ("claude-3-haiku*", _tokens(0.25, 1.25)),
    ("claude-3-5-haiku*", _tokens(0.80, 4.00)),
    ("claude-haiku-4*", _tokens(1.00, 5.00)),
    ("claude-3-5-sonnet*", _tokens(3.00, 15.00)),
    ("claude-3-7-sonnet*", _tokens(3.00, 15.00)),
    ("claude-sonnet-4*", _tokens(3.00, 15.00)),
    ("claude-opus-4-5*", _tokens(5.00, 25.00)),
    ("claude-opus-4*", _tokens(15.00, 75.00)),
    ("claude-3-opus*", _tokens(15.00, 75.00)),
    # Google
    ("gemini-2.5-pro*", _tokens(1.25, 10.00)),
    ("gemini-2.5-flash-lite*", _tokens(0.10, 0.40)),
    ("gemini-2.5-flash*", _tokens(0.30, 2.50)),
    ("gemini-2.0-flash-lite*", _tokens(0.075, 0.30)),
    ("gemini-2.0-flash*", _tokens(0.10, 0.40)),
    ("gemini-1.5-pro*", _tokens(1.25, 5.00)),
    ("gemini-1.5-flash*", _tokens(0.075, 0.30)),
)
#: Providers that are the operator's own machine: their models cost nothing by default.
LOCAL_PROVIDERS = frozenset(preset.name.casefold() for preset in LOCAL)


def cost_of(
    price: Price,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    images_in: int = 0,
    audio_seconds: float = 0.0,
    images_out: int = 0,
) -> int:
    """What one call cost at `price`, in micro-dollars (a dollar per million tokens is one
    micro-dollar per token), rounded to the nearest."""
    dollars = (
        images_in * price.per_image
        + audio_seconds / 60 * price.per_audio_minute
        + images_out * price.per_generated_image
    )
    micros = (
        prompt_tokens * price.input_per_mtok
        + completion_tokens * price.output_per_mtok
        + dollars * MICROS_PER_DOLLAR
    )
    return round(micros)


class PriceTable:
    """The prices in force: the operator's, then the local servers' nothing, then the presets."""

    def __init__(
        self,
        declared: list[tuple[str, Price]] | None = None,
        presets: tuple[tuple[str, Price], ...] = PRICE_PRESETS,
    ) -> None:
        self._declared = list(declared or [])
        self._presets = presets
        #: Models already reported as unpriced, so the log says it once per model.
        self._unpriced: set[str] = set()

    @classmethod
    def from_settings(cls, settings: CoreSettings) -> PriceTable:
        """The presets and the providers file's prices (ProvidersFileError when it is bad)."""
        if settings.providers_file is None:
            return cls()
        loaded = load_providers_file(settings.providers_file, settings)
        declared = [
            (pattern, Price(**{FILE_KEYS[key]: usd for key, usd in prices.items()}))
            for pattern, prices in loaded.prices
        ]
        return cls(declared)

    def price(self, model: str | None, provider: str | None = None) -> Price | None:
        """`model`'s price as served by `provider` (its name, when known); None when nobody
        priced it."""
        if not model:
            return None
        bare = model.rsplit("/", 1)[-1]
        for pattern, price in self._declared:
            if fnmatchcase(model, pattern) or fnmatchcase(bare, pattern):
                return price
        if provider is not None and provider.casefold() in LOCAL_PROVIDERS:
            return FREE
        for pattern, price in self._presets:
            if fnmatchcase(bare.casefold(), pattern):
                return price
        if model not in self._unpriced:
            self._unpriced.add(model)
            log.warning(
                "No price for model %r: its use is recorded without a cost (token budgets still "
                'apply). Give it one in the providers file: [models."%s"] input = ..., '
                "output = ...",
                model,
                model,
            )
        return None
