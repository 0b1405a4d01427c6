"""kill -9 in the middle of write bursts, then a restart on the same data directory: every
write the API acknowledged is there, and SQLite's integrity check is ok (SPEC §8)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e import tools
from tests.e2e.conftest import _new_gateway
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.origin import Origin

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

ROUNDS = 3
WRITERS = 4
BURST_SECONDS = 1.5
MAX_WRITES_PER_WRITER = 500


def _writer(gw: GatewayProcess, base: str, worker: int, until: float, acked: list[tuple[str, str]]) -> None:
    """Rules, Access policies and imports of one rule each, as fast as acknowledged."""
    auth = {"Authorization": f"Bearer {gw.token}"}
    with httpx.Client(base_url=gw.admin_url, headers=auth, timeout=10) as client:
        for n in range(MAX_WRITES_PER_WRITER):
            if time.monotonic() >= until:
                return
            try:
                if worker % 2:
                    body = {"name": f"w{worker}-{n}", "decision": "allow", "include": [{"everyone": {}}]}
                    reply = client.post(f"{base}/access/policies", json=body)
                    kind = "access/policies"
                else:
                    body = {
                        "name": f"w{worker}-{n}",
                        "action": "block",
                        "traffic": f'http.request.host == "w{n}.test"',
                    }
                    reply = client.post(f"{base}/gateway/rules", json=body)
                    kind = "gateway/rules"
            except httpx.HTTPError:  # killed mid-request: not acknowledged
                return
            if reply.status_code == 200:
                acked.append((kind, reply.json()["result"]["id"]))


def _ids(gw: GatewayProcess, base: str, kind: str) -> set[str]:
    auth = {"Authorization": f"Bearer {gw.token}"}
    with httpx.Client(base_url=gw.admin_url, headers=auth, timeout=30) as client:
        found: set[str] = set()
        page = 1
        while True:
            result = client.get(f"{base}/{kind}", params={"page": page, "per_page": 1000}).json()["result"]
            found |= {item["id"] for item in result}
            if kind == "gateway/rules" or not result:
                return found
            page += 1


def test_acknowledged_writes_survive_kill_9(tmp_path: Path, origin: Origin, hosts_file: Path) -> None:
    gw = _new_gateway(tmp_path, origin, hosts_file)
    acked: list[tuple[str, str]] = []
    try:
        gw.start()
        with httpx.Client(base_url=gw.admin_url, timeout=10) as client:
            reply = client.get("/client/v4/accounts", headers={"Authorization": f"Bearer {gw.token}"})
            base = f"/client/v4/accounts/{reply.json()['result'][0]['id']}"
        for _ in range(ROUNDS):
            until = time.monotonic() + BURST_SECONDS + 5
            threads = [
                threading.Thread(target=_writer, args=(gw, base, w, until, acked)) for w in range(WRITERS)
            ]
            for t in threads:
                t.start()
            time.sleep(BURST_SECONDS)  # real time on purpose: the kill comes in the middle of the writes
            assert gw.proc is not None
            tools.kill_group(gw.proc)  # SIGKILL, in the middle of the writes
            gw.proc.wait(10)
            for t in threads:
                t.join(20)
            gw.start()
        assert len(acked) > 20, "too few writes were acknowledged to prove anything"
        for kind in ("gateway/rules", "access/policies"):
            present = _ids(gw, base, kind)
            lost = [ident for k, ident in acked if k == kind and ident not in present]
            assert lost == [], f"{len(lost)} acknowledged {kind} lost"
        gw.stop()
        with sqlite3.connect(gw.data_dir / "gateway.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        gw.kill()
