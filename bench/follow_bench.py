"""How long a change made through the admin API takes to reach a ``gateway node`` (issue 11).

Starts ``gateway run --workers 1`` and one ``gateway node`` on the same data directory (SQLite),
makes a second CA available, then turns the two CAs on in turn, ``--rounds`` times: for each
turn-on it measures, from the moment the API call answered, how long until the node's
``/healthz`` names the new in-use certificate (polled every 2 ms). The node follows the store by
polling its data version every 50 ms, so the expected figure is 0-50 ms plus the reload.

Run:  .venv/bin/python bench/follow_bench.py [--rounds 20] [--database postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
GATEWAY = str(Path(sys.executable).parent / "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--database", metavar="URL", help="the store on PostgreSQL (postgresql://...) instead of SQLite"
    )
    args = parser.parse_args()
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": token}
    admin, health = free_port(), free_port()
    database = ["--database", args.database] if args.database else []
    with tempfile.TemporaryDirectory(prefix="follow-bench-") as tmp:
        data = Path(tmp) / "data"
        log = open(Path(tmp) / "log", "wb")  # noqa: SIM115 - closed with the processes
        procs = [
            subprocess.Popen(
                [GATEWAY, "run", "--workers", "1", "--data-dir", str(data), *database, "--admin-listen",
                 f"127.0.0.1:{admin}", "--proxy-listen", f"127.0.0.1:{free_port()}", "--log-level", "warning"],
                stdout=log, stderr=log, env=env,
            )
        ]  # fmt: skip
        try:
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{admin}/client/v4", headers={"Authorization": f"Bearer {token}"}
            )
            wait(lambda: api.get("/accounts").status_code == 200, 120, "gateway run")
            procs.append(
                subprocess.Popen(
                    [GATEWAY, "node", "--data-dir", str(data), *database, "--proxy-listen", f"127.0.0.1:{free_port()}",
                     "--health-listen", f"127.0.0.1:{health}", "--log-level", "warning"],
                    stdout=log, stderr=log, env=env,
                )
            )  # fmt: skip
            node = httpx.Client(base_url=f"http://127.0.0.1:{health}")
            wait(lambda: node.get("/healthz").json().get("in_use"), 120, "gateway node")
            account = api.get("/accounts").json()["result"][0]["id"]
            base = f"/accounts/{account}/gateway"
            first = node.get("/healthz").json()["in_use"]
            second = api.post(f"{base}/certificates", json={}).json()["result"]["id"]
            api.post(f"{base}/certificates/{second}/activate")
            wait(
                lambda: (
                    api.get(f"{base}/certificates/{second}").json()["result"]["binding_status"] == "available"
                ),
                30,
                "available",
            )
            delays = []
            for n in range(args.rounds):
                target = second if n % 2 == 0 else first
                api.patch(
                    f"{base}/configuration", json={"settings": {"certificate": {"id": target}}}
                ).raise_for_status()
                answered = time.perf_counter()
                while node.get("/healthz").json()["in_use"] != target:
                    time.sleep(0.002)
                delays.append((time.perf_counter() - answered) * 1000)
                time.sleep(0.2)
            delays.sort()
            print(
                f"node follows a turn-on in: median {statistics.median(delays):.0f} ms, "
                f"p90 {delays[int(0.9 * (len(delays) - 1))]:.0f} ms, max {delays[-1]:.0f} ms "
                f"({len(delays)} turn-ons on {'PostgreSQL' if database else 'SQLite'}; the node polls every 50 ms)"
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
