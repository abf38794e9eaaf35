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
    id: str
    name: str
