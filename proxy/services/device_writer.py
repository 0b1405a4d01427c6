"""Group commit: the writes of concurrent agent requests share one transaction, off the event loop.

The store commits with ``synchronous=FULL``: every transaction waits for the disk (0.5 to a few
ms here). Agents report at once from many devices; committing each request alone, in the event
loop, would spend the loop's time waiting for fsync. :class:`GroupCommit` queues each request's
write job; a worker thread runs every job queued so far in one transaction on a connection of its
own, while the loop goes on serving (and queueing the next batch). A request is answered only
after the transaction holding its job committed, so an acknowledged result is on disk.

Each job runs in its own savepoint: a job that raises is rolled back alone and its request gets
the exception; the others commit. Jobs get the writer's ``Store`` and must use only it (they run
in the worker thread): they read nothing cached and touch no service state; the caller acts on
the job's value after ``await``. An in-memory store (tests) has no second connection: its jobs
run in the loop, on the service's store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proxy.store import Store

logger = logging.getLogger(__name__)

Job = Callable[[Store], Any]
Outcome = tuple[Any, BaseException | None]


class GroupCommit:
    def __init__(self, store: Store, *, max_jobs: int = 1024) -> None:
        self._store = store
        self._path = store.path
        self._max_jobs = max_jobs
        self._pending: list[tuple[Job, asyncio.Future[Any]]] = []
        self._draining = False
        self._writer: Store | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.commits = 0  # transactions committed (for the benchmark and tests)
        self.jobs = 0  # jobs run

    async def run[T](self, job: Callable[[Store], T]) -> T:
        """Run ``job(store)`` inside the next group transaction; its value once that committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_jobs]
                del self._pending[: self._max_jobs]
                jobs = [job for job, _ in batch]
                try:
                    if self._path:
                        loop = asyncio.get_running_loop()
                        outcomes = await loop.run_in_executor(self._worker(), self._commit, jobs)
                    else:
                        outcomes = self._commit(jobs, self._store)
                except Exception as e:  # the commit itself failed: nothing of the batch was written
                    logger.exception("group commit of %d jobs failed", len(batch))
                    outcomes = [(None, e)] * len(batch)
                for (_, future), (value, error) in zip(batch, outcomes, strict=True):
                    if future.done():  # the request went away (client disconnected)
                        continue
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(value)
        finally:
            self._draining = False

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._writer = Store.open(self._path)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        return self._executor

    def _commit(self, jobs: list[Job], store: Store | None = None) -> list[Outcome]:
        store = store or self._writer
        assert store is not None
        with store.transaction():
            outcomes = [self._one(job, store) for job in jobs]
        self.commits += 1
        self.jobs += len(jobs)
        return outcomes

    @staticmethod
    def _one(job: Job, store: Store) -> Outcome:
        try:
            with store.transaction():  # a savepoint: a failing job rolls back alone
                return job(store), None
        except Exception as e:  # noqa: BLE001 -- handed to the job's request, which raises it
            return None, e
