"""What several accounts cost the proxy's per-handshake and per-request paths, in-process.

With several accounts a handshake picks its signer, and a request its policies, by the client's
account (docs/architecture.md "Several accounts"). This times the two places that changed, one
call at a time, with the addons built as ``gateway run`` builds them, and the client identified
as an enrolled device (explicit proxy credentials, its identity cached as DeviceService caches it):

  HotTlsConfig.get_cert   a handshake's leaf, from the issuer's cache (the signature is not
                          timed: only what picks the issuer and returns the cached leaf)
  Enforcer.request        a request decided with no rules (the idle path), identity included

for 1 account (today's path: no lookup), 2 accounts and 50 accounts, in interleaved rounds so
that load on a shared machine hits every case alike. Figures: CPU microseconds per call (median
of rounds) and each case's ratio to 1 account measured in the same round.

``--sync``: instead, what keeping N accounts loaded costs the event loop: one
``AccountCaNodes.sync`` (the heartbeat, and every certificate change) and one
``AccountPolicies.refresh`` (every policy or configuration change) on a store on disk with
1, 10 and 100 accounts (wall milliseconds, median of 5).

``--loop-lag``: what the heartbeat holds the event loop for, with 100 accounts on a store on
disk: a ``StoreFollower`` (as a node runs it, heartbeat every second) beside a probe task that
sleeps 1 ms at a time and records how late it wakes (max and 99th percentile over the run).
Three runs, one after the other: no heartbeat (the machine's own noise), the walk of every
account (``AccountCaNodes.sync``, the heartbeat before) and ``AccountCaNodes.heartbeat``.

Run:  .venv/bin/python bench/accounts_bench.py [--calls 20000] [--rounds 9] [--json] [--sync]
      .venv/bin/python bench/accounts_bench.py --loop-lag [--accounts 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mitmproxy import connection
from mitmproxy.proxy import context
from mitmproxy.test import taddons, tflow

from addons.enforcement import Enforcer, PolicySnapshot
from addons.identity import DeviceIdentity
from addons.inspection import HotTlsConfig
from certs.authority import CertificateAuthority
from certs.issuer import LeafIssuer
from policies.access import AccessEngine
from policies.engine import GatewayEngine
from policies.facts import Identity
from proxy.services.policies import PolicyEngines

CASES = (1, 2, 50)
DEVICE = "bench-device"


class Directory:
    """The device service as the proxy sees it: a cached identity per device."""

    def __init__(self, account_id: str) -> None:
        self._identities = {
            DEVICE: Identity(email="bench@example.com", device_id=DEVICE, account_id=account_id)
        }

    def authenticate(self, device_id: str, secret: str) -> str | None:
        return device_id

    def identity(self, device_id: str) -> Identity:
        return self._identities[device_id]


def build(
    accounts: int, authority: CertificateAuthority, tctx: Any
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """get_cert and request for one client of the last account, with ``accounts`` loaded."""
    ids = [f"{n:032x}" for n in range(accounts)]
    identity = DeviceIdentity(Directory(ids[-1]))
    tls = HotTlsConfig(account_of=identity.account_of)
    enforcer = Enforcer(identity_of=identity.identity_of)
    issuer = LeafIssuer(authority)
    snapshot = PolicySnapshot(PolicyEngines(GatewayEngine.build(()), AccessEngine.build((), ()), 0))
    tls.use_issuer(issuer)
    enforcer.use(snapshot)
    for account in ids:
        tls.use_account_issuer(account, issuer)
        enforcer.use_account(account, snapshot)
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    client.sni = "same.bench.test"
    identity._devices[client.id] = DEVICE  # as its CONNECT left it
    conn_context = context.Context(client, tctx.options)
    conn_context.server.address = ("same.bench.test", 443)
    tls.get_cert(conn_context)  # the leaf is made once and cached
    flow = tflow.tflow(resp=False)
    flow.client_conn = client

    def request() -> None:
        flow.metadata.clear()
        flow.response = None
        enforcer.request(flow)

    return (lambda: tls.get_cert(conn_context)), request


def per_call(call: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls * 1e6


def sync_costs() -> None:
    """Wall ms of one CA sync and one policy refresh with 1, 10, 100 accounts."""
    from certs.clock import utcnow
    from certs.sealing import KeySealer
    from proxy.account_nodes import AccountCaNodes, AccountPolicies
    from proxy.bootstrap import first_start
    from proxy.node_sync import IssuerSettings
    from proxy.services.accounts import AccountService
    from proxy.services.certificates import CertificateService
    from proxy.services.policies import PolicyService
    from proxy.store import Store

    class Sink:
        def use_issuer(self, issuer: Any) -> None: ...
        def use_account_issuer(self, account_id: str, issuer: Any) -> None: ...
        def drop_account(self, account_id: str) -> None: ...
        def use(self, snapshot: Any) -> None: ...
        def use_account(self, account_id: str, snapshot: Any) -> None: ...

    with tempfile.TemporaryDirectory() as directory:
        store = Store.open(Path(directory) / "gateway.db")
        service = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
        default = first_start(store, service, admin_token_env=None, clock=utcnow).account_id
        accounts = AccountService(store, service, utcnow, default_account_id=default)
        policies = PolicyService(store, utcnow)
        for count in (1, 10, 100):
            while len(accounts.list()) < count:
                accounts.create(f"bench {len(accounts.list())}")
            nodes = AccountCaNodes(service, Sink(), accounts, default_account_id=default,
                                   settings=IssuerSettings("http://127.0.0.1:8081"), node_id="b" * 32)  # fmt: skip
            sync = AccountPolicies(Sink(), service, policies, accounts, default_account_id=default)
            with nodes.live("bench"):
                sync.refresh()
                ca = statistics.median(_wall(nodes.sync) for _ in range(5))
                policy = statistics.median(_wall(sync.refresh) for _ in range(5))
            print(f"{count:4} accounts: CA sync {ca:7.1f} ms   policy refresh {policy:7.1f} ms")
        store.close()


def loop_lag(count: int, seconds: float) -> None:
    """The event loop's lateness while a node heartbeats ``count`` accounts once a second."""
    import asyncio
    from datetime import timedelta

    from certs.clock import utcnow
    from certs.sealing import KeySealer
    from proxy.account_nodes import AccountCaNodes
    from proxy.bootstrap import first_start
    from proxy.follower import StoreFollower
    from proxy.node_sync import IssuerSettings
    from proxy.services.accounts import AccountService
    from proxy.services.certificates import CertificateService
    from proxy.store import Store

    class Sink:
        def use_issuer(self, issuer: Any) -> None: ...
        def use_account_issuer(self, account_id: str, issuer: Any) -> None: ...
        def drop_account(self, account_id: str) -> None: ...

    async def probe(lags: list[float], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - asked - 0.001) * 1000)

    async def run(beat: Callable[[], Any], store: Store) -> tuple[list[float], list[float], list[float]]:
        beats: list[float] = []
        cpu: list[float] = []

        def heartbeat() -> None:
            started = time.thread_time()
            beats.append(_wall(beat))
            cpu.append((time.thread_time() - started) * 1000)

        follower = StoreFollower(store, on_change=lambda: None, heartbeat=heartbeat,
                                 heartbeat_interval=timedelta(seconds=1))  # fmt: skip
        lags: list[float] = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(follower.run()), asyncio.create_task(probe(lags, stop))]
        await asyncio.sleep(seconds)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return lags, beats, cpu

    with tempfile.TemporaryDirectory() as directory:
        store = Store.open(Path(directory) / "gateway.db")
        service = CertificateService(store, KeySealer(KeySealer.generate_master_key()), utcnow)
        default = first_start(store, service, admin_token_env=None, clock=utcnow).account_id
        accounts = AccountService(store, service, utcnow, default_account_id=default)
        while len(accounts.list()) < count:
            accounts.create(f"bench {len(accounts.list())}")
        nodes = AccountCaNodes(service, Sink(), accounts, default_account_id=default,
                               settings=IssuerSettings("http://127.0.0.1:8081"), node_id="b" * 32)  # fmt: skip
        with nodes.live("bench"):
            for name, beat in (("none", lambda: None), ("walk", nodes.sync), ("heartbeat", nodes.heartbeat)):
                lags, beats, cpu = asyncio.run(run(beat, store))
                lags.sort()
                print(
                    f"{count} accounts, {seconds:g} s, {name:9}: {len(beats)} beats, median "
                    f"{statistics.median(beats):6.1f} ms wall, {statistics.median(cpu):6.1f} ms CPU "
                    f"(max {max(beats):6.1f} wall); loop lag max "
                    f"{lags[-1]:6.1f} ms, p99 {lags[int(len(lags) * 0.99)]:5.2f} ms, "
                    f"probes late > 10 ms: {sum(lag > 10 for lag in lags)} of {len(lags)}"
                )
        store.close()


