"""The `parley` command: run the bots, chat in the terminal, inspect providers and history.

Each subcommand imports what it needs when it runs, so `parley providers` does not load
aiogram and discord.py, and a broken optional part cannot stop the others. A bare `parley`
(or `parley history`) prints its help and exits 2, like any other incomplete command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bots.config import Settings, setting_problems
from bots.errors import REPORTED
from bots.logs import configure_logging
from bots.version import parley_version
from core.providers import ProviderRegistry
from core.text import without_controls
from storage import ChatSummary

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Longest answer or error shown in a cell of `parley providers check`.
CHECK_CELL_CHARS = 80
#: `parley history list`: the title column is never squeezed below this.
TITLE_MIN_CHARS = 12
#: Wider than any table Parley prints; the width a table is measured in.
WIDEST_TABLE = 1000
#: Rows `parley usage` prints as a table unless --limit says otherwise: the heavy users fit on a
#: screen; CSV and JSON, meant for other tools, get them all.
TABLE_ROWS = 50

console = Console()
# Errors name files and URLs: a line break inserted at the terminal width would cut them.
errors_console = Console(stderr=True, soft_wrap=True)


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


def _chats_table(chats: list[ChatSummary]) -> Table:
    """`parley history list`. Ids and counts never wrap: an id is what `export --chat` takes,
    so only the title column gives way in a narrow terminal (see `_print_whole`)."""
    table = Table(title="Chats, the most recently active first (times in UTC)", box=box.SIMPLE_HEAD)
    for column in ("platform", "chat id", "topic"):
        table.add_column(column, no_wrap=True)
    table.add_column("title or user name", min_width=TITLE_MIN_CHARS)
    table.add_column("conversations", justify="right", no_wrap=True)
    table.add_column("messages", justify="right", no_wrap=True)
    table.add_column("last activity", no_wrap=True)
    for chat in chats:
        table.add_row(
            _outside(chat.platform),
            _outside(chat.chat_id),
            _outside(chat.thread_id),
            _outside(chat.title) if chat.title else Text("-", style="dim"),
            str(chat.conversations),
            str(chat.messages),
            chat.last_activity[:16].replace("T", " "),
        )
    return table


def _print_whole(table: Table) -> None:
    """Print `table` without cutting a cell short: rich would crop the ids of a table wider
    than the terminal, so such a table is printed at its natural width instead (a terminal
    wraps its lines; a file or pipe gets every row on one line)."""
    width = console.measure(table, options=console.options.update_width(WIDEST_TABLE))
    if width.minimum > console.width:
        table.width = width.maximum
    console.print(table, crop=False)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks (they hold examples); every command name fits
    beside its summary."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog)
        # argparse sizes the name column from the options alone, not the subcommands' names,
        # so "providers" would sit on a line of its own; start the column wide enough.
        self._action_max_length = len("    providers")


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    more: str = "",
) -> argparse.ArgumentParser:
    """A subcommand: `summary` in its parent's list, `summary` and `more` in its own --help.

    It runs as it is (`incomplete` None) unless it sets its own subcommands' parser there."""
    description = f"{summary[0].upper()}{summary[1:]}." + (f"\n\n{more}" if more else "")
    command = commands.add_parser(
        name, help=summary, description=description, formatter_class=_HelpFormatter
    )
    command.set_defaults(incomplete=None)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description=f"{__doc__.splitlines()[0]}\n\nSettings come from the environment and "
        "from .env in the working directory.",
        epilog="`parley COMMAND --help` describes a command and its options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"parley {parley_version()}",
        help="print the version and exit",
    )
    # Which help a command line that stops short of a command prints (see main()).
    parser.set_defaults(incomplete=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of:")
    _command(
        commands,
        "run",
        "run every bot whose token is set",
        "Runs the Telegram bot (TELEGRAM_BOT_TOKEN) and/or the Discord bot (DISCORD_BOT_TOKEN)\n"
        "until Ctrl-C or SIGTERM. The tokens are checked first: a rejected token or a missing\n"
        "Discord intent stops the start with its fix. No options.",
    )
    chat = _command(
        commands,
        "chat",
        "chat with the model in this terminal",
        "The same model, settings and history database as the bots; /help inside lists the\n"
        "commands. Logs go to stderr (warnings and errors only), or all of them to --log-file.",
    )
    chat.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="append the log (at LOG_LEVEL) to this file instead of showing warnings on stderr",
    )
    _command(
        commands,
        "doctor",
        "check the configuration, one line per finding with its fix",
        "Checks that every setting parses, the database is writable and its schema current,\n"
        "each bot token is accepted by its platform (and Discord's Message Content intent is\n"
        "on), and each configured provider answers a probe. Exits 1 if anything would stop\n"
        "the bots, else 0 (warnings included). No options.",
    )
    providers = _command(
        commands,
        "providers",
        "list providers, or probe them",
        "Without an action: every provider with its address, models and whether it has what it\n"
        "needs (a key). `check`: probes every working one and exits 1 if none answered.",
    )
    providers.add_argument(
        "action",
        nargs="?",
        choices=["check"],
        help="probe every working provider at once, timing the first token and the total",
    )
    usage = _command(
        commands,
        "usage",
        "show what the bots' model calls used and cost",
        "Example: parley usage --since 7d --by model --format csv\n"
        "Reads the usage ledger in the history database (DATABASE_URL); never creates one.",
    )
    usage.add_argument(
        "--since",
        metavar="SPAN_OR_DATE",
        help="only use since then: 7d, 12h, 2w back from now, or a UTC date (2026-11-01); "
        "default: all of it",
    )
    usage.add_argument(
        "--by", choices=["user", "chat", "model", "day"], default="user", help="(default: user)"
    )
    usage.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="(default: table)"
    )
    usage.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"the N most costly rows; 0: all (default: {TABLE_ROWS} in a table, all in CSV "
        "and JSON)",
    )
    history = _command(
        commands,
        "history",
        "list chats or export one's history",
        "Reads the history database (DATABASE_URL); never creates one.",
    )
    history.set_defaults(incomplete=history)
    history_commands = history.add_subparsers(
        dest="history_command", metavar="ACTION", help="one of:"
    )
    listing = _command(
        history_commands,
        "list",
        "show every chat, the most recently active first",
        "Columns: platform, chat id and topic (what `export` takes), title or user name,\n"
        "conversations, messages, last activity.",
    )
    listing.add_argument(
        "--platform", help="only this platform's chats: telegram, discord or console"
    )
    export = _command(
        history_commands,
        "export",
        "print a chat's conversations",
        "Example: parley history export --chat -1001234567890 --platform telegram --format json\n"
        "(a chat id as `parley history list` shows it).",
    )
    copy = _command(
        history_commands,
        "copy",
        "copy a whole history into an empty database (SQLite or PostgreSQL)",
        "Example: parley history copy --from sqlite:///data/parley.db \\\n"
        "  --to postgresql://parley:secret@db:5432/parley\n"
        "The target is created (SQLite) or must exist (PostgreSQL), is migrated, and must be\n"
        "empty; the copy is one transaction, then checked table by table. Stop the bots first.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="the source")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="the target")
    export.add_argument(
        "--chat",
        required=True,
        metavar="CHAT_ID",
        help="the chat id, as `parley history list` shows it",
    )
    export.add_argument(
        "--platform", help="telegram, discord or console (default: every platform with that id)"
    )
    export.add_argument(
        "--topic",
        metavar="TOPIC",
        help="only this topic or thread, as `list` shows it (default: the chat and all its topics)",
    )
    export.add_argument(
        "--conversation",
        type=int,
        metavar="N",
        help="only conversation N (the Markdown headings and JSON `conversations[].id` name them)",
    )
    export.add_argument(
        "--format",
        choices=["json", "markdown"],
        default="markdown",
        help="markdown to read, json with every stored field (default: %(default)s)",
    )
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the export to FILE instead of printing it; the images go beside it, into "
        "a folder named after it (chat.md: chat-images/)",
    )
    export.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="folder the messages' images are written to, named by their hash; created only "
        "when there are any (default: beside --output FILE; none when printing)",
    )
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
    if args.command == "usage":
        return await _usage(args, settings)
    if args.history_command == "copy":
        return await _copy(args)
    from bots.history import list_chats

    if args.history_command == "list":
        chats = await list_chats(settings, args.platform)
        if chats:
            _print_whole(_chats_table(chats))
        else:
            where = f" on {args.platform}" if args.platform else ""
            console.print(f"No chats{escape(where)} yet.", highlight=False)
        return 0
    return await _export(args, settings)


