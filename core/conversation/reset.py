"""What /reset and /stop did to the replies in flight, in the words every surface answers with.

A reset in a group may meet several people's replies: the caller's own are stopped, the others'
are let finish in the old conversation first. The person who asked should learn which, in one
short message, the same on Telegram, Discord and the console; and a group member whose /stop
found nothing should learn it was about their own replies only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .chat import Author

RESET_DONE = "Started a new conversation. Earlier messages are kept but no longer used."
NOTHING_TO_STOP = "Nothing to stop."
NONE_OF_YOURS = "You have no reply being written."


@dataclass(frozen=True, slots=True)
class ResetReport:
    """Whose replies a reset met, by display name, each once, in the order they arrived."""

    #: Replies it stopped (streaming or queued): the caller's own, or everyone's.
    stopped: tuple[str, ...] = ()
    #: Replies to other people it let finish in the old conversation before opening the new one.
    waited_for: tuple[str, ...] = ()


def names_of(authors: Iterable[Author]) -> tuple[str, ...]:
    """Display names (the id when a name is blank), each once, in order."""
    return tuple(dict.fromkeys(author.name.strip() or author.id for author in authors))


def _listed(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _replies_to(names: tuple[str, ...]) -> str:
    return ("the reply to " if len(names) == 1 else "the replies to ") + _listed(names)


def describe_reset(report: ResetReport) -> str:
    """The answer to /reset: one message saying what it did."""
    text = RESET_DONE
    if report.stopped:
        text += f" Stopped {_replies_to(report.stopped)}."
    if report.waited_for:
        text += f" Waited for {_replies_to(report.waited_for)} to finish first."
    return text


def describe_stop(count: int, *, own_only: bool) -> str:
    """The answer to /stop that cut `count` replies; `own_only`: only the caller's were asked."""
    if count == 0:
        return NONE_OF_YOURS if own_only else NOTHING_TO_STOP
    return "Stopped." if count == 1 else f"Stopped {count} replies."
