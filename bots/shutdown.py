"""Stopping a bot with replies in flight: they get a grace period, then are cut short.

Both bots stop the same way once they take no new messages (SIGTERM, Ctrl-C): each reply still
streaming may finish within `SHUTDOWN_GRACE_SECONDS`; the handlers still running after it are
cancelled, so the streaming engine shows each reply's text so far with the shutdown note
(`core.conversation.INTERRUPTED_NOTE`) and the conversation service saves the row as
'interrupted'. A second signal ends the grace at once (`Grace.end_now`, through each bot's
`hurry()`); it does not skip the rest of the stop (the note, the confirmed offset).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from bots.startup import seconds
from bots.streaming import CANCEL_GRACE

log = logging.getLogger(__name__)

#: Seconds the replies cut short get to show the note: the engine's own bound on stopping the
#: model stream, then on its last edit, plus a margin.
CUT_SHORT_TIMEOUT = 2 * CANCEL_GRACE + 1.0


class Grace:
    """The time replies in flight get at a stop; `end_now()` (a second signal) cuts it short."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._over = asyncio.Event()

    def end_now(self) -> None:
        self._over.set()

    async def wait(self, tasks: set[asyncio.Task[None]]) -> None:
        """Until every task is done, the grace has passed, or `end_now()`: whichever is first."""
        over = asyncio.create_task(self._over.wait())
        finished = asyncio.create_task(asyncio.wait(tasks))  # cancelling it leaves `tasks` be
        try:
            await asyncio.wait(
                {over, finished}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            over.cancel()
            finished.cancel()


async def finish_in_flight(
    platform: str, handlers: Collection[asyncio.Task[None]], grace: Grace
) -> None:
    """Give `handlers` the grace, then cancel those still running and wait for them to show
    their note (bounded)."""
    running = {task for task in handlers if not task.done()}
    if not running:
        return
    log.info(
        "%s: stopping; %d reply(ies) in flight get up to %s to finish",
        platform,
        len(running),
        seconds(grace.seconds),
    )
    await grace.wait(running)
    late = {task for task in running if not task.done()}
    if late:
        log.warning("%s: cutting short %d reply(ies) still running", platform, len(late))
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=CUT_SHORT_TIMEOUT)
