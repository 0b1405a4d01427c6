"""Group commit: the writes of concurrent agent requests share one transaction, so one fsync.

The store commits with ``synchronous=FULL``: every transaction waits for the disk (about 0.3 ms
here). Agents report at once from many devices; committing each request alone would spend the
event loop's time waiting for fsync. :class:`GroupCommit` queues each request's write job and
runs every job queued by the time the loop gets to it in one transaction; each request is
answered only after that transaction committed, so an acknowledged result is on disk.

Each job runs in its own savepoint: a job that raises is rolled back alone and its request gets
the exception; the others commit. Jobs run in the loop's thread, between other callbacks, as
every store call does: no transaction ever spans an ``await``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from proxy.store import Store

logger = logging.getLogger(__name__)

Job = Callable[[], Any]


class GroupCommit:
    def __init__(self, store: Store, *, max_jobs: int = 1024) -> None:
        self._store = store
        self._max_jobs = max_jobs
        self._pending: list[tuple[Job, asyncio.Future[Any]]] = []
        self._scheduled = False
        self.commits = 0  # transactions committed (for the benchmark and tests)
        self.jobs = 0  # jobs run

    async def run[T](self, job: Callable[[], T]) -> T:
        """Run ``job()`` inside the next group transaction; its value once that committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self._max_jobs], self._pending[self._max_jobs :]
        if self._pending:  # the rest go in the next transaction
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self._store.transaction():
                for job, future in batch:
                    outcomes.append((future, *self._one(job)))
        except Exception as e:  # the commit itself failed: nothing of the batch was written
            logger.exception("group commit of %d jobs failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self.commits += 1
        self.jobs += len(batch)
        for future, value, error in outcomes:
            if future.done():  # the request went away (client disconnected)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _one(self, job: Job) -> tuple[Any, BaseException | None]:
        try:
            with self._store.transaction():  # a savepoint: a failing job rolls back alone
                return job(), None
        except Exception as e:
            return None, e