def images_dir_for(output: Path | None, images: Path | None) -> Path | None:
    """Where `history export` writes images: `--images` when given, else a folder beside the
    output file named after it (`chat.md` -> `chat-images/`), else none: an export printed to
    the terminal leaves no files in the current directory unless asked to."""
    if images is not None:
        return images
    if output is not None:
        return output.with_name(f"{output.stem}-images")
    return None


def _save(output: Path, text: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from bots.history import export_chats

    output: Path | None = args.output
    export = await export_chats(
        settings,
        args.chat,
        args.platform,
        args.format,
        conversation=args.conversation,
        topic=args.topic,
        images_dir=images_dir_for(output, args.images),
        links_from=None if output is None else output.parent,
    )
    if output is None:
        console.print(export.text, markup=False, highlight=False, soft_wrap=True)
    else:
        await asyncio.to_thread(_save, output, export.text)
    if export.images and export.images_dir is None:
        errors_console.print(
            f"{export.images} image(s) left out: add --images DIR to write them into a folder, "
            "or --output FILE to save the export with its images beside it.",
            markup=False,
            highlight=False,
        )
    elif output is not None:
        written = f" and {export.images} image(s) to {export.images_dir}" if export.images else ""
        errors_console.print(f"Wrote {output}{written}.", markup=False, highlight=False)
    return 0


async def _usage(args: argparse.Namespace, settings: Settings) -> int:
    from bots.usage_report import as_csv, as_json, dollars, parse_since, usage_rows

    try:
        since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    except ValueError as exc:
        errors_console.print(str(exc), markup=False, highlight=False)
        return 2
    limit = args.limit if args.limit is not None else (TABLE_ROWS if args.format == "table" else 0)
    if limit < 0:
        errors_console.print("--limit must be 0 (all) or more.", markup=False, highlight=False)
        return 2
    # One row more than shown: whether some were left out, without counting them all.
    rows = await usage_rows(settings, since, args.by, limit + 1 if limit else None)
    left_out = bool(limit) and len(rows) > limit
    rows = rows[:limit] if left_out else rows
    if args.format != "table":
        text = as_csv(rows) if args.format == "csv" else as_json(rows)
        console.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return 0
    if not rows:
        console.print("No usage recorded" + (" since then." if since else " yet."))
        return 0
    table = Table(title=f"Usage by {args.by}, most costly first", box=box.SIMPLE_HEAD)
    table.add_column(args.by, no_wrap=True)
    for column in ("calls", "prompt tokens", "completion tokens", "cost (USD)", "estimated"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            _outside(row.label),
            f"{row.calls:,}",
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            dollars(row.cost_micros) + (f" (+{row.unpriced} unpriced)" if row.unpriced else ""),
            f"{row.estimated_share:.0%}",
        )
    _print_whole(table)
    if left_out:
        console.print(f"Only the {limit} most costly are shown: --limit 0 shows all of them.")
    return 0


async def _copy(args: argparse.Namespace) -> int:
    """`parley history copy`: the rows of each table, then one line saying what was checked."""
    from bots.history_copy import copy_history

    report = await copy_history(args.source, args.target)
    table = Table(title=Text(f"Copied {report.source} to {report.target}"), box=box.SIMPLE)
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("sha256 of its rows")
    for copied in report.tables:
        table.add_row(copied.name, str(copied.rows), copied.digest[:16])
    _print_whole(table)
    console.print(
        f"{report.rows} rows in {len(report.tables)} tables copied and checked row for row "
        "(counts and digests match).",
        highlight=False,
    )
    if report.altered:
        console.print(
            f"{report.altered} text value(s) held a NUL character, which PostgreSQL cannot "
            "store: each NUL became U+FFFD.",
            highlight=False,
        )
    return 0


def _read_settings() -> Settings | None:
    """The settings, or None after printing one line per bad one."""
    try:
        return Settings()
    except ValidationError as exc:
        for _, line in setting_problems(exc):
            errors_console.print(
                f"[red]Invalid setting[/] {escape(line)}", soft_wrap=True, highlight=False
            )
    except ValueError as exc:  # pydantic-settings' own (a .env it cannot read)
        errors_console.print(f"[red]Invalid configuration:[/] {escape(str(exc))}", soft_wrap=True)
    return None


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "chat":
        from bots.console import configure_chat_logging

        configure_chat_logging(settings, errors_console, args.log_file)
    else:
        configure_logging(settings, errors_console)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.incomplete is not None:  # `parley`, `parley history`: say what they could be
        args.incomplete.print_help()
        return EXIT_USAGE
    if args.command == "doctor":
        from bots.doctor import run_doctor

        return run_doctor(console)
    settings = _read_settings()
    if settings is None:
        return EXIT_USAGE
    try:
        _configure_logging(args, settings)
    except OSError as exc:  # --log-file in a folder that is not there or not ours
        errors_console.print(
            f"[red]Cannot write the log file:[/] {escape(str(exc))}", soft_wrap=True
        )
        return EXIT_USAGE
    try:
        return asyncio.run(_dispatch(args, settings))
    except REPORTED as exc:
        if settings.log_format == "json":  # every stderr line a JSON object, this one too
            logging.getLogger("parley").error("%s", exc)
        else:
            errors_console.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM or Ctrl-C: `parley run` stopped cleanly
        return 0


if __name__ == "__main__":
    sys.exit(main())
