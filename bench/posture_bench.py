"""Posture ingest with server-side verification: results/s through the real admin API on loopback.

A server process serves the admin API (``proxy.api.create_app`` with a ``DeviceService`` over a
SQLite store on disk: WAL, synchronous=FULL, as ``gateway run``). Setup goes through the API as
an admin and agents would: upload a device CA (``mtls_certificates``), create RULES posture rules,
make an enrollment token per device and enroll it (``/agent/enroll``). Then DEVICES simulated
agents, each with its own aiohttp session (keep-alive), loop as ``gateway agent report`` does:
a nonce (see ``--protocol``), a real ECDSA P-256 proof of possession per result
(``certs.proof.sign_proof``), then one ``POST /agent/results`` with every rule's result. The
server verifies each: nonce (issued to this device, unused, fresh), certificate (issuer, validity,
CN from the device's host name, EKU) and the signature, and stores result + posture log.

Figures: results/s stored as verified passes (all of them must pass), latency of a whole report
(nonces + results POST) at p50/p99, and the group-commit batching (results per transaction).
Client processes (``--clients``) share the load generation; the server is one process, as the
gateway is.

The agents talk HTTP/1.1 with a minimal keep-alive client of their own (``--aiohttp-client``: aiohttp
sessions instead, which cost the client about twice what the request costs the server, on the same
two cores). ``--protocol``: ``offered`` (default, as the agent does): a report is proven with the
nonce the previous answer offered (``Gateway-Nonce``), so a report is one request; ``per-report``:
one ``POST /agent/nonce`` per report; ``per-result``: one per passing result (the agent before
2026-11-23).

``--backend``: the store on SQLite (default), on PostgreSQL, or ``both`` (rounds alternate, so
the two are compared under the same load). PostgreSQL is the server at ``--database URL`` (the
bench makes a fresh database on it for each round and drops it after; the role needs CREATEDB), or
without ``--database`` a throwaway local cluster (Debian's binaries, ``tests/support/postgres.py``,
with fsync and synchronous_commit on, as a real server). The server CPU figures do not count the
PostgreSQL server's processes.

Run:  .venv/bin/python bench/posture_bench.py [--devices 64] [--rules 2] [--seconds 10] [--clients 1]
                                             [--protocol offered|per-report|per-result]
                                             [--backend sqlite|postgresql|both] [--database URL]
                                             [--rounds N] [--aiohttp-client] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from targets import proc_cpu_seconds, process_tree

from certs.proof import proof_message, sign_proof

API = "/client/v4"


# --- the server process -----------------------------------------------------------------------------


def serve(data_dir: Path, proof_worker: bool, database: str | None = None) -> None:
    """The admin API with devices, on a free loopback port; prints {"port", "token", "account"}."""
    import logging

    from aiohttp import web

    from certs.clock import utcnow
    from certs.sealing import KeySealer
    from proxy.api import ApiDeps, create_app
    from proxy.bootstrap import first_start
    from proxy.services.certificates import CertificateService
    from proxy.services.devices import DeviceService
    from proxy.store import Store

    logging.basicConfig(level=logging.WARNING)
    store = Store.open(database or data_dir / "gateway.sqlite3")
    certificates = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
    boot = first_start(store, certificates, admin_token_env=None, clock=utcnow)
    devices = DeviceService(store, utcnow, public_base_url="http://127.0.0.1", proof_worker=proof_worker)
    deps = ApiDeps(store=store, certificates=certificates, clock=utcnow,
                   public_base_url="http://127.0.0.1", devices=devices)  # fmt: skip

    async def main() -> None:
        runner = web.AppRunner(create_app(deps), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        port = runner.addresses[0][1]
        print(
            json.dumps({"port": port, "token": boot.new_admin_token, "account": boot.account_id}), flush=True
        )
        while True:  # report the batching when asked (stdin line), until stdin closes
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            writer = devices.writer
            worker = devices.proofs._process.pid if devices.proofs and devices.proofs._process else None
            print(json.dumps({"commits": writer.commits, "jobs": writer.jobs, "cpu": time.process_time(),
                              "loop_cpu": time.thread_time(), "worker_cpu": proc_cpu_seconds(worker)}), flush=True)  # fmt: skip
        await runner.cleanup()
        await devices.aclose()
        store.close()

    profile_to = os.environ.get("POSTURE_BENCH_PROFILE")
    if profile_to:  # a cProfile dump of the server process, for finding where the time goes
        import cProfile

        cProfile.runctx("asyncio.run(main())", globals(), {"main": main, "asyncio": asyncio}, profile_to)
    else:
        asyncio.run(main())


def _tree_cpu(root: int) -> tuple[float, float]:
    """CPU seconds of ``root`` and of all its live descendants, from /proc: (root, descendants)."""
    return proc_cpu_seconds(root), sum(proc_cpu_seconds(pid) for pid in process_tree(root)[1:])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_gateway(data_dir: Path, workers: int, database: str | None = None) -> None:
    """``gateway run --workers N`` as users run it (admin plane, its proof worker, N proxy
    workers), on free loopback ports; the same stdin/stdout protocol as ``serve``. "cpu" is the
    admin plane's process, "worker_cpu" every process below it (proof worker, proxy workers)."""
    import secrets
    import urllib.request

    token = secrets.token_urlsafe(32)
    admin, proxy_port = _free_port(), _free_port()
    argv = [sys.executable, "-m", "proxy.cli.main", "run", "--data-dir", str(data_dir),
            "--admin-listen", f"127.0.0.1:{admin}", "--proxy-listen", f"127.0.0.1:{proxy_port}",
            "--workers", str(workers), "--log-level", os.environ.get("POSTURE_BENCH_LOG", "warning"),
            *(["--database", database] if database else [])]  # fmt: skip
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": token, "PYTHONPATH": str(REPO)}
    gateway = subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("POSTURE_BENCH_LOG") else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=2) as answer:
                    if json.loads(answer.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway run did not become healthy (exit {gateway.poll()})")
            time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin}{API}/accounts", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            account = json.loads(answer.read())["result"][0]["id"]
        print(json.dumps({"port": admin, "token": token, "account": account}), flush=True)
        for _ in sys.stdin:
            own, below = _tree_cpu(gateway.pid)
            print(json.dumps({"commits": 0, "jobs": 0, "cpu": own, "loop_cpu": own, "worker_cpu": below}),
                  flush=True)  # fmt: skip
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


