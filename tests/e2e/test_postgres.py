"""`gateway run --database postgresql://...`: the store on a real PostgreSQL server (a throwaway
cluster, tests/support/postgres.py): it proxies and turns on a CA; a bad URL, refused credentials,
a missing database and an unreachable server are one line and exit 2; while the server is down
the admin API answers 503 at once, and it serves again when the server is back."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import Cluster
from tests.support.wait import wait_until

from . import sdk, tools
from .conftest import GatewayFactory
from .gateway_process import GatewayProcess, child_env, gateway_command
from .node_process import NodeProcess
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e


def _signs_with(gw: GatewayProcess, origin: Origin, ca_path: Path) -> None:
    got = fetch(gw.proxy_port, "origin.test", origin.port, client_context(ca_path))
    assert got.status == 200 and body_for("origin.test") in got.body
    assert issued_by(got.leaf, load_pem(ca_path.read_text())), describe(got.leaf)


def test_gateway_runs_on_postgresql(
    gateway_factory: GatewayFactory,
    origin: Origin,
    pg_url: str,
    ca_file: Callable[[GatewayProcess], Path],
    tmp_path: Path,
) -> None:
    gw = gateway_factory(extra_args=["--database", pg_url], workers=2)  # the workers share the store
    with gw.serving():
        _signs_with(gw, origin, ca_file(gw))
        with sdk.client(gw) as c:
            account = sdk.account_id(c)
            second = sdk.generate_available(c, account)
            sdk.turn_on(c, account, second.id)
        new_ca = tmp_path / "second.pem"
        new_ca.write_text(second.certificate)
        assert wait_until(lambda: _leaf_from(gw, origin, new_ca), 10), "the new CA never signed"
        password = pg_url.split("@")[0].rsplit(":", 1)[1]
        assert password not in gw.stdout() and password not in gw.stderr_tail(400)
        workers = _command_lines(pg_url.rsplit("/", 1)[1])  # this test's database: its workers
        assert len(workers) == 2, "gateway run --workers 2: two gateway node processes"
        assert not [line for line in workers if password in line], "a password on a command line"
    assert not (gw.data_dir / "gateway.db").exists()  # the store is on the server, not in the data dir


def _command_lines(word: str) -> list[str]:
    """The command lines of this machine's ``gateway node`` processes with ``word`` in an argument."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"node" in argv and any(word.encode() in arg for arg in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def _leaf_from(gw: GatewayProcess, origin: Origin, ca_path: Path) -> bool:
    try:
        _signs_with(gw, origin, ca_path)
    except (AssertionError, OSError):
        return False
    return True


def _run_with(database: str, tmp_path: Path) -> tuple[int, str, float]:
    argv = [
        gateway_command(), "run", "--data-dir", str(tmp_path / "data"), "--database", database,
        "--proxy-listen", f"127.0.0.1:{tools.free_port()}", "--admin-listen", f"127.0.0.1:{tools.free_port()}",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, env=child_env(), timeout=60, check=False)
    return done.returncode, done.stderr.decode(errors="replace"), time.monotonic() - started


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("mysql://gateway@127.0.0.1/gateway", "--database: unsupported scheme 'mysql'"),
        ("postgresql://gateway@127.0.0.1:port/gateway", "not a valid PostgreSQL URL"),
        ("WRONG_PASSWORD", "the server refused the credentials"),
        ("MISSING_DATABASE", 'database "no_such_db" does not exist'),
        ("UNREACHABLE", "the database is unreachable"),
    ],
)
def test_a_bad_database_is_one_line_and_exit_2(
    database: str, message: str, postgres: Cluster, tmp_path: Path
) -> None:
    database = {
        "WRONG_PASSWORD": postgres.url(password="not-the-password"),
        "MISSING_DATABASE": postgres.url("no_such_db"),
        "UNREACHABLE": f"postgresql://gateway@127.0.0.1:{tools.free_port()}/gateway",
    }.get(database, database)
    code, stderr, took = _run_with(database, tmp_path)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr, stderr
    assert "not-the-password" not in stderr
    assert took < 30


