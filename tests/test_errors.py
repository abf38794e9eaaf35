"""One error tree per package: every exception class lives in its package's `errors` module,
whose docstring draws the tree, and the CLI reports the app's two roots."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import bots
import core
import storage
from bots.errors import REPORTED, BotStartupError, HistoryNotFoundError
from core import errors as core_errors
from core.errors import AttachmentError, ConfigurationError, ImageError, ParleyError
from storage import open_store
from storage.errors import StorageError
from tests.cli_support import run_parley

PACKAGES = {"core": core, "storage": storage, "bots": bots}


def modules_of(package: ModuleType) -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return [importlib.import_module(name) for name in names if not name.endswith("__main__")]


def exceptions_defined_in(module: ModuleType) -> list[type[BaseException]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    ]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exception_of_a_package_is_defined_in_its_errors_module(name: str) -> None:
    elsewhere = {
        module.__name__: [cls.__name__ for cls in exceptions_defined_in(module)]
        for module in modules_of(PACKAGES[name])
        if module.__name__ != f"{name}.errors"
    }
    assert {module: found for module, found in elsewhere.items() if found} == {}


@pytest.mark.parametrize("name", PACKAGES)
def test_each_errors_module_draws_every_class_in_its_docstring(name: str) -> None:
    module = importlib.import_module(f"{name}.errors")
    drawn = module.__doc__ or ""
    for cls in exceptions_defined_in(module):
        assert f" {cls.__name__} " in drawn or f" {cls.__name__}\n" in drawn, cls.__name__


#: A line of a drawn tree: its indent, then a marker (*, +, -, .), then the class's name.
_TREE_LINE = re.compile(r"^( *)[*+\-.] +([A-Za-z_][\w.]*)", re.M)


def _resolve(module: ModuleType, name: str) -> type[BaseException]:
    if "." in name:
        owner, _, attr = name.rpartition(".")
        found = getattr(importlib.import_module(owner), attr)
    else:
        found = getattr(module, name, None) or getattr(builtins, name)
    assert inspect.isclass(found) and issubclass(found, BaseException), name
    return found


@pytest.mark.parametrize("name", PACKAGES)
def test_each_drawn_tree_is_the_real_one(name: str) -> None:
    """Every class drawn under another is its subclass: the tree is what a caller catches by."""
    module = importlib.import_module(f"{name}.errors")
    parents: list[tuple[int, type[BaseException]]] = []
    checked = 0
    for indent, drawn in _TREE_LINE.findall(module.__doc__ or ""):
        cls = _resolve(module, drawn)
        while parents and parents[-1][0] >= len(indent):
            parents.pop()
        if parents:
            assert cls.__bases__[0] is parents[-1][1], f"{drawn} is drawn under {parents[-1][1]}"
            checked += 1
        parents.append((len(indent), cls))
    assert checked >= 3


def test_every_image_error_is_an_attachment_error() -> None:
    """A bot catches `AttachmentError` once, for images, voice notes and files alike."""
    for cls in exceptions_defined_in(core_errors):
        if cls.__name__.endswith("ImageError"):
            assert issubclass(cls, ImageError) and issubclass(cls, AttachmentError), cls
    assert core_errors.ImageTooLargeError("log", "That image is over 20 MB.").user_hint == (
        "That image is over 20 MB."
    )


@pytest.mark.parametrize(
    "cls",
    [c for c in exceptions_defined_in(core_errors) if issubclass(c, AttachmentError)],
    ids=lambda cls: cls.__name__,
)
def test_each_attachment_error_has_one_chat_line(cls: type[AttachmentError]) -> None:
    """What a user is shown: one short sentence, no setting name, no tool name."""
    hint = cls("a message for the log").user_hint
    assert "\n" not in hint and len(hint) <= 100, hint
    assert hint[0].isupper() and hint.endswith("."), hint
    assert not re.search(r"[A-Z]{2,}_[A-Z]|ffmpeg|ffprobe|Pillow", hint), hint


def test_both_bots_fail_to_start_with_one_type_under_the_core_root() -> None:
    assert issubclass(BotStartupError, ConfigurationError)
    assert issubclass(HistoryNotFoundError, ParleyError)
    assert set(REPORTED) == {ParleyError, StorageError}
    assert not issubclass(KeyError, REPORTED)  # a bug keeps its traceback


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ("h.db", "No chat 'nope'"),  # HistoryNotFoundError, under ParleyError
        ("typo/h.db", "does not exist"),  # StorageUnavailableError, under StorageError
    ],
    ids=["parley-error", "storage-error"],
)
async def test_the_cli_reports_either_root_in_one_line_without_a_traceback(
    tmp_path: Path, database: str, expected: str
) -> None:
    if database == "h.db":
        store = await open_store(f"sqlite:///{tmp_path}/h.db")
        await store.close()
    finished = await run_parley(
        *("history", "export", "--chat", "nope"),
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/{database}"},
        cwd=tmp_path,
    )
    text = finished.err
    assert finished.code == 1, text
    assert expected in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text  # never wrapped at the terminal width
