"""`Client` and `AsyncClient`: g4f's client API over Parley's providers.

The client is policy (which provider, stop strings, response objects, usage); providers are
transports that yield text. The sync `Client` runs the async core on one background event loop
thread, so it works the same from plain scripts and from inside a running loop (a notebook, an
async app), where `asyncio.run` would refuse.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, Generic, Literal, TypeVar, overload

import httpx

from . import errors, image_api
from .config import CoreSettings
from .content import attach_images, chars_tokens, content_chars, g4f_images
from .models import ContextWindow, Model, model_name
from .providers.base import provider_name
from .providers.fallback import IterListProvider
from .providers.openai_compatible import OpenAICompatible
from .providers.registry import ProviderRegistry, current_registry, resolve_provider
from .reasoning import ThinkSplitter
from .stop import StopFilter, normalize_stop
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageToolCall,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    FinishReason,
    Function,
    ImagesResponse,
    ProviderInfo,
    Reasoning,
    ResponseId,
    Usage,
    new_completion_id,
)

_T = TypeVar("_T")
_ChatT = TypeVar("_ChatT")


def _normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """A fresh list of fresh dicts: the caller's list is never modified."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not messages:
        raise errors.InvalidRequestError(
            "messages is empty: pass at least one {'role', 'content'} message."
        )
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or not _has_content(message):
            raise errors.InvalidRequestError(
                f"messages[{index}] must be a dict with 'role' and 'content', got {message!r:.80}"
            )
        normalized.append(dict(message))
    return normalized


def _has_content(message: dict[str, Any]) -> bool:
    """OpenAI lets an assistant message that calls tools leave its content out."""
    return "content" in message or bool(message.get("tool_calls"))


def gather_tool_calls(
    pieces: list[ChoiceDeltaToolCall],
) -> list[ChatCompletionMessageToolCall] | None:
    """The whole calls of an answer from its streamed pieces, in the order of their `index`.

    The arguments are concatenated per index, as they were split; the id, type and name are
    the first the pieces gave (servers send them once, some repeat them on every piece).
    """
    if not pieces:
        return None
    calls: dict[int, tuple[list[str | None], list[str]]] = {}
    for piece in pieces:
        head, arguments = calls.setdefault(piece.index, ([None, None, None], []))
        function = piece.function
        for slot, value in enumerate(
            (piece.id, piece.type, function.name if function is not None else None)
        ):
            if head[slot] is None and value:
                head[slot] = value
        if function is not None and function.arguments:
            arguments.append(function.arguments)
    return [
        ChatCompletionMessageToolCall(
            ident or f"call_{index}", Function(name or "", "".join(arguments)), kind or "function"
        )
        for index, ((ident, kind, name), arguments) in sorted(calls.items())
    ]


def estimate_usage(messages: list[dict[str, Any]], completion_chars: int) -> Usage:
    """A guess for an answer whose server reported no usage (or nonsense), marked as one."""
    prompt_chars = sum(content_chars(m.get("content")) for m in messages)
    return Usage(
        chars_tokens(prompt_chars),
        chars_tokens(completion_chars),
        estimated=True,
    )


class _Request:
    """One resolved call: provider, model name, messages and the provider's arguments."""

    __slots__ = ("kwargs", "messages", "model", "provider", "stops", "whole")

    def __init__(
        self,
        owner: _ClientBase[Any],
        messages: Any,
        model: str | Model,
        provider: Any,
        stream: bool,
        kwargs: dict[str, Any],
    ) -> None:
        # g4f's image arguments become image parts of the last user message.
        images = g4f_images(
            kwargs.pop("image", None), kwargs.pop("image_name", None), kwargs.pop("images", None)
        )
        self.messages = attach_images(_normalize_messages(messages), images)
        registry = owner.registry
        # The default model comes from the settings routing follows: the registry's own.
        self.model = model_name(model, registry.settings if registry is not None else None)
        ignore_working = kwargs.pop("ignore_working", False)
        ignore_stream = kwargs.pop("ignore_stream", False)
        chosen = provider if provider is not None else owner.provider
        # The registry (and the providers file behind it) is read only when names need it.
        self.provider = (
            resolve_provider(chosen, registry)
            if chosen is not None
            else (registry or current_registry()).for_model(self.model)
        )
        name = provider_name(self.provider)
        # A fallback list raises its own RetryNoProviderError, naming what it holds.
        listed = isinstance(self.provider, IterListProvider)
        if not getattr(self.provider, "working", False) and not ignore_working and not listed:
            not_working = errors.ProviderNotWorkingError(
                f"Provider {name} is not working: set its API key or address, or pick another."
            )
            errors.name_provider(not_working, name)
            raise not_working
        self.stops = normalize_stop(kwargs.get("stop"))
        if stream and not getattr(self.provider, "supports_stream", False) and not ignore_stream:
            no_stream = errors.StreamNotSupportedError(
                f"Provider {name} cannot stream; pass ignore_stream=True to get the whole text as one chunk."
            )
            errors.name_provider(no_stream, name)
            raise no_stream
        if ignore_working:
            kwargs["ignore_working"] = True
        if owner.api_key and "api_key" not in kwargs:
            kwargs["api_key"] = owner.api_key
        if owner.timeout and kwargs.get("timeout") is None:
            kwargs["timeout"] = owner.timeout
        if owner.http_client is not None and kwargs.get("http_client") is None:
            kwargs["http_client"] = owner.http_client
        self.kwargs = {k: v for k, v in kwargs.items() if v is not None}
        streams = getattr(self.provider, "supports_stream", False)
        self.kwargs["stream"] = stream and streams
        #: A stream asked of a provider that cannot stream: deliver the whole text as one chunk.
        self.whole = stream and not streams


