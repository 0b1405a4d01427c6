"""What a node pays to follow posture reports of other devices (issue 11): the change journal
against forgetting every cached device at each change.

Two connections to one store, as the admin plane and a data-plane node (a worker, ``gateway
node``) have: the first writes a posture result for one of ``--devices`` devices (as the group
commit does), the second follows it and then answers ``identity()`` for every device, as the
next requests of those devices ask. Per followed report it times, in the same run and
alternating, the node's two ways:

- ``forget all``: what a node did before the journal (every device read again);
- ``journal``: ``Store.changes.take()``, forget the devices it names, the rest stay cached.

On SQLite (a file) and on PostgreSQL (a throwaway local cluster, Debian's binaries, as the
tests start it; or a fresh database on ``--database URL``, dropped after). Bounded: ``--reports`` per backend.

Run:  .venv/bin/python bench/follow_cost.py [--devices 200] [--reports 50] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posture_bench import fresh_database, postgres_server

from proxy.services.devices import DeviceService
from proxy.store import Account, Device, PostureResult, Store

ACCOUNT = "f" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _device(i: int) -> Device:
    return Device(
        id=f"device-{i:05d}", account_id=ACCOUNT, secret_sha256=b"\0" * 32, name=f"laptop-{i}", os="linux",
        os_version="6.1", serial_number=f"SN-{i}", hostname=f"laptop-{i}", email="ana@example.com",
        ip="127.0.0.1", created_at=T0, updated_at=T0, last_seen=T0,
    )  # fmt: skip


def _report(store: Store, device_id: str, n: int) -> None:
    at = T0 + timedelta(seconds=n)
    with store.transaction():
        store.posture_results.save(
            [
                PostureResult(
                    device_id, "rule-1", False, False, "no certificate", "", None, at, at + timedelta(hours=1)
                )
            ]
        )
        store.devices.seen_many([(device_id, "127.0.0.1", at)])


def measure(url: str, devices: int, reports: int) -> dict[str, float]:
    admin = Store.open(url, now=T0)
    node_store = Store.open(url, migrations=False)
    node = DeviceService(node_store, lambda: T0, public_base_url="http://127.0.0.1:8081")
    try:
        admin.accounts.add(Account(ACCOUNT, "bench", T0))
        made = [_device(i) for i in range(devices)]
        with admin.transaction():
            for device in made:
                admin.devices.add(device)
        ids = [device.id for device in made]
        node_store.changes.take()
        node.forget_cached()
        for device_id in ids:
            node.identity(device_id)
        timings: dict[str, list[float]] = {"forget all": [], "journal": []}
        for n in range(reports):
            for way in ("forget all", "journal") if n % 2 else ("journal", "forget all"):
                _report(admin, ids[n % devices], n)
                started = time.perf_counter()
                if way == "journal":
                    node.forget_changed(node_store.changes.take())
                else:
                    node_store.changes.take()  # keeps the journal's reader current
                    node.forget_cached()
                for device_id in ids:
                    node.identity(device_id)
                timings[way].append(time.perf_counter() - started)
        return {way: statistics.median(values) * 1e3 for way, values in timings.items()}
    finally:
        node.close()
        node_store.close()
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=200, help="devices whose identity the node answers")
    parser.add_argument("--reports", type=int, default=50, help="followed reports per backend")
    parser.add_argument("--database", metavar="URL", help="PostgreSQL to use instead of a throwaway cluster")
    parser.add_argument("--sqlite-only", action="store_true", help="leave PostgreSQL out")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="follow-cost-") as tmp:
        rows.append(("SQLite", measure(str(Path(tmp) / "store.db"), args.devices, args.reports)))
    if not args.sqlite_only:
        with postgres_server(args.database) as server_url, fresh_database(server_url) as url:
            rows.append(("PostgreSQL", measure(url, args.devices, args.reports)))
    print(f"a node follows a posture report, then answers identity() for {args.devices} devices")
    print(f"(median of {args.reports} reports, ms per followed report):")
    for backend, figures in rows:
        before, after = figures["forget all"], figures["journal"]
        print(
            f"  {backend:<11} forget all {before:8.2f}   journal {after:7.2f}   ratio {before / after:5.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
