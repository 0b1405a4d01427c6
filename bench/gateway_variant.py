"""`gateway` with an experimental change applied in-process, to measure a suggested fix before it is
made in the product. Nothing here is the product: ``bench/run --interleave ...,gateway-pruned``
starts ``python bench/gateway_variant.py pruned run ARGS...`` next to the real ``gateway run``.

Variants:
  stock-tls  the per-handshake TLS set-up of stock mitmproxy (the 'before' of issue 11): the leaf
           and its key converted for OpenSSL at every handshake, no upstream session resumption.
  pruned   mitmproxy's default addons cut to those ``gateway run`` uses (Core, Block, Proxyserver,
           DnsResolver, NextLayer, the TLS config, DisableH2C) plus the gateway's own. Every hook
           event is offered to every addon of the chain (mitmproxy's AddonManager: a safecall
           context manager, a coroutine and a generator per addon and event), so addons that do
           nothing still cost CPU per request; MapLocal even formats the request URL on every
           request with no mapping configured.
  stock-dispatch  mitmproxy's AddonManager instead of proxy/addon_dispatch.py's index (the
           'before' of that change; hooks then take stock's Task each too).
  stock-args  mitmproxy's own ``Hook.args()`` for an event's arguments instead of
           ``addon_dispatch.args_of`` (the 'before' of that change).
  uvloop   the gateway on uvloop's event loop (an experiment; needs uvloop installed).
  optimized  the gateway under ``python -O``.
  uncached-names  an upstream certificate's names read at every handshake (the 'before' of
           ``addons.inspection._upstream_names``' cache).
  stock-hooks  mitmproxy's own connection handler, a Task per hook (the 'before' of
           ``proxy/connection_hooks.py``).
  stock-checks  mitmproxy's own type check of every HTTP message's fields (the 'before' of
           ``proxy/message_checks.py``).
  stock-fork  mitmproxy's own ``Context.fork`` (a throwaway Server per forked layer context; the
           'before' of ``proxy/context_fork.py``).
  gc-young the garbage collector's young generation collected after more net allocations:
           ``GATEWAY_BENCH_GC_THRESHOLDS`` (default ``10000,10,100``) instead of
           ``proxy/gc_settings.THRESHOLDS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KEEP = {"Core", "Block", "Proxyserver", "DnsResolver", "NextLayer", "TlsConfig", "DisableH2C"}


def pruned() -> None:
    from mitmproxy.addons import default_addons
    from mitmproxy.addons.tlsconfig import TlsConfig

    from addons.hosts import LabHosts
    from proxy import runtime

    def build_addons(tls: Any, identity: Any, enforcer: Any, request_log: Any) -> list[Any]:
        chain = [tls if isinstance(a, TlsConfig) else a for a in default_addons() if type(a).__name__ in KEEP]
        return [*chain, LabHosts(), identity, enforcer, request_log]

    runtime.build_addons = build_addons


def stock_tls() -> None:
    """The per-handshake work as before issue 11: mitmproxy's own tls_start_client (leaf and key
    converted for OpenSSL at every handshake) and tls_start_server (no upstream session offered).
    The 'before' of bench/run --interleave mitmdump,gateway,gateway-stock-tls."""
    from mitmproxy.addons.tlsconfig import TlsConfig

    from addons.inspection import HotTlsConfig

    HotTlsConfig.tls_start_client = TlsConfig.tls_start_client  # type: ignore[method-assign]
    HotTlsConfig.tls_start_server = TlsConfig.tls_start_server  # type: ignore[method-assign]


def stock_dispatch() -> None:
    """mitmproxy's own AddonManager (every event offered to every addon of the chain) instead of
    proxy/addon_dispatch.py's index: the 'before' of that change. ``HookHandler`` runs hooks
    itself only through the index, so with this manager hooks also take stock's Task each."""
    from mitmproxy.addonmanager import AddonManager

    from proxy import data_plane

    data_plane.IndexedAddonManager = AddonManager  # type: ignore[misc]


def stock_args() -> None:
    """mitmproxy's own ``Hook.args()`` for every event's arguments: the 'before' of
    ``addon_dispatch.args_of``."""
    from proxy import addon_dispatch

    addon_dispatch.args_of = lambda event: event.args()


def uvloop_loop() -> None:
    """The gateway on uvloop's event loop instead of asyncio's (needs ``.venv/bin/pip install
    uvloop``; an experiment, not shipped: docs/performance.md, "Cheaper handshakes, second pass")."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        sys.exit("gateway_variant.py uvloop: uvloop is not installed (.venv/bin/pip install uvloop)")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def optimized() -> None:
    """The gateway under ``python -O``: mitmproxy skips the run-time type checks it keeps under
    ``if __debug__`` (every Request and Response field, per message) and asserts are off."""
    if not sys.flags.optimize:
        os.execv(sys.executable, [sys.executable, "-O", __file__, "optimized", *sys.argv[1:]])


def gc_young() -> None:
    """Other thresholds for the garbage collector (``proxy.gc_settings.tune`` reads them at start)."""
    from proxy import gc_settings

    raw = os.environ.get("GATEWAY_BENCH_GC_THRESHOLDS", "10000,10,100")
    gc_settings.THRESHOLDS = tuple(int(part) for part in raw.split(","))  # type: ignore[misc]


def uncached_names() -> None:
    """An upstream certificate's names read again at every handshake, as before their cache."""
    from addons import inspection

    inspection._upstream_names = inspection._upstream_names.__wrapped__  # type: ignore[assignment]


def stock_hooks() -> None:
    """mitmproxy's own connection handler (a Task per hook) instead of
    ``proxy/connection_hooks.py``'s: the 'before' of that change."""
    from proxy import connection_hooks

    connection_hooks.install = lambda: None


def stock_checks() -> None:
    """mitmproxy's own ``MessageData.__post_init__`` (``typecheck.check_option_type`` per field)
    instead of ``proxy/message_checks.py``'s: the 'before' of that change."""
    from proxy import message_checks

    message_checks.install = lambda: None


def stock_fork() -> None:
    """mitmproxy's own ``Context.fork`` instead of ``proxy/context_fork.py``'s: the 'before' of
    that change."""
    from proxy import context_fork

    context_fork.install = lambda: None


VARIANTS = {
    "stock-fork": stock_fork,
    "stock-checks": stock_checks,
    "stock-hooks": stock_hooks,
    "uncached-names": uncached_names,
    "gc-young": gc_young,
    "optimized": optimized,
    "pruned": pruned,
    "stock-tls": stock_tls,
    "stock-dispatch": stock_dispatch,
    "stock-args": stock_args,
    "uvloop": uvloop_loop,
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f"usage: gateway_variant.py {{{','.join(VARIANTS)}}} run [ARGS...]", file=sys.stderr)
        return 2
    VARIANTS[sys.argv.pop(1)]()
    from proxy.cli.main import main as gateway_main

    sys.argv[0] = "gateway"
    return gateway_main()


if __name__ == "__main__":
    sys.exit(main())