# --- certificates -----------------------------------------------------------------------------------


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Device CA")])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True).sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def _device_certificate(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], hostname: str
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{hostname}.corp")]))
        .issuer_name(ca[0].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip


# --- setup through the API --------------------------------------------------------------------------


async def _admin(session: aiohttp.ClientSession, method: str, path: str, token: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, API + path, json=body, headers=headers) as response:
        answer = await response.json()
        if response.status >= 400:
            raise SystemExit(f"setup: {method} {path}: HTTP {response.status}: {answer['errors']}")
        return answer["result"]


async def setup(base: str, token: str, account: str, devices: int, rules: int) -> dict[str, Any]:
    ca = _ca()
    async with aiohttp.ClientSession(base) as session:
        upload = await _admin(session, "POST", f"/accounts/{account}/mtls_certificates", token,
                              {"name": "bench devices", "certificates": _pem(ca[0]), "ca": True})  # fmt: skip
        rule_ids = []
        for i in range(rules):
            rule = await _admin(session, "POST", f"/accounts/{account}/devices/posture", token, {
                "name": f"bench certificate {i}", "type": "client_certificate_v2", "expiration": "10m",
                "match": [{"platform": "linux"}],
                "input": {"certificate_id": upload["id"], "check_private_key": True, "operating_system": "linux",
                          "cn": "${hostname}.corp", "extended_key_usage": ["clientAuth"]},
            })  # fmt: skip
            rule_ids.append(rule["id"])
        enrolled = []
        for i in range(devices):
            hostname = f"bench-{i:05d}"
            made = await _admin(session, "POST", f"/accounts/{account}/devices/enrollment_tokens", token,
                                {"email": f"user{i}@example.com"})  # fmt: skip
            fields = json.loads(
                base64.urlsafe_b64decode(made["token"][5:] + "=" * (-len(made["token"][5:]) % 4))
            )
            body = {"secret": fields["s"], "name": hostname, "os": "linux", "hostname": hostname,
                    "serial_number": f"SN{i}"}  # fmt: skip
            async with session.post(f"{API}/agent/enroll", json=body) as response:
                result = (await response.json())["result"]
            cert_pem, key = _device_certificate(ca, hostname)
            enrolled.append({"id": result["device_id"], "secret": result["device_secret"],
                             "certificate": cert_pem, "key": _key_pem(key)})  # fmt: skip
    return {"rules": rule_ids, "devices": enrolled}


# --- the agents ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    results: int = 0
    failed: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] | None = None
    cpu_started: float | None = None  # process CPU time when the measured window began
    cpu: float | None = None  # process CPU time spent in the measured window


