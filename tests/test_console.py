"""`parley chat` driven through its input: in-process with injected streams, and as a real
process getting Ctrl-C, both against the fake LLM server over HTTP."""

from __future__ import annotations

import asyncio
import getpass
import io
import signal
from pathlib import Path

import pytest
from rich.console import Console

from bots.config import Settings
from bots.console import run_chat
from storage import MessageStatus, open_store
from tests.cli_support import start_parley
from tests.fakes.llm_server import FakeLLMServer, Script

#: Bound on anything a healthy session does at once (slow shared machine).
WAIT = 30.0


@pytest.fixture
def settings(server: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from the environment, as `parley chat` reads them, pointing at the fakes."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("DEFAULT_MODEL", "fake-model")
    monkeypatch.setenv("SYSTEM_PROMPT", "SYS")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/chat.db")
    return Settings()


async def session(settings: Settings, *lines: str) -> str:
    """Run one chat session over `lines` (then end of input); return what it printed."""
    output = io.StringIO()
    console = Console(file=output, width=200, color_system=None, force_terminal=False)
    stdin = io.StringIO("".join(f"{line}\n" for line in lines))
    await asyncio.wait_for(run_chat(settings, stdin=stdin, console=console), WAIT)
    return output.getvalue()


async def test_a_session_streams_replies_and_runs_every_command(
    settings: Settings, server: FakeLLMServer
) -> None:
    server.enqueue(Script(pieces=["Hi", " there", " :smile: [bold]x[/bold]"]))
    out = await session(
        settings,
        "/help",
        "hello [red]you[/red]",
        "/model",
        "/model fake-model-mini",
        "/system Be terse.",
        "/system",
        "/history",
        "/bogus",
        "",
    )
    assert "/reset" in out and "Ctrl-C stops a reply" in out
    # Model text is shown as it is: no markup, no emoji codes.
    assert "parley> Hi there :smile: [bold]x[/bold]\n" in out
    assert "Model: fake-model (default)" in out
    assert "Model set to fake-model-mini.\n" in out
    assert "System prompt:\nBe terse.\n" in out
    assert f"{getpass.getuser()}> hello [red]you[/red]" in out
    assert "fake-model> Hi there :smile: [bold]x[/bold]" in out
    assert "Unknown command /bogus. Type /help." in out
    assert server.requests[0].json["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "hello [red]you[/red]"},
    ]


async def test_history_and_settings_survive_a_restart(
    settings: Settings, server: FakeLLMServer
) -> None:
    server.enqueue(Script(pieces=["first answer"]), Script(pieces=["second answer"]))
    await session(settings, "/model fake-model-mini", "first question")
    out = await session(settings, "/history", "second question", "/reset", "/history")
    history, after_reset = out.split("Started a new conversation")
    assert "first question" in history and "first answer" in history
    assert "No messages in this conversation yet." in after_reset
    second = server.requests[1].json
    assert second["model"] == "fake-model-mini"
    assert [m["content"] for m in second["messages"]] == [
        "SYS",
        "first question",
        "first answer",
        "second question",
    ]


async def test_a_provider_error_is_shown_and_the_session_goes_on(
    settings: Settings, server: FakeLLMServer
) -> None:
    server.enqueue(Script(status=401, error_message="bad key"), Script(pieces=["fine now"]))
    out = await session(settings, "hi", "again", "/history")
    assert "The provider rejected the bot's API key." in out
    assert "fine now" in out
    assert "[error: MissingAuthError" in out


async def test_model_text_cannot_send_control_sequences_to_the_terminal(
    settings: Settings, server: FakeLLMServer
) -> None:
    # OSC 52 would set the clipboard, CSI 2J clear the screen, C1 CSI too on some terminals.
    hostile = ["safe ", "\x1b]52;c;ZXZpbA==\x1b\\", "\x1b[2J", "\x9b31m", "\x07\x00\rdone"]
    server.enqueue(Script(pieces=hostile))
    out = await session(settings, "hi \x1b[31m", "/history")
    assert "parley> safe ]52;c;ZXZpbA==\\[2J31mdone\n" in out
    for control in ("\x1b", "\x9b", "\x07", "\x00", "\r"):
        assert control not in out
    assert out.count("safe ]52;c;ZXZpbA==") == 2  # the reply, then the history


async def read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> str:
    """Read the child's output until `marker` appears; keeps everything in `seen`."""

    async def scan() -> str:
        while marker not in "".join(seen):
            chunk = await stream.read(4096)
            if not chunk:
                raise AssertionError(f"output ended before {marker!r}: {''.join(seen)!r}")
            seen.append(chunk.decode())
        return "".join(seen)

    return await asyncio.wait_for(scan(), WAIT)


async def start_chat_process(settings: Settings, cwd: Path) -> asyncio.subprocess.Process:
    """`parley chat` in a child, its output merged, its input a pipe the test writes to; it
    reads `settings` from the environment the fixture set."""
    return await start_parley("chat", cwd=cwd, with_stdin=True, merge_stderr=True)


async def test_ctrl_c_stops_the_reply_not_the_program(
    settings: Settings, server: FakeLLMServer, tmp_path: Path
) -> None:
    long_story = ["Once", " upon", " a", " time"] + [" and then"] * 200
    server.enqueue(Script(pieces=long_story, delay=0.05), Script(pieces=["still here"]))
    child = await start_chat_process(settings, tmp_path)
    assert child.stdin is not None and child.stdout is not None
    seen: list[str] = []
    try:
        await read_until(child.stdout, "you>", seen)
        child.stdin.write(b"tell me a story\n")
        await read_until(child.stdout, "Once upon", seen)
        child.send_signal(signal.SIGINT)
        await read_until(child.stdout, "(stopped)", seen)
        await server.wait_until_no_active_streams(WAIT)  # the HTTP stream was closed
        child.stdin.write(b"are you there?\n")
        await read_until(child.stdout, "still here", seen)
        child.stdin.close()  # end of input: a clean exit
        assert await asyncio.wait_for(child.wait(), WAIT) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    seen.append((await child.stdout.read()).decode())
    assert "Traceback" not in "".join(seen)

    store = await open_store(settings.database_url)
    try:
        [record] = await store.find_chats(getpass.getuser(), "console")
        [conversation] = await store.conversations(record.id)
        messages = await store.conversation_messages(conversation.id)
    finally:
        await store.close()
    story = messages[1]
    assert story.status is MessageStatus.INTERRUPTED
    assert story.text.startswith("Once upon") and len(story.text) < len("".join(long_story))
    assert [(m.text, m.status) for m in messages[::2]] == [
        ("tell me a story", "complete"),
        ("are you there?", "complete"),
    ]
    assert (messages[3].text, messages[3].status) == ("still here", "complete")


async def test_ctrl_c_at_the_prompt_leaves_cleanly(settings: Settings, tmp_path: Path) -> None:
    child = await start_chat_process(settings, tmp_path)
    assert child.stdout is not None
    try:
        await read_until(child.stdout, "you>", [])
        child.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(child.wait(), WAIT) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
