"""The garbage collector's settings for ``gateway run``, where the proxy and the admin API share
one process: a full (generation-2) collection stops every thread, the proxy's event loop
included, for as long as it takes to walk every container object the process holds.

With mitmproxy, aiohttp and 1,000 rules loaded that walk was ~145,000 objects and took 150-780 ms
on a loaded 2-core machine (docs/performance.md, "The proxy while the admin API is abused").

- ``freeze_startup_heap()``, once start-up is done: one full collection, then ``gc.freeze()``
  moves every object alive at that point into the permanent generation, which no collection
  walks again. Only objects made at start-up are frozen: the modules, classes and functions of
  mitmproxy, aiohttp and the gateway, the store, the CAs and the addons, all alive for the
  process's life. The policies' state and engines of that moment are frozen too and are
  replaced at the first change: they hold no reference cycles (tests/reliability/
  test_parse_worker.py checks it), so reference counting frees them even frozen. Nothing is
  frozen later, after an engine swap say: a freeze at run time would also freeze the proxy's
  connections in flight, whose cycles would then never be collected; and with policy files
  parsed in a child process and the thresholds below, full collections under abusive admin
  load were down to about one in a minute (36-90 ms) anyway.
- ``THRESHOLDS``: the young generations as in CPython (700, 10: their collections stay under a
  few milliseconds; 2,000 or 10,000 made them 5-25 ms), full collections considered after 100
  collections of generation 1 instead of 10 (and, as always, only once the objects promoted
  since the last one are a quarter of those it would walk): a full collection comes at most
  every ~700,000 net allocations, not after every import of a policy file. Cyclic garbage
  that outlives two young collections waits longer to be freed; little of the gateway's
  garbage is cyclic (policies and engines are not).
"""

from __future__ import annotations

import gc
import logging
from typing import Final

logger = logging.getLogger(__name__)

THRESHOLDS: Final = (700, 10, 100)


def tune() -> None:
    """At ``gateway run``'s start, before anything is loaded."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Once start-up is done (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    logger.debug("gc: %d objects made at start-up frozen", gc.get_freeze_count())