def _chunks(request: _Request) -> AsyncGenerator[ChatCompletionChunk, None]:
    return _one_chunk(request) if request.whole else _stream_chunks(request)


async def _one_chunk(request: _Request) -> AsyncGenerator[ChatCompletionChunk, None]:
    completion = await _complete(request)
    head = (completion.id, completion.created, completion.model, completion.provider)
    choice = completion.choices[0]
    if choice.message.reasoning_content:
        yield _thought(choice.message.reasoning_content, *head)
    if choice.message.content:
        yield ChatCompletionChunk(choice.message.content, None, *head)
    for index, call in enumerate(choice.message.tool_calls or ()):
        function = ChoiceDeltaToolCallFunction(call.function.name, call.function.arguments)
        piece = ChoiceDeltaToolCall(index, call.id, function, call.type)
        yield ChatCompletionChunk(None, None, *head, tool_calls=[piece])
    yield ChatCompletionChunk(None, choice.finish_reason, *head, completion.usage)


async def _stream_chunks(request: _Request) -> AsyncGenerator[ChatCompletionChunk, None]:
    """The chunk sequence: one per text piece, then a final chunk with finish_reason and usage.

    The id is the server's when its provider says it before the first text; the usage is the
    server's when it arrived before the answer ended (also when a stop string cut the text:
    the server billed what it generated), else an estimate marked `estimated`. A tool call
    piece gets a chunk of its own (`delta.tool_calls`); an answer that called a tool finishes
    with `tool_calls`, also from a server that said `stop` (OpenAI does, for a forced call).

    Thinking comes out apart, in chunks whose `delta.reasoning_content` holds it and whose
    `content` is None: a provider's `Reasoning` items, and `<think>` blocks in its text
    (`core.reasoning`). Stop strings apply to the answer only.
    """
    completion_id, created = new_completion_id()
    model = request.model
    provider = provider_name(request.provider)
    named = False
    usage: Usage | None = None
    finish = "stop"
    stopper = StopFilter(request.stops) if request.stops else None
    splitter = ThinkSplitter()
    produced = 0  # characters, for the usage estimate
    called = False
    items = request.provider.create_async_generator(model, request.messages, **request.kwargs)
    try:
        async for item in items:
            if item.__class__ is not str:
                if isinstance(item, Reasoning):
                    if item.token:
                        produced += len(item.token)
                        yield _thought(item.token, completion_id, created, model, provider)
                    continue
                if isinstance(item, ProviderInfo):
                    if not named:
                        provider, named = item.name, True
                    continue
                if isinstance(item, Usage):
                    usage = item
                    continue
                if isinstance(item, FinishReason):
                    finish = item.reason
                    continue
                if isinstance(item, ResponseId):
                    if not produced:  # every chunk of one answer carries the same id
                        completion_id = item.id
                    continue
                if isinstance(item, ChoiceDeltaToolCall):
                    called = True
                    produced += _call_chars(item)
                    yield ChatCompletionChunk(
                        None, None, completion_id, created, model, provider, tool_calls=[item]
                    )
                    continue
                if not isinstance(item, str):
                    continue
            if not item:
                continue
            stopped = False
            for thinking, text in splitter.feed(item):
                if thinking:
                    produced += len(text)
                    yield _thought(text, completion_id, created, model, provider)
                    continue
                if stopper is not None:
                    text = stopper.feed(text)
                    stopped = stopper.stopped
                produced += len(text)
                if text:
                    yield ChatCompletionChunk(text, None, completion_id, created, model, provider)
                if stopped:
                    finish = "stop"
                    break
            if stopped:
                break
        else:
            for thinking, text in splitter.flush():  # a tag begun at the very end was text
                if thinking:
                    produced += len(text)
                    yield _thought(text, completion_id, created, model, provider)
                    continue
                text = stopper.feed(text) if stopper is not None else text
                produced += len(text)
                if text:
                    yield ChatCompletionChunk(text, None, completion_id, created, model, provider)
            tail = stopper.flush() if stopper is not None and not stopper.stopped else ""
            if tail:
                produced += len(tail)
                yield ChatCompletionChunk(tail, None, completion_id, created, model, provider)
    except errors.ParleyError as exc:
        errors.name_provider(exc, provider)
        raise
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    if called and finish == "stop":
        finish = "tool_calls"
    yield ChatCompletionChunk(
        None,
        finish,
        id=completion_id,
        created=created,
        model=model,
        provider=provider,
        usage=usage or estimate_usage(request.messages, produced),
    )


