"""Numbers to text: percentiles, rounds, hey output, and the table printed at the end of a run."""

from __future__ import annotations

import re
import statistics
from typing import Any

ORDER = ("direct", "mitmdump", "gateway", "squid")
UNITS = {"new-host": "conn/s", "same-host": "conn/s", "keep-alive": "req/s", "keep-alive-hey": "req/s"}
TITLES = {"new-host": "new-host intercepts", "same-host": "same-host handshakes",
          "keep-alive": "keep-alive requests", "keep-alive-hey": "keep-alive (hey)"}


def percentiles(samples_us: list[int], prefix: str) -> dict[str, float | None]:
    keys = ("p50", "p90", "p99")
    if not samples_us:
        return {f"{prefix}_{k}_ms": None for k in keys}
    s = sorted(samples_us)
    out = {f"{prefix}_{k}_ms": s[min(len(s) - 1, int(q * len(s)))] / 1000
           for k, q in zip(keys, (0.50, 0.90, 0.99))}
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
    errors = re.findall(r"\[(\d+)\]\t(.+)", text.split("Error distribution:", 1)[1]) if "Error distribution:" in text else []
    return {"ok": ok, "non_200": total - ok, "elapsed_s": elapsed,
            "rate": ok / elapsed if elapsed else 0.0,
            "latency_p50_ms": p50 * 1000 if p50 is not None else None,
            "latency_p99_ms": p99 * 1000 if p99 is not None else None,
            "errors": {msg[:120]: int(n) for n, msg in errors}, "raw_tail": text[-600:] if not ok else ""}


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
    data = result["targets"]
    ratio_defs = [("gw/mitm", "gateway", "mitmdump"), ("mitm/dir", "mitmdump", "direct"),
                  ("gw/dir", "gateway", "direct")]
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
        errs = {t: sum((data[t][scen].get("errors") or {}).values()) + (data[t][scen].get("non_200") or 0)
                for t in cols if t in data and scen in data[t]}
        if any(errs.values()):
            rows.append(["  errors"] + [str(errs.get(t, "-")) for t in cols] + [""] * len(ratio_defs))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
    m = result["machine"]
    a = result["args"]
    lines = [
        f"Gateway proxy benchmark  {result['started']}  commit {m['commit']}{' (dirty)' if m['dirty'] else ''}",
        (f"{m['cpus']} CPU ({m['cpu_model']}), Python {m['python']}, mitmproxy {m['mitmproxy']}, "
         f"cryptography {m['cryptography']}, nginx {m['nginx']}"),
        (f"concurrency {a['concurrency']}, new-host {a['new_host_n']}, same-host {a['same_host_n']}, "
         f"keep-alive {a['keepalive_n']} requests, <= {a['time_limit']:g} s per scenario, rounds {a['rounds']}, "
         f"client processes {a['client_procs']}"),
        "",
        fmt(head), fmt(["-" * w for w in widths]),
        *(fmt(r) for r in rows),
    ]
    lines += _render_round_ratios(data, [(n, x, y) for n, x, y in ratio_defs if x in data and y in data], scens)
    lines.append("rates: higher is better; latency and CPU per request: lower is better; "
                 "cores busy = CPU seconds / wall seconds during the timed phase (1.00 = one full core);\n"
                 "other load = CPU used on the machine by processes outside this benchmark during that phase")
    for t, why in result.get("pending", {}).items():
        lines.append(f"{t}: pending ({why.splitlines()[0][:200] if why else ''})")
    lines += _render_leaf(result.get("leaf"))
    return "\n".join(lines)


def _render_round_ratios(data: dict[str, Any], defs: list[tuple[str, str, str]], scens: list[str]) -> list[str]:
    """Rate ratios paired round by round (targets of one round run minutes apart, under similar load)."""
    out = []
    for name, x, y in defs:
        parts = []
        for scen in scens:
            a = data[x].get(scen, {}).get("rate_per_round")
            b = data[y].get(scen, {}).get("rate_per_round")
            if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) > 1:
                ratios = [p / q for p, q in zip(a, b) if p and q]
                if ratios:
                    parts.append(f"{scen} " + "/".join(f"{v:.2f}" for v in ratios)
                                 + f" (median {statistics.median(ratios):.2f})")
        if parts:
            out.append(f"{name} rate ratio per round: " + "; ".join(parts))
    return out


def _render_leaf(leaf: dict[str, Any] | None) -> list[str]:
    if not leaf:
        return []
    gw, mp = leaf.get("gateway", {}), leaf.get("mitmproxy", {})
    lines = ["", (f"Leaf issuance, in-process, EC P-256 CA, {leaf['n_new']} new names, "
                  f"{leaf['n_cached']} cached look-ups (us per call)")]
    rows = [["", "gateway LeafIssuer", "mitmproxy CertStore", "gw/mitm"]]
    for label, part, key in (("new host median", "new", "median_us"), ("new host p99", "new", "p99_us"),
                             ("new host median, first 100", "new_first100", "median_us"),
                             ("cached median", "cached", "median_us"), ("cached p99", "cached", "p99_us")):
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
            lines.append(f"target new-host median <= 1000 us: {'met' if med <= 1000 else 'NOT met'} ({med:.0f} us)")
    lines.append(f"mitmproxy CertStore keeps {mp.get('store_cap')} leaves (FIFO); misses past that also evict.")
    return lines
