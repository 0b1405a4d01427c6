"""The proxy while devices report their posture: what posture churn costs the data plane (issue 11).

``gateway run --workers N`` (default 2) in front of an nginx origin on loopback, with one enrolled
device (``bench/device.py``: a device CA, a client-certificate posture rule, and a Gateway rule
that blocks ``posture.bench.test`` unless that rule passed). A keep-alive load client identifies
as the device on every CONNECT and asks for ``posture.bench.test``, so every request looks up the
device's identity and posture, and must be answered 200 (a 403 or an error is counted and fails
the run).

Slices alternate between **quiet** (the proxy load alone) and **churn** (the same load while a
reporter process posts verified passes for that very device at ``--report-rate`` per second, as
``gateway agent report`` does: a nonce, then the result with its proof of possession). Each report
changes the device: the admin plane verifies and stores it, each worker follows the change (the
store's change journal names the device; the worker forgets it and reads it again at its next
request), and the report is answered once every worker has followed it. The device that reports is
the one browsing: the worst case for the cache.

Per kind of slice (medians over the slices): proxied requests/s, the proxy workers' CPU per
request, the admin plane's CPU (with its proof worker) per report, reports/s reached and their
latency; and churn / quiet in the same run. The load client, the reporter and nginx share the
machine's cores with the gateway.

``--control``: the reporter asks for two nonces instead (the same number of requests to the admin
plane, nothing changes): what the churn slices lose beyond that is the cost of the change itself.

Run:  .venv/bin/python bench/churn_bench.py [--workers 2] [--pairs 6] [--slice-s 5]
                                            [--concurrency 8] [--report-rate 50] [--control] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import device
import report
import targets as T
from pki import Authority, write_host_certs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = device.POSTURE_HOST


# ---- the reporter (its own process: ``churn_bench.py --reporter < spec.json``) -----------------
def reporter(spec: dict[str, Any]) -> dict[str, Any]:
    """Report at ``rate`` per second for ``seconds``, one report after the other (a report that
    takes longer than its interval delays the next: the rate reached is what is reported)."""
    dev = device.Device(**spec["device"])
    interval, stop = 1.0 / spec["rate"], time.monotonic() + spec["seconds"]
    latencies: list[float] = []
    errors: list[str] = []
    due, cpu0 = time.monotonic(), time.process_time()
    while (now := time.monotonic()) < stop:
        if now < due:
            time.sleep(due - now)
        due += interval
        t0 = time.monotonic()
        try:
            if spec["control"]:
                device.ask_nonce(spec["admin"], dev)
                device.ask_nonce(spec["admin"], dev)
            else:
                device.report_pass(spec["admin"], dev)
        except (RuntimeError, OSError, http.client.HTTPException) as e:
            errors.append(str(e)[:200])
            continue
        latencies.append(time.monotonic() - t0)
    return {
        "reports": len(latencies),
        "errors": errors[:5],
        "failed": len(errors),
        "latency_s": latencies,
        "cpu_s": time.process_time() - cpu0,
    }


# ---- the orchestrator ------------------------------------------------------------------------
@dataclasses.dataclass
class Cpu:
    """CPU seconds of the proxy workers and of the rest of the gateway's process tree."""

    workers: float
    admin: float


