"""Leaf issuance, before vs after, alternated: certs.LeafIssuer from another tree vs this one.

Each round runs ``leafbench.bench_gateway`` (EC P-256 CA, N new names, one call at a time) once
in a fresh process per tree, the two in alternating order, so both see the same machine load;
per round it prints the medians and the after/before ratio, then the median of the rounds.

Run:  git archive <commit> certs | tar -x -C /tmp/leaf-before
      .venv/bin/python bench/leaf_compare.py /tmp/leaf-before [--rounds 6] [-n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

_CHILD = """
import json, pathlib, sys, leafbench
leafbench.REPO = pathlib.Path(sys.argv[2])  # the tree to measure goes first on sys.path
r = leafbench.bench_gateway(int(sys.argv[1]), 200)
import certs.issuer
print(json.dumps({"median_us": r["new"]["median_us"], "p99_us": r["new"]["p99_us"],
                  "issuer": certs.issuer.__file__}))
"""


def one(tree: Path, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{BENCH}")
    # cwd elsewhere, so the tree on PYTHONPATH is the one imported (not the current directory)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(tree)],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(result["issuer"]).startswith(str(tree)):
        raise RuntimeError(f"imported {result['issuer']}, not the tree {tree}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path, help="a tree holding the certs/ package to compare against")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("-n", type=int, default=2000, help="new names per process (default 2000)")
    a = p.parse_args()
    if not (a.before / "certs" / "issuer.py").exists():
        p.error(f"{a.before}/certs/issuer.py not found")
    ratios = []
    for r in range(a.rounds):
        order = [("before", a.before.resolve()), ("after", REPO)]
        if r % 2:
            order.reverse()
        got = {name: one(tree, a.n) for name, tree in order}
        ratio = got["after"]["median_us"] / got["before"]["median_us"]
        ratios.append(ratio)
        print(
            f"round {r + 1}: before {got['before']['median_us']:.1f} us, "
            f"after {got['after']['median_us']:.1f} us median (p99 {got['before']['p99_us']:.0f} / "
            f"{got['after']['p99_us']:.0f}), after/before {ratio:.3f}",
            flush=True,
        )
    print(f"median after/before of {a.rounds} rounds: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
