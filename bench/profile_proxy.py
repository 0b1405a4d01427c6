"""Where a keep-alive request's CPU goes: py-spy profiles of mitmdump, `gateway run`, and
`gateway run --policies` (N generated rules), under the same keep-alive load, side by side.

The targets run at once, set up as ``bench/run`` does (nginx origin on loopback, static EC CA for
mitmdump, data dir + hosts file for the gateway), and get the interleaved keep-alive load of
``bench/run`` (rounds of one slice per target, 20 connections each, rotating order) while one
``py-spy record`` per target samples its Python stacks (``--rate`` per second; idle samples are
not recorded, so each profile covers its own slices). The proxy's CPU per request comes from
``/proc/PID/task/*/schedstat`` over its slices; each function's share of the samples (inclusive:
the function and everything it calls) times that CPU gives **µs per request** attributed to it.
py-spy pauses the process to sample, so absolute figures are a few % higher than without it;
compare the columns.

Needs py-spy in the venv (``.venv/bin/pip install py-spy``) and permission to ptrace (root, or
``kernel.yama.ptrace_scope=0``).

Run:  .venv/bin/python bench/profile_proxy.py [--targets mitmdump,gateway,gateway-rules] [--rounds 12]
      [--slice-s 2] [--rate 250] [--rules 1000] [--top 25]
Output: a table per group of functions on stdout; raw collapsed stacks in bench/results/profile-<stamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import device
import proxy_bench as PB
import rulegen
import targets as T
from pki import Authority, write_host_certs

BENCH = Path(__file__).resolve().parent

# Functions whose inclusive cost is reported, by (function name without class, file).
MITMPROXY_MACHINERY = {
    ("handle_hook", "mitmproxy/proxy/mode_servers.py"),
    ("hook_task", "mitmproxy/proxy/server.py"),
    ("handle_lifecycle", "mitmproxy/addonmanager.py"),
    ("trigger_event", "mitmproxy/addonmanager.py"),
    ("invoke_addon", "mitmproxy/addonmanager.py"),
    ("invoke_addon_sync", "mitmproxy/addonmanager.py"),
    ("_iter_hooks", "mitmproxy/addonmanager.py"),
    ("safecall", "mitmproxy/addonmanager.py"),
    ("args", "mitmproxy/hooks.py"),
    ("server_event", "mitmproxy/proxy/server.py"),
    ("handle_connection", "mitmproxy/proxy/server.py"),
    ("receive_data", "mitmproxy/proxy/layers/tls.py"),
    ("send_data", "mitmproxy/proxy/layers/tls.py"),
    ("tls_interact", "mitmproxy/proxy/layers/tls.py"),
    ("_handle_event", "mitmproxy/proxy/layers/http/__init__.py"),
    ("read_headers", "mitmproxy/proxy/layers/http/_http1.py"),
    ("send", "mitmproxy/proxy/layers/http/_http1.py"),
    ("read_request_head", "mitmproxy/net/http/http1/read.py"),
    ("read_response_head", "mitmproxy/net/http/http1/read.py"),
    ("__init__", "mitmproxy/http.py"),
    ("__post_init__", "mitmproxy/http.py"),
    ("write", "asyncio/selector_events.py"),
}
OURS = ("addons/", "proxy/", "policies/", "certs/")
ROOTS = {
    "main (proxy/cli/main.py)",
    "run (proxy/cli/run.py)",
    "serve (proxy/runtime.py)",
    "<module> (gateway)",
    "run (asyncio/runners.py)",
    "Runner.run (asyncio/runners.py)",
}
PACKAGES = (
    "mitmproxy/",
    "OpenSSL/",
    "cryptography/",
    "h11/",
    "h2/",
    "hyperframe/",
    "aiohttp/",
    "wsproto/",
    "addons/",
    "policies/",
    "proxy/",
    "certs/",
)


def area(frames: tuple[str, ...]) -> str:
    """Where one sample's time belongs: the outermost addon frame on the stack (the hook that was
    called, or one of our timers), else mitmproxy's hook dispatch, else by the innermost frame of a
    known package (or asyncio / socket I/O)."""
    for frame in frames:
        name, path = split_frame(frame)
        if frame in ROOTS:
            continue
        if path.startswith(OURS) or path.startswith("mitmproxy/addons/") or path.endswith("resolve_addon.py"):
            owner = name.split(".")[0] if "." in name else name
            who = (
                "mitmproxy addon"
                if path.startswith("mitmproxy/")
                else "bench addon"
                if "resolve" in path
                else "gateway"
            )
            return f"{who} {owner} ({path})"
    if any(split_frame(f)[1] in ("mitmproxy/addonmanager.py", "mitmproxy/hooks.py") for f in frames):
        return "mitmproxy hook dispatch (addonmanager: every hook offered to every addon)"
    leaf = split_frame(frames[-1])[1]
    for frame in reversed(frames):
        path = split_frame(frame)[1]
        if not path.startswith(PACKAGES):
            continue
        if path.startswith(("OpenSSL/", "cryptography/")) or path == "mitmproxy/proxy/layers/tls.py":
            return "TLS (pyOpenSSL, mitmproxy TLS layer)"
        if path.startswith(("h11/", "mitmproxy/net/http/")) or path.endswith("_http1.py"):
            return "HTTP/1 reading and writing (mitmproxy http1, h11)"
        if path in ("mitmproxy/http.py", "mitmproxy/flow.py") or path.startswith(
            ("mitmproxy/coretypes/", "mitmproxy/utils/")
        ):
            return "HTTP flow objects (Request, Response, Headers, typecheck)"
        if leaf.startswith(("asyncio/", "selectors.py", "socket.py")):
            return "asyncio event loop and socket I/O"
        return "mitmproxy proxy core (server, layers, events)"
    if leaf.startswith(("asyncio/", "selectors.py", "socket.py")) or frames[-1] in ROOTS:
        return "asyncio event loop and socket I/O"  # under uvloop: its C code, no Python frame
    return "other"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="mitmdump,gateway,gateway-rules")
    p.add_argument("--rounds", type=int, default=12, help="rounds of one slice per target (default 12)")
    p.add_argument("--slice-s", type=float, default=2.0, help="seconds per slice (default 2)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    p.add_argument(
        "--rules", type=int, default=1000, help="rules for the gateway-rules target (default 1000)"
    )
    p.add_argument("--top", type=int, default=25, help="rows in the self-time list (default 25)")
    p.add_argument("-c", "--concurrency", type=int, default=20)
    p.add_argument(
        "--scenario",
        default="keep-alive",
        choices=PB.SCENARIOS,
        help="the load profiled: keep-alive requests, or whole connections to one host (same-host) "
        "or to a new host each (new-host) (default %(default)s)",
    )
    p.add_argument("--py-spy", default=str(Path(sys.executable).parent / "py-spy"))
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    a = p.parse_args(argv)
    a.target_list = [t.strip() for t in a.targets.split(",") if t.strip()]
    bad = set(a.target_list) - set(PB.INTERLEAVE_TARGETS)
    if bad:
        p.error(f"unknown target(s): {', '.join(sorted(bad))}")
    if not Path(a.py_spy).exists():
        p.error(f"{a.py_spy} not found: .venv/bin/pip install py-spy")
    return a


def bench_args(a: argparse.Namespace) -> argparse.Namespace:
    """What ``proxy_bench.Bench.load`` and ``Bench.interleaved`` read."""
    venv = Path(sys.executable).parent
    return argparse.Namespace(
        concurrency=a.concurrency,
        client_procs=1,
        time_limit=12.0,
        op_timeout=15.0,
        quiet_wait=0,
        gateway_arg=[],
        gateway=str(venv / "gateway"),
        mitmdump=str(venv / "mitmdump"),
        gateway_startup_timeout=90.0,
        rules=a.rules,
        slice_rounds=a.rounds,
        slice_s=a.slice_s,
        interleave_scenario_list=[a.scenario],
        load_sched="normal",
    )


def read_raw(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def split_frame(frame: str) -> tuple[str, str]:
    """'request (addons/enforcement.py)' -> ('request', 'addons/enforcement.py')."""
    name, _, rest = frame.partition(" (")
    return name, rest.rstrip(")")


def inclusive(stacks: Counter[tuple[str, ...]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for frames, n in stacks.items():
        for frame in set(frames):
            out[frame] += n
    return out


def self_time(stacks: Counter[tuple[str, ...]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for frames, n in stacks.items():
        out[frames[-1]] += n
    return out


def analyse(
    runs: dict[str, dict[str, Any]], top: int, scenario: str = "keep-alive"
) -> tuple[str, dict[str, Any]]:
    per_sample: dict[str, float] = {}
    incl: dict[str, Counter[str]] = {}
    selft: dict[str, Counter[str]] = {}
    head = []
    for name, run in runs.items():
        total = sum(run["stacks"].values())
        cpu = run["load"]["proxy_cpu_us_per_req"] or 0.0
        per_sample[name] = cpu / total if total else 0.0
        incl[name] = inclusive(run["stacks"])
        selft[name] = self_time(run["stacks"])
        head.append(
            f"{name}: {run['load']['ok']:,} requests, {run['load']['rate']:.0f} req/s, "
            f"{cpu:,.0f} us CPU per request, {total:,} samples"
        )
    names = list(runs)
    lines = [
        f"{scenario} operation cost by function, inclusive (us per request = share of samples x CPU per request)",
        *head,
        "",
    ]

    def table(title: str, frames: list[str], counters: dict[str, Counter[str]]) -> None:
        rows = [[title, *names]]
        for frame in frames:
            rows.append([frame[:90], *(f"{counters[n][frame] * per_sample[n]:,.1f}" for n in names)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.extend(
            "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            for r in rows
        )
        lines.append("")

    areas: dict[str, Counter[str]] = {}
    for n in names:
        areas[n] = Counter()
        for frames, count in runs[n]["stacks"].items():
            areas[n][area(frames)] += count
    every_area = sorted(
        set().union(*(c.keys() for c in areas.values())),
        key=lambda f: -max(areas[n][f] * per_sample[n] for n in names),
    )
    table("where the time goes (each sample once)", every_area, areas)
    every = set().union(*(c.keys() for c in incl.values()))
    machinery = [
        f for f in every if (split_frame(f)[0].rsplit(".", 1)[-1], split_frame(f)[1]) in MITMPROXY_MACHINERY
    ]
    machinery.sort(key=lambda f: -max(incl[n][f] * per_sample[n] for n in names))
    table("mitmproxy machinery (inclusive)", machinery, incl)
    ours = [f for f in every if any(split_frame(f)[1].startswith(p) for p in OURS) and f not in ROOTS]
    ours.sort(key=lambda f: -max(incl[n][f] * per_sample[n] for n in names))
    table(
        "our code, every function seen (inclusive)",
        [f for f in ours if max(incl[n][f] * per_sample[n] for n in names) >= 1.0],
        incl,
    )
    hooks = [
        f
        for f in every
        if split_frame(f)[1].startswith(("mitmproxy/addons/", "addons/", "resolve_addon"))
        or "resolve_addon" in f
    ]
    hooks.sort(key=lambda f: -max(incl[n][f] * per_sample[n] for n in names))
    table(
        "addon hooks (mitmproxy's and ours, inclusive)",
        [f for f in hooks if max(incl[n][f] * per_sample[n] for n in names) >= 1.0],
        incl,
    )
    tops: list[str] = []
    for n in names:
        for f, _ in selft[n].most_common(top):
            if f not in tops:
                tops.append(f)
    tops.sort(key=lambda f: -max(selft[n][f] * per_sample[n] for n in names))
    table(f"self time (top {top} of each)", tops, selft)
    data = {
        n: {
            "per_sample_us": per_sample[n],
            "load": runs[n]["load"],
            "areas_us": {f: v * per_sample[n] for f, v in areas[n].items()},
            "inclusive_us": {f: incl[n][f] * per_sample[n] for f in every if incl[n][f]},
            "self_us": {f: v * per_sample[n] for f, v in selft[n].items()},
        }
        for n in names
    }
    return "\n".join(lines), data


async def main_async(a: argparse.Namespace, tmp: Path, out_dir: Path) -> dict[str, Any]:
    bench = PB.Bench(bench_args(a), tmp)
    origin_dir = tmp / "origin"
    origin_dir.mkdir()
    port = 443 if T.port_is_free("127.0.0.1", 443) else T.free_port("127.0.0.1")
    bench.origin = T.Origin(origin_dir, "127.0.0.1", port)
    ca = Authority.generate("Bench origin CA")
    origin_ca = tmp / "origin-ca.pem"
    origin_ca.write_bytes(ca.cert_pem())
    new_hosts = (
        a.rounds * len(a.target_list) * PB.names_per_slice(a.slice_s) if a.scenario == "new-host" else 0
    )
    write_host_certs(
        ca,
        [
            PB.SAME_HOST,
            rulegen.CONTROL_HOST,
            device.POSTURE_HOST,
            *(PB.NEW_FMT.format(i) for i in range(new_hosts)),
        ],
        origin_dir / "certs",
        origin_dir / "host.key",
    )
    await bench.origin.start()
    try:
        print(
            f"profile: {', '.join(a.target_list)} up at once, {a.rounds} rounds of {a.slice_s:g} s slices, "
            f"py-spy at {a.rate}/s ...",
            file=sys.stderr,
        )
        il = await bench.interleaved(a.target_list, origin_ca, profile=(a.py_spy, a.rate, out_dir))
    finally:
        await T.stop(bench.origin.proc)
    runs = {}
    for name in a.target_list:
        raw = out_dir / f"{name}.txt"
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no profile for {name} (ptrace permission?)")
        per = il["scenarios"][a.scenario]["summary"]["per_proxy"][name]
        runs[name] = {
            "stacks": read_raw(raw),
            "load": {
                "ok": per["requests"],
                "rate": per["rate"],
                "proxy_cpu_us_per_req": per["cpu_us_per_req"],
            },
        }
    return {"runs": runs, "interleaved": il}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(a.results_dir) / f"profile-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    os.chmod(tmp, 0o755)
    try:
        out = asyncio.run(main_async(a, tmp, out_dir))
        text, data = analyse(out["runs"], a.top, a.scenario)
        ratios = out["interleaved"]["scenarios"][a.scenario]["summary"]["ratios"]
        text += (
            "\nCPU per request ratios from the same slices (geometric mean of rounds, ~95% interval):\n"
            + "\n".join(
                f"  {pair}: {r['cpu']['geomean']:.3f} ({r['cpu']['low']:.3f}-{r['cpu']['high']:.3f})"
                for pair, r in ratios.items()
                if r["cpu"]["geomean"]
            )
        )
        machine = PB.machine_info()
        header = (
            f"py-spy {a.scenario} profile  {stamp}  commit {machine['commit']}"
            f"{' (dirty)' if machine['dirty'] else ''}, {a.rate} samples/s, {a.rounds} rounds of "
            f"{a.slice_s:g} s slices per target, interleaved\n"
        )
        print(header + text)
        (out_dir / "summary.txt").write_text(header + text)
        (out_dir / "summary.json").write_text(
            json.dumps(
                {"machine": machine, "args": vars(a), "targets": data, "interleaved": out["interleaved"]},
                indent=1,
                default=str,
            )
        )
        print(f"\nraw stacks and summary: {out_dir}")
        return 0
    except KeyboardInterrupt:
        print("profile: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        T.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
