"""The g4f programs Parley grew from (shared/seeds/) run unchanged but for their import lines.

Each runs as its own process, configured only through the environment, against the local
OpenAI-compatible server: exactly how an operator would run g4f code on Parley's core.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLMServer

SEEDS = Path(__file__).parent / "seeds"
SEED_TIMEOUT = 60


async def run_seed(name: str, server: FakeLLMServer, cwd: Path) -> str:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "DEFAULT_MODEL", "ANTHROPIC_", "PROVIDERS_FILE"))
    }
    env.update(
        OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-seed", DEFAULT_MODEL="seed-model"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SEEDS / name),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), SEED_TIMEOUT)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_seed_000_legacy_chat_completion(server, tmp_path):
    out = await run_seed("seed_000_chat_completion.py", server, tmp_path)
    assert "create: echo: write a poem about a tree\n" in out
    assert "create_async: echo: hello!\n" in out
    bodies = [r.json for r in server.requests]
    assert [b["model"] for b in bodies] == ["seed-model", "seed-model"]  # models.default
    assert bodies[0]["stream"] is True and "stream" not in bodies[1]
    assert server.requests[0].headers["authorization"] == "Bearer sk-seed"


@pytest.mark.parametrize(
    "seed", ["seed_001_text_completions_demo_async.py", "seed_004_gpt4o_async.py"]
)
async def test_seed_async_client_completion(seed, server, tmp_path):
    out = await run_seed(seed, server, tmp_path)
    assert out == "echo: how does a court case get to the Supreme Court?\n"
    (request,) = server.requests
    assert request.json["model"] == "gpt-4o"
    assert request.json["messages"][0] == {
        "role": "system",
        "content": "You are a helpful assistant.",
    }


async def test_seed_002_sync_and_async_streaming(server, tmp_path):
    out = await run_seed("seed_002_streaming.py", server, tmp_path)
    answer = "echo: \nHey! How can I recursively list all files in a directory in Python?\n"
    assert out == f"Synchronous Stream:\n{answer}\n\nAsynchronous Stream:\n{answer}"
    assert [r.json["stream"] for r in server.requests] == [True, True]


async def test_seed_003_every_working_provider_timed(server, tmp_path):
    out = await run_seed("seed_003_async_providers.py", server, tmp_path)
    lines = out.splitlines()
    assert "OpenAI: echo: Hello, are you GPT 3.5?" in lines
    assert any(line.startswith("create_async took ") for line in lines)
    assert any(line.startswith("run_async took ") for line in lines)
    assert lines[-1] == "Total: None"
    # Providers without keys are not working, so only the configured one was called.
    assert len(server.requests) == 1
