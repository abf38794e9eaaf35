"""The `parley` command line itself: its version, its help, and what a bare command prints."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from bots.cli import _parser
from tests.cli_support import run_parley

COMMANDS = ("run", "chat", "doctor", "providers", "usage", "history")


def _parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """`parser` and every subcommand's parser under it, by their full names."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_command_describes_itself_and_each_of_its_options() -> None:
    parsers = dict(_parsers(_parser()))
    assert set(parsers) == {
        "parley",
        *(f"parley {name}" for name in COMMANDS),
        "parley history list",
        "parley history export",
        "parley history copy",
    }
    for name, parser in parsers.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help, f"{name}: {action.dest} has no help"
    export_help = parsers["parley history export"].format_help()
    assert "(default: markdown)" in export_help
    assert "as `parley history list` shows it" in export_help


async def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    finished = await run_parley("--version", cwd=tmp_path)
    assert (finished.code, finished.out) == (0, f"parley {version('parley')}\n")


async def test_a_bare_command_prints_its_help_and_exits_2(tmp_path: Path) -> None:
    bare = await run_parley(cwd=tmp_path)
    assert bare.code == 2 and bare.err == ""
    assert bare.out.startswith("usage: parley [-h] [--version] COMMAND ...")
    for name in COMMANDS:
        assert f"\n    {name} " in bare.out
    history = await run_parley("history", cwd=tmp_path)
    assert history.code == 2 and history.err == ""
    assert "\n    list " in history.out and "\n    export " in history.out
