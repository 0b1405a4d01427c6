"""The abusive admin client and the proxy probe, shared by test_admin_abuse.py and
bench/admin_abuse.py.

:class:`Abuser` threads hammer the admin API with its heaviest requests at their largest: a
dry run of a ~1 MiB body (tens of thousands of identity groups), an import of a 1,000-rule
policy file, an export of it, and 1 MiB JSON bodies of junk; only while ``on`` is set, and
bounded in count. :class:`Probe` sends GETs one after the other on one keep-alive HTTPS
connection through the proxy and records each one's latency, so windows with and without the
abuse can be compared."""

from __future__ import annotations

import http.client
import json
import ssl
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

MIB = 1024 * 1024


def dry_run_body(size: int = MIB - 4096) -> bytes:
    """A policy test of nearly ``size`` bytes: a request with a huge list of groups."""
    groups: list[str] = []
    body = {"request": {"method": "GET", "url": "https://files.example.net/upload"}, "identity": {}}
    per = len(json.dumps("g000000")) + 2
    groups = [f"g{i:06d}" for i in range((size - 200) // per)]
    body["identity"] = {"email": "ana@example.com", "groups": groups}
    return json.dumps(body).encode()


def junk_body(size: int = MIB - 4096) -> bytes:
    """A rule with a 1 MiB array of junk beside it (refused, but only once parsed)."""
    count = (size - 100) // 9  # "1000000, " per number
    return json.dumps({"name": "junk", "action": "block", "junk": list(range(10**6, 10**6 + count))}).encode()


@dataclass
class Abuser:
    admin_url: str
    token: str
    account_id: str
    policy_file: str  # the import's body
    on: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    max_requests: int = 5000
    statuses: Counter[int] = field(default_factory=Counter)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each request
    _inflight: dict[int, float] = field(default_factory=dict)  # client -> start of its request
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = 2) -> None:
        for n in range(clients):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        self.on.set()
        for thread in self._threads:
            thread.join(60)

    def busy(self, start: float, end: float) -> float:
        """The share of [start, end) during which at least one admin request was in flight."""
        now = time.monotonic()
        spans = sorted([*self.spans, *((at, now) for at in list(self._inflight.values()))])
        covered, reach = 0.0, start
        for begin, finish in spans:
            begin, finish = max(begin, reach), min(finish, end)
            if finish > begin:
                covered += finish - begin
                reach = finish
        return covered / (end - start) if end > start else 0.0

    def _run(self, n: int) -> None:
        base = f"/client/v4/accounts/{self.account_id}"
        json_type = {"Content-Type": "application/json"}
        requests = [
            ("POST", f"{base}/gateway/policy_test", dry_run_body(), json_type),
            (
                "POST",
                f"{base}/gateway/rules/import",
                self.policy_file.encode(),
                {"Content-Type": "application/yaml"},
            ),
            ("GET", f"{base}/gateway/rules/export", b"", {}),
            ("POST", f"{base}/gateway/rules", junk_body(), json_type),
            ("GET", f"{base}/gateway/rules", b"", {}),
        ]
        auth = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.admin_url, headers=auth, timeout=60) as client:
            for i in range(self.max_requests):
                self.on.wait()
                if self.stop.is_set():
                    return
                method, path, body, headers = requests[(i + n) % len(requests)]
                started = self._inflight[n] = time.monotonic()
                try:
                    reply = client.request(method, path, content=body or None, headers=headers)
                finally:
                    del self._inflight[n]
                    self.spans.append((started, time.monotonic()))
                self.statuses[reply.status_code] += 1
                if reply.status_code == 413:
                    raise AssertionError(f"{path}: the abusive body is over the limit")
                if reply.status_code == 503:  # busy: as a client honouring Retry-After would, briefly
                    time.sleep(0.05)  # real time on purpose: the abuser's back-off


@dataclass
class Probe:
    """Keep-alive GETs through the proxy, one after the other: (start time, seconds) each."""

    proxy_port: int
    host: str
    port: int
    ctx: ssl.SSLContext
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    max_requests: int = 200_000
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("127.0.0.1", self.proxy_port, timeout=10, context=self.ctx)
        conn.set_tunnel(self.host, self.port)
        return conn

    def _run(self) -> None:
        conn = self._connect()
        for _ in range(self.max_requests):
            if self.stop.is_set():
                break
            started = time.monotonic()
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise OSError(f"status {response.status}")
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = self._connect()
                continue
            self.samples.append((started, time.monotonic() - started))
        conn.close()

    def window(self, start: float, end: float) -> list[float]:
        return [seconds for at, seconds in self.samples if start <= at < end]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Window:
    loaded: bool
    count: int
    p50: float
    p99: float
    admin_busy: float  # share of the window with an admin request in flight


def windows(abuser: Abuser, probe: Probe, *, pairs: int, seconds: float) -> list[Window]:
    """Alternate idle and loaded windows of ``seconds`` (``pairs`` of each); the first part
    of each window (the change settling) is left out."""
    out: list[Window] = []
    settle = min(0.5, seconds / 4)
    for _ in range(pairs):
        for loaded in (False, True):
            if loaded:
                abuser.on.set()
            else:
                abuser.on.clear()
            start = time.monotonic()
            time.sleep(seconds)  # real time on purpose: the window the probe's latencies are taken in
            end = time.monotonic()
            values = probe.window(start + settle, end)
            if values:
                busy = abuser.busy(start + settle, end)
                out.append(
                    Window(loaded, len(values), percentile(values, 0.5), percentile(values, 0.99), busy)
                )
    abuser.on.clear()
    return out


def summary(found: list[Window]) -> dict[str, float]:
    """Medians over the windows of p50 and p99, idle and loaded, and the loaded/idle ratios."""
    idle = [w for w in found if not w.loaded]
    loaded = [w for w in found if w.loaded]
    out = {
        "idle_p50_ms": statistics.median(w.p50 for w in idle) * 1000,
        "idle_p99_ms": statistics.median(w.p99 for w in idle) * 1000,
        "loaded_p50_ms": statistics.median(w.p50 for w in loaded) * 1000,
        "loaded_p99_ms": statistics.median(w.p99 for w in loaded) * 1000,
    }
    out["loaded_admin_busy"] = statistics.median(w.admin_busy for w in loaded)
    out["p50_ratio"] = out["loaded_p50_ms"] / out["idle_p50_ms"]
    out["p99_ratio"] = out["loaded_p99_ms"] / out["idle_p99_ms"]
    return out
