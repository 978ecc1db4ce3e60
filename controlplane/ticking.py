"""What every live page's per-process ticker shares: a loop that ticks while anyone watches and
stops by itself when nobody does, and sending one tick's texts to many sockets at once.

A ticker subclass keeps its own viewers, reads once per tick for all of them (in a database
thread) and calls `send_all`; see controlplane.monitoring.live and review.live."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol

logger = logging.getLogger(__name__)


class Viewer(Protocol):
    """A websocket consumer, as far as a ticker needs one."""

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None): ...


class TickLoop:
    interval: float = 1.0
    task: asyncio.Task | None = None
    # Names the ticker in its log lines.
    label = "live page"

    def watched(self) -> bool:
        """Whether any viewer is left."""
        raise NotImplementedError

    async def tick(self) -> None:
        """Read once and send to every viewer."""
        raise NotImplementedError

    def idle(self) -> None:
        """Called when the loop stops because nobody watches: drop what was kept for viewers."""

    def ensure_running(self) -> None:
        """Start the loop in the running event loop unless it already runs there."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self.run())

    async def run(self) -> None:
        try:
            while self.watched():
                started = time.monotonic()
                try:
                    await self.tick()
                except Exception:
                    logger.exception("%s tick failed", self.label)
                await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))
        finally:
            if not self.watched():
                self.idle()

    async def send_all(self, sends: Iterable[tuple[Viewer, str]]) -> None:
        """Send each text to its viewer, all at once; a viewer gone meanwhile is only logged."""
        outcomes = await asyncio.gather(
            *(viewer.send(text_data=text) for viewer, text in sends), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.warning("%s update not sent: %s", self.label, outcome)