def test_an_outage_answers_503_then_the_gateway_serves_again(
    gateway_factory: GatewayFactory, postgres: Cluster, pg_url: str
) -> None:
    gw = gateway_factory(extra_args=["--database", pg_url])
    with gw.serving(), gw.api() as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        path = f"/accounts/{account}/gateway/certificates"
        assert api.get(path).status_code == 200
        postgres.stop(mode="immediate")
        try:
            started = time.monotonic()
            down = api.get(path)
            assert time.monotonic() - started < 10
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["success"] is False and "the database is unreachable" in body["errors"][0]["message"]
            assert "retrying" in body["errors"][0]["message"]
            assert int(down.headers["Retry-After"]) >= 1
            assert gw.running
        finally:
            postgres.start()
        assert wait_until(lambda: _status(api, path) == 200, 15)
        created = api.post(path, json={"validity_period_days": 30})
        assert created.status_code == 200, created.text


def _status(api: httpx.Client, path: str) -> int:
    try:
        return api.get(path).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_under_api_writes_loses_no_acknowledged_write(
    gateway_factory: GatewayFactory, postgres: Cluster, pg_url: str, mode: str
) -> None:
    """An admin client creates lists as fast as it can while PostgreSQL restarts (cleanly, or
    as a crash): every list the API answered 200 for is there afterwards; the others got a 503."""
    gw = gateway_factory(extra_args=["--database", pg_url])
    with gw.serving(), gw.api(timeout=30) as api:
        account = api.get("/accounts").json()["result"][0]["id"]
        lists = f"/accounts/{account}/gateway/lists"
        acknowledged: list[str] = []
        statuses: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    answer = api.post(
                        lists, json={"name": f"list {n}", "type": "HOST", "items": ["a.example"]}
                    )
                except httpx.HTTPError:
                    statuses.append(0)
                    continue
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    acknowledged.append(answer.json()["result"]["id"])

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert wait_until(lambda: len(acknowledged) >= 10, 30)
            postgres.restart(mode=mode)
            count = len(acknowledged)
            assert wait_until(lambda: len(acknowledged) >= count + 10, 30), statuses[-20:]
        finally:
            stop.set()
            thread.join(timeout=60)
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        stored = {item["id"] for item in api.get(lists, params={"per_page": 1000}).json()["result"]}
        assert set(acknowledged) <= stored, set(acknowledged) - stored


def test_a_node_on_the_same_database_follows_a_turn_on(
    gateway_factory: GatewayFactory, origin: Origin, pg_url: str, tmp_path: Path
) -> None:
    """gateway node --database postgresql://...: it registers, loads the CA and follows a turn-on
    (LISTEN/NOTIFY) by its next handshake."""
    gw = gateway_factory(extra_args=["--database", pg_url])
    with gw.serving():
        node = NodeProcess(gw, "pg-node", ["--database", pg_url])
        node.start()
        try:
            with sdk.client(gw) as c:
                account = sdk.account_id(c)
                with gw.api() as api:
                    listed = api.get(f"/accounts/{account}/gateway/nodes").json()["result"]
                assert node.health()["node"] in {n["id"] for n in listed if n["live"]}, listed
                second = sdk.generate_available(c, account)  # available: the node loaded it too
                sdk.turn_on(c, account, second.id)
            assert wait_until(lambda: node.health()["in_use"] == second.id, 5, interval=0.05)
            bundle = tmp_path / "both.pem"
            bundle.write_text(gw.ca_pem() + second.certificate)
            got = fetch(node.proxy_port, "origin.test", origin.port, client_context(bundle))
            assert got.status == 200 and issued_by(got.leaf, load_pem(second.certificate)), describe(got.leaf)
            node.stop()
        finally:
            node.kill()