def _call_chars(piece: ChoiceDeltaToolCall) -> int:
    """Characters a tool call piece adds to the answer, for the usage estimate."""
    function = piece.function
    if function is None:
        return 0
    return len(function.name or "") + len(function.arguments or "")


def _thought(
    text: str, completion_id: str, created: int, model: str, provider: str
) -> ChatCompletionChunk:
    """A chunk of the model's thinking: `delta.reasoning_content`, no `content`."""
    return ChatCompletionChunk(None, None, completion_id, created, model, provider, None, text)


async def _complete(request: _Request) -> ChatCompletion:
    """A whole answer; built from the same chunk sequence so both paths agree."""
    pieces: list[str] = []
    calls: list[ChoiceDeltaToolCall] = []
    thoughts: list[str] = []
    last: ChatCompletionChunk | None = None
    async for chunk in _stream_chunks(request):
        last = chunk
        delta = chunk.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
        elif delta.reasoning_content:
            thoughts.append(delta.reasoning_content)
        if delta.tool_calls:
            calls.extend(delta.tool_calls)
    # _stream_chunks always ends with the final chunk, and that one carries the usage.
    assert last is not None and last.usage is not None
    tool_calls = gather_tool_calls(calls)
    text = "".join(pieces)
    return ChatCompletion(
        # As OpenAI's: a message that only calls tools has no content, not an empty one.
        None if tool_calls and not text else text,
        last.choices[0].finish_reason or "stop",
        id=last.id,
        created=last.created,
        model=last.model,
        provider=last.provider,
        usage=last.usage,
        tool_calls=tool_calls,
        reasoning_content="".join(thoughts) or None,
    )


class AsyncStream:
    """What `AsyncClient...create(stream=True)` returns: iterate it, or await it for itself."""

    __slots__ = ("_iterator",)

    def __init__(self, iterator: AsyncGenerator[ChatCompletionChunk, None]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._iterator

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._iterator.__anext__()

    def __await__(self) -> Generator[Any, None, AsyncStream]:
        async def itself() -> AsyncStream:
            return self

        return itself().__await__()

    async def aclose(self) -> None:
        await self._iterator.aclose()


class _ClientBase(Generic[_ChatT]):
    """g4f's constructor arguments, plus `registry` and `http_client`.

    `registry`: the providers to route names through. Without one the client follows the
    process-wide settings (`get_settings()`), as g4f code expects; an app that holds its own
    settings uses `client_for(settings)`, whose registry carries them, so routing and the
    default model follow that object instead.

    `http_client`: an `httpx.AsyncClient` every request is sent through (as openai-python's
    `http_client=`): for a custom transport, certificates, or `httpx.MockTransport` in tests.
    It is handed to the provider with each call, like `api_key` and `timeout`; Parley never
    closes it. The sync `Client` takes an `httpx.AsyncClient` too, used on its background loop.
    Without one, providers use the shared pool, which honours the proxy variables.
    """

    def __init__(
        self,
        provider: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        *,
        registry: ProviderRegistry | None = None,
        http_client: httpx.AsyncClient | None = None,
        **_: Any,
    ) -> None:
        if provider is None and base_url:
            provider = OpenAICompatible("Custom", base_url, api_key)
        self.provider = provider
        self.registry = registry
        self.http_client = http_client
        self.api_key = api_key
        self.timeout = timeout
        self.chat = self._make_chat()

    def _make_chat(self) -> _ChatT:
        raise NotImplementedError

    def sees_images(self, model: str | Model = "") -> bool:
        """Whether `model` (`""`: the default) takes images through this client: the bots ask
        before sending a photo, and tell the user to pick a vision model when it cannot.
        See `ProviderRegistry.sees_images` for the order of the rules."""
        registry = self.registry or current_registry()
        name = model_name(model, registry.settings)
        provider = resolve_provider(self.provider, registry) if self.provider else None
        return registry.sees_images(name, provider)

    def context_window(self, model: str | Model = "") -> ContextWindow:
        """`model`'s (`""`: the default's) context window and output reserve, for the
        conversation service to fit the history in (`ProviderRegistry.context_window`)."""
        registry = self.registry or current_registry()
        return registry.context_window(model_name(model, registry.settings))


class AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    # The result's type follows `stream`, as in openai-python's `AsyncCompletions.create`.
    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, ChatCompletion]: ...

    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        *,
        stream: Literal[True],
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncStream: ...

    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: bool = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, ChatCompletion] | AsyncStream: ...

    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: bool = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, ChatCompletion] | AsyncStream:
        """`await` it for a `ChatCompletion`; with `stream=True`, iterate the chunks."""
        kwargs.update(max_tokens=max_tokens, stop=stop, temperature=temperature, timeout=timeout)
        request = _Request(self._client, messages, model, provider, stream, kwargs)
        if stream:
            return AsyncStream(_chunks(request))
        return _complete(request)


