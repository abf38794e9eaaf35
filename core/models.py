"""Model names, as g4f's `models` module offers them.

Parley does not keep a catalogue of every model a provider serves: a model is its name, and
the name is routed to a provider (see `core.providers.registry`). Which names can see images
is the one thing known of a model by its name alone: `VISION_PRESETS` below, which the
providers file can extend or overrule (`ProviderRegistry.sees_images`). `models.default` follows the
`DEFAULT_MODEL` setting at the moment it is read, so code written as
`model=models.default` picks up the operator's choice. Printed, it shows the process-wide
setting; passed to a client built from other settings (`client_for(settings)`), it means
those settings' default, as `""` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import CoreSettings, get_settings


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    base_provider: str = ""

    def __str__(self) -> str:
        return self.name


class _DefaultModel(Model):
    """The configured default; its name is looked up on every read."""

    def __init__(self) -> None:
        pass

    @property
    def name(self) -> str:
        return get_settings().default_model

    @property
    def base_provider(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"models.default({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


default: Model = _DefaultModel()

gpt_4o = Model("gpt-4o", "OpenAI")
gpt_4o_mini = Model("gpt-4o-mini", "OpenAI")
gpt_4 = Model("gpt-4", "OpenAI")
claude_sonnet = Model("claude-sonnet-4-5", "Anthropic")
llama_3_1_8b = Model("llama3.1:8b", "Ollama")


def model_name(model: str | Model | None, settings: CoreSettings | None = None) -> str:
    """The name to send to a provider; `""`, `None` and `models.default` mean the default model
    of `settings` (a registry's, a client's), or of the process-wide settings when none is given."""
    if model is None or model == "" or model is default:
        return (settings if settings is not None else get_settings()).default_model
    return model.name if isinstance(model, Model) else str(model)


#: Name patterns (fnmatch, matched case-insensitively against the name after any
#: "vendor/" prefix, so OpenRouter's "openai/gpt-4o" and Ollama's "llava:13b" match too) of
#: well-known models that take images. Precise on purpose: a pattern covers a family only as
#: far as all its chat models see (Gemma 3's 1B and 270M do not, its 4B to 27B do; OpenAI's
#: o1-mini and o3-mini do not, o1, o3 and o4-mini do). Anything else is declared in the
#: providers file (`vision = true`), which also overrules a preset with `vision = false`.
VISION_PRESETS: tuple[str, ...] = (
    # OpenAI
    *("gpt-4o", "gpt-4o-*", "gpt-4.1*", "gpt-5*", "gpt-4-turbo*", "gpt-4-vision*"),
    *("o1", "o1-20*", "o1-pro*", "o3", "o3-20*", "o3-pro*", "o4-mini*"),
    # Anthropic: Claude 3, 3.5, 3.7, and the 4 names (claude-sonnet-4-5, claude-opus-4-1)
    *("claude-3*", "claude-*-4*"),
    "gemini-*",  # Google
    "pixtral*",  # Mistral
    # Open models, as Ollama and Hugging Face (so OpenRouter, vLLM, LM Studio) name them
    *("llava*", "bakllava*", "minicpm-v*", "moondream*"),
    *("llama3.2-vision*", "llama-3.2-*vision*", "llama4*", "llama-4-*"),
    *("qwen2.5vl*", "qwen2.5-vl*", "qwen2-vl*", "qwen-vl*", "qwen3-vl*"),
    *("granite3.2-vision*", "granite-vision*"),
    *("gemma3", "gemma3:latest", "gemma3:4b*", "gemma3:12b*", "gemma3:27b*"),
    *("gemma-3-4b*", "gemma-3-12b*", "gemma-3-27b*"),
)
#: Names a `VISION_PRESETS` pattern covers that do not take images: checked first.
TEXT_ONLY_PRESETS: tuple[str, ...] = (
    # OpenAI's audio, realtime and speech models share gpt-4o's name and see nothing.
    *("gpt-4o*-audio*", "gpt-4o*-realtime*", "gpt-4o*-transcribe*", "gpt-4o*-tts*"),
    # Gemini 1.0 Pro (gemini-pro) read text only; embedding models read no chat at all.
    *("gemini-pro", "gemini-1.0-pro", "gemini-1.0-pro-0*", "gemini-1.0-pro-latest"),
    "*embedding*",
)


def _names(model: str | Model) -> tuple[str, str]:
    """The folded name, and its part after any "vendor/" prefix."""
    name = (model.name if isinstance(model, Model) else model).casefold()
    return name, name.rsplit("/", 1)[-1]


def declared_vision(model: str | Model, declared: Sequence[tuple[str, bool]]) -> bool | None:
    """What the first of `declared` (pattern, takes images) pairs matching `model` says, or
    None when none matches. Patterns are fnmatch, case-insensitive, as the presets'."""
    name, short = _names(model)
    for pattern, vision in declared:
        folded = pattern.casefold()
        if fnmatchcase(name, folded) or fnmatchcase(short, folded):
            return vision
    return None