class Connection:
    """A minimal keep-alive HTTP/1.1 client over one loopback connection: the load generator
    should cost as little as it can, so that the figures are the server's (aiohttp's client costs
    several times the server's work per request)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host, self._port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.offered: str | None = None  # the nonce the last answer offered (Gateway-Nonce)

    async def request(self, method: str, path: str, body: Any) -> Any:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        data = json.dumps(body).encode()
        self._writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n{self._head}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        self.offered = None
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
            elif line[:14].lower() == b"gateway-nonce:":
                self.offered = line[14:].strip().decode()
        answer = json.loads(await self._reader.readexactly(length))
        if status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {answer['errors']}")
        return answer["result"]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class SessionConnection:
    """The same calls through an aiohttp ``ClientSession`` (keep-alive), for comparison: it costs
    the client several times what it costs the server."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self._session = aiohttp.ClientSession(base, headers=headers, connector=aiohttp.TCPConnector(limit=1))
        self.offered: str | None = None

    async def request(self, method: str, path: str, body: Any) -> Any:
        async with self._session.request(method, path, json=body) as response:
            answer = await response.json()
            self.offered = response.headers.get("Gateway-Nonce")
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {answer['errors']}")
            return answer["result"]

    def close(self) -> None:
        asyncio.get_running_loop().create_task(self._session.close())