class _AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncCompletions(client)


class AsyncImages:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def generate(
        self,
        prompt: str,
        model: str | Model | None = None,
        provider: Any = None,
        response_format: image_api.ResponseFormat | None = None,
        n: int = 1,
        size: str | None = None,
        **kwargs: Any,
    ) -> ImagesResponse:
        """Draw `n` images of `prompt` (see `core.image_api`); other keyword arguments
        (`quality`, `style`, `timeout`, ...) go to the provider."""
        kwargs.update(n=n, size=size)
        return await image_api.generate(
            self._client, prompt, model, provider, response_format, kwargs
        )


class AsyncClient(_ClientBase[_AsyncChat]):
    """g4f's `AsyncClient`: `await client.chat.completions.create(...)`,
    `await client.images.generate(...)`."""

    def _make_chat(self) -> _AsyncChat:
        return _AsyncChat(self)

    @functools.cached_property
    def images(self) -> AsyncImages:
        return AsyncImages(self)


class _BackgroundLoop:
    """One daemon thread running an event loop, shared by every sync `Client`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="parley-sync", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop()).result()

    def iterate(self, make: Callable[[], AsyncGenerator[_T, None]]) -> Iterator[_T]:
        """Pull from an async generator created on the background loop by `make()`."""

        async def create() -> AsyncGenerator[_T, None]:
            return make()

        iterator = self.run(create())
        try:
            while True:
                try:
                    yield self.run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.run(iterator.aclose())


_background = _BackgroundLoop()


class Completions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ChatCompletion: ...

    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        *,
        stream: Literal[True],
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatCompletionChunk]: ...

    @overload
    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: bool = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ChatCompletion | Iterator[ChatCompletionChunk]: ...

    def create(
        self,
        messages: Any = None,
        model: str | Model = "",
        provider: Any = None,
        stream: bool = False,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ChatCompletion | Iterator[ChatCompletionChunk]:
        kwargs.update(max_tokens=max_tokens, stop=stop, temperature=temperature, timeout=timeout)
        request = _Request(self._client, messages, model, provider, stream, kwargs)
        if stream:
            return _background.iterate(lambda: _chunks(request))
        return _background.run(_complete(request))


class _Chat:
    def __init__(self, client: Client) -> None:
        self.completions = Completions(client)


class Images:
    def __init__(self, client: Client) -> None:
        self._client = client

    def generate(
        self,
        prompt: str,
        model: str | Model | None = None,
        provider: Any = None,
        response_format: image_api.ResponseFormat | None = None,
        n: int = 1,
        size: str | None = None,
        **kwargs: Any,
    ) -> ImagesResponse:
        """`AsyncImages.generate`, run on the sync clients' background loop."""
        kwargs.update(n=n, size=size)
        return _background.run(
            image_api.generate(self._client, prompt, model, provider, response_format, kwargs)
        )


class Client(_ClientBase[_Chat]):
    """g4f's sync `Client`; usable with or without a running event loop in this thread."""

    def _make_chat(self) -> _Chat:
        return _Chat(self)

    @functools.cached_property
    def images(self) -> Images:
        return Images(self)


def client_for(
    settings: CoreSettings, *, http_client: httpx.AsyncClient | None = None
) -> AsyncClient:
    """An `AsyncClient` that routes models by `settings` (the app's), not the process default."""
    return AsyncClient(registry=ProviderRegistry.from_settings(settings), http_client=http_client)
