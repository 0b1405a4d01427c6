"""Group commit: the writes of concurrent agent requests share one transaction, off the event loop.

Agents report at once from many devices; committing each request alone, in the event loop,
would spend the loop's time in SQLite. :class:`GroupCommit` queues each request's write job; a
worker thread runs every job queued so far in one transaction on a connection of its own, while
the loop goes on serving (and queueing the next batch). A request is answered only after the
transaction holding its job committed.

The writer's connection commits with ``synchronous=NORMAL`` (``power_safe=False``): an
acknowledged write survives the process being killed, as SPEC §8 asks, but the last commits
before a power cut may be lost. What it writes is agent telemetry that expires within minutes
and that agents send again on their schedule (posture results, their log, redeemed nonces,
trust-store reports); waiting for the disk at every group commit cost a quarter of the ingest
rate (``bench/posture_bench.py``). Everything else (CAs, keys, policies, configuration,
devices) is written by the main connection with ``synchronous=FULL``.

Each job runs in its own savepoint: a job that raises is rolled back alone and its request gets
the exception; the others commit. Jobs get the writer's ``Store`` and must use only it (they run
in the worker thread): they read nothing cached and touch no service state; the caller acts on
the job's value after ``await``. An in-memory store (tests) has no second connection: its jobs
run in the loop, on the service's store.

A :class:`Batch` is a write that many requests make alike (posture results): :meth:`GroupCommit.add`
queues one item, and the batch's ``apply`` gets every item queued for it in the same transaction
at once, so that it writes them with a few ``executemany`` statements instead of a savepoint and
several statements per request. When ``apply`` raises, its savepoint is rolled back and each item
is applied again alone, in a savepoint of its own: only the item that fails gets the exception.
A transaction that holds one batch's items and nothing else (the common case) needs no savepoint
for it: when ``apply`` raises, that transaction is rolled back and the items are applied alone
in the next (two statements fewer per commit: two round trips on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from proxy.store import Store

logger = logging.getLogger(__name__)

Job = Callable[[Store], Any]
Outcome = tuple[Any, BaseException | None]


@dataclass(frozen=True, eq=False)
class Batch[I, R]:
    """``apply(store, items)`` writes every item and returns one value per item, in order."""

    name: str
    apply: Callable[[Store, list[I]], list[R]]


@dataclass(frozen=True)
class _Item:
    batch: Batch[Any, Any]
    item: Any


class GroupCommit:
    def __init__(self, store: Store, *, max_jobs: int = 1024) -> None:
        self._store = store
        self._path = store.path
        self._max_jobs = max_jobs
        self._pending: list[tuple[Job | _Item, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None  # held, so the task is not collected
        self._writer: Store | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.commits = 0  # transactions committed (for the benchmark and tests)
        self.jobs = 0  # jobs run

    async def run[T](self, job: Callable[[Store], T]) -> T:
        """Run ``job(store)`` inside the next group transaction; its value once that committed."""
        return cast(T, await self._queue(job))

    async def add[I, R](self, batch: Batch[I, R], item: I) -> R:
        """Queue ``item`` for ``batch``; its value from ``batch.apply`` once that committed."""
        return cast(R, await self._queue(_Item(batch, item)))

    async def _queue(self, job: Job | _Item) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((job, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
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
                jobs = [job for job, _ in batch]  # plain jobs and batch items
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
            self._drainer = None

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._writer = Store.open(self._path, power_safe=False)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        return self._executor

    def _commit(self, jobs: list[Job | _Item], store: Store | None = None) -> list[Outcome]:
        store = store or self._writer
        assert store is not None
        first = jobs[0] if jobs else None
        if isinstance(first, _Item) and all(isinstance(j, _Item) and j.batch is first.batch for j in jobs):
            alone = self._commit_batch(first.batch, [j.item for j in jobs], store)  # type: ignore[union-attr]
            self.commits += 1
            self.jobs += len(jobs)
            return alone
        outcomes: list[Outcome | None] = [None] * len(jobs)
        batches: dict[Batch[Any, Any], list[int]] = {}
        with store.transaction():
            for index, job in enumerate(jobs):
                if isinstance(job, _Item):
                    batches.setdefault(job.batch, []).append(index)
                else:
                    outcomes[index] = self._one(job, store)
            for batch, indexes in batches.items():
                items = [jobs[i].item for i in indexes]  # type: ignore[union-attr]
                for index, outcome in zip(indexes, self._apply(batch, items, store), strict=True):
                    outcomes[index] = outcome
        self.commits += 1
        self.jobs += len(jobs)
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    @classmethod
    def _commit_batch(cls, batch: Batch[Any, Any], items: list[Any], store: Store) -> list[Outcome]:
        """A transaction of one batch's items only (the common case: every report queued while
        the last one committed): the transaction is the batch's savepoint, which saves two
        statements (two round trips on PostgreSQL). When ``apply`` raises, the transaction is
        rolled back and the items are applied one by one in the next, as :meth:`_apply` does."""
        try:
            with store.transaction():
                values = _values(batch, items, store)
        except Exception:  # noqa: BLE001 -- some item is at fault (rolled back): find which, alone
            logger.debug("batch %s of %d items failed: applying them one by one", batch.name, len(items))
            with store.transaction():
                return [cls._one(_alone(batch, item), store) for item in items]
        return [(value, None) for value in values]

    @classmethod
    def _apply(cls, batch: Batch[Any, Any], items: list[Any], store: Store) -> list[Outcome]:
        try:
            with store.transaction():
                values = _values(batch, items, store)
        except Exception:  # noqa: BLE001 -- some item is at fault (rolled back): find which, alone
            logger.debug("batch %s of %d items failed: applying them one by one", batch.name, len(items))
            return [cls._one(_alone(batch, item), store) for item in items]
        return [(value, None) for value in values]

    @staticmethod
    def _one(job: Job, store: Store) -> Outcome:
        try:
            with store.transaction():  # a savepoint: a failing job rolls back alone
                return job(store), None
        except Exception as e:  # noqa: BLE001 -- handed to the job's request, which raises it
            return None, e


def _values(batch: Batch[Any, Any], items: list[Any], store: Store) -> list[Any]:
    values = batch.apply(store, items)
    if len(values) != len(items):
        raise RuntimeError(f"batch {batch.name}: {len(values)} values for {len(items)} items")
    return values


def _alone(batch: Batch[Any, Any], item: Any) -> Job:
    return lambda store: batch.apply(store, [item])[0]
