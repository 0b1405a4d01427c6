"""Side-by-side CONNECT-proxy benchmark: direct vs plain mitmdump vs `gateway run` (vs Squid).

Run it with ``bench/run`` (see docs/performance.md). One run sets up an nginx origin on loopback
with one certificate per host name, then for each target, one after the other (never two at once:
the machine is small and shared), starts it, warms it up, and runs three scenarios with a load
client in its own process:

  new-host    every connection a new SNI name: [CONNECT] -> TLS -> GET -> read -> close
  same-host   the same, always to same.bench.test (leaf cached; full TLS handshakes both legs)
  keep-alive  `concurrency` persistent connections each sending sequential GETs

and records rate, latency percentiles and the CPU used by proxy, origin and client during the
timed phase. An in-process leaf issuance microbenchmark (certs.LeafIssuer vs mitmproxy CertStore)
runs first. Then the interleaved comparison (--interleave): mitmdump, gateway and gateway with N
generated rules (bench/rulegen.py) all up at once, loaded one at a time in rounds of short slices
from one client, so that each round gives ratios the machine's drift barely touches
(--policy-load: only gateway vs gateway with rules, issue 3; gateway-device: a gateway with one
enrolled device whose client identifies on every CONNECT, and gateway-device-anon, the same setup
with a client that does not identify, issue 4, see bench/device.py). Output: a table on stdout
and a JSON file in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import device
import gateway_variant
import leafbench
import report
import rulegen
import targets as T
from pki import Authority, write_host_certs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = Path(sys.executable).parent
SAME_HOST = f"same.{T.BENCH_SUFFIX}"
NEW_FMT = "h{:06d}." + T.BENCH_SUFFIX
SCENARIOS = ("new-host", "same-host", "keep-alive")
# gateway run --workers N: the proxy CPU of a slice is the whole process tree's (admin + workers)
WORKER_TARGETS = {"gateway-w1": 1, "gateway-w2": 2, "gateway-w4": 4}
DEVICE_TARGETS = {
    "gateway-device": True,
    "gateway-device-anon": False,
}  # name: the client identifies as the device


VARIANT_TARGETS = tuple(f"gateway-{name}" for name in gateway_variant.VARIANTS)  # bench/gateway_variant.py
INTERLEAVE_TARGETS = (
    "mitmdump",
    "gateway",
    "gateway-rules",
    *DEVICE_TARGETS,
    *VARIANT_TARGETS,
    *WORKER_TARGETS,
)


# Interleaved handshake slices keep fewer connections in flight: with 20, a handshake waits ~1 s in
# the proxy's queue and draining the last ones stretches a 2 s slice by half; 8 still saturate it.
HANDSHAKE_CONCURRENCY = 8


def names_per_slice(slice_s: float) -> int:
    """New host names available to one interleaved new-host slice (rates here stay below ~100/s)."""
    return max(50, int(150 * slice_s))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--targets",
        default="direct,mitmdump,gateway",
        help="comma list from direct,mitmdump,gateway,squid (default: %(default)s)",
    )
    p.add_argument("--with-squid", action="store_true", help="add Squid ssl-bump (apt squid-openssl)")
    p.add_argument("-c", "--concurrency", type=int, default=20, help="connections in flight (default 20)")
    p.add_argument(
        "--new-host-n", type=int, default=600, help="new-host connections per target (default 600)"
    )
    p.add_argument(
        "--same-host-n", type=int, default=600, help="same-host connections per target (default 600)"
    )
    p.add_argument(
        "--keepalive-n", type=int, default=6000, help="keep-alive requests per target (default 6000)"
    )
    p.add_argument("--time-limit", type=float, default=12.0, help="seconds per scenario, max (default 12)")
    p.add_argument(
        "--op-timeout", type=float, default=15.0, help="seconds per connection/request (default 15)"
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat all targets N times, report medians (default 1)"
    )
    p.add_argument("--client-procs", type=int, default=1, help="load client processes (default 1)")
    p.add_argument(
        "--hey", action="store_true", help="also measure keep-alive with `hey` (needs origin on :443)"
    )
    p.add_argument(
        "--leaf-n", type=int, default=2000, help="leaf microbenchmark names, 0 = skip (default 2000)"
    )
    p.add_argument("--nginx-workers", type=int, default=1, help="origin worker processes (default 1)")
    p.add_argument(
        "--origin-ip", default="127.0.0.1", help="loopback address for the origin (default 127.0.0.1)"
    )
    p.add_argument(
        "--origin-port", type=int, default=0, help="origin port (default: 443 if free, else a free one)"
    )
    p.add_argument("--mitmdump", default=str(VENV_BIN / "mitmdump"), help="mitmdump executable")
    p.add_argument("--gateway", default=str(VENV_BIN / "gateway"), help="gateway executable")
    p.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `gateway run` (repeatable), e.g. --gateway-arg=--log-level=warning",
    )
    p.add_argument("--gateway-startup-timeout", type=float, default=90.0)
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each target, wait up to S seconds for the machine's other load to drop "
        "below 0.25 cores (shared machines; default 0 = don't wait)",
    )
    p.add_argument(
        "--interleave",
        default="mitmdump,gateway,gateway-rules",
        metavar="LIST",
        help="keep-alive through these proxies, all up at once, in rotating slices from one client: "
        f"paired ratios robust to other load; from {','.join(INTERLEAVE_TARGETS)} "
        "(gateway-device: gateway run with one enrolled device holding a verified posture pass and "
        "one posture rule, the client sending the device's Proxy-Authorization on every CONNECT, "
        "issue 4; gateway-device-anon: the same setup, the client not identifying; gateway-pruned: an experiment, bench/gateway_variant.py; "
        "gateway-stock-tls: gateway with stock mitmproxy's per-handshake TLS set-up, the 'before' of issue 11; "
        "gateway-w1, gateway-w2, gateway-w4: gateway run --workers 1, 2, 4, CPU of the process tree, issue 11) "
        "(default: %(default)s; '' = skip)",
    )
    p.add_argument(
        "--load-sched",
        choices=("normal", "idle"),
        default="normal",
        help="scheduling of the bench's load clients and origin: 'idle' puts them in SCHED_IDLE, so "
        "they run only on CPU time the proxies leave and never preempt them (a machine too small to "
        "give them cores of their own). The proxies' CPU per operation then carries no preemption "
        "by them, but the client also gets less CPU while a proxy is busy, so a single busy proxy "
        "runs less saturated (default %(default)s)",
    )
    p.add_argument(
        "--interleave-scenarios",
        default="keep-alive",
        metavar="LIST",
        help="scenarios of the interleaved comparison, from keep-alive,same-host,new-host "
        "(default: %(default)s; all three add about 2 minutes)",
    )
    p.add_argument(
        "--rules",
        type=int,
        default=1000,
        metavar="N",
        help="generated rules loaded with --policies into the gateway-rules proxy (default %(default)s)",
    )
    p.add_argument(
        "--policy-load",
        action="store_true",
        help="only the interleaved gateway vs gateway-rules comparison (issue 3), 30 rounds",
    )
    p.add_argument(
        "--slice-rounds",
        type=int,
        default=0,
        metavar="K",
        help="interleaved rounds, one slice per proxy each, in rotating order (default 6: each order of 3 proxies once; 30 with --policy-load)",
    )
    p.add_argument(
        "--slice-s",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds per interleaved slice (default %(default)s)",
    )
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    p.add_argument(
        "--render", metavar="JSON", help="only print the table of an earlier result file, then exit"
    )
    p.add_argument("--no-install", action="store_true", help="never apt-get install missing tools")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, logs) for debugging")
    args = p.parse_args(argv)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.with_squid and "squid" not in names:
        names.append("squid")
    bad = set(names) - {"direct", "mitmdump", "gateway", "squid"}
    if bad:
        p.error(f"unknown target(s): {', '.join(sorted(bad))}")
    args.target_list = [] if args.policy_load else names
    if args.policy_load:
        args.interleave, args.interleave_scenarios = "gateway,gateway-rules", "keep-alive"
    args.interleave_scenario_list = [t.strip() for t in args.interleave_scenarios.split(",") if t.strip()]
    if set(args.interleave_scenario_list) - set(SCENARIOS):
        p.error(f"--interleave-scenarios: names from {','.join(SCENARIOS)}")
    args.interleave_list = [t.strip() for t in args.interleave.split(",") if t.strip()]
    bad = set(args.interleave_list) - set(INTERLEAVE_TARGETS)
    if bad or len(set(args.interleave_list)) != len(args.interleave_list) or len(args.interleave_list) == 1:
        p.error(
            f"--interleave: two or more distinct names from {','.join(INTERLEAVE_TARGETS)} "
            "(gateway-pruned: an experiment, see bench/gateway_variant.py)"
        )
    if "gateway-rules" in args.interleave_list and args.rules < 20:
        p.error("--rules: at least 20 (the fixed part of the generated set)")
    if not args.slice_rounds:
        args.slice_rounds = 30 if args.policy_load else 6
    if not (1 <= args.concurrency <= 1000) or args.client_procs < 1 or args.rounds < 1:
        p.error("need 1 <= concurrency <= 1000, client-procs >= 1, rounds >= 1")
    if not args.origin_ip.startswith("127."):
        p.error("--origin-ip must be a loopback address (127.0.0.0/8)")
    return args


def ensure_tool(binary: str, package: str, args: argparse.Namespace) -> bool:
    if shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists():
        return True
    if args.no_install or os.geteuid() != 0:
        print(
            f"bench: {binary} is missing; install it with: apt-get install -y --no-install-recommends {package}",
            file=sys.stderr,
        )
        return False
    print(
        f"bench: {binary} is missing; installing Debian package {package} with apt-get ...", file=sys.stderr
    )
    rc = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", package],
        stdout=subprocess.DEVNULL,
        timeout=600,
        check=False,
    ).returncode
    if rc != 0:
        subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL, timeout=600, check=False)
        rc = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            stdout=subprocess.DEVNULL,
            timeout=600,
            check=False,
        ).returncode
    return rc == 0 and bool(shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists())


def gateway_available(path: str) -> tuple[bool, str]:
    if not Path(path).exists():
        return False, f"{path} not found"
    try:
        out = subprocess.run([path, "run", "--help"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"`gateway run --help` failed: {e}"
    if out.returncode != 0 or "--proxy-listen" not in out.stdout + out.stderr:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
        return False, f"`gateway run --help` rc={out.returncode}: {last[0][:150]}"
    return True, ""


# --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.origin: T.Origin | None = None
        self.name_cursor = 0  # next unused new-host name index: never reused within a run
        self.device_headers: dict[str, dict[str, str]] = {}  # gateway-device*: the device's CONNECT headers

    # ---- client ---------------------------------------------------------------------------
    async def load(
        self,
        target: T.Target,
        mode: str,
        count: int,
        *,
        host: str | None = None,
        host_start: int = 0,
        time_limit: float | None = None,
    ) -> dict[str, Any]:
        """Run the load client(s) against ``target``; CPU of proxy and origin sampled at START/END."""
        a = self.args
        time_limit = a.time_limit if time_limit is None else time_limit
        procs_n = min(a.client_procs, a.concurrency, max(1, count))
        specs = []
        start = host_start
        for k in range(procs_n):
            share = count // procs_n + (1 if k < count % procs_n else 0)
            spec = {
                "mode": mode,
                "proxy": list(target.proxy) if target.proxy else None,
                "proxy_headers": target.proxy_headers,
                "origin": [self.origin.ip, self.origin.port],
                "cafile": str(target.cafile),
                "concurrency": a.concurrency // procs_n + (1 if k < a.concurrency % procs_n else 0),
                "count": share,
                "time_limit": time_limit,
                "op_timeout": a.op_timeout,
            }
            if host:
                spec["host"] = host
            else:
                spec["host_fmt"], spec["host_start"] = NEW_FMT, start
                start += share
            specs.append(spec)
        clients = []
        for spec in specs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH / "loadclient.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            clients.append(proc)
            T.CLIENT_PIDS.add(proc.pid)
            self.load_sched(proc.pid)
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
        try:
            async with asyncio.timeout(time_limit + 2 * a.op_timeout + 30):
                return await self._collect(target, clients)
        finally:
            for proc in clients:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                T.CLIENT_PIDS.discard(proc.pid)  # reaped: never signal a pid that may be reused

    async def _collect(self, target: T.Target, clients: list) -> dict[str, Any]:
        marks: dict[str, list[tuple[float, float, float]]] = {"START": [], "END": []}
        results = []

        async def read(proc) -> None:
            while line := await proc.stdout.readline():
                word = line.split(b" ", 1)[0].strip().decode()
                if word in marks:
                    marks[word].append(self.sample(target))
                elif word == "RESULT":
                    results.append(json.loads(line.split(b" ", 1)[1]))
            await proc.wait()

        await asyncio.gather(*(read(p) for p in clients))
        if len(results) != len(clients):
            raise RuntimeError("a load client died without a result")
        first, last = min(marks["START"]), max(marks["END"])
        wall = last[0] - first[0]
        lat = [x for r in results for x in r["latency_us"]]
        tls = [x for r in results for x in r["tls_latency_us"]]
        ok = sum(r["ok"] for r in results)
        elapsed = max(r["elapsed_s"] for r in results)
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        proxy_cpu = last[1] - first[1]
        origin_cpu = last[2] - first[2]
        client_cpu = sum(r["client_cpu_s"] for r in results)
        other = (last[3] - first[3]) - proxy_cpu - origin_cpu - client_cpu
        return {
            "ok": ok,
            "attempted": sum(r["attempted"] for r in results),
            "errors": errors,
            "error_samples": [s for r in results for s in r["error_samples"]][:5],
            "elapsed_s": round(elapsed, 3),
            "rate": ok / elapsed if elapsed > 0 else 0.0,
            "hit_time_limit": any(r["hit_time_limit"] for r in results),
            **report.percentiles(lat, "latency"),
            **report.percentiles(tls, "tls"),
            "proxy_cpu_s": round(proxy_cpu, 3) if target.pid else None,
            "proxy_cpu_us_per_req": proxy_cpu / ok * 1e6 if ok and target.pid else None,
            "proxy_core_pct": 100 * proxy_cpu / wall if wall > 0 and target.pid else None,
            "origin_core_pct": 100 * origin_cpu / wall if wall > 0 else None,
            "client_core_pct": 100 * client_cpu / elapsed if elapsed > 0 else None,
            "other_core_pct": 100 * max(0.0, other) / wall if wall > 0 else None,
            "steal_core_pct": 100 * (last[4] - first[4]) / wall if wall > 0 else None,
        }

    def load_sched(self, pid: int | None, tree: bool = False) -> None:
        """``--load-sched idle``: the load client or origin ``pid`` runs in SCHED_IDLE."""
        if self.args.load_sched == "idle":
            T.run_when_idle(pid, tree)

    def sample(self, target: T.Target) -> tuple[float, ...]:
        """(wall, proxy CPU, origin CPU, machine busy CPU, machine steal), seconds."""
        busy, steal = T.system_cpu()
        return (
            time.perf_counter(),
            T.tree_cpu_seconds(target.pid),
            T.tree_cpu_seconds(self.origin.pid),
            busy,
            steal,
        )

    async def hey(self, target: T.Target) -> dict[str, Any]:
        a = self.args
        url = (
            f"https://{SAME_HOST}/" if self.origin.port == 443 else f"https://{SAME_HOST}:{self.origin.port}/"
        )
        argv = [
            "hey",
            "-n",
            str(a.keepalive_n),
            "-c",
            str(a.concurrency),
            "-x",
            f"http://{target.proxy[0]}:{target.proxy[1]}",
            url,
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )
        self.load_sched(proc.pid)
        c0 = self.sample(target)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), a.time_limit)
        except TimeoutError:
            proc.send_signal(signal.SIGINT)  # hey prints its report on SIGINT
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 10)
            except TimeoutError:
                proc.kill()
                out, _ = await proc.communicate()
        c1 = self.sample(target)
        parsed = report.parse_hey(out.decode(errors="replace"))
        wall = c1[0] - c0[0]
        ok = parsed.get("ok", 0)
        parsed["proxy_cpu_us_per_req"] = (c1[1] - c0[1]) / ok * 1e6 if ok else None
        parsed["proxy_core_pct"] = 100 * (c1[1] - c0[1]) / wall
        parsed["origin_core_pct"] = 100 * (c1[2] - c0[2]) / wall
        parsed["other_core_pct"] = None  # hey's own CPU is not separated from the rest of the machine
        parsed["machine_busy_core_pct"] = 100 * (c1[3] - c0[3]) / wall
        return parsed

    # ---- targets --------------------------------------------------------------------------
    def make_target(self, name: str, rnd: int, origin_ca: Path) -> T.Target:
        work = self.tmp / f"{name}-r{rnd}"
        work.mkdir()
        common = {"name": name, "workdir": work, "origin_ca": origin_ca}
        if name == "direct":
            return T.Direct(**common)
        if name == "mitmdump":
            return T.Mitmdump(**common, mitmdump=self.args.mitmdump, origin_ip=self.origin.ip)
        if name == "gateway":
            return T.Gateway(
                **common,
                gateway=self.args.gateway,
                origin_ip=self.origin.ip,
                extra_args=self.args.gateway_arg,
                startup_timeout=self.args.gateway_startup_timeout,
            )
        return T.Squid(**common, origin_ip=self.origin.ip, origin_port=self.origin.port, names=self.all_names)

    async def wait_quiet(self) -> dict[str, float]:
        """Sample machine load (1 s windows) until below 0.25 cores or --quiet-wait is spent."""
        t0 = time.monotonic()
        while True:
            b0, _ = T.system_cpu()
            await asyncio.sleep(1.0)
            b1, _ = T.system_cpu()
            load = b1 - b0
            waited = time.monotonic() - t0
            if load < 0.25 or waited >= self.args.quiet_wait:
                return {"load_before_cores": round(load, 2), "waited_s": round(waited, 1)}

    async def run_target(self, target: T.Target) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {}
        if a.quiet_wait > 0:
            target.info.update(await self.wait_quiet())
        await target.start()
        try:
            warm = await self.load(target, "close", 2 * a.concurrency, host=SAME_HOST)
            if warm["ok"] == 0:
                raise RuntimeError(f"{target.name}: warm-up failed: {warm['errors']} {warm['error_samples']}")
            out["new-host"] = await self.load(target, "close", a.new_host_n, host_start=self.name_cursor)
            self.name_cursor += a.new_host_n
            out["same-host"] = await self.load(target, "close", a.same_host_n, host=SAME_HOST)
            out["keep-alive"] = await self.load(target, "keepalive", a.keepalive_n, host=SAME_HOST)
            if a.hey and target.proxy and self.origin.port == 443:
                out["keep-alive-hey"] = await self.hey(target)
        finally:
            await target.stop()
        out["info"] = target.info
        return out

    async def ab_load(
        self,
        pair: list[T.Target],
        order: list[int],
        slice_s: float,
        scenario: str = "keep-alive",
        host_start: int = 0,
    ) -> list[dict[str, Any]]:
        """Slices of one scenario rotating between running proxies, from one client process
        (loadclient mode "ab"); each slice's CPU of every proxy (schedstat, ns), of the origin and
        of the machine is sampled at its start and end. new-host: names from ``host_start`` on,
        ``NAMES_PER_SLICE`` per slice."""
        a = self.args
        spec = {
            "mode": "ab",
            "proxies": [list(t.proxy) for t in pair],
            "cafiles": [str(t.cafile) for t in pair],
            "proxies_headers": [t.proxy_headers for t in pair],
            "origin": [self.origin.ip, self.origin.port],
            "host": SAME_HOST,
            "concurrency": a.concurrency
            if scenario == "keep-alive"
            else min(a.concurrency, HANDSHAKE_CONCURRENCY),
            "cafile": str(pair[0].cafile),
            "order": order,
            "slice_s": slice_s,
            "op_timeout": a.op_timeout,
            "scenario": scenario,
            "host_fmt": NEW_FMT,
            "host_start": host_start,
            "names_per_slice": names_per_slice(slice_s),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "loadclient.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        T.CLIENT_PIDS.add(proc.pid)
        self.load_sched(proc.pid)
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()

        def sample() -> tuple[float, ...]:
            busy, _ = T.system_cpu()
            return (
                time.perf_counter(),
                T.tree_cpu_seconds(self.origin.pid),
                T.proc_cpu_ns(proc.pid) / 1e9,
                busy,
                *((T.tree_cpu_ns(t.pid) if t.tree_cpu else T.proc_cpu_ns(t.pid)) / 1e9 for t in pair),
                *(T.preemptions(t.pid, t.tree_cpu) for t in pair),
            )

        marks: dict[int, list[tuple[float, ...]]] = {}
        result: dict[str, Any] = {}
        try:
            async with asyncio.timeout(len(order) * (slice_s + a.op_timeout) + 60):
                while line := await proc.stdout.readline():
                    word, *rest = line.decode().split()
                    if word in ("SLICE", "SLICE_END"):
                        marks.setdefault(int(rest[0]), []).append(sample())
                    elif word == "RESULT":
                        result = json.loads(line.split(b" ", 1)[1])
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            T.CLIENT_PIDS.discard(proc.pid)
        if result.get("errors"):
            raise RuntimeError(
                f"rules comparison: client errors {result['errors']} {result.get('error_samples')}"
            )
        slices = result.get("slices", [])
        if len(slices) != len(order):
            raise RuntimeError(f"rules comparison: {len(slices)} of {len(order)} slices done")
        for sl in slices:
            s0, s1 = marks[sl["slice"]][:2]
            wall = s1[0] - s0[0]
            k = sl["proxy"]
            proxies = [s1[4 + j] - s0[4 + j] for j in range(len(pair))]
            preempted = s1[4 + len(pair) + k] - s0[4 + len(pair) + k]
            cpu, idle_cpu = proxies[k], sum(proxies) - proxies[k]
            origin, client, busy = s1[1] - s0[1], s1[2] - s0[2], s1[3] - s0[3]
            sl.update(
                {
                    "rate": sl["ok"] / sl["elapsed_s"] if sl["elapsed_s"] else 0.0,
                    "proxy_cpu_s": cpu,
                    "proxy_cpu_us_per_req": cpu / sl["ok"] * 1e6 if sl["ok"] else None,
                    "proxy_core_pct": 100 * cpu / wall,
                    "proxy_preempted": int(preempted),
                    "idle_proxy_cpu_s": idle_cpu,
                    "origin_core_pct": 100 * origin / wall,
                    "client_core_pct": 100 * client / wall,
                    "other_core_pct": 100 * max(0.0, busy - cpu - idle_cpu - origin - client) / wall,
                    "errors": {},
                }
            )
        return slices

    # ---- interleaved keep-alive: mitmdump / gateway / gateway with N rules ------------------
    async def interleaved(
        self, names: list[str], origin_ca: Path, profile: tuple[str, int, Path] | None = None
    ) -> dict[str, Any]:
        """2-3 proxies started side by side; per scenario (keep-alive, same-host, new-host), rounds
        of one slice each (rotating order: every permutation in turn) from one client; only one
        proxy is loaded at a time, the others idle. Ratios are paired within a round.
        ``profile`` = (py-spy executable, samples/s, directory): sample every proxy during the slices
        (bench/profile_proxy.py), raw collapsed stacks in DIRECTORY/NAME.txt."""
        a = self.args
        out: dict[str, Any] = {"names": names, "rules": a.rules if "gateway-rules" in names else 0}
        rules_file = None
        if "gateway-rules" in names:
            rules_file = self.tmp / f"rules-{a.rules}.yaml"
            out["file"] = rulegen.write(rules_file, a.rules)
            out["check"] = await asyncio.to_thread(rulegen.check, rules_file)
        procs: dict[str, T.Target] = {}
        for name in names:
            work = self.tmp / f"il-{name}"
            work.mkdir()
            if name == "mitmdump":
                procs[name] = T.Mitmdump(
                    name=name,
                    workdir=work,
                    origin_ca=origin_ca,
                    mitmdump=a.mitmdump,
                    origin_ip=self.origin.ip,
                )
            else:
                variant = name.removeprefix("gateway-") if name in VARIANT_TARGETS else None
                procs[name] = T.Gateway(
                    name=name,
                    workdir=work,
                    origin_ca=origin_ca,
                    gateway=a.gateway,
                    origin_ip=self.origin.ip,
                    extra_args=a.gateway_arg,
                    startup_timeout=a.gateway_startup_timeout,
                    policies=rules_file if name == "gateway-rules" else None,
                    launcher=[sys.executable, str(BENCH / "gateway_variant.py"), variant] if variant else [],
                )
                if name in WORKER_TARGETS:
                    procs[name].extra_args = [*a.gateway_arg, "--workers", str(WORKER_TARGETS[name])]
                    procs[name].tree_cpu = True
        try:
            for t in procs.values():
                await t.start()
            for name in [n for n in procs if n in DEVICE_TARGETS]:
                out.setdefault("devices", {})[name] = await self._enroll_device(
                    procs[name], DEVICE_TARGETS[name]
                )
            for name, t in procs.items():  # warm each: handshakes, then keep-alive (code paths, caches)
                warm = await self.load(t, "close", 2 * a.concurrency, host=SAME_HOST)
                warm_ka = await self.load(t, "keepalive", 10 * a.concurrency, host=SAME_HOST, time_limit=5)
                if not warm["ok"] or not warm_ka["ok"]:
                    raise RuntimeError(f"{name}: warm-up failed: {warm['errors']} {warm_ka['errors']}")
                if isinstance(t, T.Gateway):  # one rule of the file blocks ctl.bench.test
                    out.setdefault("control_status", {})[name] = await asyncio.to_thread(
                        T.probe_status, t.proxy, self.origin.port, rulegen.CONTROL_HOST, t.cafile
                    )
            control = out.get("control_status", {})
            if control.get("gateway", 200) != 200 or control.get("gateway-rules", 403) != 403:
                raise RuntimeError(
                    f"control request to {rulegen.CONTROL_HOST}: {control} "
                    "(expected 200 without rules, 403 with)"
                )
            for name in out.get("devices", {}):
                out["devices"][name]["probe"] = await self._probe_device(procs[name])
            if "gateway-rules" in procs:
                loaded = procs["gateway-rules"].log_lines("policy files:")
                out["gateway_log"] = loaded[-1][-200:] if loaded else None
            gws = {n: t for n, t in procs.items() if isinstance(t, T.Gateway)}
            before = {n: await t.decisions() for n, t in gws.items()}
            perms = list(itertools.permutations(range(len(names))))
            order = [k for r in range(a.slice_rounds) for k in perms[r % len(perms)]]
            spies = [await self._spy(profile, name, t) for name, t in procs.items()] if profile else []
            out["scenarios"] = {}
            try:
                for scen in a.interleave_scenario_list:
                    print(f"bench:   interleaved {scen} ...", file=sys.stderr)
                    slices = await self.ab_load(
                        list(procs.values()), order, a.slice_s, scen, self.name_cursor
                    )
                    if scen == "new-host":
                        self.name_cursor += len(order) * names_per_slice(a.slice_s)
                    for sl in slices:
                        sl["target"] = names[sl["proxy"]]
                        sl["round"] = sl["slice"] // len(names)
                    out["scenarios"][scen] = {
                        "slices": slices,
                        "summary": report.summarize_interleaved(slices, names),
                    }
            finally:
                for spy in spies:
                    if spy.returncode is None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                    try:
                        await asyncio.wait_for(spy.wait(), 60)
                    except TimeoutError:
                        spy.kill()
                        await spy.wait()
                    T.CLIENT_PIDS.discard(spy.pid)
            after = {n: await t.decisions() for n, t in gws.items()}
        finally:
            for name, t in procs.items():
                await t.stop()
                out.setdefault("exit_codes", {})[name] = t.info.get("exit_code")
        out["decisions"] = {
            n: {k: v - before[n].get(k, 0.0) for k, v in after[n].items() if v != before[n].get(k, 0.0)}
            for n in gws
        }
        out["requests"] = {
            n: sum(sc["summary"]["per_proxy"][n]["requests"] for sc in out["scenarios"].values())
            for n in names
        }
        for name, d in out.get("devices", {}).items():  # the log is flushed at stop
            d["request_log"] = logged = await asyncio.to_thread(
                device.logged_with, procs[name].workdir / "data" / "requests.jsonl", d["device_id"], SAME_HOST
            )
            want = logged["logged"] if DEVICE_TARGETS[name] else 0
            if logged["identified"] != want or logged["logged"] < out["requests"][name]:
                raise RuntimeError(
                    f"{name}: {logged['identified']} of {logged['logged']} logged requests to {SAME_HOST} "
                    f"carry the device ({want} expected, {out['requests'][name]} measured): "
                    "the comparison did not measure what it says"
                )
        return out

    async def _enroll_device(self, t: T.Gateway, identify: bool) -> dict[str, Any]:
        """Enroll one device with a verified posture pass (bench/device.py); when ``identify``, the
        load client identifies as it on every CONNECT."""
        dev = await asyncio.to_thread(device.enroll, t.admin, t.token)
        self.device_headers[t.name] = dev.proxy_headers  # for the probe
        if identify:
            t.proxy_headers = dev.proxy_headers
        return {
            "device_id": dev.device_id,
            "identifies": identify,
            "posture_rule_id": dev.posture_rule_id,
            "gateway_rule_id": dev.gateway_rule_id,
        }

    async def _probe_device(self, t: T.Gateway) -> dict[str, int]:
        """posture.bench.test is blocked unless the device's posture passed: 200 as the device (the
        stored pass reaches the proxy's decisions within ~1 s), 403 without its credentials."""
        port = self.origin.port
        deadline = time.monotonic() + 10
        while True:
            as_device = await asyncio.to_thread(
                T.probe_status,
                t.proxy,
                port,
                device.POSTURE_HOST,
                t.cafile,
                headers=self.device_headers[t.name],
            )
            if as_device == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        anonymous = await asyncio.to_thread(T.probe_status, t.proxy, port, device.POSTURE_HOST, t.cafile)
        if (as_device, anonymous) != (200, 403):
            raise RuntimeError(
                f"{t.name}: {device.POSTURE_HOST} answered {as_device} as the device and "
                f"{anonymous} without it (expected 200 and 403): the device's identity or posture "
                "is not attached, the comparison would measure nothing"
            )
        return {"as_device": as_device, "anonymous": anonymous}

    @staticmethod
    async def _spy(profile: tuple[str, int, Path], name: str, target: T.Target) -> asyncio.subprocess.Process:
        py_spy, rate, out_dir = profile
        spy = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "-p",
            str(target.pid),
            "-f",
            "raw",
            "--nolineno",
            "-r",
            str(rate),
            "-o",
            str(out_dir / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        T.CLIENT_PIDS.add(spy.pid)
        await asyncio.sleep(1.0)  # attached before the first slice
        return spy

    # ---- whole run ------------------------------------------------------------------------
    async def main(self) -> dict[str, Any]:
        a = self.args
        started = datetime.datetime.now(datetime.UTC)
        result: dict[str, Any] = {
            "started": started.isoformat(timespec="seconds"),
            "machine": machine_info(),
            "args": {k: v for k, v in vars(a).items() if k != "target_list"},
            "targets": {},
            "pending": {},
        }
        wanted = list(a.target_list)
        if "gateway" in wanted:
            ok, why = gateway_available(a.gateway)
            if not ok:
                wanted.remove("gateway")
                result["pending"]["gateway"] = why
                print(f"bench: gateway column pending: {why}", file=sys.stderr)
        if any(n.startswith("gateway") for n in a.interleave_list) and "gateway" not in wanted:
            ok, why = gateway_available(a.gateway)
            if not ok:
                result["pending"]["gateway"] = why
        if "squid" in wanted and not ensure_tool("squid", "squid-openssl", a):
            wanted.remove("squid")
            result["pending"]["squid"] = "squid-openssl not installed"
        if a.hey and not ensure_tool("hey", "hey", a):
            a.hey = False

        # origin PKI: same.bench.test + a fresh range of names per (round, intercepting target)
        origin_dir = self.tmp / "origin"
        origin_dir.mkdir()
        ip = a.origin_ip
        port = a.origin_port or (443 if T.port_is_free(ip, 443) else T.free_port(ip))
        self.origin = T.Origin(origin_dir, ip, port, workers=a.nginx_workers)
        n_names = a.rounds * len(wanted) * a.new_host_n
        if "new-host" in a.interleave_scenario_list and len(a.interleave_list) > 1:
            n_names += a.slice_rounds * len(a.interleave_list) * names_per_slice(a.slice_s)
        self.all_names = [SAME_HOST, rulegen.CONTROL_HOST, device.POSTURE_HOST] + [
            NEW_FMT.format(i) for i in range(n_names)
        ]
        ca = Authority.generate("Bench origin CA")
        origin_ca = self.tmp / "origin-ca.pem"
        origin_ca.write_bytes(ca.cert_pem())
        t0 = time.perf_counter()
        write_host_certs(ca, self.all_names, origin_dir / "certs", origin_dir / "host.key")
        print(
            f"bench: origin nginx on {ip}:{port}, {len(self.all_names)} host certificates "
            f"({time.perf_counter() - t0:.1f} s); targets: {', '.join(wanted)}",
            file=sys.stderr,
        )
        await self.origin.start()
        self.load_sched(self.origin.pid, tree=True)
        if a.hey and port != 443:
            print(
                "bench: --hey skipped: hey sends the port in SNI unless the origin is on :443, which is taken",
                file=sys.stderr,
            )
            a.hey = False

        if a.leaf_n > 0 and not a.policy_load:
            print(f"bench: leaf issuance microbenchmark ({a.leaf_n} names) ...", file=sys.stderr)
            result["leaf"] = leafbench.run(a.leaf_n, max(1000, a.leaf_n), self.tmp / "leafbench")

        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in wanted}
        for rnd in range(a.rounds):
            for name in wanted:
                print(f"bench: round {rnd + 1}/{a.rounds}: {name} ...", file=sys.stderr)
                t1 = time.perf_counter()
                try:
                    runs[name].append(await self.run_target(self.make_target(name, rnd, origin_ca)))
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    print(f"bench: {name} failed: {e}", file=sys.stderr)
                    result["pending"][name] = f"failed: {e}"[:2000]
                    continue
                print(f"bench:   {name} done in {time.perf_counter() - t1:.1f} s", file=sys.stderr)
        for name, rs in runs.items():
            if rs:
                result["targets"][name] = report.combine_rounds(rs)
        il = [n for n in a.interleave_list if n == "mitmdump" or "gateway" not in result["pending"]]
        if len(il) > 1:
            print(
                f"bench: interleaved keep-alive {', '.join(il)}: {a.slice_rounds} rounds of {len(il)} slices "
                f"of {a.slice_s:g} s ...",
                file=sys.stderr,
            )
            t1 = time.perf_counter()
            try:
                result["interleaved"] = await self.interleaved(il, origin_ca)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"bench: interleaved comparison failed: {e}", file=sys.stderr)
                result["pending"]["interleaved"] = f"failed: {e}"[:2000]
            else:
                print(f"bench:   done in {time.perf_counter() - t1:.1f} s", file=sys.stderr)
        result["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return result


def machine_info() -> dict[str, Any]:
    import ssl

    import cryptography
    import mitmproxy.version

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    try:
        from OpenSSL import SSL

        pyopenssl = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    except Exception:  # noqa: BLE001
        pyopenssl = "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "cryptography": cryptography.__version__,
        "openssl_mitmproxy": pyopenssl,
        "openssl_client": ssl.OPENSSL_VERSION,
        "nginx": T.nginx_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", ".")),
        "loadavg_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"] and len(argv) == 2:
        print(report.render(json.loads(Path(argv[1]).read_text())))
        return 0
    args = parse_args(argv)
    if args.render:
        print(report.render(json.loads(Path(args.render).read_text())))
        return 0
    # Ctrl-C must always reach us, even when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not ensure_tool("nginx", "nginx", args):
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers / squid run as other users
    code = 1
    try:
        result = asyncio.run(_main_async(args, tmp))
        out_dir = Path(args.results_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = result["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
        path = out_dir / f"proxy-{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))  # first: a rendering bug loses nothing
        text = report.render(result)
        print(text)
        result["table"] = text
        path.write_text(json.dumps(result, indent=1, default=str))
        print(f"\nJSON: {path}   (print again: bench/run --render {path})")
        code = 0 if result["targets"] or result.get("interleaved") else 1
    except KeyboardInterrupt:
        print("bench: interrupted, cleaning up", file=sys.stderr)
        code = 130
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
    finally:
        T.kill_all()
        if args.keep_temp:
            print(f"bench: temp dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


async def _main_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    bench = Bench(args, tmp)
    try:
        return await bench.main()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        if bench.origin is not None:
            await T.stop(bench.origin.proc)


if __name__ == "__main__":
    sys.exit(main())
