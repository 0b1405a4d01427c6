"""The task that drives CA rotations (issue 12) in the process that serves the admin API: once
per gateway, however many proxy processes it runs.

It advances every open rotation every ``interval`` (the deadline and the grace period are
times: only a timer notices them), and at once when woken: a rotation started, resumed or
continued, or a device reported its trust stores. Automatic rotations are looked for every
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


class RotationDriver:
    def __init__(
        self,
        service: RotationService,
        *,
        interval: timedelta = INTERVAL,
        auto_interval: timedelta = AUTO_INTERVAL,
    ) -> None:
        self._service = service
        self._interval = interval.total_seconds()
        self._auto_every = max(1, round(auto_interval / interval))
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
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
        rounds = 0
        while True:
            if rounds % self._auto_every == 0:
                await self._guarded(self._service.auto_start)
            await self._guarded(self._advance)
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)
            self._woken.clear()

    async def _advance(self) -> None:
        self._service.advance()

    async def _guarded(self, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # the driver must not die: log and try again at the next round
            logger.exception("CA rotation driver: %s failed", getattr(job, "__name__", job))
