"""The AsyncClient's response shapes and request handling, over real HTTP to the fake server.

What is checked is the g4f/OpenAI surface a caller relies on: the fields of `ChatCompletion`,
how `messages`, `model` and `provider` may be given, and that the caller's data is left alone.
"""

from __future__ import annotations

import copy

import pytest

from core import AsyncClient, errors, models
from core.providers import OpenAICompatible
from tests.core_support import ScriptedProvider, collect, contents
from tests.fakes.llm_server import FakeLLMServer, Script

SERVER_USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


@pytest.fixture
def provider(server: FakeLLMServer) -> OpenAICompatible:
    return OpenAICompatible("Fake", server.base_url, api_key="sk-test", max_retries=0)


# -- ChatCompletion ----------------------------------------------------------------------------


async def test_completion_has_the_openai_shape(server, provider) -> None:
    server.enqueue(Script(pieces=["Hel", "lo"], usage=SERVER_USAGE))
    completion = await AsyncClient(provider).chat.completions.create(
        [{"role": "user", "content": "hi"}], model="fake-model"
    )
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > len("chatcmpl-")
    assert completion.object == "chat.completion"
    assert isinstance(completion.created, int) and completion.created > 1_600_000_000
    assert completion.model == "fake-model"
    assert completion.provider == "Fake"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello"
    assert choice.finish_reason == "stop"
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (11, 3, 14)
    dumped = completion.model_dump()
    assert dumped["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert dumped["usage"] == SERVER_USAGE
    assert dumped["object"] == "chat.completion" and dumped["id"] == completion.id
    assert not server.requests[0].json.get("stream")


async def test_max_tokens_reaching_its_limit_finishes_with_length(server, provider) -> None:
    server.enqueue(Script(pieces=["a", "b", "c"]))
    completion = await AsyncClient(provider).chat.completions.create(
        "hi", model="fake-model", max_tokens=2
    )
    assert completion.choices[0].message.content == "ab"
    assert completion.choices[0].finish_reason == "length"
    assert server.requests[0].json["max_tokens"] == 2


async def test_each_answer_gets_its_own_id(server, provider) -> None:
    client = AsyncClient(provider)
    first = await client.chat.completions.create("one")
    second = await client.chat.completions.create("two")
    assert first.id != second.id


# -- messages ----------------------------------------------------------------------------------


async def test_messages_may_be_positional_or_keyword(server, provider) -> None:
    client = AsyncClient(provider)
    by_position = await client.chat.completions.create([{"role": "user", "content": "left"}])
    by_keyword = await client.chat.completions.create(
        messages=[{"role": "user", "content": "right"}]
    )
    assert by_position.choices[0].message.content == "echo: left"
    assert by_keyword.choices[0].message.content == "echo: right"


async def test_a_string_is_one_user_message(server, provider) -> None:
    await AsyncClient(provider).chat.completions.create("just text")
    assert server.requests[0].json["messages"] == [{"role": "user", "content": "just text"}]


async def test_the_callers_messages_are_never_modified() -> None:
    class Meddling(ScriptedProvider):
        """A provider that edits what it was given, as a careless one might."""

        async def create_async_generator(self, model, messages, **kwargs):
            messages[0]["content"] = "changed"
            messages.append({"role": "assistant", "content": "added"})
            async for item in super().create_async_generator(model, messages, **kwargs):
                yield item

    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    before = copy.deepcopy(messages)
    client = AsyncClient(Meddling(["ok"]))
    await client.chat.completions.create(messages)
    await collect(client.chat.completions.create(messages, stream=True))
    assert messages == before


async def test_the_callers_messages_survive_a_real_request(server, provider) -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    before = copy.deepcopy(messages)
    await collect(AsyncClient(provider).chat.completions.create(messages, stream=True))
    assert messages == before
    assert server.requests[0].json["messages"] == before


@pytest.mark.parametrize("empty", [[], None, ()])
async def test_empty_messages_raise_a_typed_value_error(provider, empty) -> None:
    with pytest.raises(ValueError) as caught:
        await AsyncClient(provider).chat.completions.create(empty)
    assert isinstance(caught.value, errors.ParleyError)
    assert "messages" in str(caught.value)


async def test_a_message_without_role_raises_a_typed_value_error(provider) -> None:
    with pytest.raises(ValueError) as caught:
        await AsyncClient(provider).chat.completions.create([{"content": "no role"}])
    assert isinstance(caught.value, errors.ParleyError)
    assert "role" in str(caught.value)


# -- model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["", models.default, None], ids=["empty", "default", "omitted"])
async def test_no_model_means_the_configured_default(server, provider, monkeypatch, model) -> None:
    monkeypatch.setenv("DEFAULT_MODEL", "env-model")
    kwargs = {} if model is None else {"model": model}
    completion = await AsyncClient(provider).chat.completions.create("hi", **kwargs)
    assert server.requests[0].json["model"] == "env-model"
    assert completion.model == "env-model"


async def test_a_model_object_sends_its_name(server, provider) -> None:
    completion = await AsyncClient(provider).chat.completions.create("hi", model=models.gpt_4o)
    assert server.requests[0].json["model"] == "gpt-4o"
    assert completion.model == "gpt-4o"


# -- provider ----------------------------------------------------------------------------------


async def test_provider_given_as_an_object_per_call_overrides_the_clients() -> None:
    on_client = ScriptedProvider(["client"], name="OnClient")
    per_call = ScriptedProvider(["call"], name="PerCall")
    completion = await AsyncClient(on_client).chat.completions.create("hi", provider=per_call)
    assert completion.choices[0].message.content == "call"
    assert completion.provider == "PerCall"
    assert on_client.calls == []


async def test_provider_given_as_a_class() -> None:
    class ClassProvider:
        working = True
        supports_stream = True

        @classmethod
        async def create_async_generator(cls, model, messages, **kwargs):
            yield f"class answer to {messages[-1]['content']}"

    completion = await AsyncClient().chat.completions.create("q", provider=ClassProvider)
    assert completion.choices[0].message.content == "class answer to q"
    assert completion.provider == "ClassProvider"


@pytest.mark.parametrize("name", ["OpenAI", "openai", "OPENAI"])
async def test_provider_given_by_registered_name_case_insensitive(
    server, monkeypatch, name
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    completion = await AsyncClient().chat.completions.create("named", provider=name)
    assert completion.choices[0].message.content == "echo: named"
    assert completion.provider == "OpenAI"
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


async def test_provider_given_as_a_list_falls_back_in_order() -> None:
    down = ScriptedProvider([errors.ResponseStatusError("down")], name="Down")
    up = ScriptedProvider(["from up"], name="Up")
    completion = await AsyncClient().chat.completions.create("hi", provider=[down, up])
    assert completion.choices[0].message.content == "from up"
    assert completion.provider == "Up"
    assert len(down.calls) == 1


async def test_no_provider_uses_the_default_from_the_environment(server, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    completion = await AsyncClient().chat.completions.create("routed", model="any-model")
    assert completion.choices[0].message.content == "echo: routed"
    assert server.requests[0].json["model"] == "any-model"


async def test_base_url_alone_means_an_openai_compatible_provider(server) -> None:
    client = AsyncClient(base_url=server.base_url, api_key="sk-base")
    chunks = await collect(client.chat.completions.create("hi", model="m", stream=True))
    assert "".join(c for c in contents(chunks) if c) == "echo: hi"
    assert server.requests[0].headers["authorization"] == "Bearer sk-base"
    assert server.requests[0].path == "/v1/chat/completions"
