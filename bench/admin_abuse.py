"""The proxy's latency while the admin API is abused (issue 14): a real `gateway run` with
1,000 rules, a keep-alive HTTPS client through the proxy, and two clients hammering the admin
API with its heaviest requests at their largest (a ~1 MiB policy_test, an import and an export
of the 1,000 rules, 1 MiB JSON bodies) in alternating idle and loaded windows. Prints the
proxy's p50/p99 idle and loaded (medians over the windows) and their ratios.

    .venv/bin/python bench/admin_abuse.py [--pairs 6] [--seconds 4] [--rules 1000] [--gc]

``--gc`` also prints the gateway's garbage collections over the whole run (start-up included):
per generation and thread, their count and the CPU time each took (bench/gc_probe).

Needs nginx (scripts/install-test-deps), as tests/e2e does. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e import tools
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.origin import Origin
from tests.e2e.tunnel import client_context
from tests.reliability.abuse import Abuser, Probe, summary, windows
from tests.reliability.test_admin_abuse import policy_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="idle/loaded window pairs")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a window")
    parser.add_argument("--rules", type=int, default=1000, help="Gateway rules loaded")
    parser.add_argument("--gc", action="store_true", help="also the gateway's garbage collections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="admin-abuse-") as tmp:
        base = Path(tmp)
        if args.gc:  # the gateway's environment is this one's (GatewayProcess)
            os.environ["GATEWAY_GC_PROBE"] = str(base / "gc")
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO / "bench" / "gc_probe"), os.environ.get("PYTHONPATH")) if p
            )
        origin = Origin(base / "origin", tools.free_port())
        origin.start()
        gw = GatewayProcess(
            data_dir=base / "data",
            log_dir=base / "logs",
            upstream_ca=origin.ca_path,
            hosts=origin.write_hosts_file(base / "hosts"),
        )
        try:
            with gw.serving():
                rules = policy_file(args.rules)
                auth = {"Authorization": f"Bearer {gw.token}"}
                with httpx.Client(base_url=gw.admin_url, headers=auth, timeout=120) as client:
                    account = client.get("/client/v4/accounts").json()["result"][0]["id"]
                    reply = client.post(f"/client/v4/accounts/{account}/gateway/rules/import", content=rules)
                    reply.raise_for_status()
                ca = base / "ca.pem"
                ca.write_text(gw.ca_pem())
                probe = Probe(gw.proxy_port, "origin.test", origin.port, client_context(ca))
                abuser = Abuser(gw.admin_url, str(gw.token), account, rules)
                probe.start()
                abuser.start()
                try:
                    found = windows(abuser, probe, pairs=args.pairs, seconds=args.seconds)
                finally:
                    abuser.close()
                    probe.close()
        finally:
            origin.stop()
        collections = gc_summary(base / "gc") if args.gc else None
    figures: dict[str, object] = {k: round(v, 2) for k, v in summary(found).items()}
    figures["proxy_errors"] = probe.errors
    figures["admin_statuses"] = dict(sorted(abuser.statuses.items()))
    figures["windows"] = len(found)
    if collections is not None:
        figures["gc_cpu_ms"] = collections
    print(json.dumps(figures, indent=2))


def gc_summary(prefix: Path) -> dict[str, object]:
    """Per generation and thread of the gateway's process: count, median, p99 and max CPU ms."""
    out: dict[str, object] = {}
    for path in glob.glob(f"{prefix}.*"):
        found = json.loads(Path(path).read_text())
        out["thresholds"] = found["thresholds"]
        groups: dict[str, list[float]] = {}
        for generation, thread, cpu in found["collections"]:
            groups.setdefault(f"gen{generation} {thread}", []).append(cpu * 1000)
        for key, values in sorted(groups.items()):
            values.sort()
            out[key] = {
                "count": len(values),
                "median": round(statistics.median(values), 2),
                "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))], 2),
                "max": round(values[-1], 2),
            }
    return out


if __name__ == "__main__":
    main()
