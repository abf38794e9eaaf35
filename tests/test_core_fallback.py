"""Fallback (`IterListProvider`, `RetryProvider`): skip before the first text, never splice after.

Scripted providers make each rule exact; one test runs the rule over real HTTP as well.
"""

from __future__ import annotations

import pytest

from core import AsyncClient, errors
from core.errors import EmptyResponseError
from core.providers import IterListProvider, OpenAICompatible, RetryProvider
from core.providers.http import shared_client
from core.types import FinishReason, Usage
from tests.core_support import (
    PROMPT,
    FlakyProvider,
    ScriptedProvider,
    closed_port,
    collect,
    collect_until_error,
    contents,
)
from tests.fakes.llm_server import Script


def text_of(chunks: list) -> str:
    return "".join(c for c in contents(chunks) if c)


async def stream(provider, **kwargs) -> list:
    return await collect(AsyncClient(provider).chat.completions.create("hi", stream=True, **kwargs))


async def test_a_failing_provider_is_skipped_for_the_next() -> None:
    broken = ScriptedProvider([errors.ResponseStatusError("HTTP 500")], name="Broken")
    good = ScriptedProvider(["fine", " answer"], name="Good")
    chunks = await stream(IterListProvider([broken, good]))
    assert text_of(chunks) == "fine answer"
    assert {chunk.provider for chunk in chunks} == {"Good"}
    assert len(broken.calls) == 1 and len(good.calls) == 1


@pytest.mark.parametrize("items", [[], [None, ""]], ids=["nothing", "only-empty-pieces"])
async def test_a_provider_that_yields_nothing_is_skipped(items) -> None:
    empty = ScriptedProvider(items, name="Empty")
    good = ScriptedProvider(["answer"], name="Good")
    chunks = await stream(IterListProvider([empty, good]))
    assert contents(chunks) == ["answer", None]
    assert chunks[-1].provider == "Good"


async def test_a_skipped_providers_usage_and_finish_reason_are_not_used() -> None:
    """Only one provider's output is used: that includes what it said about its answer."""
    empty = ScriptedProvider([Usage(100, 100), FinishReason("length")], name="Empty")
    good = ScriptedProvider(["answer", Usage(1, 2)], name="Good")
    (chunk, final) = await stream(IterListProvider([empty, good]))
    assert chunk.choices[0].delta.content == "answer"
    assert final.choices[0].finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (1, 2)


