"""`gateway run --workers 2`: two proxy processes share the listening port, one admin API.
Both serve; a hot swap under load fails no request on either and both sign with the new CA from
the first handshake after the API call answered; a worker killed with -9 is restarted while the
other serves on; SIGTERM stops them all. The admin API's /metrics counts what both proxied, and
its totals keep a killed worker's last figures. A posture rule made while the workers serve
reaches both workers' decisions."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devices import token_secret
from tests.support.pki import issue_leaf, make_ca
from tests.support.wait import wait_until

from . import curl, sdk
from .device_lab import passing_claim
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .pki import issued_by, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

START_TIMEOUT = 120.0  # two workers import mitmproxy at once on a shared 2-core machine
CLIENTS = 4
COUNTED = 24  # requests whose count /metrics shows
PID = re.compile(r"\bpid (\d+)\b")


@dataclass(frozen=True)
class Result:
    started: float
    leaf: x509.Certificate | None
    error: str | None


def _load(
    gw: GatewayProcess, origin: Origin, bundle: Path, n: int, stop: threading.Event, out: list[Result]
) -> None:
    ctx = client_context(bundle)
    for i in range(100_000):
        if stop.is_set():
            return
        host = f"c{n}-{i}.origin.test"
        started = time.monotonic()
        try:
            got = fetch(gw.proxy_port, host, origin.port, ctx, timeout=10)
            if got.status != 200 or body_for(host) not in got.body:
                raise AssertionError(f"status {got.status}: {got.body[:200]!r}")
            out.append(Result(started, got.leaf, None))
        except Exception as e:  # recorded, asserted on below
            out.append(Result(started, None, f"{host}: {type(e).__name__}: {e}"))


def _workers(gw: GatewayProcess, account: str) -> dict[str, dict[str, Any]]:
    """Live worker nodes by name ("worker 1"), with their pid."""
    with gw.api() as api:
        nodes = api.get(f"/accounts/{account}/gateway/nodes").json()["result"]
    found = {}
    for node in nodes:
        name = node["name"]
        if node["live"] and name.startswith("worker "):
            match = PID.search(name)
            assert match, name
            found[" ".join(name.split()[:2])] = {**node, "pid": int(match.group(1))}
    return found


def _requests_counted(gw: GatewayProcess) -> dict[str, float]:
    """``gateway_requests_total`` of the admin API's /metrics ("total"), and each worker's."""
    with gw.api() as api:
        answer = api.get(f"{gw.admin_url}/metrics")
    assert answer.status_code == 200, answer.text
    counted: dict[str, float] = {"total": 0.0}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total":
                counted["total"] += sample.value
            elif sample.name == "gateway_worker_requests_total":
                worker = sample.labels["worker"]
                counted[worker] = counted.get(worker, 0.0) + sample.value
    return counted


def _log_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    path = gw.data_dir / "requests.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


@pytest.mark.serial  # a time bound (follow within 2 s, p99 ratio, counts per window): runs alone (tests/support/parallel.py)
def test_two_workers(gateway_factory: Any, origin: Origin, tmp_path: Path) -> None:
    gw: GatewayProcess = gateway_factory(workers=2)
    pids: set[int] = set()
    gw.start(timeout=START_TIMEOUT)
    try:
        with sdk.client(gw) as c:
            account = sdk.account_id(c)
            workers = _workers(gw, account)
            assert set(workers) == {"worker 1", "worker 2"}, workers
            pids = {w["pid"] for w in workers.values()}
            assert len(pids) == 2 and gw.proc is not None and gw.proc.pid not in pids
            with gw.api() as api:
                health = api.get(f"{gw.admin_url}/healthz").json()
            assert health["status"] == "ok", health
            assert {w["pid"] for w in health["workers"].values()} == pids, health

            # /metrics: the workers' counters, summed (the admin process proxies nothing).
            first = tmp_path / "first.pem"
            first.write_text(gw.ca_pem())
            ctx = client_context(first)
            for i in range(COUNTED):
                got = fetch(gw.proxy_port, f"counted-{i}.origin.test", origin.port, ctx, timeout=10)
                assert got.status == 200
            counted = _requests_counted(gw)
            assert counted["total"] == COUNTED, counted
            assert sum(v for k, v in counted.items() if k != "total") == COUNTED, counted

            # A new CA, available (both workers loaded it), not yet on.
            old_pem = gw.ca_pem()
            created = sdk.generate_available(c, account, days=30)
            with gw.api() as api:
                new_pem = api.get(f"/accounts/{account}/gateway/certificates/{created.id}").json()["result"][
                    "certificate"
                ]
            bundle = tmp_path / "both.pem"
            bundle.write_text(old_pem + new_pem)

            # Hot swap under load.
            stop = threading.Event()
            results: list[list[Result]] = [[] for _ in range(CLIENTS)]
            threads = [
                threading.Thread(target=_load, args=(gw, origin, bundle, n, stop, results[n]))
                for n in range(CLIENTS)
            ]
            for t in threads:
                t.start()
            try:
                time.sleep(2)
                sdk.turn_on(c, account, created.id)
                answered = time.monotonic()
                time.sleep(2)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            done = [r for rs in results for r in rs]
            errors = [r.error for r in done if r.error]
            assert not errors, errors[:5]
            after = [r for r in done if r.started >= answered]
            assert len(after) >= 4, f"only {len(after)} requests after the swap"
            old, new = load_pem(old_pem), load_pem(new_pem)
            stale = [r for r in after if r.leaf is None or not issued_by(r.leaf, new)]
            assert not stale, (
                f"{len(stale)} of {len(after)} handshakes after the API answered used another CA"
            )
            assert any(
                r.leaf is not None and issued_by(r.leaf, old) for r in done if r.started < answered - 0.5
            )

            # Both workers served, and both signed with the new CA (the request log names the node).
            node_ids = {w["id"] for w in workers.values()}

            def served_by_both() -> bool:
                lines = _log_lines(gw)
                return node_ids <= {line.get("node") for line in lines}

            assert wait_until(served_by_both, 5), {line.get("node") for line in _log_lines(gw)}
            new_fingerprint = new.fingerprint(hashes.SHA256()).hex(":").upper()
            signed_new = {
                line.get("node") for line in _log_lines(gw) if line.get("ca_fingerprint") == new_fingerprint
            }
            assert node_ids <= signed_new, (signed_new, _log_lines(gw)[-1])

            # kill -9 one worker: it is restarted, the other serves on, nothing fails after.
            before_kill = _requests_counted(gw)
            victim = workers["worker 1"]["pid"]
            os.kill(victim, signal.SIGKILL)

            def restarted() -> dict[str, Any] | None:
                now = _workers(gw, account).get("worker 1")
                return now if now is not None and now["pid"] != victim else None

            again = wait_until(restarted, 60, interval=0.2)
            assert again, f"worker 1 not restarted\n{gw.stderr_tail()}"
            assert again["id"] == workers["worker 1"]["id"], "the restarted worker took a new node id"
            ctx = client_context(bundle)
            for i in range(30):
                host = f"after-{i}.origin.test"
                got = fetch(gw.proxy_port, host, origin.port, ctx, timeout=10)
                assert got.status == 200 and body_for(host) in got.body
                assert issued_by(got.leaf, new)
            assert "worker 1" in gw.stderr_tail(400) and "restarting it" in gw.stderr_tail(400)
            # The totals keep what the dead run last reported; its own series starts again.
            after_kill = _requests_counted(gw)
            assert after_kill["total"] >= before_kill["total"] + 30, (before_kill, after_kill)
            assert after_kill.get("1", 0) <= 30 < before_kill.get("1", 0), (before_kill, after_kill)

            # A rule change reaches both workers before the API call answers.
            with gw.api() as api:
                made = api.post(
                    f"/accounts/{account}/gateway/rules",
                    json={
                        "name": "Block one",
                        "action": "block",
                        "traffic": 'http.request.host == "blocked.origin.test"',
                    },
                )
            assert made.status_code == 200, made.text
            blocked = [
                fetch(gw.proxy_port, "blocked.origin.test", origin.port, ctx, timeout=10) for _ in range(20)
            ]
            assert {got.status for got in blocked} == {403}, [got.status for got in blocked]
            pids = {w["pid"] for w in _workers(gw, account).values()}
    finally:
        if gw.running:
            gw.stop()  # SIGTERM: exit 0 asserted
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


DEVICE_HOST = "e2e-workers"  # the enrolled device's host name: its certificate is for "<it>.corp"
IDENTIFIED = 16  # connections per host as the device: both workers serve some (1 - 2**-15)


def _posture_rule(api: Any, account: str, upload_id: str, name: str) -> str:
    made = api.post(f"/accounts/{account}/devices/posture", json={
        "name": name, "type": "client_certificate_v2", "expiration": "10m",
        "match": [{"platform": "linux"}],
        "input": {"certificate_id": upload_id, "cn": "${hostname}.corp", "check_private_key": True,
                  "operating_system": "linux", "extended_key_usage": ["clientAuth"]},
    })  # fmt: skip
    assert made.status_code == 200, made.text
    return str(made.json()["result"]["id"])


def _block_unless_passed(api: Any, account: str, host: str, rule_id: str) -> None:
    made = api.post(f"/accounts/{account}/gateway/rules", json={
        "name": f"e2e {host} needs {rule_id}", "action": "block", "precedence": 100 + len(host),
        "filters": ["http"], "traffic": f'http.request.host == "{host}"',
        "device_posture": f'not(any(device_posture.checks.passed[*] in {{"{rule_id}"}}))',
    })  # fmt: skip
    assert made.status_code == 200, made.text


def _report_pass(api: Any, device: dict[str, str], issued: Any, rule_id: str) -> None:
    """As the agent does: a nonce, then a passing result with the proof over it."""
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"{device['id']}:{device['secret']}".encode()).decode()
    }
    nonce = api.post("/agent/nonce", json={}, headers=auth)
    assert nonce.status_code == 200, nonce.text
    claim = passing_claim(issued, nonce.json()["result"]["nonce"], device["id"], rule_id)
    stored = api.post("/agent/results", json={"results": [claim]}, headers=auth)
    assert stored.status_code == 200, stored.text
    assert [r["verified"] for r in stored.json()["result"]] == [True], stored.text


def test_posture_rules_made_after_start_reach_every_worker(
    gateway_factory: Any, origin: Origin, tmp_path: Path
) -> None:
    """Each worker caches the account's posture rules; a rule the admin API makes while they
    serve reaches every worker's decisions before the call answers (it did not, once); so does
    a device deleted while every worker has it cached."""
    gw: GatewayProcess = gateway_factory(workers=2)
    gw.start(timeout=START_TIMEOUT)
    try:
        cacert = tmp_path / "gateway-ca.pem"
        cacert.write_text(gw.ca_pem())
        signing = make_ca("e2e workers device CA", key_identifiers=True)
        issued = issue_leaf(signing, f"{DEVICE_HOST}.corp", authority_key_identifier=True)
        with gw.api() as api:
            account = api.get("/accounts").json()["result"][0]["id"]
            upload = api.post(f"/accounts/{account}/mtls_certificates", json={
                "name": "e2e workers devices", "certificates": signing.cert_pem(), "ca": True})  # fmt: skip
            assert upload.status_code == 200, upload.text
            upload_id = upload.json()["result"]["id"]
            first = _posture_rule(api, account, upload_id, "e2e first")
            _block_unless_passed(api, account, "first.origin.test", first)
            token = api.post(
                f"/accounts/{account}/devices/enrollment_tokens", json={"email": "w@example.com"}
            )
            assert token.status_code == 200, token.text
            enrolled = api.post("/agent/enroll", json={
                "secret": token_secret(token.json()["result"]["token"]), "name": DEVICE_HOST, "os": "linux",
                "hostname": DEVICE_HOST, "serial_number": "E2E-W"})  # fmt: skip
            assert enrolled.status_code == 200, enrolled.text
            result = enrolled.json()["result"]
            device = {"id": result["device_id"], "secret": result["device_secret"]}
            _report_pass(api, device, issued, first)

            def statuses(host: str) -> list[int]:
                user = ("--proxy-user", f"{device['id']}:{device['secret']}")
                url = origin.url(host)
                return [
                    curl.via_proxy(gw.proxy_port, url, cacert=cacert, args=user).status
                    for _ in range(IDENTIFIED)
                ]

            assert statuses("first.origin.test") == [200] * IDENTIFIED  # both workers cached {first}
            second = _posture_rule(api, account, upload_id, "e2e second")
            _block_unless_passed(api, account, "second.origin.test", second)
            _report_pass(api, device, issued, second)
            assert statuses("second.origin.test") == [200] * IDENTIFIED
            node_ids = {w["id"] for w in _workers(gw, account).values()}
            served = {line.get("node") for line in _log_lines(gw) if line.get("host") == "second.origin.test"}
            # The device deleted: no worker knows its secret any more (each forgets it by the
            # store's change journal), so it is anonymous: it fails the posture check, and where
            # no policy applies it is served but logged without a device.
            deleted = api.delete(f"/accounts/{account}/devices/{device['id']}")
            assert deleted.status_code == 200, deleted.text
            assert statuses("second.origin.test") == [403] * IDENTIFIED
            assert statuses("after-delete.origin.test") == [200] * IDENTIFIED

        def after_delete() -> list[dict[str, Any]]:
            return [line for line in _log_lines(gw) if line.get("host") == "after-delete.origin.test"]

        assert wait_until(lambda: len(after_delete()) >= IDENTIFIED, 5), after_delete()
        assert {line.get("device") for line in after_delete()} == {None}, after_delete()
        assert wait_until(
            lambda: (
                node_ids
                <= {line.get("node") for line in _log_lines(gw) if line.get("host") == "second.origin.test"}
            ),
            5,
        ), (node_ids, served)
    finally:
        gw.stop()
