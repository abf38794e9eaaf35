"""Who and where, as a platform names them: the keys the conversation service files history by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChatRef:
    """One chat as a platform names it; a forum topic or Discord thread has its own history."""

    platform: str
    chat_id: str
    thread_id: str = ""


@dataclass(frozen=True, slots=True)
class Author:
    """Who asks. The platform's access check decides the two flags (`bots.access`); the
    budgets read them (`core.budgets`): a guest also spends from the shared guest budget, an
    admin (ADMIN_IDS) from none and is never rate-limited."""

    id: str
    name: str
    #: Let in without being listed in *_ALLOWED_IDS.
    guest: bool = False
    #: Listed in ADMIN_IDS.
    admin: bool = False