def sees_images(model: str | Model) -> bool:
    """Whether `model` is one `VISION_PRESETS` knows to take images (and `TEXT_ONLY_PRESETS`
    does not take back)."""
    short = _names(model)[1]
    if any(fnmatchcase(short, pattern) for pattern in TEXT_ONLY_PRESETS):
        return False
    return any(fnmatchcase(short, pattern) for pattern in VISION_PRESETS)


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """How many tokens `model` takes in one request (`window`: prompt and answer together),
    and how many of them are kept free for the answer (`reserve`): the context sent is at most
    `window - reserve` tokens, so the model never runs out of room mid-answer."""

    window: int
    reserve: int

    @property
    def prompt_budget(self) -> int:
        """Tokens the prompt (system prompt, summary, history) may take."""
        return max(self.window - self.reserve, 1)


#: What a model with no known window gets: 8k is what the smallest chat models still in use
#: (Llama 3.0, Gemma 2, GPT-4) take, so a context within it fits nearly anything.
DEFAULT_CONTEXT = ContextWindow(8_192, 1_024)

#: (pattern, window, reserve) of well-known models, first match wins (so a narrow name comes
#: before its family), matched as `VISION_PRESETS` are. Windows are the vendors' documented
#: ones as known without network access here; reserves are room for a long chat answer (and a
#: reasoning model's thinking), not the model's largest output. Open models are given their
#: native window: a server may run them with less (Ollama's default `num_ctx` is a few
#: thousand tokens), which the operator declares in the providers file.
CONTEXT_PRESETS: tuple[tuple[str, int, int], ...] = (
    # OpenAI
    ("gpt-5*", 400_000, 32_768),
    ("gpt-4.1*", 1_047_576, 32_768),
    ("gpt-4o*", 128_000, 16_384),
    ("gpt-4-turbo*", 128_000, 4_096),
    ("gpt-4-32k*", 32_768, 4_096),
    ("gpt-4", 8_192, 1_024),
    ("gpt-4-0*", 8_192, 1_024),
    ("gpt-3.5-turbo*", 16_385, 4_096),
    *((pattern, 128_000, 32_768) for pattern in ("o1-mini*", "o1-preview*")),
    *((pattern, 200_000, 32_768) for pattern in ("o1*", "o3*", "o4*")),
    # Anthropic: Claude 3, 3.5, 3.7 and the 4 names (claude-sonnet-4-5, claude-opus-4-1)
    *((pattern, 200_000, 8_192) for pattern in ("claude-3*", "claude-*-4*", "claude-*")),
    # Google
    ("gemini-1.5-pro*", 2_097_152, 8_192),
    *((pattern, 32_760, 2_048) for pattern in ("gemini-pro", "gemini-1.0-pro*")),
    ("gemini-*", 1_048_576, 8_192),
    *((pattern, 32_768, 2_048) for pattern in ("gemma3:1b*", "gemma3:270m*", "gemma-3-1b*")),
    ("gemma-3-270m*", 32_768, 2_048),
    *((pattern, 131_072, 4_096) for pattern in ("gemma3*", "gemma-3-*")),
    *((pattern, 8_192, 1_024) for pattern in ("gemma2*", "gemma-2-*", "gemma:*", "gemma-*")),
    # Meta: Llama 3.1 to 3.3 take 128k, Llama 3.0 8k
    *((pattern, 131_072, 4_096) for pattern in ("llama3.[123]*", "llama-3.[123]-*")),
    *((pattern, 8_192, 1_024) for pattern in ("llama3", "llama3:*", "llama-3-*", "llama3-*")),
    # Alibaba: Qwen 2.5 and 3 natively take 32k (more only with YaRN scaling switched on)
    *((pattern, 32_768, 4_096) for pattern in ("qwen2.5*", "qwen-2.5*", "qwen3*", "qwen-3*")),
    # Mistral
    *((pattern, 256_000, 8_192) for pattern in ("codestral*", "devstral*")),
    *(
        (pattern, 131_072, 4_096)
        for pattern in (
            *("mistral-large*", "mistral-medium*", "mistral-small-3*", "mistral-small3*"),
            *("mistral-nemo*", "open-mistral-nemo*", "ministral*", "pixtral*", "magistral*"),
        )
    ),
    *((pattern, 32_768, 4_096) for pattern in ("mistral*", "open-mistral*", "mixtral*")),
)


def declared_context(
    model: str | Model, declared: Sequence[tuple[str, int | None, int | None]]
) -> tuple[int | None, int | None]:
    """(window, reserve) the first of `declared` (pattern, window, reserve) entries matching
    `model` gives, each None when it gives none; (None, None) when none matches."""
    name, short = _names(model)
    for pattern, window, reserve in declared:
        folded = pattern.casefold()
        if fnmatchcase(name, folded) or fnmatchcase(short, folded):
            return window, reserve
    return None, None


def context_window(
    model: str | Model, declared: Sequence[tuple[str, int | None, int | None]] = ()
) -> ContextWindow:
    """`model`'s window and output reserve: what the providers file declares for it, the rest
    from `CONTEXT_PRESETS`, else `DEFAULT_CONTEXT`. A reserve that would leave the prompt less
    than half the window (a small declared window under a preset's reserve) is cut to half."""
    window, reserve = declared_context(model, declared)
    if window is None or reserve is None:
        short = _names(model)[1]
        preset = next(
            (ContextWindow(w, r) for p, w, r in CONTEXT_PRESETS if fnmatchcase(short, p)),
            DEFAULT_CONTEXT,
        )
        window = preset.window if window is None else window
        reserve = preset.reserve if reserve is None else reserve
    return ContextWindow(window, min(reserve, window // 2))
