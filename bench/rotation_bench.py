"""What the CA rotation driver costs the event loop it shares with the proxy, in-process.

The driver (proxy/services/rotation_driver.py) runs a round every second, and at most every
500 ms when trust reports wake it. This times one round of ``RotationService.advance`` on a real
SQLite store with N enrolled devices that all report their trust stores:

  idle       no rotation open (one indexed query)
  timer      a rotation waiting at step install, on the timer alone (counted 10 s ago: skipped)
  woken      the same after a wake-up: the coverage counted again (one aggregate query)
  view       GET .../rotations/current: the counts and up to 100 devices lacking the new CA

for N = 10 and N = 1,000, in interleaved rounds, as milliseconds per call (median of rounds) and
each case's ratio to ``idle`` measured in the same round.

Run:  .venv/bin/python bench/rotation_bench.py [--devices 10,1000] [--rounds 5] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

from certs.clock import utcnow
from certs.sealing import KeySealer
from proxy.bootstrap import first_start
from proxy.services.certificates import CertificateService
from proxy.services.device_enrollment import DeviceDetails
from proxy.services.devices import DeviceService
from proxy.services.rotation import OnDeadline
from proxy.services.rotation_input import RotationRequest
from proxy.services.rotations import RotationService
from proxy.store import Store, TrustStoreEntry


def _secret(token: str) -> str:
    body = token.removeprefix("gwe1.")
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"])


async def _lab(
    devices: int, where: Path
) -> tuple[RotationService, Callable[[], object], Callable[[], object]]:
    store = Store.open(where / "gateway.sqlite3")
    certificates = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
    account = first_start(store, certificates, admin_token_env=None, clock=utcnow).account_id
    service = DeviceService(store, utcnow, public_base_url="http://127.0.0.1:8081", proof_worker=False)
    old = certificates.in_use(account)
    assert old is not None
    with store.transaction():
        for i in range(devices):
            token = service.create_enrollment_token(account, email=f"u{i}@example.com").token
            details = DeviceDetails.from_api(
                {"name": f"d{i}", "os": "linux", "hostname": f"h{i}", "serial_number": f"s{i}"}
            )
            device = service.enroll(_secret(token), details, "127.0.0.1").device
            store.trust_reports.replace(device.id, [TrustStoreEntry("system", (old.fingerprint,))], utcnow())
    await service.aclose()
    rotations = RotationService(store, certificates, utcnow)
    request = RotationRequest(100, utcnow() + timedelta(days=1), timedelta(days=1), OnDeadline.HOLD)
    started = await rotations.start(account, request)
    rotations.advance()
    assert rotations.get(account, started.record.id).record.step == "install"
    return rotations, lambda: rotations.get(account, started.record.id)


def _per_call(call: Callable[[], object], calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - began) / calls * 1e3


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="10,1000", help="comma-separated device counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    for count in (int(n) for n in args.devices.split(",")):
        with tempfile.TemporaryDirectory() as where:
            # idle: timed on a store of its own with no rotation (same device count)
            empty = Store.open(Path(where) / "idle.sqlite3")
            idle_service = RotationService(
                empty, CertificateService(empty, KeySealer(KeySealer.generate_master_key()), utcnow), utcnow
            )
            rotations, view = await _lab(count, Path(where))
            cases: dict[str, list[float]] = {"idle": [], "timer": [], "woken": [], "view": []}
            for _ in range(args.rounds):
                cases["idle"].append(_per_call(idle_service.advance, args.calls))
                cases["timer"].append(_per_call(partial(rotations.advance, periodic=True), args.calls))
                cases["woken"].append(_per_call(rotations.advance, args.calls))
                cases["view"].append(_per_call(view, max(1, args.calls // 5)))
            idle = statistics.median(cases["idle"])
            print(f"devices {count}: " + "; ".join(
                f"{name} {statistics.median(values):.3f} ms ({statistics.median(values) / idle:.0f}x idle)"
                for name, values in cases.items()
            ))  # fmt: skip
            empty.close()


if __name__ == "__main__":
    asyncio.run(main())
