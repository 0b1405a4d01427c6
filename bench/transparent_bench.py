"""Transparent vs explicit proxy (issue 16): keep-alive requests and new-host intercepts per gateway
CPU-second, through one gateway process, interleaved round by round.

One ``gateway run`` serves both modes at once: ``--proxy-listen 127.0.0.1:P`` (explicit, the
client sends CONNECT) and ``--mode transparent@ROOT:T``. The transparent client lives in a network
namespace made here, joined to the root namespace by a veth pair on a private /30 (10.215.N.0/30,
N chosen unused; .1 the root end, where the transparent listener binds, .2 the client, and VIRTUAL
= .9 on the root end, the origin's address as the client sees it, reached on-link: the namespace
has no default route, so nothing can leave the pair). The client connects to VIRTUAL:ORIGIN_PORT
with no proxy setting; the rule ``gateway transparent rules`` prints for that pair (only: from the
client's address, on the veth's root end, to ORIGIN_PORT), applied with ``nft -f -``, REDIRECTs it
to the listener; the gateway reads VIRTUAL from the socket, and its lab hosts file maps VIRTUAL
(and ``*.bench.test``, for the explicit client's CONNECTs) to the origin: nginx on 127.0.0.1 with
one wildcard certificate, so it answers any name (``--upstream-ca`` trusts its CA).

The client code is the same for both modes (``bench/loadclient.py``'s ``open_tls``: CONNECT then
TLS for explicit, TLS straight to the address for transparent), in one long-lived worker process
per mode (this file with ``--client``): in the root namespace for explicit, in the client namespace
for transparent. Scenarios, each slice ``--slice-s`` seconds:

  keep-alive  ``--concurrency`` persistent connections (opened once, before the timed slices),
              each sending sequential GETs
  new-host    ``--handshake-concurrency`` connections at a time, each to a host name never used
              before (so a fresh TLS handshake on both legs and a new leaf): TLS -> GET -> close;
              the client checks that every leaf names its host

Each round runs every scenario for both modes, one slice at a time, the order flipped every round
and scenario; the gateway's CPU (utime + stime from /proc/PID/stat, with any child process) is
read around each slice, after a short settle so trailing work lands in the slice that caused it.
Per round, transparent/explicit ratios of operations per gateway CPU-second, of operations per
second and of p50 latency; reported as the median with a distribution-free ~95 % interval (as
bench/run does) and the geometric mean. Target (issue 16): transparent >= 0.95x explicit per
CPU-second. After the run, the gateway's request log must show the transparent requests as
``"mode": "transparent"`` (else the run failed: it would not have measured what it says).

Needs root, ip, nft and nginx; skips with the reason otherwise. Bounded by ``--rounds`` and
``--max-seconds``. Every namespace, veth pair and nftables table it makes is removed at the end,
also on errors and Ctrl-C (SIGTERM/SIGHUP too). Only loopback and its own veth pair are used.

Run:  .venv/bin/python bench/transparent_bench.py [--rounds 6] [--slice-s 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import report
from loadclient import make_context, open_tls, read_response
from pki import Authority, write_host_certs
from targets import (
    BENCH_SUFFIX,
    CLIENT_PIDS,
    Gateway,
    Origin,
    free_port,
    kill_all,
    system_cpu,
    tree_cpu_seconds,
    wait_port,
)

MODES = ("explicit", "transparent")
SCENARIOS = ("keep-alive", "new-host")
KEEPALIVE_HOST = f"ka.{BENCH_SUFFIX}"
NEW_FMT = "n{:07d}." + BENCH_SUFFIX  # one label under the wildcard: *.bench.test matches it
NET_PREFIX = "10.215"  # 10.215.N.0/30: not the e2e tests' 10.213 nor the WireGuard bench's 10.214
SETTLE_S = 0.25  # after a slice, before reading the gateway's CPU: closes and logging land in it
TARGET = 0.95


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default %(default)s)")
    p.add_argument("--slice-s", type=float, default=3.0, help="seconds per slice (default %(default)s)")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma list from keep-alive,new-host (default %(default)s)",
    )
    p.add_argument(
        "--concurrency", type=int, default=10, help="keep-alive connections per mode (default %(default)s)"
    )
    p.add_argument(
        "--handshake-concurrency",
        type=int,
        default=8,
        help="new-host connections in flight (default %(default)s)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=300,
        help="start no new round after this long (default %(default)s)",
    )
    p.add_argument("--op-timeout", type=float, default=15.0, help="seconds per request/connection")
    p.add_argument("--gateway", default=str(REPO / ".venv" / "bin" / "gateway"), help="gateway executable")
    p.add_argument("--results-dir", default=str(HERE / "results"), help="where the JSON result goes")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)  # the load worker
    args = p.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.scenario_list or set(args.scenario_list) - set(SCENARIOS):
        p.error(f"--scenarios: names from {','.join(SCENARIOS)}")
    if not (1 <= args.rounds <= 200 and 0.5 <= args.slice_s <= 60):
        p.error("need 1 <= --rounds <= 200 and 0.5 <= --slice-s <= 60")
    if not (1 <= args.concurrency <= 200 and 1 <= args.handshake_concurrency <= 200):
        p.error("need 1 <= --concurrency, --handshake-concurrency <= 200")
    return args


def names_per_slice(slice_s: float) -> int:
    """New host names one new-host slice may use (intercept rates here stay well under 250/s)."""
    return max(100, int(250 * slice_s))


# ---- the load worker (``--client``): one per mode, same code, commands as JSON lines ----------
class Worker:
    """First stdin line: {"proxy": [host, port] | null, "origin": [ip, port], "cafile", "host",
    "op_timeout"}. Then one command per line, one JSON answer per line on stdout:
    {"op": "open", "n"}, {"op": "keep-alive", "seconds"},
    {"op": "new-host", "seconds", "concurrency", "fmt", "start", "count"}, {"op": "quit"}."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.spec = {"proxy": conf["proxy"], "origin": conf["origin"], "proxy_headers": {}}
        self.ctx = make_context(conf["cafile"])
        self.host = conf["host"]
        self.timeout = conf["op_timeout"]
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @staticmethod
    def _note(errors: Counter[str], samples: list[str], exc: BaseException) -> None:
        errors[type(exc).__name__] += 1
        if len(samples) < 3:
            samples.append(f"{type(exc).__name__}: {exc}"[:200])

    async def open(self, n: int) -> dict[str, Any]:
        errors: Counter[str] = Counter()
        samples: list[str] = []
        while len(self.conns) < n and sum(errors.values()) < n:
            try:
                async with asyncio.timeout(self.timeout):
                    self.conns.append(await open_tls(self.spec, self.ctx, self.host))
            except Exception as e:  # noqa: BLE001 - counted and reported
                self._note(errors, samples, e)
        return {"open": len(self.conns), "errors": dict(errors), "error_samples": samples}

    async def keep_alive(self, seconds: float) -> dict[str, Any]:
        request = f"GET / HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        lat: list[int] = []
        errors: Counter[str] = Counter()
        samples: list[str] = []
        broken: list[Any] = []
        deadline = time.perf_counter() + seconds

        async def run(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
            r, w = conn
            while time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(self.timeout):
                        w.write(request)
                        await read_response(r)
                except Exception as e:  # noqa: BLE001 - counted; the connection is replaced later
                    self._note(errors, samples, e)
                    w.transport.abort()
                    broken.append(conn)
                    return
                lat.append((time.perf_counter_ns() - t0) // 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(c) for c in list(self.conns)))
        elapsed = time.perf_counter() - t0
        self.conns = [c for c in self.conns if c not in broken]
        return self._summary(lat, elapsed, errors, samples)

    async def new_host(self, cmd: dict[str, Any]) -> dict[str, Any]:
        fmt, start, count = cmd["fmt"], cmd["start"], cmd["count"]
        names = iter([fmt.format(start + j) for j in range(count)])
        lat: list[int] = []
        errors: Counter[str] = Counter()
        samples: list[str] = []
        named = used = 0
        deadline = time.perf_counter() + cmd["seconds"]

        async def run() -> None:
            nonlocal named, used
            while time.perf_counter() < deadline and (host := next(names, None)) is not None:
                used += 1
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(self.timeout):
                        r, w = await open_tls(self.spec, self.ctx, host)
                        try:
                            peer = w.get_extra_info("ssl_object").getpeercert() or {}
                            if ("DNS", host) in peer.get("subjectAltName", ()):
                                named += 1  # a leaf for this very name, not the origin's wildcard
                            w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                            await read_response(r)
                        finally:
                            w.transport.abort()
                except Exception as e:  # noqa: BLE001 - counted and reported
                    self._note(errors, samples, e)
                    continue
                lat.append((time.perf_counter_ns() - t0) // 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(cmd["concurrency"])))
        out = self._summary(lat, time.perf_counter() - t0, errors, samples)
        out.update(leaf_named_host=named, names_used=used, names_exhausted=used >= count)
        return out

    @staticmethod
    def _summary(lat: list[int], elapsed: float, errors: Counter[str], samples: list[str]) -> dict[str, Any]:
        lat.sort()
        return {
            "ops": len(lat),
            "elapsed_s": elapsed,
            "p50_ms": lat[len(lat) // 2] / 1000 if lat else None,
            "p90_ms": lat[int(0.9 * len(lat))] / 1000 if lat else None,
            "errors": dict(errors),
            "error_samples": samples,
        }

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        cpu0 = time.process_time()
        if cmd["op"] == "open":
            out = await self.open(cmd["n"])
        elif cmd["op"] == "keep-alive":
            out = await self.keep_alive(cmd["seconds"])
        elif cmd["op"] == "new-host":
            out = await self.new_host(cmd)
        else:
            raise ValueError(f"unknown command {cmd['op']!r}")
        out["client_cpu_s"] = time.process_time() - cpu0
        return out


def client_main() -> int:
    conf = json.loads(sys.stdin.readline())
    with asyncio.Runner() as runner:  # one loop for the whole run: keep-alive connections persist
        worker = Worker(conf)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                out = runner.run(worker.handle(cmd))
            except Exception as e:  # noqa: BLE001 - the orchestrator reports it
                out = {"fatal": f"{type(e).__name__}: {e}"}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
        for _, w in worker.conns:
            w.transport.abort()
    return 0


# ---- the lab network: namespace, veth pair, nftables table (all made here, all removed) -------
def tool(name: str) -> str | None:
    """The path of ``ip``/``nft``/``nginx``: on PATH, else in /usr/sbin (not on every root's PATH)."""
    found = shutil.which(name)
    return found or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)


def _run(*argv: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = (tool(argv[0]) or argv[0], *argv[1:]) if argv[0] in ("ip", "nft") else argv
    done = subprocess.run(list(argv), capture_output=True, input=stdin, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}: {done.stderr.decode(errors='replace').strip()[-400:]}")
    return done


def skip_reason(gateway: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root (a network namespace, a veth pair and an nftables table)"
    for program in ("ip", "nft", "nginx"):
        if tool(program) is None:
            return f"{program} is not installed (apt-get install --no-install-recommends iproute2 nftables nginx)"
    if not Path(gateway).exists():
        return f"{gateway} not found (scripts/bootstrap)"
    probe = f"gwtbprobe{secrets.token_hex(3)}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.decode(errors='replace').strip()}"
    _run("ip", "netns", "del", probe, check=False)
    made = _run("nft", "add", "table", "inet", probe, check=False)
    if made.returncode != 0:
        return f"cannot add an nftables table: {made.stderr.decode(errors='replace').strip()}"
    _run("nft", "delete", "table", "inet", probe, check=False)
    return None


def unused_net() -> int:
    """N such that no interface has an address in NET_PREFIX.N.0/24."""
    used = set()
    for line in _run("ip", "-o", "-4", "address", "show").stdout.decode().splitlines():
        for word in line.split():
            if word.startswith(NET_PREFIX + ".") and "/" in word:
                used.add(int(word.split(".")[2]))
    free = [n for n in range(256) if n not in used]
    if not free:
        raise RuntimeError(f"no free {NET_PREFIX}.N.0/24 for the lab")
    return free[secrets.randbelow(len(free))]


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    net: int = -1
    made: list[str] = field(default_factory=list)  # what exists now, to remove: "netns", "veth", "nft"

    @property
    def ns(self) -> str:
        return f"gwtpb-{self.tag}"

    @property
    def veth_root(self) -> str:
        return f"gwtb{self.tag}a"  # 15 characters at most

    @property
    def veth_client(self) -> str:
        return f"gwtb{self.tag}b"

    @property
    def table(self) -> str:
        return f"gwtpb{self.tag}"

    def address(self, host: int) -> str:
        return f"{NET_PREFIX}.{self.net}.{host}"

    @property
    def root(self) -> str:
        return self.address(1)

    @property
    def client(self) -> str:
        return self.address(2)

    @property
    def virtual(self) -> str:
        return self.address(9)

    def up(self) -> None:
        self.net = unused_net()
        ns, root, client = self.ns, self.veth_root, self.veth_client
        _run("ip", "netns", "add", ns)
        self.made.append("netns")
        _run("ip", "link", "add", root, "type", "veth", "peer", "name", client)
        self.made.append("veth")
        _run("ip", "link", "set", client, "netns", ns)
        _run("ip", "address", "add", f"{self.root}/30", "dev", root)
        _run("ip", "address", "add", f"{self.virtual}/32", "dev", root)
        _run("ip", "link", "set", root, "up")
        _run("ip", "-n", ns, "address", "add", f"{self.client}/30", "dev", client)
        _run("ip", "-n", ns, "link", "set", client, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", f"{self.virtual}/32", "dev", client)

    def redirect(self, gateway: str, listener_port: int, origin_port: int) -> str:
        """Apply what ``gateway transparent rules`` prints for this pair (nft only)."""
        printed = _run(
            gateway, "transparent", "rules", "--port", str(listener_port),
            "--source", f"{self.client}/32", "--interface", self.veth_root,
            "--dport", str(origin_port), "--table", self.table, "--format", "nft",
        ).stdout  # fmt: skip
        self.made.append("nft")
        _run("nft", "-f", "-", stdin=printed)
        return printed.decode()

    def down(self) -> list[str]:
        """Remove what was made; returns what is still there (should be nothing)."""
        if "nft" in self.made:
            _run("nft", "delete", "table", "inet", self.table, check=False)
        if "netns" in self.made:
            _run("ip", "netns", "del", self.ns, check=False)  # takes the client's veth end along
        if "veth" in self.made:
            _run("ip", "link", "del", self.veth_root, check=False)
        left = []
        if (
            "nft" in self.made
            and _run("nft", "list", "table", "inet", self.table, check=False).returncode == 0
        ):
            left.append(f"nft table inet {self.table}")
        if (
            "netns" in self.made
            and self.ns in _run("ip", "netns", "list", check=False).stdout.decode().split()
        ):
            left.append(f"network namespace {self.ns}")
        if "veth" in self.made and _run("ip", "link", "show", self.veth_root, check=False).returncode == 0:
            left.append(f"veth {self.veth_root}")
        return left


# ---- the origin: nginx on loopback, one wildcard certificate for every name ----------------
@dataclass
class WildcardOrigin(Origin):
    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text()
        if "$ssl_server_name.pem" not in text:
            raise RuntimeError("bench/targets.py's nginx config changed: no per-name certificate line")
        path.write_text(text.replace("$ssl_server_name.pem", "wildcard.pem"))
        return path


# ---- the run ---------------------------------------------------------------------------------
class Client:
    """One worker process, spoken to with JSON lines."""

    def __init__(self, mode: str, proc: asyncio.subprocess.Process) -> None:
        self.mode, self.proc = mode, proc

    @classmethod
    async def start(cls, mode: str, prefix: list[str], conf: dict[str, Any]) -> Client:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, str(Path(__file__).resolve()), "--client",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        CLIENT_PIDS.add(proc.pid)  # `ip netns exec` execs the worker: this pid is the worker's
        client = cls(mode, proc)
        await client.send(conf)
        return client

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def call(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        await self.send(cmd)
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.mode} client exited ({await self.proc.wait()})")
        out = json.loads(line)
        if "fatal" in out:
            raise RuntimeError(f"{self.mode} client: {out['fatal']}")
        return out

    async def quit(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(OSError, RuntimeError):
                await self.send({"op": "quit"})
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        CLIENT_PIDS.discard(self.proc.pid)  # reaped: never signal a pid that may be reused


class Bench:
    def __init__(self, args: argparse.Namespace, lab: Lab, tmp: Path) -> None:
        self.args, self.lab, self.tmp = args, lab, tmp
        self.cursor = 0  # next new-host name index: never reused within a run
        self.clients: dict[str, Client] = {}
        self.gw: Gateway | None = None
        self.origin: WildcardOrigin | None = None

    async def slice(self, mode: str, scenario: str, rnd: int, seconds: float) -> dict[str, Any]:
        a, client = self.args, self.clients[mode]
        assert self.gw is not None and self.gw.pid is not None and self.origin is not None
        if scenario == "keep-alive":
            opened = await client.call({"op": "open", "n": a.concurrency}, a.op_timeout * a.concurrency + 10)
            if opened["open"] < a.concurrency:
                raise RuntimeError(f"{mode}: {opened['open']} keep-alive connections: {opened}")
            cmd: dict[str, Any] = {"op": "keep-alive", "seconds": seconds}
        else:
            count = names_per_slice(seconds)
            cmd = {"op": "new-host", "seconds": seconds, "concurrency": a.handshake_concurrency,
                   "fmt": NEW_FMT, "start": self.cursor, "count": count}  # fmt: skip
            self.cursor += count
        pid = self.gw.pid
        origin0, busy0 = tree_cpu_seconds(self.origin.pid), system_cpu()[0]
        wall0, cpu0 = time.perf_counter(), tree_cpu_seconds(pid)
        out = await client.call(cmd, seconds + 2 * a.op_timeout + 10)
        await asyncio.sleep(SETTLE_S)
        cpu1, wall1 = tree_cpu_seconds(pid), time.perf_counter()
        origin1, busy1 = tree_cpu_seconds(self.origin.pid), system_cpu()[0]
        cpu, wall = cpu1 - cpu0, wall1 - wall0
        other = (busy1 - busy0) - cpu - (origin1 - origin0) - out["client_cpu_s"]
        out.update(
            mode=mode,
            scenario=scenario,
            round=rnd,
            gateway_cpu_s=cpu,
            wall_s=wall,
            rate=out["ops"] / out["elapsed_s"] if out["elapsed_s"] else 0.0,
            ops_per_cpu_s=out["ops"] / cpu if cpu > 0 else None,
            gateway_cores=cpu / wall,
            client_cores=out["client_cpu_s"] / wall,
            other_cores=max(0.0, other) / wall,
        )
        return out

    async def run(self) -> dict[str, Any]:
        a, lab = self.args, self.lab
        result: dict[str, Any] = {
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg_start": Path("/proc/loadavg").read_text().strip(),
            "cpus": os.cpu_count(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "args": {k: v for k, v in vars(a).items() if k != "client"},
            "lab": {
                "namespace": lab.ns,
                "veth": [lab.veth_root, lab.veth_client],
                "table": lab.table,
                "root": lab.root,
                "client": lab.client,
                "virtual": lab.virtual,
            },
        }
        ca = Authority.generate("Transparent bench origin CA")
        origin_dir = self.tmp / "origin"
        origin_dir.mkdir()
        wildcard = f"*.{BENCH_SUFFIX}"
        write_host_certs(ca, [wildcard], origin_dir / "certs", origin_dir / "host.key")
        (origin_dir / "certs" / f"{wildcard}.pem").rename(origin_dir / "certs" / "wildcard.pem")
        origin_ca = self.tmp / "origin-ca.pem"
        origin_ca.write_bytes(ca.cert_pem())
        self.origin = origin = WildcardOrigin(origin_dir, "127.0.0.1", free_port())
        await origin.start()

        listener_port = free_port(lab.root)
        result["rules"] = lab.redirect(a.gateway, listener_port, origin.port)
        hosts = self.tmp / "lab-hosts"  # the later --hosts wins over the one Gateway.start writes
        hosts.write_text(f"127.0.0.1 *.{BENCH_SUFFIX} {lab.virtual}\n")
        work = self.tmp / "gateway"
        work.mkdir()
        self.gw = gw = Gateway(
            "gateway", work, gateway=a.gateway, origin_ca=origin_ca,
            extra_args=["--mode", f"transparent@{lab.root}:{listener_port}", "--hosts", str(hosts)],
        )  # fmt: skip
        try:
            await gw.start()
            assert gw.proc is not None and gw.proxy is not None and gw.cafile is not None
            await wait_port(lab.root, listener_port, gw.proc, 10, "gateway transparent listener")
            result["gateway_argv"] = gw.info.get("argv")
            common = {"cafile": str(gw.cafile), "host": KEEPALIVE_HOST, "op_timeout": a.op_timeout}
            self.clients["explicit"] = await Client.start(
                "explicit", [], {**common, "proxy": list(gw.proxy), "origin": ["127.0.0.1", origin.port]}
            )
            self.clients["transparent"] = await Client.start(
                "transparent", [tool("ip") or "ip", "netns", "exec", lab.ns],
                {**common, "proxy": None, "origin": [lab.virtual, origin.port]},
            )  # fmt: skip
            # warm up both paths (connections, leaves, code paths); checks that both work at all
            warm = {}
            for mode in MODES:
                for scenario in a.scenario_list:
                    sl = await self.slice(mode, scenario, -1, 1.0)
                    warm[f"{mode} {scenario}"] = {"ops": sl["ops"], "errors": sl["errors"]}
                    if not sl["ops"] or sl["errors"]:
                        raise RuntimeError(f"warm-up {mode} {scenario}: {sl['errors']} {sl['error_samples']}")
            result["warm_up"] = warm
            await asyncio.sleep(1.0)
            c0 = tree_cpu_seconds(gw.proc.pid)
            await asyncio.sleep(2.0)
            result["gateway_idle_cores"] = (tree_cpu_seconds(gw.proc.pid) - c0) / 2.0

            slices: list[dict[str, Any]] = []
            started = time.monotonic()
            for rnd in range(a.rounds):
                if time.monotonic() - started > a.max_seconds:
                    result["stopped_early"] = f"--max-seconds {a.max_seconds:g} after {rnd} rounds"
                    break
                for k, scenario in enumerate(a.scenario_list):
                    order = MODES if (rnd + k) % 2 == 0 else MODES[::-1]
                    for mode in order:
                        slices.append(await self.slice(mode, scenario, rnd, a.slice_s))
                done = slices[-2 * len(a.scenario_list) :]
                print(
                    f"transparent_bench: round {rnd + 1}/{a.rounds}: "
                    + ", ".join(
                        f"{s['scenario']} {s['mode']} {s['ops']} ops {s['gateway_cpu_s']:.2f} CPU-s"
                        for s in done
                    ),
                    file=sys.stderr,
                )
            result["slices"] = slices
            result["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        finally:
            for client in self.clients.values():
                await client.quit()
            await gw.stop()  # flushes the request log
        result["request_log_modes"] = await asyncio.to_thread(_log_modes, work / "data" / "requests.jsonl")
        result["summary"] = summarize(result["slices"], a.scenario_list)
        result["checks"] = checks(result)
        result["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return result


def _git(*cmd: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip()


def _log_modes(path: Path) -> dict[str, int]:
    modes: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                modes[str(json.loads(line).get("mode"))] += 1
    return dict(modes)


def summarize(slices: list[dict[str, Any]], scenarios: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in scenarios:
        mine = [s for s in slices if s["scenario"] == scenario]
        per_mode: dict[str, Any] = {}
        for mode in MODES:
            ms = [s for s in mine if s["mode"] == mode]
            ops, cpu = sum(s["ops"] for s in ms), sum(s["gateway_cpu_s"] for s in ms)
            elapsed = sum(s["elapsed_s"] for s in ms)
            p50s = [s["p50_ms"] for s in ms if s["p50_ms"] is not None]
            per_mode[mode] = {
                "slices": len(ms),
                "ops": ops,
                "ops_per_cpu_s": ops / cpu if cpu > 0 else None,
                "rate": ops / elapsed if elapsed > 0 else None,
                "p50_ms": statistics.median(p50s) if p50s else None,
                "gateway_cores": statistics.median(s["gateway_cores"] for s in ms) if ms else None,
                "client_cores": statistics.median(s["client_cores"] for s in ms) if ms else None,
                "other_cores": statistics.median(s["other_cores"] for s in ms) if ms else None,
                "errors": sum(sum(s["errors"].values()) for s in ms),
            }
        ratios: dict[str, list[float]] = {"ops_per_cpu_s": [], "rate": [], "p50_ms": []}
        for rnd in sorted({s["round"] for s in mine}):
            pair = {s["mode"]: s for s in mine if s["round"] == rnd}
            if set(pair) != set(MODES):
                continue
            for key, values in ratios.items():
                e, t = pair["explicit"].get(key), pair["transparent"].get(key)
                if e and t:
                    values.append(t / e)
        out[scenario] = {
            "per_mode": per_mode,
            "ratios": {key: report._geo(values) for key, values in ratios.items()},
            "per_round_cpu_ratio": [round(v, 3) for v in ratios["ops_per_cpu_s"]],
        }
    return out


def checks(result: dict[str, Any]) -> dict[str, Any]:
    """That the run measured what it says: transparent requests logged as such, leaves per name."""
    slices = result["slices"]
    measured = {m: sum(s["ops"] for s in slices if s["mode"] == m) for m in MODES}
    logged = result["request_log_modes"]
    new_host = [s for s in slices if s["scenario"] == "new-host"]
    out = {
        "measured_ops": measured,
        "logged": logged,
        "transparent_logged_as_transparent": logged.get("transparent", 0) >= measured["transparent"],
        "explicit_logged_as_regular": logged.get("regular", 0) >= measured["explicit"],
        "new_host_leaves_named_for_host": sum(s["leaf_named_host"] for s in new_host),
        "new_host_ops": sum(s["ops"] for s in new_host),
        "new_host_names_exhausted": sum(1 for s in new_host if s["names_exhausted"]),
        "errors": sum(sum(s["errors"].values()) for s in slices),
    }
    out["ok"] = bool(
        out["transparent_logged_as_transparent"]
        and out["explicit_logged_as_regular"]
        and out["new_host_leaves_named_for_host"] == out["new_host_ops"]
        and not out["new_host_names_exhausted"]
    )
    return out


def _f(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render(result: dict[str, Any]) -> str:
    a = result["args"]
    slices = result["slices"]
    rounds = len({s["round"] for s in slices})
    lines = [
        f"transparent vs explicit through one gateway process, {result['started']}, commit {result['commit']}, "
        f"{result['cpus']} CPUs",
        f"  {rounds} interleaved rounds x {len(a['scenario_list'])} scenarios x 2 modes, {a['slice_s']:g} s slices; "
        f"keep-alive {a['concurrency']} connections, new-host {a['handshake_concurrency']} in flight",
        f"  /proc/loadavg at start: {result['loadavg_start']}; at end: {result.get('loadavg_end', '?')}; "
        f"gateway idle: {result['gateway_idle_cores']:.3f} cores",
        "",
        f"{'':44}{'explicit':>10}{'transparent':>13}   transparent/explicit per round: median (95% interval), geomean",
    ]
    what = {"keep-alive": "keep-alive requests", "new-host": "new-host intercepts"}
    rows = [
        ("ops_per_cpu_s", "per gateway CPU-second", 0),
        ("rate", "per second", 0),
        ("p50_ms", "p50 latency, ms", 1),
    ]
    for scenario, summ in result["summary"].items():
        pm, ratios = summ["per_mode"], summ["ratios"]
        for key, label, digits in rows:
            r = ratios[key]
            interval = (
                f"({r['median_low']:.3f}-{r['median_high']:.3f})"
                if r.get("median_low") is not None
                else "(n<6)"
            )
            ratio = f"{r['median']:.3f} {interval}, {r['geomean']:.3f}" if r["median"] is not None else "-"
            lines.append(
                f"{what[scenario] + ' ' + label:44}{_f(pm['explicit'][key], digits):>10}"
                f"{_f(pm['transparent'][key], digits):>13}   {ratio}"
            )
        e, t = pm["explicit"], pm["transparent"]
        lines.append(
            f"{'  cores: gateway/client/other (median)':40}{e['gateway_cores']:>4.2f}/{e['client_cores']:.2f}/{e['other_cores']:.2f}"
            f"  {t['gateway_cores']:>4.2f}/{t['client_cores']:.2f}/{t['other_cores']:.2f}   "
            f"errors {e['errors']} / {t['errors']}"
        )
        lines.append(
            f"{'  per-round ratios per CPU-second':44}{' '.join(f'{v:.2f}' for v in summ['per_round_cpu_ratio'])}"
        )
    lines.append("")
    for scenario, summ in result["summary"].items():
        r = summ["ratios"]["ops_per_cpu_s"]
        if r["median"] is None:
            continue
        verdict = "met" if r["median"] >= TARGET else "NOT met"
        if r["median_low"] is not None:
            verdict += (
                f", interval low end {r['median_low']:.3f} "
                + ("above" if r["median_low"] >= TARGET else "below")
                + f" {TARGET}"
            )
        lines.append(f"target {what[scenario]} per CPU-second transparent >= {TARGET}x explicit: {verdict}")
    c = result["checks"]
    lines.append(
        f"checks: {'ok' if c['ok'] else 'FAILED'}: request log modes {c['logged']} for measured {c['measured_ops']} "
        f"(plus warm-up); new-host leaves naming their host {c['new_host_leaves_named_for_host']}/{c['new_host_ops']}; "
        f"client errors {c['errors']}"
    )
    return "\n".join(lines)


async def _main_async(bench: Bench) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await bench.run()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        if bench.origin is not None and bench.origin.proc is not None:
            bench.origin.proc.terminate()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main()
    reason = skip_reason(args.gateway)
    if reason:
        print(f"transparent_bench: skipped: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-transparent-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers
    lab = Lab()
    code = 1
    try:
        lab.up()
        print(
            f"transparent_bench: lab {lab.ns}, veth {lab.veth_root}/{lab.veth_client} "
            f"({lab.root} / {lab.client}, origin seen at {lab.virtual}), nft table inet {lab.table}",
            file=sys.stderr,
        )
        result = asyncio.run(_main_async(Bench(args, lab, tmp)))
        out_dir = Path(args.results_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = (
            out_dir
            / f"transparent-{result['started'].replace(':', '').replace('-', '').replace('+0000', 'Z')}.json"
        )
        path.write_text(json.dumps(result, indent=1, default=str))
        print(json.dumps(result, indent=1, default=str) if args.json else render(result))
        print(f"JSON: {path}", file=sys.stderr)
        code = 0 if result["checks"]["ok"] else 1
    except KeyboardInterrupt:
        print("transparent_bench: interrupted, cleaning up", file=sys.stderr)
        code = 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"transparent_bench: {e}", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the clean-up runs to its end
        kill_all()
        left = lab.down()
        if left:
            print(f"transparent_bench: could not remove: {', '.join(left)}", file=sys.stderr)
            code = code or 1
        elif lab.made:
            print(
                f"transparent_bench: removed {lab.ns}, {lab.veth_root}, nft table {lab.table}",
                file=sys.stderr,
            )
        if args.keep_temp:
            print(f"transparent_bench: temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
