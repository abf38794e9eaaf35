"""Albums: Telegram delivers each item of an album as a message of its own, sharing a
`media_group_id`, and nothing marks the last one. The items are collected until none has
arrived for a short idle window, then handed over together, as one question.

The handler of an album's first item waits for the rest; the handlers of the others return at
once (each update has its own task, so they run while the first waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Seconds without a new item after which an album is taken as complete. An album's items come
#: in one `getUpdates` answer, or in two when the poll returned while they arrived.
ALBUM_IDLE_SECONDS = 1.0


class _Open(Generic[T]):
    def __init__(self, first: T) -> None:
        self.items = [first]
        self.arrived = asyncio.Event()


class AlbumCollector(Generic[T]):
    """Collects the items of albums, each by its key (the chat and its `media_group_id`)."""

    def __init__(self, idle: float = ALBUM_IDLE_SECONDS) -> None:
        self._idle = idle
        self._open: dict[Hashable, _Open[T]] = {}

    async def collect(self, key: Hashable, item: T) -> list[T] | None:
        """All the items of `key`'s album, in arrival order, to the caller that brought the
        first (once `idle` seconds passed without another); None to the others."""
        album = self._open.get(key)
        if album is not None:
            album.items.append(item)
            album.arrived.set()
            return None
        album = self._open[key] = _Open(item)
        try:
            while True:
                album.arrived.clear()
                try:
                    await asyncio.wait_for(album.arrived.wait(), self._idle)
                except TimeoutError:
                    return album.items
        finally:
            del self._open[key]
