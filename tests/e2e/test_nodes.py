"""Three `gateway node` processes and one `gateway run` on one store (SQLite, and PostgreSQL), as
docs/scale.md shows: activation waits for every live node, turning a CA on reaches every node by its next
handshake, a node killed with -9 holds a rollout back only until the heartbeat timeout, and
`gateway nodes` shows them all."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import Cluster
from tests.support.wait import wait_until

from . import sdk, tools
from .gateway_process import GatewayProcess, child_env, gateway_command
from .node_process import NodeProcess
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

GatewayFactory = Callable[..., GatewayProcess]
NODE_TIMEOUT = 6.0  # seconds: short, so a killed node's hold on a rollout ends soon


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    """Where the store lives: the data directory's SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return []
    return ["--database", str(request.getfixturevalue("pg_url"))]


@pytest.fixture
def cluster(
    gateway_factory: GatewayFactory, store_args: list[str]
) -> Iterator[tuple[GatewayProcess, list[NodeProcess]]]:
    timeout = ["--node-timeout", str(NODE_TIMEOUT)]
    gw = gateway_factory(extra_args=[*timeout, *store_args])
    gw.start()
    nodes = [NodeProcess(gw, f"node{n}", [*timeout, *store_args]) for n in (1, 2, 3)]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            _wait_serving(node)
        yield gw, nodes
    finally:
        for node in nodes:
            node.kill()
        if gw.running:
            gw.stop()


