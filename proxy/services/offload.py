"""Admin work off the event loop: one bounded worker thread with a time budget per call.

The proxy and the admin API share one event loop, so an admin or agent request that computes
for 100 ms holds every proxied request for 100 ms. Work that grows with its input (building the
engines of a thousand rules, a dry run with its trace, YAML, a 1 MiB JSON body, rendering a long
list) runs here instead, while the loop goes on serving.

One thread (``workers``), not a pool per request: Python runs one thread at a time, so more
threads would only take more turns from the loop. Abusive clients queue instead; past ``queue``
waiting calls, or past a call's ``budget`` (waiting included), the caller gets
:class:`Overloaded` (the API's 503 with Retry-After) at once rather than a slow answer.

A call that overran its budget may still be running in the thread; it cannot be stopped, so a
call that writes takes its :class:`Ticket` at its commit point (``ticket.claim()``): a call the
caller gave up on raises :class:`Abandoned` there, before writing, and one that claimed is
waited for to the end (writing is short), so a 503 never hides a change that was made.

Pure work that allocates much or holds the interpreter long (YAML parsing and writing, large JSON
bodies) goes one step further with :meth:`Offload.run_in_child`: the admin thread hands it to the
offload's :class:`~proxy.services.parse_worker.ParseWorker` child process and waits with the GIL
released, so neither the interpreter's turns nor the garbage collections it would cause are
taken from the proxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from proxy.services.errors import ServiceError
from proxy.services.parse_worker import ParseWorker, WorkerTimeout

logger = logging.getLogger(__name__)

DEFAULT_BUDGET: Final = 15.0  # seconds: a 1 MiB policy file (~6,000 rules) imports in ~8 s
DEFAULT_QUEUE: Final = 8  # calls waiting for the thread beyond the running one(s)


class Overloaded(ServiceError):
    """The admin work queue is full, or the call overran its budget: try again later."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Abandoned(Exception):
    """Raised in the worker at a call's commit point when its caller has given up on it."""


class Ticket:
    """One call's claim on committing: the worker claims it before writing, the caller abandons
    it when the budget runs out; whichever comes first wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "open"

    def claim(self) -> None:
        """In the worker, right before writing: Abandoned if the caller gave up."""
        with self._lock:
            if self._state == "abandoned":
                raise Abandoned("the caller gave up on this call (over its time budget)")
            self._state = "claimed"

    def abandon(self) -> bool:
        """In the caller: False when the worker already claimed (it is writing: wait for it)."""
        with self._lock:
            if self._state == "claimed":
                return False
            self._state = "abandoned"
            return True


class Offload:
    """``await offload.run(work)`` runs ``work(ticket)`` in the admin thread."""

    def __init__(
        self,
        *,
        workers: int = 1,
        queue: int = DEFAULT_QUEUE,
        budget: float = DEFAULT_BUDGET,
        name: str = "admin-offload",
    ) -> None:
        if workers < 1 or queue < 0 or budget <= 0:
            raise ValueError(f"offload {name}: workers >= 1, queue >= 0 and budget > 0 expected")
        self.budget = budget
        self._workers = workers
        self._limit = workers + queue
        self._name = name
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished in the thread (abandoned ones included)
        self._executor: ThreadPoolExecutor | None = None
        self.child = ParseWorker()  # started on first use
        self.refused = 0  # calls refused as over the queue or the budget (metrics, tests)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    async def run[T](self, work: Callable[[Ticket], T], *, budget: float | None = None) -> T:
        """``work(ticket)``'s value, computed in the thread. Overloaded when the queue is full or
        the call takes longer than its budget (``budget`` or the default)."""
        allowed = self.budget if budget is None else budget
        with self._lock:
            if self._pending >= self._limit:
                self.refused += 1
                raise Overloaded(
                    f"the admin API is busy ({self._pending} heavy requests running or queued); "
                    "try again shortly",
                    retry_after=self._retry_after(),
                )
            self._pending += 1
        ticket = Ticket()
        started = time.monotonic()
        try:
            future = self._executor_now().submit(work, ticket)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        waited = asyncio.wrap_future(future)
        waited.add_done_callback(_consume)  # an abandoned call's outcome is nobody's
        try:
            return await asyncio.wait_for(asyncio.shield(waited), allowed)
        except TimeoutError:
            if not ticket.abandon():  # it is writing: the change will be made, wait for it
                return await waited
            future.cancel()  # not started yet: it never will
            self.refused += 1
            elapsed = time.monotonic() - started
            logger.warning("%s: a call gave up after %.1f s (budget %.1f s)", self._name, elapsed, allowed)
            raise Overloaded(
                f"the request took longer than the admin API's budget of {allowed:g} s and was "
                "abandoned (nothing was changed); try again later, or send less",
                retry_after=self._retry_after(),
            ) from None
        except asyncio.CancelledError:  # the client went away: do not write for it
            if ticket.abandon():
                future.cancel()
            raise

    async def run_in_child[T](self, function: Callable[..., T], *args: Any, budget: float | None = None) -> T:
        """``function(*args)`` (a pure module-level function, its arguments and value picklable)
        computed in the child process, called from the admin thread: queue, budget and 503s as
        :meth:`run`. Falls back to computing it in the thread if the child is unavailable."""
        allowed = self.budget if budget is None else budget
        return await self.run(lambda ticket: self.child_call(function, *args, budget=allowed), budget=budget)

    def child_call[T](self, function: Callable[..., T], *args: Any, budget: float | None = None) -> T:
        """In work running in the admin thread: ``function(*args)`` in the child process;
        Overloaded when it takes longer than ``budget`` (the default's)."""
        allowed = self.budget if budget is None else budget
        try:
            return self.child.call(function, *args, timeout=allowed)
        except WorkerTimeout:
            raise Overloaded(
                f"the request took longer than the admin API's budget of {allowed:g} s and was "
                "abandoned (nothing was changed); try again later, or send less",
                retry_after=self._retry_after(),
            ) from None

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.budget / 5))

    def _finished(self, _future: concurrent.futures.Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1

    def _executor_now(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=self._name)
        return self._executor

    def close(self) -> None:
        """Wait for the running call (queued ones are dropped), stop the thread and the child."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.child.close()


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
