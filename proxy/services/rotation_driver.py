"""The task that drives CA rotations (issue 12) in the process that serves the admin API: once
per gateway, however many proxy processes it runs.

It advances every open rotation every ``interval`` (the deadline and the grace period are
times: only a timer notices them), and at once when woken: a rotation started, resumed or
continued, or a device reported its trust stores. On the timer alone, a rotation waiting for
devices is counted again only every ``RECOUNT`` (10 s; reports arriving through another
process of the store are noticed that late), and however many wake-ups come, there is at most
one round per ``min_gap`` (500 ms). Automatic rotations are looked for every
``auto_interval``. Its state is the store's: a restarted gateway picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from proxy.services.rotations import RotationService

logger = logging.getLogger(__name__)

INTERVAL = timedelta(seconds=1)
AUTO_INTERVAL = timedelta(minutes=1)
MIN_GAP = timedelta(milliseconds=500)


class RotationDriver:
    def __init__(
        self,
        service: RotationService,
        *,
        interval: timedelta = INTERVAL,
        auto_interval: timedelta = AUTO_INTERVAL,
        min_gap: timedelta = MIN_GAP,
    ) -> None:
        self._service = service
        self._interval = interval.total_seconds()
        self._min_gap = min(min_gap, interval).total_seconds()
        self._auto_interval = auto_interval.total_seconds()
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._periodic = False  # the next round comes from the timer, not a wake-up
        service.subscribe(self.wake)

    def wake(self) -> None:
        """Advance soon (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._woken.set()
        else:
            loop.call_soon_threadsafe(self._woken.set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RotationDriver]:
        """The driver's task for the ``async with`` block; cancelled at its end."""
        self._loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._run(), name="CA rotation driver")
        try:
            yield self
        finally:
            self._loop = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_auto = loop.time()
        while True:
            began = loop.time()
            if began >= next_auto:
                next_auto = began + self._auto_interval
                await self._guarded(self._service.auto_start)
            await self._guarded(self._advance)
            self._periodic = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)
                self._periodic = False
            # however many reports wake it, at most one round per min_gap: a round counts every
            # reporting device of a waiting rotation (about 10 ms for 1,000 devices)
            rest = self._min_gap - (loop.time() - began)
            if rest > 0:
                await asyncio.sleep(rest)
            self._woken.clear()

    async def _advance(self) -> None:
        self._service.advance(periodic=self._periodic)

    async def _guarded(self, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # the driver must not die: log and try again at the next round
            logger.exception("CA rotation driver: %s failed", getattr(job, "__name__", job))
