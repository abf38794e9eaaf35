"""The `parley` command: run the bots, chat in the terminal, inspect providers and history.

Each subcommand imports what it needs when it runs, so `parley providers` does not load
aiogram and discord.py, and a broken optional part cannot stop the others.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bots.config import Settings
from bots.errors import REPORTED
from bots.logs import configure_logging
from core.providers import ProviderRegistry
from core.text import without_controls

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Longest answer or error shown in a cell of `parley providers check`.
CHECK_CELL_CHARS = 80

console = Console()
errors_console = Console(stderr=True)


def _outside(value: object, limit: int | None = None) -> Text:
    """A table cell for text Parley did not write (names, URLs, answers, server errors).

    A `Text` is never parsed as markup, so `[/]` in a model's answer prints as itself instead
    of raising `MarkupError`; line breaks are collapsed so one answer stays one row; control
    characters are dropped, so an answer cannot retitle or clear the operator's terminal.
    """
    line = without_controls(" ".join(str(value).split()))
    return Text(line if limit is None else line[:limit])


def _providers_table(registry: ProviderRegistry) -> Table:
    table = Table(title="Providers")
    table.add_column("name")
    table.add_column("working")
    table.add_column("address")
    table.add_column("models")
    for provider in registry:
        models = ", ".join(getattr(provider, "models", ()) or ()) or "(any name)"
        table.add_row(
            _outside(provider.name),
            "[green]yes[/]" if provider.working else "[red]no[/]",
            _outside(getattr(provider, "base_url", "")),
            _outside(models),
        )
    return table


async def _providers_check(registry: ProviderRegistry) -> int:
    from core.health import check_providers

    results = await check_providers(registry=registry)
    table = Table(title="Provider check")
    for column in ("provider", "model", "status", "first token", "total", "answer / error"):
        table.add_column(column)
    for result in results:
        table.add_row(
            _outside(result.provider),
            _outside(result.model),
            "[green]ok[/]" if result.ok else "[red]failed[/]",
            f"{result.first_token:.2f} s" if result.first_token is not None else "-",
            f"{result.total:.2f} s",
            _outside(result.text if result.ok else result.error or "", CHECK_CELL_CHARS),
        )
    console.print(table)
    if not results:
        errors_console.print(
            "No provider is working: set OPENAI_API_KEY or another provider's key."
        )
    return 0 if any(r.ok for r in results) else EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run every bot whose token is set")
    commands.add_parser("chat", help="chat with the model in this terminal")
    providers = commands.add_parser("providers", help="list providers")
    providers.add_argument("action", nargs="?", choices=["check"], help="probe every working one")
    history = commands.add_parser("history", help="chat history")
    history_commands = history.add_subparsers(dest="history_command", required=True)
    export = history_commands.add_parser("export", help="print a chat's conversations")
    export.add_argument("--chat", required=True, help="the chat id")
    export.add_argument("--platform", help="telegram, discord or console (default: any)")
    export.add_argument("--conversation", type=int, help="only this conversation (ids are listed)")
    export.add_argument("--format", choices=["json", "markdown"], default="markdown")
    return parser


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "providers":
        registry = ProviderRegistry.from_settings(settings)
        if args.action == "check":
            return await _providers_check(registry)
        console.print(_providers_table(registry))
        return 0
    if args.command == "run":
        from bots.app import run_bots

        await run_bots(settings)
        return 0
    if args.command == "chat":
        from bots.console import run_chat

        await run_chat(settings)
        return 0
    from bots.history import export_history

    console.print(
        await export_history(
            settings, args.chat, args.platform, args.format, conversation=args.conversation
        ),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:
        errors_console.print(f"[red]Invalid configuration:[/] {escape(str(exc))}")
        return EXIT_USAGE
    configure_logging(settings, errors_console)
    try:
        return asyncio.run(_dispatch(args, settings))
    except REPORTED as exc:
        errors_console.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM or Ctrl-C: `parley run` stopped cleanly
        return 0


if __name__ == "__main__":
    sys.exit(main())
