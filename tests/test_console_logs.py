"""`parley chat` keeps the conversation clean: stdout is the conversation, logs go to stderr
(warnings and worse) or to `--log-file`, and a failed reply is told once.

A real `parley chat` child against the fake LLM server, its stdout and stderr read apart.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import pytest

from core.conversation import ChatRef
from storage import open_store
from tests.cli_support import CLI_TIMEOUT, Finished, start_parley
from tests.fakes.llm_server import FakeLLMServer, Script

#: What the person reads when the provider refuses the key, and the provider's own words.
REFUSED = "The provider rejected the bot's API key."
DETAIL = "bad key"


def words(text: str) -> str:
    return " ".join(text.split())


async def chat(env: dict[str, str], cwd: Path, *args: str, lines: str) -> Finished:
    child = await start_parley("chat", *args, env=env, cwd=cwd, with_stdin=True)
    out, err = await asyncio.wait_for(child.communicate(lines.encode()), CLI_TIMEOUT)
    assert child.returncode is not None
    return Finished(child.returncode, out.decode(), err.decode())


@pytest.fixture
def env(server: FakeLLMServer, tmp_path: Path) -> dict[str, str]:
    server.enqueue(Script(status=401, error_message=DETAIL), Script(pieces=["fine now"]))
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "test-key",
        "DEFAULT_MODEL": "fake-model",
        "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db",
        "LOG_LEVEL": "DEBUG",  # the terminal still shows warnings and worse only
    }


async def test_a_provider_error_is_shown_once_and_logs_stay_off_the_conversation(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A reply a crash left streaming: recovering it at start logs a warning (not the chat's).
    store = await open_store(env["DATABASE_URL"])
    me = ChatRef("console", getpass.getuser())
    await store.start_reply(
        await store.add_user_message(me, author_id="me", author_name="me", text="earlier"), None
    )
    await store.close()

    finished = await chat(env, tmp_path, lines="hi\nagain\n")

    assert finished.code == 0, finished.err
    out, err = words(finished.out), words(finished.err)  # rich wraps lines at 80 in a pipe
    assert (out + err).count(REFUSED) == 1 and (out + err).count(DETAIL) == 1
    assert REFUSED in out and "fine now" in out
    # stderr: the recovery warning, nothing below WARNING, nothing about the chat's reply.
    assert "Marked 1 reply(ies) a previous run left unfinished" in err
    for quiet in ("DEBUG", "INFO", "Migrated database", "Reply in"):
        assert quiet not in err
    for log_word in ("WARNING", "Marked 1", "core.conversation", "Traceback"):
        assert log_word not in out


async def test_with_a_log_file_every_record_goes_there_and_none_to_the_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    log_file = tmp_path / "chat.log"
    finished = await chat(env, tmp_path, "--log-file", str(log_file), lines="hi\nagain\n")

    assert finished.code == 0, finished.err
    assert finished.err == ""
    assert words(finished.out).count(REFUSED) == 1 and "fine now" in finished.out
    log = log_file.read_text()
    assert " INFO storage.sqlite.store: Migrated database" in log  # LOG_LEVEL applies here
    assert " WARNING core.conversation.service: Reply in " in log and DETAIL in log
    assert "test-key" not in log


async def test_a_log_file_that_cannot_be_written_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    finished = await chat(env, tmp_path, "--log-file", str(tmp_path / "no" / "x.log"), lines="")
    assert finished.code == 2
    [line] = finished.err.splitlines()
    assert line.startswith("Cannot write the log file:") and "no/x.log" in line
