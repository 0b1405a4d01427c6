"""Put on PYTHONPATH by ``bench/admin_abuse.py --gc`` for the gateway it starts: every garbage
collection's generation, thread and CPU time (the collecting thread's, so other processes'
load does not count) is written to ``$GATEWAY_GC_PROBE.<pid>`` as JSON when the process exits.
Measurement only; nothing of the gateway imports it."""

from __future__ import annotations

import atexit
import gc
import json
import os
import threading
import time

_OUT = os.environ.get("GATEWAY_GC_PROBE")
_started: dict[int, float] = {}
_events: list[tuple[int, str, float]] = []


def _callback(phase: str, info: dict[str, int]) -> None:
    ident = threading.get_ident()
    if phase == "start":
        _started[ident] = time.thread_time()
        return
    cpu = time.thread_time() - _started.pop(ident, time.thread_time())
    _events.append((info["generation"], threading.current_thread().name.split("_")[0], cpu))


def _write() -> None:
    with open(f"{_OUT}.{os.getpid()}", "w") as f:
        json.dump({"thresholds": gc.get_threshold(), "collections": _events}, f)


if _OUT:
    gc.callbacks.append(_callback)
    atexit.register(_write)