async def test_a_failure_after_content_is_raised_not_spliced() -> None:
    error = errors.ProviderConnectionError("cut mid-answer")
    first = ScriptedProvider(["Hel", "lo", error], name="First")
    second = ScriptedProvider(["Other", " text"], name="Second")
    client = AsyncClient(IterListProvider([first, second]))
    chunks, raised = await collect_until_error(client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["Hel", "lo"]
    assert raised is error
    assert second.calls == []
    with pytest.raises(errors.ProviderConnectionError):
        await AsyncClient(IterListProvider([first, second])).chat.completions.create("hi")
    assert second.calls == []


async def test_only_the_first_answering_providers_output_is_used() -> None:
    first = ScriptedProvider(["one"], name="First")
    second = ScriptedProvider(["two"], name="Second")
    completion = await AsyncClient([first, second]).chat.completions.create("hi")
    assert completion.choices[0].message.content == "one"
    assert completion.provider == "First"
    assert second.calls == []


async def test_a_single_failure_is_re_raised_as_it_was() -> None:
    error = errors.RateLimitError("slow down", retry_after=3.0)
    only = ScriptedProvider([error], name="Only")
    off = ScriptedProvider(["never"], name="Off", working=False)
    with pytest.raises(errors.RateLimitError) as caught:
        await stream(IterListProvider([only, off]))
    assert caught.value is error
    assert off.calls == []


async def test_a_single_foreign_exception_keeps_its_type() -> None:
    error = LookupError("odd failure")
    with pytest.raises(LookupError) as caught:
        await AsyncClient([ScriptedProvider([error])]).chat.completions.create("hi")
    assert caught.value is error


async def test_several_failures_raise_retry_provider_error_naming_each() -> None:
    a = ScriptedProvider([errors.MissingAuthError("key rejected")], name="Alpha")
    b = ScriptedProvider([errors.TimeoutError("too slow")], name="Beta")
    c = ScriptedProvider([], name="Gamma")
    with pytest.raises(errors.RetryProviderError) as caught:
        await stream(IterListProvider([a, b, c]))
    message = str(caught.value)
    for expected in (
        "Alpha",
        "MissingAuthError",
        "key rejected",
        "Beta",
        "TimeoutError",
        "too slow",
        "Gamma",
        "empty",
    ):
        assert expected in message
    assert set(caught.value.errors) == {"Alpha", "Beta"}  # an empty answer is not an error
    assert isinstance(caught.value.errors["Beta"], errors.TimeoutError)


@pytest.mark.parametrize("failing_at", [0, 1, 2])
async def test_one_error_among_empty_answers_is_re_raised_as_it_was(failing_at) -> None:
    """g4f's rule: the others returning nothing does not turn the one error into a list."""
    error = errors.RateLimitError("slow down", retry_after=3.0)
    providers = [ScriptedProvider([], name=f"Empty{i}") for i in range(2)]
    providers.insert(failing_at, ScriptedProvider([error], name="Limited"))
    with pytest.raises(errors.RateLimitError) as caught:
        await stream(IterListProvider(providers))
    assert caught.value is error
    assert all(len(p.calls) == 1 for p in providers)


async def test_only_empty_answers_raise_a_clear_empty_response_error() -> None:
    providers = [ScriptedProvider([], name="Quiet"), ScriptedProvider([None, ""], name="Blank")]
    with pytest.raises(EmptyResponseError) as caught:
        await AsyncClient(IterListProvider(providers)).chat.completions.create("hi")
    assert str(caught.value) == "Every provider returned an empty answer: Quiet, Blank."
    assert "empty answer" in errors.describe(caught.value)
    with pytest.raises(EmptyResponseError, match=r"^Quiet returned an empty answer\.$"):
        await stream(RetryProvider([providers[0]], max_retries=2))


async def test_non_working_providers_are_not_tried() -> None:
    off = ScriptedProvider(["never"], name="Off", working=False)
    on = ScriptedProvider(["yes"], name="On")
    chunks = await stream(IterListProvider([off, on]))
    assert text_of(chunks) == "yes"
    assert off.calls == []


async def test_retry_provider_retries_each_provider_up_to_max_retries() -> None:
    flaky = FlakyProvider(errors.ResponseStatusError("busy"), 2, ["third time"], name="Flaky")
    chunks = await stream(RetryProvider([flaky], max_retries=3))
    assert text_of(chunks) == "third time"
    assert len(flaky.calls) == 3
    assert chunks[-1].provider == "Flaky"


async def test_retry_provider_gives_up_after_max_retries_then_tries_the_next() -> None:
    error = errors.ResponseStatusError("busy")
    flaky = FlakyProvider(error, 5, ["never"], name="Flaky")
    backup = ScriptedProvider(["backup"], name="Backup")
    chunks = await stream(RetryProvider([flaky, backup], max_retries=2))
    assert text_of(chunks) == "backup"
    assert len(flaky.calls) == 2
    with pytest.raises(errors.ResponseStatusError) as caught:
        await stream(RetryProvider([FlakyProvider(error, 5, ["never"])], max_retries=2))
    assert caught.value is error


async def test_nested_fallback_names_the_innermost_provider() -> None:
    inner = IterListProvider(
        [
            ScriptedProvider([ValueError("x")], name="InnerBad"),
            ScriptedProvider(["hi"], name="InnerGood"),
        ]
    )
    outer = IterListProvider([ScriptedProvider([], name="OuterEmpty"), inner])
    chunks = await stream(outer)
    assert [chunk.provider for chunk in chunks] == ["InnerGood", "InnerGood"]


# -- over real HTTP ----------------------------------------------------------------------------


async def test_http_fallback_skips_unreachable_and_failing_servers(server) -> None:
    unreachable = OpenAICompatible("Unreachable", f"http://127.0.0.1:{closed_port()}/v1")
    failing = OpenAICompatible("Failing", server.base_url, max_retries=0)
    working = OpenAICompatible("Working", server.base_url, max_retries=0)
    server.enqueue(Script(status=500, error_message="boom"), Script(pieces=["from", " working"]))
    client = AsyncClient([unreachable, failing, working], timeout=PROMPT)
    chunks = await collect(client.chat.completions.create("hi", stream=True))
    assert text_of(chunks) == "from working"
    assert {chunk.provider for chunk in chunks} == {"Working"}
    assert len(server.requests) == 2


async def test_http_fallback_re_raises_the_one_server_error_among_empty_answers(server) -> None:
    failing = OpenAICompatible("Failing", server.base_url, max_retries=0)
    silent = OpenAICompatible("Silent", server.base_url, max_retries=0)
    server.enqueue(Script(pieces=[]), Script(status=503, error_message="overloaded"))
    client = AsyncClient([silent, failing], timeout=PROMPT)
    with pytest.raises(errors.ResponseStatusError) as caught:
        await collect(client.chat.completions.create("hi", stream=True))
    assert type(caught.value) is errors.ResponseStatusError and caught.value.status_code == 503
    assert "overloaded" in str(caught.value)
    assert len(server.requests) == 2


async def test_http_fallback_raises_a_cut_stream_without_trying_the_next(server) -> None:
    first = OpenAICompatible("First", server.base_url, max_retries=0)
    second = OpenAICompatible("Second", server.base_url, max_retries=0)
    server.enqueue(Script(pieces=["part", "ial", " never"], cut_after=2), Script(pieces=["no"]))
    client = AsyncClient([first, second])
    chunks, raised = await collect_until_error(client.chat.completions.create("hi", stream=True))
    assert contents(chunks) == ["part", "ial"]
    assert isinstance(raised, errors.ProviderConnectionError)
    assert len(server.requests) == 1
    await server.wait_until_no_active_streams(PROMPT)


async def test_a_fallback_list_with_nothing_working_names_what_it_holds() -> None:
    idle = [
        ScriptedProvider(["x"], name="Idle", working=False),
        ScriptedProvider(name="Off", working=False),
    ]
    with pytest.raises(errors.RetryNoProviderError) as caught:
        await AsyncClient().chat.completions.create("hi", provider=idle)
    assert "Idle" in str(caught.value) and "Off" in str(caught.value)
    assert idle[0].calls == []


async def test_closing_a_fallback_stream_frees_its_connection_at_once(server) -> None:
    """The outer close reaches the HTTP response in the same await, not a loop tick later
    through the async-generator finaliser, so a stopped reply never holds a pooled connection."""
    server.enqueue(Script(pieces=["first", " never"], stall_after=1))
    provider = IterListProvider([OpenAICompatible("Stalling", server.base_url, max_retries=0)])
    stream = AsyncClient(provider, timeout=PROMPT).chat.completions.create("hi", stream=True)
    first = await anext(stream)
    assert first.choices[0].delta.content == "first"
    pool = shared_client()._transport._pool  # type: ignore[attr-defined]
    assert len(pool._requests) == 1  # the stream holds its connection while it is read
    assert [c for c in pool.connections if not c.is_idle()]

    await stream.aclose()

    # Released: no request holds the pool, and the half-read connection is closed, not busy.
    assert pool._requests == []
    assert [c for c in pool.connections if not c.is_idle()] == []
    await server.wait_until_no_active_streams(PROMPT)
