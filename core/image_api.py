"""g4f's image API: `client.images.generate(prompt, model=..., response_format=...)`.

The prompt goes to the provider the model is routed to, as a chat does (an explicit
`provider=` or the client's own wins), and that provider draws through its
`generate_images` (OpenAI-compatible servers: `POST /images/generations`). The answer is an
`ImagesResponse` in OpenAI's shape: `data[i].url` or `data[i].b64_json`. As in g4f,
`response_format` is the client's to honour, never sent: a URL is downloaded for
`b64_json`, data becomes a `data:` URL for `url`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

import httpx

from . import errors
from .content import sniff_media_type
from .models import Model
from .providers.base import provider_name
from .providers.http import shared_client
from .providers.registry import current_registry, resolve_provider
from .types import ImagesResponse

if TYPE_CHECKING:
    from .client import _ClientBase

ResponseFormat = Literal["url", "b64_json"]
#: Seconds to fetch a generated image the server answered with a URL.
IMAGE_DOWNLOAD_TIMEOUT = 60.0
#: g4f arguments that mean something to g4f's own transport and nothing to an API.
_G4F_ONLY = ("proxy", "ignore_stream")


async def generate(
    owner: _ClientBase[Any],
    prompt: str,
    model: str | Model | None,
    provider: Any,
    response_format: ResponseFormat | None,
    options: dict[str, Any],
) -> ImagesResponse:
    """One `images.generate` call, for the sync and async clients alike."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise errors.InvalidRequestError("images.generate needs a prompt: describe the image.")
    registry = owner.registry or current_registry()
    # No chat default here: an empty model is the image server's own default.
    name = model.name if isinstance(model, Model) else (model or "")
    chosen = provider if provider is not None else owner.provider
    target = (
        resolve_provider(chosen, registry)
        if chosen is not None
        else (registry.for_model(name) if name else registry.default)
    )
    label = provider_name(target)
    ignore_working = bool(options.pop("ignore_working", False))
    if not getattr(target, "working", False) and not ignore_working:
        not_working = errors.ProviderNotWorkingError(
            f"Provider {label} is not working: set its API key or address, or pick another."
        )
        errors.name_provider(not_working, label)
        raise not_working
    draw = getattr(target, "generate_images", None)
    if draw is None:
        raise errors.ConfigurationError(
            f"Provider {label} does not draw images: route the image model to an "
            "OpenAI-compatible provider."
        )
    for ignored in _G4F_ONLY:
        options.pop(ignored, None)
    # As g4f: the form of the answer is the client's to make. Servers differ (OpenAI's
    # gpt-image models refuse the parameter and answer data; others answer URLs).
    options.pop("response_format", None)
    if ignore_working:
        options["ignore_working"] = True
    if owner.api_key and "api_key" not in options:
        options["api_key"] = owner.api_key
    if owner.timeout and options.get("timeout") is None:
        options["timeout"] = owner.timeout
    if owner.http_client is not None and options.get("http_client") is None:
        options["http_client"] = owner.http_client
    try:
        images: ImagesResponse = await draw(prompt, name, **options)
        if response_format == "b64_json":
            http = owner.http_client or shared_client()
            for image in images.data:
                if image.b64_json is None and image.url is not None:
                    image.b64_json = await _download_b64(label, image.url, http)
    except errors.ParleyError as exc:
        errors.name_provider(exc, label)
        raise
    if response_format == "url":
        # A server that only returns data (OpenAI's gpt-image-1) still gives a usable URL.
        for image in images.data:
            if image.url is None and image.b64_json is not None:
                image.url = data_url_of(image.b64_json)
    return images


async def _download_b64(provider: str, url: str, http: httpx.AsyncClient) -> str:
    """The image at `url` (where the server put it), base64-encoded, as g4f's client does for
    `response_format="b64_json"`."""
    try:
        response = await http.get(url, timeout=IMAGE_DOWNLOAD_TIMEOUT)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise errors.ProviderConnectionError(
            f"{provider}: could not fetch the generated image from {url}: {exc}"
        ) from exc
    return base64.b64encode(response.content).decode("ascii")


def data_url_of(b64_json: str) -> str:
    """A `data:` URL of a generated image's base64 data, typed by its first bytes."""
    try:
        media_type = sniff_media_type(base64.b64decode(b64_json[:24]))
    except (binascii.Error, errors.InvalidRequestError):
        media_type = "image/png"  # OpenAI's default output format
    return f"data:{media_type};base64,{b64_json}"
