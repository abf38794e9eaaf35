"""The health check (seed 003's idea) and the `parley providers` commands that print it."""

from __future__ import annotations

from pathlib import Path

from core.health import check_providers
from core.providers import OpenAICompatible
from tests.cli_support import run_parley
from tests.fakes.llm_server import Script


async def test_check_times_every_working_provider_concurrently(server):
    server.enqueue(Script(pieces=["po", "ng"], delay=0.05, first_delay=0.3))
    fast = OpenAICompatible("Fast", server.base_url)
    down = OpenAICompatible("Down", "http://127.0.0.1:9/v1")
    idle = OpenAICompatible("Idle", server.base_url, needs_auth=True)  # no key: not working

    results = await check_providers([fast, down, idle], timeout=10)

    assert [r.provider for r in results] == ["Fast", "Down"]
    ok, failed = results
    assert ok.ok and ok.text == "pong" and ok.error is None
    assert ok.first_token is not None and 0.3 <= ok.first_token <= ok.total
    assert not failed.ok and "cannot reach" in failed.error and failed.first_token is None


async def test_check_reports_a_stall_as_a_failure_not_a_hang(server):
    server.enqueue(Script(pieces=["a", "b"], stall_after=1))
    (result,) = await check_providers([OpenAICompatible("Stall", server.base_url)], timeout=0.5)
    assert not result.ok and result.first_token is not None


async def run_cli(*args: str, base_url: str, **extra_env: str) -> tuple[int, str]:
    """`parley ARGS` against `base_url`, wide enough for a table row per line; stderr merged."""
    env = {"OPENAI_BASE_URL": base_url, "COLUMNS": "200", **extra_env}
    finished = await run_parley(*args, env=env, merge_stderr=True)
    return finished.code, finished.out


async def test_parley_providers_lists_presets_with_their_state(server):
    code, out = await run_cli("providers", base_url=server.base_url)
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "yes" in rows["OpenAI"]  # a local base URL needs no key
    assert "no" in rows["Anthropic"] and "claude-*" in rows["Anthropic"]
    assert {"Groq", "Ollama", "Gemini"} <= rows.keys()


async def test_parley_providers_check_succeeds_when_one_answers(server):
    code, out = await run_cli("providers", "check", base_url=server.base_url)
    assert code == 0, out
    assert "OpenAI" in out and "ok" in out and "echo:" in out


async def test_parley_providers_check_fails_when_none_answers():
    code, out = await run_cli("providers", "check", base_url="http://127.0.0.1:9/v1")
    assert code == 1
    assert "failed" in out and "cannot reach" in out


def markup_providers_file(tmp_path: Path, base_url: str) -> Path:
    """A provider whose name, address and models all look like rich markup."""
    path = tmp_path / "providers.toml"
    path.write_text(
        "[[provider]]\n"
        'name = "[bold]Mine[/]"\n'
        'type = "openai"\n'
        f'base_url = "{base_url}?x=[/]"\n'
        'models = ["m[/]*"]\n'
        'default_model = "m[/]x"\n'
    )
    return path


async def test_parley_providers_prints_markup_in_names_as_text(server, tmp_path):
    providers_file = markup_providers_file(tmp_path, server.base_url)
    code, out = await run_cli(
        "providers", base_url=server.base_url, PROVIDERS_FILE=str(providers_file)
    )
    assert code == 0, out
    assert "[bold]Mine[/]" in out and "?x=[/]" in out and "m[/]*" in out


async def test_parley_providers_check_prints_answers_and_errors_with_markup_as_text(
    server, tmp_path
):
    """An answer is the model's text and an error the server's: `[/]` in them is not rich
    markup, and a line break in an answer must not break the table's row. The file's
    provider has `?x=[/]` in its address, so it fails with an error that quotes its name."""
    server.enqueue(Script(pieces=["a [/] b", "\n\n", "c [red]d"]))
    providers_file = markup_providers_file(tmp_path, server.base_url)
    code, out = await run_cli(
        "providers", "check", base_url=server.base_url, PROVIDERS_FILE=str(providers_file)
    )
    assert code == 0, out
    assert "MarkupError" not in out and "Traceback" not in out
    (answered,) = [line for line in out.splitlines() if "OpenAI" in line]
    assert "ok" in answered and "a [/] b c [red]d" in answered
    (failed,) = [line for line in out.splitlines() if "Mine" in line]
    assert failed.count("[bold]Mine[/]") == 2 and "m[/]x" in failed and "404" in failed


async def test_parley_providers_keeps_terminal_controls_in_outside_text_off_the_screen(
    server, tmp_path
):
    """A model's answer, a provider's name and a server's error are outside text: ESC, OSC or
    CSI sequences in them would retitle the operator's terminal, clear it or set its
    clipboard (OSC 52), and BEL would ring. The tables show only their visible text."""
    server.enqueue(
        Script(
            pieces=["safe \x1b]0;pwned\x07", " \x1b[2J", "\x1b]52;c;aGk=\x07 text\x9b2J\x7f end"]
        )
    )
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        "[[provider]]\n"
        'name = "Mine\\u001b]0;x\\u0007"\n'
        'type = "openai"\n'
        f'base_url = "{server.base_url}?x=1"\n'
        'models = ["m\\u009b2J"]\n'
        'default_model = "m\\u009b2J"\n'
    )
    code, checked = await run_cli(
        "providers", "check", base_url=server.base_url, PROVIDERS_FILE=str(providers_file)
    )
    assert code == 0, checked
    code, listed = await run_cli(
        "providers", base_url=server.base_url, PROVIDERS_FILE=str(providers_file)
    )
    assert code == 0, listed
    for out in (checked, listed):
        assert not {"\x1b", "\x07", "\x7f", "\x9b"} & set(out), repr(out)
        (mine,) = [line for line in out.splitlines() if "Mine" in line]
        assert "Mine]0;x" in mine and "m2J" in mine
    (answered,) = [line for line in checked.splitlines() if "OpenAI" in line]
    assert "safe ]0;pwned [2J]52;c;aGk= text2J end" in answered
    (failed,) = [line for line in checked.splitlines() if "Mine" in line]
    assert failed.count("Mine]0;x") == 2 and "404" in failed  # the error quotes the name
