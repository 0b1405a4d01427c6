"""Pool the per-round ratios of the interleaved comparisons of several ``bench/run`` results.

One run gives 6-60 rounds; on a shared VM a round's ratio moves by +-15 %, so a few-percent
difference needs more rounds than one run holds. This reads result files (JSON from
``bench/results/``), takes every round of every interleaved scenario, and prints per scenario and
pair of proxies the pooled median of the per-round ratios with its distribution-free ~95 %
interval, the geometric mean, and how many rounds from how many runs.

Run:  .venv/bin/python bench/pool_rounds.py bench/results/proxy-*.json [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import report


def rounds_of(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, list[float]]]:
    il = result.get("interleaved")
    if not il:
        return {}
    scenarios = il.get("scenarios") or {"keep-alive": {"summary": il.get("summary", {})}}
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for scen, sc in scenarios.items():
        for pair, r in (sc.get("summary") or {}).get("ratios", {}).items():
            out[(scen, pair)] = {
                "rate": [v for v in r["rate_per_round"] if v],
                "cpu": [v for v in r["cpu_per_round"] if v],
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    pooled: dict[tuple[str, str], dict[str, Any]] = {}
    for f in sorted(a.files):
        try:
            result = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            print(f"pool_rounds: skipping {f}: {e}", file=sys.stderr)
            continue
        for key, vals in rounds_of(result).items():
            entry = pooled.setdefault(key, {"rate": [], "cpu": [], "runs": []})
            entry["rate"] += vals["rate"]
            entry["cpu"] += vals["cpu"]
            entry["runs"].append(f"{f.name} ({result['machine']['commit']}, {len(vals['cpu'])} rounds)")
    out = {
        f"{scen} {pair}": {"runs": e["runs"], "rate": report._geo(e["rate"]), "cpu": report._geo(e["cpu"])}
        for (scen, pair), e in sorted(pooled.items())
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    for key, e in out.items():
        print(f"{key}: {e['rate']['n']} rounds from {len(e['runs'])} runs")
        for what in ("rate", "cpu"):
            st = e[what]
            if st["median"] is None:
                continue
            mi = f" ({st['median_low']:.3f}-{st['median_high']:.3f})" if st["median_low"] else ""
            print(
                f"  {what:<4} median {st['median']:.3f}{mi}, geomean {st['geomean']:.3f} "
                f"({st['low']:.3f}-{st['high']:.3f}), range {st['min']:.2f}-{st['max']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
