"""Reasoning kept apart from the answer: the `<think>` splitter, and the client over real HTTP
against the fake server's OpenAI and Anthropic wires."""

from __future__ import annotations

import pytest

from core import AsyncClient
from core.providers import Anthropic, OpenAICompatible
from core.reasoning import ThinkSplitter
from core.types import ChatCompletionChunk
from tests.core_support import collect
from tests.fakes.llm_server import FakeLLMServer, Script


def split(*pieces: str) -> tuple[str, str]:
    """(reasoning, answer) of `pieces` fed one by one, then flushed."""
    splitter = ThinkSplitter()
    runs = [run for piece in pieces for run in splitter.feed(piece)] + splitter.flush()
    return (
        "".join(text for thinking, text in runs if thinking),
        "".join(text for thinking, text in runs if not thinking),
    )


# -- the splitter ------------------------------------------------------------------------------


def test_a_think_block_is_reasoning_and_the_rest_the_answer() -> None:
    assert split("<think>let me see</think>It is 4.") == ("let me see", "It is 4.")


@pytest.mark.parametrize("cut", range(1, len("<think>ab</think>cd")))
def test_a_tag_split_anywhere_across_pieces_is_still_a_tag(cut: int) -> None:
    text = "<think>ab</think>cd"
    assert split(text[:cut], text[cut:]) == ("ab", "cd")


def test_a_tag_split_over_many_one_character_pieces() -> None:
    assert split(*"x<think>why</think>yes") == ("why", "xyes")


def test_a_think_left_open_at_the_end_keeps_its_text_as_reasoning() -> None:
    assert split("<think>still going", " and going") == ("still going and going", "")


def test_a_half_tag_at_the_very_end_is_given_back_as_text() -> None:
    assert split("<think>a</think>b <thi") == ("a", "b <thi")
    assert split("<think>a </thi") == ("a </thi", "")


def test_nested_think_tags_stay_inside_the_reasoning() -> None:
    assert split("<think>a<think>b</think>c</think>d") == ("a<think>b</think>c", "d")


def test_unknown_tags_and_a_stray_close_are_answer_text() -> None:
    assert split("<thinking>x</thinking> <b>bold</b> a < b") == (
        "",
        "<thinking>x</thinking> <b>bold</b> a < b",
    )
    assert split("</think>plain") == ("", "</think>plain")


def test_plain_text_passes_as_it_came() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("hello") == [(False, "hello")]
    assert splitter.feed("") == []
    assert splitter.flush() == []


# -- over HTTP ---------------------------------------------------------------------------------


def reasoning_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.reasoning_content or "" for c in chunks)


def answer_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks)


def openai(server: FakeLLMServer) -> AsyncClient:
    return AsyncClient(OpenAICompatible("Fake", server.base_url, max_retries=0))


def anthropic(server: FakeLLMServer) -> AsyncClient:
    return AsyncClient(Anthropic("key", base_url=server.anthropic_base_url, max_retries=0))


@pytest.mark.parametrize("wire_name", ["reasoning_content", "reasoning"])
async def test_openai_reasoning_deltas_come_apart_from_the_answer(
    server: FakeLLMServer, wire_name: str
) -> None:
    server.enqueue(
        Script(reasoning=["Two", " and two"], reasoning_field=wire_name, pieces=["Four", "."])
    )
    chunks = await collect(openai(server).chat.completions.create("2+2?", model="m", stream=True))
    assert reasoning_of(chunks) == "Two and two"
    assert answer_of(chunks) == "Four."
    thinking = [c for c in chunks if c.choices[0].delta.reasoning_content]
    assert all(c.choices[0].delta.content is None for c in thinking)
    assert thinking[0].choices[0].delta.reasoning == "Two"  # g4f's name for the field
    assert thinking[0].choices[0].delta.model_dump()["reasoning_content"] == "Two"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("wire_name", ["reasoning_content", "reasoning"])
async def test_openai_whole_answer_carries_its_reasoning(
    server: FakeLLMServer, wire_name: str
) -> None:
    server.enqueue(Script(reasoning=["hm"], reasoning_field=wire_name, pieces=["ok"]))
    completion = await openai(server).chat.completions.create("q", model="m")
    message = completion.choices[0].message
    assert (message.content, message.reasoning_content) == ("ok", "hm")
    assert message.model_dump() == {
        "role": "assistant",
        "content": "ok",
        "reasoning_content": "hm",
    }


async def test_think_tags_in_the_content_over_http_are_reasoning(server: FakeLLMServer) -> None:
    server.enqueue(Script(pieces=["<th", "ink>plan", " it</th", "ink>\n\nDone", "."]))
    chunks = await collect(openai(server).chat.completions.create("q", model="m", stream=True))
    assert (reasoning_of(chunks), answer_of(chunks)) == ("plan it", "\n\nDone.")


async def test_reasoning_without_an_answer_ends_with_an_empty_answer(
    server: FakeLLMServer,
) -> None:
    server.enqueue(Script(pieces=["<think>only ", "thinking"]))
    completion = await openai(server).chat.completions.create("q", model="m")
    message = completion.choices[0].message
    assert (message.content, message.reasoning_content) == ("", "only thinking")
    assert completion.choices[0].finish_reason == "stop"


async def test_stop_strings_cut_the_answer_not_the_reasoning(server: FakeLLMServer) -> None:
    server.enqueue(Script(reasoning=["say END now"], pieces=["one ", "END", " two"]))
    completion = await openai(server).chat.completions.create("q", model="m", stop=["END"])
    message = completion.choices[0].message
    assert (message.content, message.reasoning_content) == ("one ", "say END now")


async def test_anthropic_thinking_blocks_come_apart_from_the_answer(
    server: FakeLLMServer,
) -> None:
    server.enqueue(Script(reasoning=["Let me", " count."], pieces=["Three", "."]))
    chunks = await collect(
        anthropic(server).chat.completions.create("q", model="claude-x", stream=True)
    )
    assert (reasoning_of(chunks), answer_of(chunks)) == ("Let me count.", "Three.")
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_anthropic_whole_answer_carries_its_thinking(server: FakeLLMServer) -> None:
    server.enqueue(Script(reasoning=["deep"], pieces=["shallow"]))
    completion = await anthropic(server).chat.completions.create(
        "q", model="claude-x", stream=False
    )
    message = completion.choices[0].message
    assert (message.content, message.reasoning_content) == ("shallow", "deep")


async def test_an_answer_without_reasoning_dumps_in_openai_shape(server: FakeLLMServer) -> None:
    server.enqueue(Script(pieces=["plain"]))
    completion = await openai(server).chat.completions.create("q", model="m")
    assert completion.choices[0].message.reasoning_content is None
    assert "reasoning_content" not in completion.choices[0].message.model_dump()
