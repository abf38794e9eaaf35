"""The timed health check of seed 003: every working provider probed at once.

Operators run it (`parley providers check`) after editing keys or the providers file; it tells
which providers answer and how fast: time to first token, which is what a chat user feels,
and total time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import models
from .client import AsyncClient
from .errors import ParleyError
from .providers.base import provider_name
from .providers.registry import ProviderRegistry, current_registry

PROBE_PROMPT = "Reply with one short word."
PROBE_MAX_TOKENS = 16
PROBE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    provider: str
    model: str
    ok: bool
    first_token: float | None  # seconds from request to the first text
    total: float  # seconds from request to the end (or the failure)
    text: str = ""
    error: str | None = None


async def probe(provider: Any, *, prompt: str, timeout: float, default_model: str) -> ProbeResult:
    """Stream one short answer from `provider`, timing it; failures become results, not raises.

    The model is the provider's own default, else `default_model`."""
    model = getattr(provider, "default_model", None) or default_model
    name = provider_name(provider)
    started = time.perf_counter()
    first_token: float | None = None
    pieces: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            stream = AsyncClient(provider).chat.completions.create(
                prompt, model=model, stream=True, max_tokens=PROBE_MAX_TOKENS
            )
            async for chunk in stream:
                content = chunk.choices[0].delta.content
                if content:
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    pieces.append(content)
    except (ParleyError, TimeoutError) as exc:
        error = str(exc) or f"no answer within {timeout:g} s"
        return ProbeResult(
            name, model, False, first_token, time.perf_counter() - started, error=error
        )
    text = "".join(pieces).strip()
    total = time.perf_counter() - started
    if not text:
        return ProbeResult(name, model, False, first_token, total, error="empty answer")
    return ProbeResult(name, model, True, first_token, total, text=text)


async def check_providers(
    providers: Iterable[Any] | None = None,
    *,
    registry: ProviderRegistry | None = None,
    prompt: str = PROBE_PROMPT,
    timeout: float = PROBE_TIMEOUT,
) -> list[ProbeResult]:
    """Probe every working provider of `registry` (or those given) concurrently, in order.

    `registry` is the app's (`ProviderRegistry.from_settings(settings)`): its providers are
    probed, with its settings' default model for those that name none. Without one, the
    process-wide settings and registry serve, as for the other g4f-style entry points.
    """
    settings = registry.settings if registry is not None else None
    default_model = models.model_name(models.default, settings)
    if providers is None:
        providers = registry if registry is not None else current_registry()
    probes = [
        probe(p, prompt=prompt, timeout=timeout, default_model=default_model)
        for p in providers
        if p.working
    ]
    return list(await asyncio.gather(*probes))
