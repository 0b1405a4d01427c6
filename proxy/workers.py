"""The workers of ``gateway run --workers N``: N proxy processes sharing the listeners.

Each worker is a data-plane node (``gateway node --worker NAME``, ``proxy/node.py``) on the
gateway's store: it binds every listener with ``SO_REUSEPORT`` (``proxy/reuse_port.py``), so the
kernel spreads new connections over the workers, and talks to this process over its
stdin/stdout (``proxy/worker_control.py``).

- **Changes reach every worker before the API call answers**: after an admin API call that
  changed certificates, policies, settings or devices, ``sync()`` sends ``sync N`` to every
  worker and waits (at most ``ACK_TIMEOUT``) for each to answer ``ack N`` once it has followed
  the store. A worker that does not answer in time is logged and the call answers anyway (the
  worker still follows the store by itself within 50 ms). Calls made while a round is on its
  way share the next round, so a burst of changes costs the workers one follow per round trip.
- **Counters**: the proxy's counters live in the workers; ``counters()`` asks each serving
  worker for its own (``counters N``, answered with JSON) for the admin plane's ``/metrics``,
  which sums them (``proxy/metrics.py``). A worker that does not answer in time counts with the
  figures it last sent; a dead worker's last figures stay in the totals (``retired``).
- **A worker that dies is restarted**, after a back-off that doubles from 0.5 s up to 30 s
  while it keeps dying young; the others go on serving.
- **Stopping** sends SIGTERM to every worker (each stops listening, lets open connections
  finish for a few seconds, leaves the live nodes) and waits; one still running after
  ``STOP_TIMEOUT`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from proxy import config as cfg
from proxy.metrics import SampleKey, WorkerCounters, add, samples_from_json
from proxy.store.locator import split_password
from proxy.worker_launch import worker_argv

logger = logging.getLogger(__name__)

READY_TIMEOUT = timedelta(seconds=60)
ACK_TIMEOUT = timedelta(seconds=1)
STOP_TIMEOUT = timedelta(seconds=15)
FIRST_BACKOFF = timedelta(seconds=0.5)
MAX_BACKOFF = timedelta(seconds=30)
STABLE_AFTER = timedelta(seconds=30)  # a worker up this long had a good run: back-off resets


@dataclass
class Worker:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    node_id: str | None = None
    started: float = 0.0
    failures: int = 0  # deaths in a row, each soon after its start
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    counted: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # "counters N" asked
    counters: dict[SampleKey, float] = field(default_factory=dict)  # the latest this run sent
    reader: asyncio.Task[None] | None = None
    health: dict[str, object] = field(default_factory=lambda: {"status": "ok", "database": "ok"})

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def send(self, line: str) -> bool:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            return False
        try:
            process.stdin.write(line.encode("ascii") + b"\n")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True


class Workers:
    def __init__(
        self,
        config: cfg.Config,
        count: int,
        *,
        argv_for: Callable[[cfg.Config, str, str], list[str]] = worker_argv,
        env: dict[str, str] | None = None,
    ) -> None:
        prefix = uuid.uuid4().hex[:12]
        self._workers = [
            Worker(f"worker {n}", argv_for(config, f"worker {n}", f"{prefix}-w{n}"))
            for n in range(1, count + 1)
        ]
        password = split_password(config.store_location)[1]
        if password is not None:  # not on the workers' command lines, where any local user sees it
            env = {**(os.environ if env is None else env), "PGPASSWORD": password}
        self._env = env
        self._sequence = itertools.count(1)
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._retired: dict[SampleKey, float] = {}  # the last counters of runs that ended
        self._next_round: asyncio.Future[bool] | None = None  # not sent yet: callers join it
        self._rounds: asyncio.Task[None] | None = None
        self.restarts = 0
        self.sync_rounds = 0  # rounds of "sync N" sent (tests, figures)

    @property
    def workers(self) -> Sequence[Worker]:
        return self._workers

    async def start(self) -> None:
        """Every worker started and serving, or ConfigError (the others stopped by the caller)."""
        for worker in self._workers:
            await self._spawn(worker)
        deadline = time.monotonic() + READY_TIMEOUT.total_seconds()
        for worker in self._workers:
            await self._until_ready(worker, deadline)
        self._supervisor = asyncio.create_task(self._supervise())
        logger.info(
            "%d workers serving: %s",
            len(self._workers),
            ", ".join(f"{w.name} pid {w.pid}" for w in self._workers),
        )

    async def _until_ready(self, worker: Worker, deadline: float) -> None:
        assert worker.process is not None
        ready = asyncio.create_task(worker.ready.wait())
        exited = asyncio.create_task(worker.process.wait())
        await asyncio.wait(
            {ready, exited}, timeout=max(0.0, deadline - time.monotonic()), return_when="FIRST_COMPLETED"
        )
        ready.cancel()
        exited.cancel()
        if not worker.ready.is_set():
            code = worker.process.returncode
            raise cfg.ConfigError(
                f"{worker.name} (pid {worker.pid}) "
                + (f"exited with status {code}" if code is not None else "did not start in time")
                + " before serving: see its log lines above"
            )

    async def _spawn(self, worker: Worker) -> None:
        worker.ready.clear()
        worker.node_id = None
        worker.process = await asyncio.create_subprocess_exec(
            *worker.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
        )
        worker.started = time.monotonic()
        worker.reader = asyncio.create_task(self._read(worker, worker.process))

    async def _read(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            command, _, argument = line.decode("ascii", "replace").strip().partition(" ")
            if command == "ready":
                worker.node_id = argument
                worker.health = {"status": "ok", "database": "ok"}
                worker.ready.set()
            elif command == "health":
                try:
                    worker.health = dict(json.loads(argument))
                except ValueError:
                    logger.warning("%s sent a health line that is not JSON", worker.name)
            elif command == "ack":
                future = worker.acks.pop(int(argument), None) if argument.isdigit() else None
                if future is not None and not future.done():
                    future.set_result(None)
            elif command == "counters":
                self._counted(worker, argument)

    def _counted(self, worker: Worker, argument: str) -> None:
        n, _, data = argument.partition(" ")
        try:
            worker.counters = samples_from_json(json.loads(data))
        except ValueError as e:
            logger.warning("%s sent counters that are not understood: %s", worker.name, e)
            return
        future = worker.counted.pop(int(n), None) if n.isdigit() else None
        if future is not None and not future.done():
            future.set_result(None)

    async def counters(self, timeout: timedelta = ACK_TIMEOUT) -> WorkerCounters:
        """Every serving worker's counters, asked now (waiting at most ``timeout``; one that
        does not answer counts with the figures it sent last), and those of ended runs."""
        n = next(self._sequence)
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[None]] = []
        for worker in self._workers:
            if not worker.ready.is_set():
                continue
            future: asyncio.Future[None] = loop.create_future()
            worker.counted[n] = future
            if worker.send(f"counters {n}"):
                waiting.append(future)
            else:
                worker.counted.pop(n, None)
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=timeout.total_seconds())
            for future in pending:
                future.cancel()
            for worker in self._workers:
                worker.counted.pop(n, None)
            if pending:
                logger.warning(
                    "%d worker(s) did not send their counters in time: their last ones count", len(pending)
                )
        return WorkerCounters(
            by_worker={w.name.removeprefix("worker "): dict(w.counters) for w in self._workers if w.counters},
            retired=dict(self._retired),
        )

    def health(self) -> dict[str, object]:
        """For the admin plane's /healthz: "degraded" while a worker is not serving or says its
        store is unreachable (still 200: the others, or the worker itself, serve on); "down"
        while no worker serves (starting, or all restarting: 503, so that nothing is sent yet)."""
        workers: dict[str, object] = {}
        degraded = False
        serving_any = False
        for worker in self._workers:
            serving = (
                worker.ready.is_set() and worker.process is not None and worker.process.returncode is None
            )
            serving_any = serving_any or serving
            state = dict(worker.health) if serving else {"status": "degraded", "serving": "no (restarting)"}
            degraded = degraded or state.get("status") != "ok"
            workers[worker.name] = {**state, "pid": worker.pid, "node": worker.node_id}
        if not serving_any:  # starting, or every worker down: nothing answers on the proxy port
            return {"status": "down", "workers": workers}
        return {"status": "degraded" if degraded else "ok", "workers": workers}

    async def sync(self, timeout: timedelta = ACK_TIMEOUT) -> bool:
        """Every serving worker has followed the store (True), or ``timeout`` passed (False).

        Calls coalesce: a caller waits for the next round of ``sync N`` that starts after it
        called (one already on its way may have been sent before the caller's change was
        committed), and every caller that arrives before that round is sent shares it. Under a
        burst of changes (posture reports) the workers follow once per round trip, not once per
        call. A caller waits for at most the round in flight and its own: two ``timeout``s.
        """
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
            if self._rounds is None or self._rounds.done():
                self._rounds = asyncio.create_task(self._run_rounds(timeout))
        return await asyncio.shield(self._next_round)

    async def _run_rounds(self, timeout: timedelta) -> None:
        while self._next_round is not None:
            waiting, self._next_round = self._next_round, None
            try:
                synced = await self._round(timeout)
            except asyncio.CancelledError:
                waiting.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - a bug: its callers see it, later rounds still run
                waiting.set_exception(e)
                continue
            waiting.set_result(synced)
            self.sync_rounds += 1

    async def _round(self, timeout: timedelta) -> bool:
        n = next(self._sequence)
        loop = asyncio.get_running_loop()
        waiting: list[tuple[Worker, asyncio.Future[None]]] = []
        for worker in self._workers:
            if not worker.ready.is_set():
                continue  # starting: it loads everything anyway
            future: asyncio.Future[None] = loop.create_future()
            worker.acks[n] = future
            if worker.send(f"sync {n}"):
                waiting.append((worker, future))
            else:
                worker.acks.pop(n, None)
        if not waiting:
            return True
        _, pending = await asyncio.wait([f for _, f in waiting], timeout=timeout.total_seconds())
        for worker, future in waiting:
            worker.acks.pop(n, None)
            if future in pending:
                future.cancel()
                logger.warning(
                    "%s (pid %s) did not confirm a change within %d ms: it follows the store by itself",
                    worker.name,
                    worker.pid,
                    timeout / timedelta(milliseconds=1),
                )
        return not pending

    async def _supervise(self) -> None:
        waits = {asyncio.create_task(self._exit_of(w)): w for w in self._workers}
        while waits and not self._stopping:
            done, _ = await asyncio.wait(waits, return_when="FIRST_COMPLETED")
            for task in done:
                worker = waits.pop(task)
                if self._stopping:
                    continue
                await self._restart(worker)
                waits[asyncio.create_task(self._exit_of(worker))] = worker

    async def _exit_of(self, worker: Worker) -> int:
        assert worker.process is not None
        return await worker.process.wait()

    async def _restart(self, worker: Worker) -> None:
        code = worker.process.returncode if worker.process else None
        lived = time.monotonic() - worker.started
        worker.failures = 0 if lived >= STABLE_AFTER.total_seconds() else worker.failures + 1
        backoff = (
            min(FIRST_BACKOFF * (2 ** max(0, worker.failures - 1)), MAX_BACKOFF)
            if worker.failures
            else timedelta(0)
        )
        logger.error(
            "%s (pid %s) exited with status %s after %.1f s: restarting it in %.1f s; the others serve on",
            worker.name,
            worker.pid,
            code,
            lived,
            backoff.total_seconds(),
        )
        for future in (*worker.acks.values(), *worker.counted.values()):
            future.cancel()
        worker.acks.clear()
        worker.counted.clear()
        add(self._retired, worker.counters)  # the totals never go back; its own series restart at 0
        worker.counters = {}
        await asyncio.sleep(backoff.total_seconds())
        if self._stopping:
            return
        await self._spawn(worker)
        self.restarts += 1

    async def stop(self) -> None:
        """SIGTERM to every worker, then wait; kill those that outlive ``STOP_TIMEOUT``."""
        self._stopping = True
        logger.info("stopping %d workers (%d sync rounds sent)", len(self._workers), self.sync_rounds)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        running = [w for w in self._workers if w.process is not None and w.process.returncode is None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self._reap(w) for w in running))
        for worker in self._workers:
            if worker.reader is not None:
                worker.reader.cancel()
            if worker.process is not None and worker.process.stdin is not None:
                worker.process.stdin.close()

    async def _reap(self, worker: Worker) -> None:
        assert worker.process is not None
        try:
            await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT.total_seconds())
        except TimeoutError:
            logger.error(
                "%s (pid %s) still running %d s after SIGTERM: killed",
                worker.name,
                worker.pid,
                STOP_TIMEOUT.total_seconds(),
            )
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
        if worker.process.returncode not in (0, None):
            logger.warning(
                "%s (pid %s) stopped with status %s", worker.name, worker.pid, worker.process.returncode
            )


def dirty_tracker() -> tuple[Callable[[], None], Callable[[], int]]:
    """A counter the services' subscribers bump after every committed change: (bump, read)."""
    count = 0

    def bump() -> None:
        nonlocal count
        count += 1

    def read() -> int:
        return count

    return bump, read


type Sync = Callable[[], Awaitable[bool]]


def default_count() -> int:
    return os.cpu_count() or 1
