"""Numbers to text: percentiles, rounds, hey output, and the table printed at the end of a run."""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

ORDER = ("direct", "mitmdump", "gateway", "squid")
UNITS = {"new-host": "conn/s", "same-host": "conn/s", "keep-alive": "req/s", "keep-alive-hey": "req/s"}
TITLES = {
    "new-host": "new-host intercepts",
    "same-host": "same-host handshakes",
    "keep-alive": "keep-alive requests",
    "keep-alive-hey": "keep-alive (hey)",
}


def percentiles(samples_us: list[int], prefix: str) -> dict[str, float | None]:
    keys = ("p50", "p90", "p99")
    if not samples_us:
        return {f"{prefix}_{k}_ms": None for k in keys}
    s = sorted(samples_us)
    out = {
        f"{prefix}_{k}_ms": s[min(len(s) - 1, int(q * len(s)))] / 1000
        for k, q in zip(keys, (0.50, 0.90, 0.99), strict=False)
    }
    out[f"{prefix}_mean_ms"] = statistics.fmean(s) / 1000
    return out


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One round: as is. Several: per scenario, the median of every numeric field across rounds."""
    if len(rounds) == 1:
        return {**rounds[0], "rounds": 1}
    out: dict[str, Any] = {"rounds": len(rounds), "info": [r.get("info") for r in rounds]}
    for scen in rounds[0]:
        if scen == "info":
            continue
        per = [r[scen] for r in rounds if scen in r]
        merged: dict[str, Any] = {}
        for key in per[0]:
            vals = [p.get(key) for p in per]
            nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if all(v is None for v in vals):
                merged[key] = None
            elif nums and len(nums) == len([v for v in vals if v is not None]):
                merged[key] = statistics.median(nums)
            elif key == "errors":
                kinds = {k for v in vals if v for k in v}
                merged[key] = {k: sum((v or {}).get(k, 0) for v in vals) for k in kinds}
            else:
                merged[key] = vals
        merged["rate_per_round"] = [p.get("rate") for p in per]
        merged["proxy_cpu_us_per_req_per_round"] = [p.get("proxy_cpu_us_per_req") for p in per]
        merged["other_core_pct_per_round"] = [p.get("other_core_pct") for p in per]
        out[scen] = merged
    return out


def parse_hey(text: str) -> dict[str, Any]:
    def grab(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", text))
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", text))
    p50, p99 = grab(r"50% in ([\d.]+) secs"), grab(r"99% in ([\d.]+) secs")
    elapsed = grab(r"Total:\s+([\d.]+) secs")
    errors = (
        re.findall(r"\[(\d+)\]\t(.+)", text.split("Error distribution:", 1)[1])
        if "Error distribution:" in text
        else []
    )
    return {
        "ok": ok,
        "non_200": total - ok,
        "elapsed_s": elapsed,
        "rate": ok / elapsed if elapsed else 0.0,
        "latency_p50_ms": p50 * 1000 if p50 is not None else None,
        "latency_p99_ms": p99 * 1000 if p99 is not None else None,
        "errors": {msg[:120]: int(n) for n, msg in errors},
        "raw_tail": text[-600:] if not ok else "",
    }


# --------------------------------------------------------------------------------------------
def _num(v: Any, digits: int) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    if digits == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return ""
    return f"{a / b:.2f}x"


def render(result: dict[str, Any]) -> str:
    cols = [t for t in ORDER if t in result["targets"] or t in result.get("pending", {})]
    if not cols:  # --policy-load: only the rules comparison
        return "\n".join(_render_header(result) + _render_interleaved(result.get("interleaved"), result))
    data = result["targets"]
    ratio_defs = [
        ("gw/mitm", "gateway", "mitmdump"),
        ("mitm/dir", "mitmdump", "direct"),
        ("gw/dir", "gateway", "direct"),
    ]
    if "squid" in cols:
        ratio_defs += [("squid/dir", "squid", "direct")]
    head = ["", *cols, *(r[0] for r in ratio_defs)]
    rows: list[list[str]] = []

    def cell(t: str, scen: str, key: str) -> Any:
        return data.get(t, {}).get(scen, {}).get(key)

    def pending(t: str) -> str:
        return "pending" if t in result.get("pending", {}) else "-"

    scens = [s for s in UNITS if any(s in data.get(t, {}) for t in cols)]
    for scen in scens:
        for label, key, digits in (
            (f"{TITLES[scen]} ({UNITS[scen]})", "rate", 0),
            ("  latency p50 (ms)", "latency_p50_ms", 2),
            ("  latency p99 (ms)", "latency_p99_ms", 2),
            ("  proxy CPU per req (us)", "proxy_cpu_us_per_req", 0),
        ):
            row = [label]
            for t in cols:
                v = cell(t, scen, key) if t in data else None
                row.append(_num(v, digits) if t in data else pending(t))
            for _, x, y in ratio_defs:
                row.append(_ratio(cell(x, scen, key), cell(y, scen, key)))
            rows.append(row)
        row = ["  cores busy proxy/origin/client"]
        for t in cols:
            if t not in data or scen not in data[t]:
                row.append(pending(t) if t not in data else "-")
                continue
            d = data[t][scen]
            parts = [d.get("proxy_core_pct"), d.get("origin_core_pct"), d.get("client_core_pct")]
            row.append("/".join(f"{p / 100:.2f}" if isinstance(p, (int, float)) else "-" for p in parts))
        rows.append(row + [""] * len(ratio_defs))
        other = ["  other load on machine (cores)"]
        for t in cols:
            v = data.get(t, {}).get(scen, {}).get("other_core_pct")
            other.append(f"{v / 100:.2f}" if isinstance(v, (int, float)) else "-")
        rows.append(other + [""] * len(ratio_defs))
        errs = {
            t: sum((data[t][scen].get("errors") or {}).values()) + (data[t][scen].get("non_200") or 0)
            for t in cols
            if t in data and scen in data[t]
        }
        if any(errs.values()):
            rows.append(["  errors"] + [str(errs.get(t, "-")) for t in cols] + [""] * len(ratio_defs))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    a = result["args"]
    lines = [
        *_render_header(result),
        (
            f"concurrency {a['concurrency']}, new-host {a['new_host_n']}, same-host {a['same_host_n']}, "
            f"keep-alive {a['keepalive_n']} requests, <= {a['time_limit']:g} s per scenario, rounds {a['rounds']}, "
            f"client processes {a['client_procs']}"
        ),
        "",
        fmt(head),
        fmt(["-" * w for w in widths]),
        *(fmt(r) for r in rows),
    ]
    lines += _render_round_ratios(
        data, [(n, x, y) for n, x, y in ratio_defs if x in data and y in data], scens
    )
    lines.append(
        "rates: higher is better; latency and CPU per request: lower is better; "
        "cores busy = CPU seconds / wall seconds during the timed phase (1.00 = one full core);\n"
        "other load = CPU used on the machine by processes outside this benchmark during that phase"
    )
    for t, why in result.get("pending", {}).items():
        lines.append(f"{t}: pending ({why.splitlines()[0][:200] if why else ''})")
    lines += _render_interleaved(result.get("interleaved"), result)
    lines += _render_leaf(result.get("leaf"))
    return "\n".join(lines)


def _render_header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    return [
        f"Gateway proxy benchmark  {result['started']}  commit {m['commit']}{' (dirty)' if m['dirty'] else ''}",
        (
            f"{m['cpus']} CPU ({m['cpu_model']}), Python {m['python']}, mitmproxy {m['mitmproxy']}, "
            f"cryptography {m['cryptography']}, nginx {m['nginx']}"
        ),
    ]


# --------------------------------------------------------------------------------------------
LOSS_TARGET = 0.05  # issue 3: <= 5 % loss of proxy throughput at 1,000 rules
CONTROL = "ctl.bench.test"
DEVICE_HOST = "posture.bench.test"  # bench/device.py POSTURE_HOST


RATIO_PAIRS = (
    ("gateway", "mitmdump"),
    ("gateway-rules", "gateway"),
    ("gateway-rules", "mitmdump"),
    ("gateway-pruned", "gateway"),
    ("gateway-pruned", "mitmdump"),
    ("gateway-device", "gateway"),
    ("gateway-device", "gateway-device-anon"),
    ("gateway-device-anon", "gateway"),
    ("gateway-device", "mitmdump"),
    ("gateway", "gateway-stock-tls"),
    ("gateway-stock-tls", "mitmdump"),
    ("gateway", "gateway-stock-dispatch"),
    ("gateway-stock-dispatch", "mitmdump"),
    ("gateway", "gateway-stock-args"),
    ("gateway-stock-args", "mitmdump"),
    ("gateway-uvloop", "gateway"),
    ("gateway-uvloop", "mitmdump"),
    ("gateway-optimized", "gateway"),
    ("gateway-optimized", "mitmdump"),
    ("gateway-gc-young", "gateway"),
    ("gateway-gc-young", "mitmdump"),
    ("gateway-uncached-names", "gateway"),
    ("gateway-stock-hooks", "gateway"),
    ("gateway-stock-checks", "gateway"),
    ("gateway-stock-fork", "gateway"),
    ("gateway-w2", "gateway-w1"),
    ("gateway-w4", "gateway-w1"),
)


def _median_interval(vals: list[float]) -> tuple[float, float] | None:
    """A distribution-free ~95 % interval for the median: order statistics k and n+1-k, with k the
    largest such that P(Binomial(n, 1/2) < k) <= 2.5 % (None below 6 values)."""
    n = len(vals)
    if n < 6:
        return None
    s = sorted(vals)
    below, k = 0.0, 0
    while True:
        below += math.comb(n, k) / 2**n  # P(X <= k)
        if below > 0.025:
            break
        k += 1
    k = max(k, 1)  # P(X < k) <= 2.5 %
    return s[k - 1], s[n - k]


def _geo(vals: list[float]) -> dict[str, float | None]:
    """Median (with its distribution-free ~95 % interval), geometric mean (with mean of logs +- 2
    standard errors), min, max: per-round ratios on a noisy machine have outliers, the median
    resists them."""
    vals = [v for v in vals if isinstance(v, (int, float)) and v > 0]
    if not vals:
        return {
            "median": None,
            "median_low": None,
            "median_high": None,
            "geomean": None,
            "low": None,
            "high": None,
            "min": None,
            "max": None,
            "n": 0,
        }
    logs = [math.log(v) for v in vals]
    mean = statistics.fmean(logs)
    se = statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
    mi = _median_interval(vals)
    return {
        "median": statistics.median(vals),
        "median_low": mi[0] if mi else None,
        "median_high": mi[1] if mi else None,
        "geomean": math.exp(mean),
        "low": math.exp(mean - 2 * se),
        "high": math.exp(mean + 2 * se),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def summarize_interleaved(slices: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per proxy: pooled rate and CPU per request; per pair of proxies: the ratio within each round
    (slices of one round run seconds apart), summarized by its geometric mean and interval."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for sl in slices:
        by_round.setdefault(sl["round"], {})[sl["target"]] = sl
    per: dict[str, Any] = {}
    for name in names:
        sel = [sl for sl in slices if sl["target"] == name]
        ok = sum(sl["ok"] for sl in sel)
        elapsed = sum(sl["elapsed_s"] for sl in sel)
        cpu = sum(sl["proxy_cpu_s"] or 0 for sl in sel)
        p50 = [sl["latency_p50_ms"] for sl in sel if sl.get("latency_p50_ms") is not None]
        p99 = [sl["latency_p99_ms"] for sl in sel if sl.get("latency_p99_ms") is not None]
        other = [sl["other_core_pct"] for sl in sel if sl.get("other_core_pct") is not None]
        preempted = [sl["proxy_preempted"] for sl in sel if sl.get("proxy_preempted") is not None]
        per[name] = {
            "requests": ok,
            "slices": len(sel),
            "rate": ok / elapsed if elapsed else None,
            "cpu_us_per_req": cpu / ok * 1e6 if ok else None,
            "median_p50_ms": statistics.median(p50) if p50 else None,
            "median_p99_ms": statistics.median(p99) if p99 else None,
            "median_other_cores": statistics.median(other) / 100 if other else None,
            "preempted_per_kop": 1000 * sum(preempted) / ok if preempted and ok else None,
        }
    ratios: dict[str, Any] = {}
    for x, y in RATIO_PAIRS:
        if x not in names or y not in names:
            continue
        rate, cpu = [], []
        for rnd in sorted(by_round):
            r = by_round[rnd]
            if x in r and y in r:
                rate.append(r[x]["rate"] / r[y]["rate"] if r[y]["rate"] else None)
                cx, cy = r[x]["proxy_cpu_us_per_req"], r[y]["proxy_cpu_us_per_req"]
                cpu.append(cx / cy if cx and cy else None)
        ratios[f"{x}/{y}"] = {
            "rate_per_round": rate,
            "cpu_per_round": cpu,
            "rate": _geo(rate),
            "cpu": _geo(cpu),
            "pooled_rate": per[x]["rate"] / per[y]["rate"] if per[x]["rate"] and per[y]["rate"] else None,
            "pooled_cpu": (
                per[x]["cpu_us_per_req"] / per[y]["cpu_us_per_req"]
                if per[x]["cpu_us_per_req"] and per[y]["cpu_us_per_req"]
                else None
            ),
        }
    return {"per_proxy": per, "ratios": ratios, "rounds": len(by_round)}


WORKERS_COMMAND = (
    "bash bench/run --targets '' --leaf-n 0 -c 64 --interleave gateway-w1,gateway-w2,gateway-w4 "
    "--interleave-scenarios keep-alive,new-host"
)


def _worker_scaling(scenarios: dict[str, Any], names: list[str], result: dict[str, Any]) -> list[str]:
    """Throughput from one worker to N (pooled rates), and whether this machine can show it."""
    workers = {n: int(n.removeprefix("gateway-w")) for n in names if re.fullmatch(r"gateway-w\d+", n)}
    if "gateway-w1" not in workers or len(workers) < 2:
        return []
    lines = ["workers: throughput against one worker (pooled rates):"]
    for scen, sc in scenarios.items():
        per = sc["summary"]["per_proxy"]
        base = per["gateway-w1"]["rate"]
        steps = ", ".join(
            f"{count} workers {per[n]['rate'] / base:.2f}x"
            for n, count in sorted(workers.items(), key=lambda kv: kv[1])
            if count > 1 and per[n]["rate"] and base
        )
        lines.append(f"  {scen}: {steps}")
    cpus = (result.get("machine") or {}).get("cpus") or 0
    needed = max(workers.values()) + 2  # a core per worker, one for the load client, one for the origin
    if cpus < needed:
        lines.append(
            f"  this machine has {cpus} CPUs for the workers, the load client and the origin together: it "
            "cannot show how throughput scales with workers (the proxy's preemptions above say how crowded "
            f"it was). On a machine with at least {needed} cores: {WORKERS_COMMAND}"
        )
    return lines


def _render_interleaved(il: dict[str, Any] | None, result: dict[str, Any]) -> list[str]:
    if not il:
        why = result.get("pending", {}).get("interleaved")
        return ["", f"interleaved comparison: {why}"] if why else []
    a = result["args"]
    names = il["names"]
    known = {
        "mitmdump": "mitmdump",
        "gateway": "gateway",
        "gateway-rules": f"gateway {il['rules']} rules",
        "gateway-pruned": "gateway pruned (experiment)",
        "gateway-stock-tls": "gateway, stock TLS set-up",
        "gateway-stock-dispatch": "gateway, stock event dispatch",
        "gateway-stock-args": "gateway, stock Hook.args()",
        "gateway-uvloop": "gateway on uvloop (experiment)",
        "gateway-optimized": "gateway, python -O",
        "gateway-gc-young": "gateway, other GC thresholds (experiment)",
        "gateway-uncached-names": "gateway, upstream names uncached",
        "gateway-stock-hooks": "gateway, a Task per hook",
        "gateway-stock-checks": "gateway, stock message checks",
        "gateway-stock-fork": "gateway, stock context fork",
        "gateway-device": "gateway + device",
        "gateway-device-anon": "gateway + device, anon client",
        "gateway-w1": "gateway --workers 1",
        "gateway-w2": "gateway --workers 2",
        "gateway-w4": "gateway --workers 4",
    }
    label = {name: known.get(name, name) for name in names}  # a target without a label: its name
    scenarios = il.get("scenarios") or {
        "keep-alive": {"summary": il["summary"]}
    }  # older results: keep-alive only
    rounds = next(iter(scenarios.values()))["summary"]["rounds"]
    lines = [
        "",
        (
            f"Interleaved: {', '.join(label[n] for n in names)} up at once; per scenario {rounds} rounds of one "
            f"{a['slice_s']:g} s slice per proxy (rotating order), one client"
            + (
                " (client and origin in SCHED_IDLE: --load-sched idle)"
                if a.get("load_sched") == "idle"
                else ""
            )
            + f"; in flight: {a['concurrency']} keep-alive, "
            f"{min(a['concurrency'], 8)} handshakes; ratios paired within each round"
        ),
    ]
    rows = [["", *(label[n] for n in names)]]
    for scen, sc in scenarios.items():
        per = sc["summary"]["per_proxy"]
        for title, key, digits in (
            (f"{TITLES[scen]} ({UNITS[scen]}, pooled)", "rate", 0),
            ("  proxy CPU per req (us, pooled)", "cpu_us_per_req", 0),
            ("  latency p50 (ms, median of slices)", "median_p50_ms", 1),
            ("  latency p99 (ms, median of slices)", "median_p99_ms", 1),
            ("  operations", "requests", 0),
            ("  other load (cores, median of slices)", "median_other_cores", 2),
            ("  proxy preempted (per 1,000 ops, pooled)", "preempted_per_kop", 0),
        ):
            if key == "preempted_per_kop" and all(per[n].get(key) is None for n in names):
                continue  # results from before the bench counted preemptions
            rows.append([title, *(_num(per[n].get(key), digits) for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += [
        "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows
    ]
    lines.append(
        "ratios, per round (median with its ~95% interval, distribution-free; geometric mean with mean of "
        "logs +- 2 standard errors):"
    )
    for scen, sc in scenarios.items():
        for pair, r in sc["summary"]["ratios"].items():
            x, y = pair.split("/")
            for what, key in (("rate", "rate"), ("CPU/op", "cpu")):
                st = r[key]
                if st["geomean"] is None:
                    continue
                per_round = " ".join(f"{v:.2f}" if v else "-" for v in r[f"{key}_per_round"])
                mi = f" ({st['median_low']:.2f}-{st['median_high']:.2f})" if st.get("median_low") else ""
                lines.append(
                    f"  {scen} {label[x]} / {label[y]} {what}: median {st['median']:.3f}{mi}, geomean "
                    f"{st['geomean']:.3f} ({st['low']:.2f}-{st['high']:.2f}); rounds {per_round}"
                )
    lines += _worker_scaling(scenarios, names, result)
    if "file" in il:
        f, c = il["file"], il["check"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(f.get("kinds", {}).items(), key=lambda kv: -kv[1]))
        lines.append(
            f"rules file: {f['rules']} Gateway rules ({kinds}), {f['access_applications']} Access "
            f"applications, {f['access_policies']} Access policies; the benchmark host is a candidate for "
            f"{c['candidates_for_bench_host']} of the rules (the host index rules out the others)"
        )
        dec = (il.get("decisions") or il.get("decisions_during_slices") or {}).get("gateway-rules", {})
        requests = (il.get("requests") or {}).get("gateway-rules")
        lines.append(
            f"check: {CONTROL} (blocked by one rule) got {il['control_status'].get('gateway-rules')} with the "
            f"rules, {il['control_status'].get('gateway', '-')} without; the rules gateway counted "
            + (", ".join(f"{k} {v:,.0f}" for k, v in dec.items()) or "no")
            + " decisions"
            + (f" for {requests:,} requests" if requests else "")
        )
    for name, d in il.get("devices", {}).items():
        probe, logged = d.get("probe", {}), d.get("request_log", {})
        lines.append(
            f"check: {label[name]}: device {d['device_id'][:8]}.. (verified posture pass, one posture rule): "
            f"{DEVICE_HOST} got {probe.get('as_device')} as the device, {probe.get('anonymous')} without; "
            f"{logged.get('identified', '-'):,} of {logged.get('logged', '-'):,} logged requests to the bench "
            "host carry the device"
        )
    for scen, sc in scenarios.items():
        for pair, r in sc["summary"]["ratios"].items():
            rate, cpu = r["rate"]["median"], r["cpu"]["median"]
            if rate is None or cpu is None:
                continue
            if pair == "gateway/mitmdump":
                lines.append(
                    f"target gateway >= 1.0x mitmdump, {scen}: rate {rate:.3f}x "
                    f"({'met' if rate >= 1 else 'NOT met'}), CPU per op {cpu:.3f}x "
                    f"({'met' if cpu <= 1 else 'NOT met'}) (medians)"
                )
            elif pair == "gateway-rules/gateway" and scen == "keep-alive":
                lines.append(
                    f"target <= {LOSS_TARGET:.0%} throughput loss at {il['rules']} rules: rate {rate:.3f}x of "
                    f"no rules ({'met' if rate >= 1 - LOSS_TARGET else 'NOT met'}), CPU per request "
                    f"{cpu:.3f}x ({'met' if 1 / cpu >= 1 - LOSS_TARGET else 'NOT met'}) (medians)"
                )
    return lines


def _fmt_ratio(v: Any) -> str:
    return f"{v:.3f}x" if isinstance(v, (int, float)) else "-"


def _render_round_ratios(
    data: dict[str, Any], defs: list[tuple[str, str, str]], scens: list[str]
) -> list[str]:
    """Rate ratios paired round by round (targets of one round run minutes apart, under similar load)."""
    out = []
    for name, x, y in defs:
        parts = []
        for scen in scens:
            a = data[x].get(scen, {}).get("rate_per_round")
            b = data[y].get(scen, {}).get("rate_per_round")
            if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) > 1:
                ratios = [p / q for p, q in zip(a, b, strict=False) if p and q]
                if ratios:
                    parts.append(
                        f"{scen} "
                        + "/".join(f"{v:.2f}" for v in ratios)
                        + f" (median {statistics.median(ratios):.2f})"
                    )
        if parts:
            out.append(f"{name} rate ratio per round: " + "; ".join(parts))
    return out


def _render_leaf(leaf: dict[str, Any] | None) -> list[str]:
    if not leaf:
        return []
    gw, mp = leaf.get("gateway", {}), leaf.get("mitmproxy", {})
    lines = [
        "",
        (
            f"Leaf issuance, in-process, EC P-256 CA, {leaf['n_new']} new names, "
            f"{leaf['n_cached']} cached look-ups (us per call)"
        ),
    ]
    rows = [["", "gateway LeafIssuer", "mitmproxy CertStore", "gw/mitm"]]
    for label, part, key in (
        ("new host median", "new", "median_us"),
        ("new host p99", "new", "p99_us"),
        ("new host median, first 100", "new_first100", "median_us"),
        ("cached median", "cached", "median_us"),
        ("cached p99", "cached", "p99_us"),
    ):
        g = gw.get(part, {}).get(key) if "pending" not in gw else None
        v = mp.get(part, {}).get(key)
        rows.append([label, "pending" if "pending" in gw else _num(g, 1), _num(v, 1), _ratio(g, v)])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    if "pending" in gw:
        lines.append(f"gateway LeafIssuer: pending ({gw['pending']})")
    else:
        med = gw.get("new", {}).get("median_us")
        if med is not None:
            lines.append(
                f"target new-host median <= 100 us: {'met' if med <= 100 else 'NOT met'} ({med:.0f} us)"
            )
        floor = gw.get("floor") or {}
        if floor.get("cryptography"):
            lines.append(
                "cryptography's floor, alternated with leaf_for on new names: builder + sign "
                f"{floor['cryptography']['median_us']:.0f} us median, leaf_for "
                f"{floor['leaf_for']['median_us']:.0f} us ({floor['ratio_median']:.2f}x the floor)"
            )
    lines.append(
        f"mitmproxy CertStore keeps {mp.get('store_cap')} leaves (FIFO); misses past that also evict."
    )
    return lines