async def _agent(base: str, device: dict[str, Any], rules: list[str], start: float, stop: float, tally: Tally,
                 protocol: str, warm_from: float, aiohttp_client: bool) -> None:  # fmt: skip
    key = serialization.load_pem_private_key(device["key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    auth = base64.b64encode(f"{device['id']}:{device['secret']}".encode()).decode()
    host, port = base.removeprefix("http://").split(":")

    def connect() -> Connection | SessionConnection:
        headers = {"Authorization": f"Basic {auth}"}
        return SessionConnection(base, headers) if aiohttp_client else Connection(host, int(port), headers)

    connection = connect()
    await asyncio.sleep(max(0.0, warm_from - time.perf_counter()))  # every agent starts together
    try:
        while True:
            began = time.perf_counter()
            if began >= stop:
                return
            results = []
            try:
                # as the agent does: the nonce the last answer offered, else POST /agent/nonce;
                # the older protocols: one requested nonce per report, or per passing result
                nonce_text = connection.offered if protocol == "offered" else None
                made = 1  # the results POST
                for rule_id in rules:
                    if not nonce_text or protocol == "per-result":
                        nonce_text = (await connection.request("POST", f"{API}/agent/nonce", {}))["nonce"]
                        made += 1
                    message = proof_message(
                        nonce=base64.b64decode(nonce_text), device_id=device["id"], rule_id=rule_id
                    )
                    results.append({"rule_id": rule_id, "success": True, "nonce": nonce_text,
                                    "certificate": device["certificate"],
                                    "signature": base64.b64encode(sign_proof(key, message)).decode()})  # fmt: skip
                stored = await connection.request("POST", f"{API}/agent/results", {"results": results})
            except (
                OSError,
                RuntimeError,
                asyncio.IncompleteReadError,
                aiohttp.ClientError,
                KeyError,
                TypeError,
            ):
                tally.errors += 1
                connection.close()
                connection = connect()
                continue
            done = time.perf_counter()
            if tally.cpu_started is None and done >= start:
                tally.cpu_started = time.process_time()
            if done >= stop and tally.cpu is None and tally.cpu_started is not None:
                tally.cpu = time.process_time() - tally.cpu_started
            if start <= done < stop:  # stored within the measured window
                tally.results += sum(1 for s in stored if s["success"] and s["verified"])
                tally.failed += sum(1 for s in stored if not s["success"])
                tally.requests += made
                assert tally.latencies is not None
                tally.latencies.append(done - began)
    finally:
        connection.close()


def client_process(base: str, devices: list[dict[str, Any]], rules: list[str], start: float, stop: float,
                   protocol: str, warm_from: float, aiohttp_client: bool, out: Any) -> None:  # fmt: skip
    tally = Tally(latencies=[])

    async def main() -> None:
        await asyncio.gather(
            *(
                _agent(base, d, rules, start, stop, tally, protocol, warm_from, aiohttp_client)
                for d in devices
            )
        )
        await asyncio.sleep(0.1)  # let sessions close

    asyncio.run(main())
    out.send(
        {
            "results": tally.results,
            "failed": tally.failed,
            "requests": tally.requests,
            "errors": tally.errors,
            "latencies": tally.latencies,
            "cpu": tally.cpu,
        }
    )
    out.close()


# --- the run ------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace, database: str | None = None) -> dict[str, Any]:
    """One measured run; ``database``: a PostgreSQL URL (None: SQLite in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as data_dir:
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                data_dir,
                *(["--no-proof-worker"] if args.no_proof_worker else []),
                *(["--serve-database", database] if database else []),
                *(["--serve-workers", str(args.gateway_run)] if args.gateway_run else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdin is not None
            info = json.loads(server.stdout.readline())
            base = f"http://127.0.0.1:{info['port']}"
            prepared = asyncio.run(setup(base, info["token"], info["account"], args.devices, args.rules))
            warm_from = time.time() + 2.0  # time for the client processes to start
            start = warm_from + args.warmup  # perf_counter is per process: share wall time
            stop = start + args.seconds
            shares = [prepared["devices"][i :: args.clients] for i in range(args.clients)]
            context = multiprocessing.get_context("spawn")
            pipes, processes = [], []
            for share in shares:
                receive, send = context.Pipe(duplex=False)
                process = context.Process(
                    target=_client_entry,
                    args=(
                        base,
                        share,
                        prepared["rules"],
                        start,
                        stop,
                        args.protocol,
                        warm_from,
                        args.aiohttp_client,
                        send,
                    ),
                )
                process.start()
                pipes.append(receive)
                processes.append(process)
            time.sleep(max(0.0, start - time.time()))
            server.stdin.write("\n")
            server.stdin.flush()
            before = json.loads(server.stdout.readline())
            time.sleep(max(0.0, stop - time.time()))
            server.stdin.write("\n")
            server.stdin.flush()
            after = json.loads(server.stdout.readline())
            tallies = [pipe.recv() for pipe in pipes]
            for process in processes:
                process.join()
        finally:
            if server.stdin:
                server.stdin.close()
            server.wait(timeout=30)
    latencies = [x for t in tallies for x in t["latencies"]]
    results = sum(t["results"] for t in tallies)
    failed = sum(t["failed"] for t in tallies)
    requests = sum(t["requests"] for t in tallies)
    commits = after["commits"] - before["commits"]
    jobs = after["jobs"] - before["jobs"]
    return {
        "backend": "postgresql" if database else "sqlite",
        "server": f"gateway run --workers {args.gateway_run}" if args.gateway_run else "admin API alone",
        "devices": args.devices,
        "rules_per_device": args.rules,
        "client_processes": args.clients,
        "seconds": args.seconds,
        "verified_results": results,
        "failed_results": failed,
        "errors": sum(t["errors"] for t in tallies),
        "results_per_second": round(results / args.seconds),
        "report_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "report_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "protocol": args.protocol,
        "client": "aiohttp" if args.aiohttp_client else "minimal",
        "requests_per_result": round(requests / max(1, results + failed), 2),
        "write_jobs_per_commit": round(jobs / commits, 1) if commits else None,
        "server_cpu_us_per_result": round(
            (after["cpu"] - before["cpu"] + after["worker_cpu"] - before["worker_cpu"])
            / max(1, results)
            * 1e6
        ),
        "proof_worker_cpu_us_per_result": round(
            (after["worker_cpu"] - before["worker_cpu"]) / max(1, results) * 1e6
        ),
        "proof_worker": not args.no_proof_worker,
        "server_loop_cpu_us_per_result": round(
            (after["loop_cpu"] - before["loop_cpu"]) / max(1, results) * 1e6
        ),
        "client_cpu_us_per_result": round(sum(t["cpu"] or 0 for t in tallies) / max(1, results) * 1e6),
        "cpus": os.cpu_count(),
    }


def _client_entry(base: str, devices: list[dict[str, Any]], rules: list[str], start: float, stop: float,
                  protocol: str, warm_from: float, aiohttp_client: bool, out: Any) -> None:  # fmt: skip
    # wall-clock times converted to this process's perf_counter
    offset = time.perf_counter() - time.time()
    client_process(base, devices, rules, start + offset, stop + offset, protocol, warm_from + offset,
                   aiohttp_client, out)  # fmt: skip


def identity_lookup(calls: int = 200_000) -> float:
    """µs per ``DeviceService.identity()`` of a device with a current verified pass, cached (the
    per-request lookup of the proxy), in this process over a real store."""
    from certs.clock import utcnow
    from certs.sealing import KeySealer
    from proxy.bootstrap import first_start
    from proxy.services.certificates import CertificateService
    from proxy.services.device_enrollment import DeviceDetails
    from proxy.services.devices import DeviceService
    from proxy.services.posture_verify import Report
    from proxy.store import Store

    with tempfile.TemporaryDirectory(prefix="posture-bench-") as data_dir:
        store = Store.open(Path(data_dir) / "gateway.sqlite3")
        certificates = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
        boot = first_start(store, certificates, admin_token_env=None, clock=utcnow)
        ca = _ca()
        upload = certificates.create_mtls(boot.account_id, certificates=_pem(ca[0]))
        devices = DeviceService(store, utcnow, public_base_url="http://127.0.0.1")
        rule = devices.create_rule(boot.account_id, {
            "name": "c", "type": "client_certificate_v2",
            "input": {"certificate_id": upload.id, "check_private_key": True, "operating_system": "linux",
                      "cn": "${hostname}.corp"}})  # fmt: skip
        token = devices.create_enrollment_token(boot.account_id, email="a@example.com").token
        secret = json.loads(base64.urlsafe_b64decode(token[5:] + "=" * (-len(token[5:]) % 4)))["s"]
        details = DeviceDetails.from_api({"name": "bench-0", "os": "linux", "hostname": "bench-0"})
        device = devices.enroll(secret, details, "127.0.0.1").device
        cert_pem, key = _device_certificate(ca, "bench-0")

        async def report() -> None:
            nonce = await devices.issue_nonce(device, "127.0.0.1")
            message = proof_message(nonce=nonce.nonce, device_id=device.id, rule_id=rule.id)
            signature = base64.b64encode(sign_proof(key, message)).decode()
            passing = Report(rule.id, True, nonce=base64.b64encode(nonce.nonce).decode(),
                             certificate=cert_pem, signature=signature)  # fmt: skip
            (stored,) = await devices.submit(device, [passing], "127.0.0.1")
            assert stored.success, stored.reason

        asyncio.run(report())
        assert devices.identity(device.id).posture_passed == (rule.id,)
        started = time.perf_counter()
        for _ in range(calls):
            devices.identity(device.id)
        per_call = (time.perf_counter() - started) / calls * 1e6
        devices.close()
        store.close()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--devices", type=int, default=64, help="simulated agents posting at once (default 64)"
    )
    parser.add_argument("--rules", type=int, default=2, help="posture rules per device (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before (default 1)")
    parser.add_argument("--clients", type=int, default=1, help="client processes (default 1)")
    parser.add_argument(
        "--protocol",
        choices=("offered", "per-report", "per-result"),
        default="offered",
        help="where a report's nonce comes from: the one the last answer offered, as the agent "
        "does (default); a POST /agent/nonce per report; or one per passing result",
    )
    parser.add_argument(
        "--aiohttp-client",
        action="store_true",
        help="agents use aiohttp ClientSessions instead of the minimal HTTP/1.1 client "
        "(on 2 cores the clients then take most of the CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-proof-worker",
        action="store_true",
        help="verify proof signatures in the server's own process, not in its proof worker",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default="sqlite",
        help="the store: SQLite (default), PostgreSQL, or both in alternating rounds",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="PostgreSQL server for --backend postgresql|both (a fresh database is made on it per "
        "round and dropped); default: a throwaway local cluster from Debian's binaries",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measured runs per backend (default 1)")
    parser.add_argument(
        "--gateway-run",
        type=int,
        metavar="WORKERS",
        help="serve with the real `gateway run --workers WORKERS` (admin plane, proof worker, "
        "proxy workers) instead of the admin API alone; CPU figures then count every process",
    )
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-database", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve and args.serve_workers:
        serve_gateway(Path(args.serve), args.serve_workers, database=args.serve_database)
        return
    if args.serve:
        serve(Path(args.serve), proof_worker=not args.no_proof_worker, database=args.serve_database)
        return
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with postgres_server(args.database if "postgresql" in backends else "") as server_url:
        rounds = []
        for _ in range(args.rounds):
            for backend in backends:
                if backend == "sqlite":
                    rounds.append(run(args))
                    continue
                with fresh_database(server_url) as url:
                    rounds.append(run(args, url))
    identity = round(identity_lookup(), 2)
    for figures in rounds:
        figures["identity_cached_us"] = identity
    if args.json:
        print(json.dumps(rounds[0] if len(rounds) == 1 else rounds, indent=2))
        return
    for figures in rounds:
        _print(figures)


def _print(figures: dict[str, Any]) -> None:
    print(
        f"posture ingest on {figures['backend']} ({figures['server']}): {figures['results_per_second']} verified results/s "
        f"({figures['devices']} devices x {figures['rules_per_device']} rules, {figures['client_processes']} client "
        f"process(es), {figures['seconds']:g} s)\n"
        f"  report latency (nonce + results POST): p50 {figures['report_p50_ms']} ms, p99 {figures['report_p99_ms']} ms\n"
        f"  {figures['requests_per_result']} HTTP requests per result; {figures['write_jobs_per_commit']} write jobs per "
        f"transaction (group commit)\n"
        f"  CPU per verified result (measured window): server {figures['server_cpu_us_per_result']} µs "
        f"(event loop {figures['server_loop_cpu_us_per_result']} µs, proof worker "
        f"{figures['proof_worker_cpu_us_per_result']} µs, the rest the group-commit thread), "
        f"clients {figures['client_cpu_us_per_result']} µs\n"
        f"  failed: {figures['failed_results']}, transport errors: {figures['errors']}\n"
        f"  DeviceService.identity() of a cached device: {figures['identity_cached_us']} µs per call"
    )


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """``url`` as given; "" (PostgreSQL not used): ""; None: a throwaway local cluster's URL."""
    if url is not None:
        yield url
        return
    from tests.support.postgres import Cluster

    cluster = Cluster.start_new(fsync=True)
    try:
        yield cluster.url()
    finally:
        cluster.close()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on the server of ``server_url``, dropped afterwards; its URL."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"posture_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
