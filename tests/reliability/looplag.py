"""How long the event loop was held: a 1 ms ticker on the loop whose lateness is the time some
callback kept the loop from it (what a proxied request waiting on the same loop would suffer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

TICK = 0.001


class LoopLag:
    """``async with LoopLag() as lag:`` ... ``lag.worst`` (seconds), ``lag.take()`` to read and
    reset between phases."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)  # real time on purpose: the lateness of this tick is what is measured
            late = time.perf_counter() - before - TICK
            if late > self.worst:
                self.worst = late

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # no wait: one turn of the loop, so the ticker has started
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


@asynccontextmanager
async def loop_lag() -> AsyncIterator[LoopLag]:
    async with LoopLag() as lag:
        yield lag
