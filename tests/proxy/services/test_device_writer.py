"""proxy/services/device_writer.py: what the group commit acknowledges is committed, in order."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from proxy.store import LogQuery, Store

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from proxy.services.device_writer import Batch, GroupCommit
from proxy.store import Account, Outcome, PostureLogEntry, Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
store = Store.open(sys.argv[1])
store.accounts.add(Account("a" * 32, "acme", T0))
writer = GroupCommit(store)

def apply(store, items):
    store.posture_logs.add(
        PostureLogEntry(account_id="a" * 32, device_id=device, rule_id=str(n), rule_name="",
                        outcome=Outcome.PASSED, verified=True, reason="acked", at=T0)
        for device, n in items
    )
    return [None] * len(items)

batch = Batch("test", apply)

async def main():
    items = [(f"device-{d}", n) for n in range(5) for d in range(3)]
    await asyncio.gather(*(writer.add(batch, item) for item in items))
    print("acknowledged", writer.commits, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: as a crash

asyncio.run(main())
"""


def test_acknowledged_results_survive_sigkill_in_order_per_device(store_url: str) -> None:
    """The writer's own connection (on SQLite ``synchronous=NORMAL``) commits before it answers:
    a process killed right after the answers loses none of them, and each device's entries keep
    the order they were queued in."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, store_url], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.startswith("acknowledged")
    store = Store.open(store_url)
    try:
        for device in range(3):
            query = LogQuery("a" * 32, device_id=f"device-{device}")
            entries, total = store.posture_logs.query(query, offset=0, limit=100)
            assert total == 5
            assert sorted(entries, key=lambda e: e.seq) == sorted(entries, key=lambda e: int(e.rule_id))
    finally:
        store.close()
