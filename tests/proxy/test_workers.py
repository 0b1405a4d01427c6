"""The admin plane's side of its workers (``proxy/workers.py``), with stand-in worker programs
that speak the control protocol: start waits for every "ready", ``sync`` waits for every "ack"
(but not past its timeout for a worker that never answers; calls during a round share the next), a worker that dies is restarted,
``stop`` ends them all, and the admin API's middleware waits for the workers only after a call
that changed something."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy import workers as workers_module
from proxy.admin_plane import health_middleware, sync_middleware
from proxy.config import Config
from proxy.metrics import Metrics
from proxy.workers import Worker, Workers

# A worker: "ready", then an "ack N" for every "sync N" (after `delay` seconds); exits on EOF.
# A negative delay: it also says its store is unreachable. Worker n has counted 10 * n requests.
ECHO = """
import json, sys, time
delay = float(sys.argv[1])
print("ready node-" + sys.argv[2], flush=True)
if delay < 0:
    print("health " + json.dumps({"status": "degraded", "database": "unreachable since then"}), flush=True)
    delay = 0
for line in sys.stdin:
    word, _, n = line.strip().partition(" ")
    if word == "sync":
        time.sleep(delay)
        print("ack " + n, flush=True)
    elif word == "counters":
        counted = [["gateway_requests", {"mode": "regular", "device": "unidentified"}, 10 * int(sys.argv[2])]]
        print("counters " + n + " " + json.dumps(counted), flush=True)
"""


def _workers(tmp_path: Path, delays: list[float]) -> Workers:
    def argv(config: Config, name: str, node_id: str) -> list[str]:
        index = int(name.split()[-1]) - 1
        return [sys.executable, "-c", ECHO, str(delays[index]), str(index + 1)]

    return Workers(Config(data_dir=tmp_path), len(delays), argv_for=argv)


async def _kill_and_await_restart(victim: Worker) -> None:
    """kill -9, then wait until the pool has restarted it and it is ready again."""
    assert victim.process is not None
    old_pid = victim.pid
    victim.process.kill()
    deadline = time.monotonic() + 20
    while (victim.pid == old_pid or not victim.ready.is_set()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert victim.pid != old_pid and victim.ready.is_set()


async def test_sync_waits_for_every_ack(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.0, 0.2])
    await pool.start()
    try:
        assert [w.node_id for w in pool.workers] == ["node-1", "node-2"]
        started = time.monotonic()
        assert await pool.sync() is True
        assert time.monotonic() - started >= 0.2  # the slower worker was waited for
    finally:
        await pool.stop()
    assert all(w.process is not None and w.process.returncode is not None for w in pool.workers)


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
async def test_a_worker_that_does_not_answer_does_not_hold_the_call(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.0, 30.0])
    await pool.start()
    try:
        started = time.monotonic()
        assert await pool.sync(timedelta(milliseconds=300)) is False
        assert time.monotonic() - started < 2
    finally:
        await pool.stop()


async def test_a_worker_that_dies_during_a_sync_is_not_waited_for(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.0, 30.0])  # the second would answer after 30 s
    await pool.start()
    try:
        syncing = asyncio.create_task(pool.sync(timedelta(seconds=20)))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        victim = pool.workers[1].process
        assert victim is not None
        victim.kill()
        assert await syncing is True  # the one left serving followed
        assert time.monotonic() - started < 10  # not the 20 s timeout
    finally:
        await pool.stop()


async def test_a_dead_worker_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "FIRST_BACKOFF", timedelta(milliseconds=50))
    pool = _workers(tmp_path, [0.0, 0.0])
    await pool.start()
    try:
        await _kill_and_await_restart(pool.workers[0])
        assert pool.restarts == 1
        assert await pool.sync() is True  # the new one answers too
    finally:
        await pool.stop()


async def test_syncs_made_while_a_round_is_on_its_way_share_the_next_one(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.2, 0.0])
    await pool.start()
    try:
        first = asyncio.create_task(pool.sync())
        await asyncio.sleep(0.05)  # round 1 sent: the changes below may be newer than it
        started = time.monotonic()
        later = await asyncio.gather(*(pool.sync() for _ in range(10)))
        waited = time.monotonic() - started
        assert await first is True
        assert later == [True] * 10
        assert pool.sync_rounds == 2  # not 11: the ten shared one round
        assert waited >= 0.3  # the rest of round 1, then a whole round of their own
    finally:
        await pool.stop()


async def test_the_api_waits_for_workers_only_after_a_change() -> None:
    changes, synced = [0], []

    async def sync() -> bool:
        synced.append(True)
        return True

    async def change(request: web.Request) -> web.Response:
        changes[0] += 1
        return web.json_response({})

    async def no_change(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[sync_middleware(lambda: changes[0], sync)])
    app.router.add_post("/change", change)
    app.router.add_post("/noop", no_change)
    app.router.add_get("/read", change)  # reads never wait, whatever they do
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/noop")).status == 200
        assert (await client.get("/read")).status == 200
        assert synced == []
        assert (await client.post("/change")).status == 200
        assert synced == [True]


async def test_health_names_a_degraded_worker(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.0, -1.0])
    await pool.start()
    try:
        await pool.sync()  # the health line came before the ack
        health = pool.health()
        assert health["status"] == "degraded"
        workers = health["workers"]
        assert isinstance(workers, dict)
        assert workers["worker 1"]["status"] == "ok"
        assert workers["worker 2"] == {
            "status": "degraded",
            "database": "unreachable since then",
            "pid": pool.workers[1].pid,
            "node": "node-2",
        }
    finally:
        await pool.stop()


async def test_health_is_down_until_a_worker_serves(tmp_path: Path) -> None:
    pool = _workers(tmp_path, [0.0, 0.0])
    assert pool.health()["status"] == "down"  # nothing listens on the proxy port yet
    await pool.start()
    try:
        assert pool.health()["status"] == "ok"
    finally:
        await pool.stop()
    assert pool.health()["status"] == "down"


@pytest.mark.parametrize(("state", "status"), [("down", 503), ("degraded", 200), ("ok", 200)])
async def test_healthz_is_503_only_while_no_worker_serves(state: str, status: int) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[health_middleware(lambda: {"status": state, "workers": {}})])
    app.router.add_get("/healthz", healthz)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/healthz")
        assert answer.status == status
        assert (await answer.json())["status"] == state


REQUESTS = ("gateway_requests", (("mode", "regular"), ("device", "unidentified")))


async def test_counters_are_summed_and_a_dead_runs_stay_in_the_totals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "FIRST_BACKOFF", timedelta(milliseconds=50))
    pool = _workers(tmp_path, [0.0, 0.0])
    await pool.start()
    try:
        counted = await pool.counters()
        assert counted.by_worker == {"1": {REQUESTS: 10.0}, "2": {REQUESTS: 20.0}}
        assert counted.retired == {}
        await _kill_and_await_restart(pool.workers[0])
        counted = await pool.counters()
        # The new run of worker 1 starts again (its own series), the totals keep the dead run's.
        assert counted.by_worker == {"1": {REQUESTS: 10.0}, "2": {REQUESTS: 20.0}}
        assert counted.retired == {REQUESTS: 10.0}
        text = Metrics().exposition(counted).decode()
        assert 'gateway_requests_total{device="unidentified",mode="regular"} 40.0' in text
        assert 'gateway_worker_requests_total{device="unidentified",mode="regular",worker="1"} 10.0' in text
    finally:
        await pool.stop()