def gateway_cpu(root: int) -> Cpu:
    """The workers are the ``gateway node --worker`` processes under ``root``; the admin plane is
    ``root`` with its other children (the proof worker). With ``--workers 1`` one process proxies
    and serves the API: its CPU is counted as the proxy's, the proof worker's as the admin's."""
    workers = admin = own = 0
    found = False
    for pid in T.process_tree(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        cpu = T.proc_cpu_ns(pid)
        if b"node" in cmdline and b"--worker" in cmdline:
            workers += cpu
            found = True
        else:
            admin += cpu
        if pid == root:
            own = cpu
    if not found:
        workers, admin = own, admin - own
    return Cpu(workers / 1e9, admin / 1e9)


async def _json_child(argv: list[str], spec: dict[str, Any], on_line: Any = None) -> dict[str, Any]:
    """Run a bench child that reads its spec on stdin and prints ``RESULT {json}`` last."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    result: dict[str, Any] | None = None
    async for raw in proc.stdout:
        line = raw.decode().strip()
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif on_line is not None:
            on_line(line)
    if await proc.wait() != 0 or result is None:
        raise RuntimeError(f"{argv[1]} exited with {proc.returncode} and no result")
    return result


async def one_slice(
    args: argparse.Namespace, gw: T.Gateway, dev: device.Device, churn: bool
) -> dict[str, Any]:
    """One slice of proxy load; with ``churn``, the reporter runs for the same time."""
    assert gw.proxy is not None and gw.pid is not None
    marks: dict[str, tuple[float, Cpu]] = {}

    def mark(line: str) -> None:
        if line in ("START", "END"):
            marks[line] = (time.monotonic(), gateway_cpu(gw.pid or 0))

    load_spec = {
        "mode": "keepalive",
        "proxy": list(gw.proxy),
        "proxy_headers": dev.proxy_headers,
        "origin": [args.origin_ip, args.origin_port],
        "cafile": str(gw.cafile),
        "host": HOST,
        "concurrency": args.concurrency,
        "count": 10**9,
        "time_limit": args.slice_s,
        "op_timeout": 10,
    }
    load = _json_child([sys.executable, str(BENCH / "loadclient.py")], load_spec, mark)
    jobs: list[Any] = [load]
    if churn:
        report_spec = {
            "admin": gw.admin,
            "device": dataclasses.asdict(dev),
            "rate": args.report_rate,
            "control": args.control,
            "seconds": args.slice_s + 1.0,  # covers the load's set-up as well
        }
        jobs.append(_json_child([sys.executable, __file__, "--reporter"], report_spec))
    results = await asyncio.gather(*jobs)
    loaded = results[0]
    (t0, c0), (t1, c1) = marks["START"], marks["END"]
    ok = loaded["ok"]
    figures: dict[str, Any] = {
        "churn": churn,
        "requests": ok,
        "failed_requests": sum(loaded["errors"].values()),
        "error_samples": loaded["error_samples"],
        "requests_per_s": ok / (t1 - t0),
        "workers_cpu_us_per_request": (c1.workers - c0.workers) / ok * 1e6 if ok else None,
        "admin_cpu_s_per_s": (c1.admin - c0.admin) / (t1 - t0),
        **report.percentiles(loaded["latency_us"], "request"),
    }
    if churn:
        reported = results[1]
        figures["reports"] = reported["reports"]
        figures["failed_reports"] = reported["failed"]
        figures["report_errors"] = reported["errors"]
        figures["reports_per_s"] = reported["reports"] / report_spec["seconds"]
        figures["report_p50_ms"] = (
            statistics.median(reported["latency_s"]) * 1000 if reported["reports"] else None
        )
        figures["reporter_cpu_us_per_report"] = (
            reported["cpu_s"] / reported["reports"] * 1e6 if reported["reports"] else None
        )
        figures["admin_cpu_us_per_report"] = (
            figures["admin_cpu_s_per_s"] / figures["reports_per_s"] * 1e6 if reported["reports"] else None
        )
    return figures


def _median(slices: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in slices if s.get(key) is not None]
    return statistics.median(values) if values else None


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    origin_dir = tmp / "origin"
    origin_dir.mkdir()
    ca = Authority.generate("Bench origin CA")
    origin_ca = tmp / "origin-ca.pem"
    origin_ca.write_bytes(ca.cert_pem())
    write_host_certs(ca, [HOST], origin_dir / "certs", origin_dir / "host.key")
    args.origin_port = T.free_port(args.origin_ip)
    origin = T.Origin(origin_dir, args.origin_ip, args.origin_port)
    gw_dir = tmp / "gateway"
    gw_dir.mkdir()
    gw = T.Gateway(
        name="gateway",
        workdir=gw_dir,
        origin_ca=origin_ca,
        gateway=args.gateway,
        origin_ip=args.origin_ip,
        extra_args=["--workers", str(args.workers)],
    )
    await origin.start()
    try:
        await gw.start()
        dev = await asyncio.to_thread(device.enroll, gw.admin, gw.token)
        await one_slice(args, gw, dev, churn=False)  # warm-up: connections, leaf, caches
        slices = []
        for pair in range(args.pairs):
            for churn in (False, True) if pair % 2 == 0 else (True, False):
                figures = await one_slice(args, gw, dev, churn)
                slices.append(figures)
                print(_line(pair, figures), file=sys.stderr, flush=True)
    finally:
        await gw.stop()
        await T.stop(origin.proc)
    return _summary(args, slices)


def _line(pair: int, s: dict[str, Any]) -> str:
    text = (
        f"pair {pair} {'churn' if s['churn'] else 'quiet'}: {s['requests_per_s']:,.0f} requests/s, "
        f"workers {s['workers_cpu_us_per_request'] or 0:,.0f} µs/request, p99 {s['request_p99_ms'] or 0:.1f} ms, "
        f"failed {s['failed_requests']}"
    )
    if s["churn"]:
        text += (
            f"; {s['reports_per_s']:.1f} reports/s (p50 {s['report_p50_ms'] or 0:.1f} ms, failed "
            f"{s['failed_reports']}), admin plane {s['admin_cpu_us_per_report'] or 0:,.0f} µs/report"
        )
    return text


def _summary(args: argparse.Namespace, slices: list[dict[str, Any]]) -> dict[str, Any]:
    quiet = [s for s in slices if not s["churn"]]
    churn = [s for s in slices if s["churn"]]
    out: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "reporter"},
        "quiet": {
            k: _median(quiet, k) for k in ("requests_per_s", "workers_cpu_us_per_request", "request_p99_ms")
        },
        "churn": {
            k: _median(churn, k)
            for k in (
                "requests_per_s",
                "workers_cpu_us_per_request",
                "request_p99_ms",
                "reports_per_s",
                "report_p50_ms",
                "admin_cpu_us_per_report",
                "reporter_cpu_us_per_report",
            )
        },
        "failed_requests": sum(s["failed_requests"] for s in slices),
        "failed_reports": sum(s.get("failed_reports", 0) for s in slices),
        "error_samples": [e for s in slices for e in s["error_samples"] + s.get("report_errors", [])][:5],
        "slices": slices,
    }
    # churn / quiet per pair (slices 2k and 2k+1 are one pair), then the median of the ratios
    pairs = [(slices[i], slices[i + 1]) for i in range(0, len(slices) - 1, 2)]
    for key in ("requests_per_s", "workers_cpu_us_per_request"):
        ratios = []
        for a, b in pairs:
            on, off = (a, b) if a["churn"] else (b, a)
            if on.get(key) and off.get(key):
                ratios.append(on[key] / off[key])
        out[f"churn_over_quiet_{key}"] = statistics.median(ratios) if ratios else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gateway run --workers N (default 2)")
    parser.add_argument("--pairs", type=int, default=6, help="quiet/churn slice pairs (default 6)")
    parser.add_argument("--slice-s", type=float, default=5.0, help="seconds per slice (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--report-rate", type=float, default=50.0, help="reports per second (default 50)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="the reporter asks for two nonces instead of reporting: as many requests to the admin "
        "plane, nothing changed for the workers to follow (a baseline for the churn slices)",
    )
    parser.add_argument("--origin-ip", default="127.0.0.1")
    parser.add_argument("--gateway", default=str(REPO / ".venv" / "bin" / "gateway"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--reporter", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reporter:
        print("RESULT " + json.dumps(reporter(json.load(sys.stdin))), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as tmp:
        try:
            figures = asyncio.run(run(args, Path(tmp)))
        finally:
            T.kill_all()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    _print(figures)
    if figures["failed_requests"] or figures["failed_reports"]:
        sys.exit(
            f"churn bench: {figures['failed_requests']} requests and {figures['failed_reports']} reports failed"
        )


def _print(f: dict[str, Any]) -> None:
    q, c, s = f["quiet"], f["churn"], f["settings"]
    print(
        f"gateway run --workers {s['workers']}, {s['concurrency']} keep-alive connections identified as one device, "
        f"{s['pairs']} pairs of {s['slice_s']:.0f} s slices, "
        + (
            f"two nonce requests (--control) at {s['report_rate']:.0f}/s"
            if s["control"]
            else f"reports at {s['report_rate']:.0f}/s for that device"
        )
    )
    print(f"{'':28}{'quiet':>14}{'churn':>14}")
    print(f"{'requests/s':28}{q['requests_per_s']:>14,.0f}{c['requests_per_s']:>14,.0f}")
    print(
        f"{'workers µs CPU / request':28}{q['workers_cpu_us_per_request']:>14,.0f}{c['workers_cpu_us_per_request']:>14,.0f}"
    )
    print(f"{'request p99 ms':28}{q['request_p99_ms']:>14.1f}{c['request_p99_ms']:>14.1f}")
    print(f"reports/s reached: {c['reports_per_s']:.1f} (p50 {c['report_p50_ms']:.1f} ms); admin plane "
          f"{c['admin_cpu_us_per_report']:,.0f} µs CPU per report (its proof worker included); the reporter "
          f"{c['reporter_cpu_us_per_report']:,.0f} µs per report, on the same cores")  # fmt: skip
    print(
        f"churn / quiet, median of the pairs: requests/s {f['churn_over_quiet_requests_per_s']:.3f}, "
        f"workers' CPU per request {f['churn_over_quiet_workers_cpu_us_per_request']:.3f}"
    )
    print(
        f"failed: {f['failed_requests']} requests, {f['failed_reports']} reports {f['error_samples'] or ''}"
    )


if __name__ == "__main__":
    main()