def _wall(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000, help="calls per case per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument("--sync", action="store_true", help="the cost of keeping 1, 10, 100 accounts loaded")
    parser.add_argument(
        "--loop-lag", action="store_true", help="the event loop's lateness while heartbeating"
    )
    parser.add_argument("--accounts", type=int, default=100, help="accounts for --loop-lag (default 100)")
    parser.add_argument("--seconds", type=float, default=10, help="how long --loop-lag runs (default 10)")
    args = parser.parse_args()
    if args.loop_lag:
        loop_lag(args.accounts, args.seconds)
        return 0
    if args.sync:
        sync_costs()
        return 0
    authority = CertificateAuthority.generate(common_name="Bench Root", organization="Gateway Bench")
    figures: dict[str, dict[int, list[float]]] = {"get_cert": {}, "request": {}}
    ratios: dict[str, dict[int, list[float]]] = {"get_cert": {}, "request": {}}
    with tempfile.TemporaryDirectory() as confdir, taddons.context() as tctx:
        tctx.options.confdir = confdir
        built = {n: build(n, authority, tctx) for n in CASES}
        for _ in range(args.rounds):
            for index, name in enumerate(("get_cert", "request")):
                measured = {n: per_call(built[n][index], args.calls) for n in CASES}
                for n, value in measured.items():
                    figures[name].setdefault(n, []).append(value)
                    ratios[name].setdefault(n, []).append(value / measured[1])
    if args.json:
        print(json.dumps({"figures_us": figures, "ratios": ratios, "calls": args.calls}, indent=2))
        return 0
    for name in figures:
        for n in CASES:
            median = statistics.median(figures[name][n])
            ratio = statistics.median(ratios[name][n])
            print(
                f"{name:9} {n:3} account{'s' if n > 1 else ' '}  {median:7.2f} µs/call  {ratio:5.2f}x one account"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