def _stopped(pid: int) -> bool:
    """The process is stopped (state T in /proc/PID/stat), not only sent SIGSTOP."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def _sqlite_write_lock_free(database: Path) -> bool:
    """Nobody holds the write lock of the SQLite store: a write could start now."""
    conn = sqlite3.connect(database, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _pause_outside_a_write(node: NodeProcess, gw: GatewayProcess) -> None:
    """SIGSTOP `node` while it holds no write lock on a SQLite store. Stopped in the middle of a
    write (its heartbeat), it would hold the whole database's lock for as long as it is stopped,
    and the admin API's next write fails with "database is locked": not the live node that has
    not loaded the CA yet which the test pauses it to be. (PostgreSQL locks rows, not the database.)"""
    assert node.proc is not None
    pid, database = node.proc.pid, gw.data_dir / "gateway.db"
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        assert wait_until(lambda: _stopped(pid), 5), f"{node.name} did not stop"
        if not database.exists() or _sqlite_write_lock_free(database):
            return
        os.kill(pid, signal.SIGCONT)  # in a write: let it finish, then try again
        time.sleep(0.05)
    pytest.fail(f"{node.name} held the SQLite write lock at each of 50 pauses")


def _wait_serving(node: NodeProcess) -> None:
    def healthy() -> bool:
        assert node.proc is not None
        if node.proc.poll() is not None:
            pytest.fail(f"{node.name} exited {node.proc.returncode}\n{tools.tail(node.stderr_path)}")
        try:
            return node.health().get("in_use") is not None
        except Exception:
            return False

    assert wait_until(healthy, 90, interval=0.1), f"{node.name} never served\n{tools.tail(node.stderr_path)}"


def _signs_with(port: int, origin: Origin, host: str, ca_pem: str, bundle: Path) -> bool:
    got = fetch(port, host, origin.port, client_context(bundle), timeout=10)
    assert got.status == 200 and body_for(host) in got.body, got.body[:200]
    return issued_by(got.leaf, load_pem(ca_pem))


@pytest.mark.serial  # a time bound (follow within 2 s, p99 ratio, counts per window): runs alone (tests/support/parallel.py)
def test_three_nodes_follow_one_admin_plane(
    cluster: tuple[GatewayProcess, list[NodeProcess]], origin: Origin, tmp_path: Path
) -> None:
    gw, nodes = cluster
    with sdk.client(gw) as c:
        account = sdk.account_id(c)
        with gw.api() as api:
            listed = api.get(f"/accounts/{account}/gateway/nodes").json()["result"]
        live = {n["id"]: n for n in listed if n["live"]}
        assert {n.health()["node"] for n in nodes} <= live.keys(), listed
        assert len(live) == 4, listed  # three nodes and gateway run's own proxy

        # Activation waits for every live node: node 3 paused (live, not loading) holds it back.
        # (Paused well within the heartbeat timeout: made first, the CA only needs activating.)
        created = c.zero_trust.gateway.certificates.create(account_id=account, validity_period_days=30)
        _pause_outside_a_write(nodes[2], gw)
        try:
            c.zero_trust.gateway.certificates.activate(created.id, account_id=account)
            held = wait_until(
                lambda: sdk.certificates(c, account)[created.id].binding_status != "pending_deployment", 1.5
            )
            assert not held, "available while node 3 had not loaded it"
        finally:
            os.kill(nodes[2].proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        sdk.wait_binding_status(c, account, created.id, "available", timeout=5)

        # Turned on: every node signs with it by its next handshake after following the change.
        with gw.api() as api:
            new_pem = api.get(f"/accounts/{account}/gateway/certificates/{created.id}").json()["result"][
                "certificate"
            ]
        bundle = tmp_path / "both.pem"
        bundle.write_text(gw.ca_pem() + new_pem)
        sdk.turn_on(c, account, created.id)
        answered = time.monotonic()
        assert _signs_with(gw.proxy_port, origin, "n0.origin.test", new_pem, bundle), "gateway run"
        for n, node in enumerate(nodes, 1):
            assert wait_until(lambda node=node: node.health()["in_use"] == created.id, 2, interval=0.01), (
                node.name
            )
            assert _signs_with(node.proxy_port, origin, f"n{n}.origin.test", new_pem, bundle), describe(
                load_pem(new_pem)
            )
        followed = time.monotonic() - answered
        assert followed < 2, f"nodes took {followed:.2f} s to follow"

        # kill -9 one node: the next rollout waits for it only until the heartbeat timeout.
        nodes[2].proc.kill()  # type: ignore[union-attr]
        nodes[2].proc.wait(10)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        second = c.zero_trust.gateway.certificates.create(account_id=account, validity_period_days=30)
        c.zero_trust.gateway.certificates.activate(second.id, account_id=account)
        assert sdk.certificates(c, account)[second.id].binding_status == "pending_deployment"
        sdk.wait_binding_status(c, account, second.id, "available", timeout=NODE_TIMEOUT + 10)
        waited = time.monotonic() - killed_at
        assert waited >= NODE_TIMEOUT - 3, f"available {waited:.1f} s after the kill: before the timeout"

        # gateway nodes: the four, the killed one not live.
        out = tools.run(
            [gateway_command(), "nodes", "--server", gw.admin_url],
            env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token or ""}),
            check=True,
        ).stdout.decode()
        killed_id = nodes[2].name
        assert "NODE" in out and "LAST SEEN" in out, out
        rows = [line for line in out.splitlines()[1:] if line.strip()]
        assert sum(" yes " in row for row in rows) == 3, out
        assert any(" no " in row for row in rows), (killed_id, out)
    for node in nodes[:2]:
        node.stop()


def test_bad_node_starts(gateway: GatewayProcess, tmp_path: Path) -> None:
    env = child_env()
    no_store = tools.run([gateway_command(), "node"], env=env)
    assert no_store.returncode == 2 and b"needs the gateway's store" in no_store.stderr, no_store.stderr
    empty = tools.run([gateway_command(), "node", "--data-dir", str(tmp_path / "empty")], env=env)
    assert empty.returncode == 1 and b"no gateway store" in empty.stderr, empty.stderr
    assert not (tmp_path / "empty").exists(), "a node must not create a store"
    bad_id = tools.run(
        [gateway_command(), "node", "--data-dir", str(gw_dir := gateway.data_dir), "--node-id", "a b"],
        env=env,
    )
    assert bad_id.returncode == 2 and b"--node-id" in bad_id.stderr, bad_id.stderr

    first = NodeProcess(gateway, "first", ["--node-id", "edge-1"])
    first.start()
    try:
        second = NodeProcess(gateway, "second", ["--node-id", "edge-1"]).spawn()
        assert second.wait(60) == 1
        err = (gateway.log_dir / "second.stderr").read_text()
        assert "--node-id edge-1: a node with this id is live" in err, err[-2000:]
        assert first.health()["status"] == "ok"
    finally:
        first.stop()
    assert gw_dir.exists()


@pytest.mark.parametrize("workers", ["0", "-2", "100000", "two"])
def test_bad_worker_counts(workers: str, tmp_path: Path) -> None:
    result = tools.run(
        [gateway_command(), "run", "--data-dir", str(tmp_path / "d"), "--workers", workers], env=child_env()
    )
    assert result.returncode == 2, result.stderr
    assert b"--workers" in result.stderr, result.stderr
    assert not (tmp_path / "d").exists()


def test_nodes_serve_on_while_postgresql_is_down(
    gateway_factory: GatewayFactory, postgres: Cluster, pg_url: str, origin: Origin, tmp_path: Path
) -> None:
    """Fail static: with the database stopped a node keeps signing with the CA it loaded and says
    "degraded" (200); when the database is back it says ok and follows what changed."""
    store = ["--database", pg_url, "--node-timeout", "3"]
    gw = gateway_factory(extra_args=store)
    node = NodeProcess(gw, "node1", store)
    with gw.serving():
        node.start()
        try:
            ca = gw.ca_pem()
            bundle = tmp_path / "ca.pem"
            bundle.write_text(ca)
            assert _signs_with(node.proxy_port, origin, "before.origin.test", ca, bundle)
            postgres.stop(mode="immediate")
            try:
                assert wait_until(lambda: node.health()["status"] == "degraded", 15, interval=0.1), (
                    node.health()
                )
                health = node.health()
                assert health["database"].startswith("unreachable since "), health
                for n in range(5):  # serving on, with what it loaded
                    assert _signs_with(node.proxy_port, origin, f"down{n}.origin.test", ca, bundle)
                assert node.stderr().count("serving on with the CAs, rules and posture last loaded") == 1
            finally:
                postgres.start()
            assert wait_until(lambda: node.health()["status"] == "ok", 30, interval=0.1), node.health()
            assert node.stderr().count("store reachable again") == 1, node.stderr()[-3000:]
            with gw.api() as api:  # the admin plane reconnects too

                def admin_back() -> bool:
                    try:
                        return api.get("/accounts").status_code == 200
                    except httpx.HTTPError:
                        return False

                assert wait_until(admin_back, 30, interval=0.2)
            with sdk.client(gw) as c:  # it follows again: a new CA waits for it, then is available
                account = sdk.account_id(c)
                sdk.generate_available(c, account, days=30)
        finally:
            node.kill()
