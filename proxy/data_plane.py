"""The data plane: what a process needs to proxy, and to follow the store it shares.

``gateway run`` composes these with the admin plane in one process (``proxy/runtime.py``);
``gateway node`` and each worker of ``gateway run --workers N`` compose them alone
(``proxy/node.py``). The pieces:

- ``build_addons``/``build_master``: mitmproxy's master with our addons and modes;
- ``run_proxy``: the master running and every listener up, undone by draining (stop listening,
  let open connections finish for a moment) and then stopping the master;
- ``ca_node``: this process live in the store as a node, its CAs loaded into the TLS addon;
- ``enforcer``: the policy enforcer and the ``PolicySync`` that keeps its snapshot current;
- ``Following``: what a data-plane-only process does when another process changed the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from mitmproxy import options
from mitmproxy.addonmanager import AddonManager
from mitmproxy.addons import default_addons
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.master import Master

from addons.enforcement import Enforcer
from addons.hosts import LabHosts
from addons.identity import DeviceIdentity
from addons.inspection import HotTlsConfig
from addons.request_log import RequestLog
from addons.transparent import TransparentGuard
from proxy import config as cfg
from proxy import connection_hooks, context_fork, message_checks, tls_writes
from proxy.account_nodes import AccountCaNodes, AccountList, AccountPolicies
from proxy.addon_dispatch import IndexedAddonManager
from proxy.metrics import Metrics
from proxy.modes import DEFAULT_LISTEN_HOST, Modes
from proxy.node_sync import IssuerSettings
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.store import Store
from proxy.store.changes import NOTHING

logger = logging.getLogger(__name__)

LISTEN_TIMEOUT = timedelta(seconds=5)
DRAIN_TIMEOUT = timedelta(seconds=5)  # open connections may finish this long after a stop

# mitmproxy's default addons a gateway needs; every event is offered to every addon, so the
# other ~20 (playback, map/modify, save, sticky cookies, ...) would cost about a millisecond
# per keep-alive request for nothing (measured: docs/performance.md). Not mitmproxy's onboarding
# app either: mitm.it would serve mitmproxy's confdir CA, not ours, and its ``async def request``
# made every request's hook wait on a coroutine.
NEEDED_DEFAULT_ADDONS = frozenset(
    {"core", "block", "proxyserver", "dnsresolver", "nextlayer", "tlsconfig", "disableh2c"}
)


def build_addons(
    tls: HotTlsConfig, identity: DeviceIdentity, enforcer: Enforcer, request_log: RequestLog
) -> list[Any]:
    """The default addons a gateway needs, with our TLS config in place of mitmproxy's, then
    ours: the device is identified before the policies decide, and the log line comes last."""
    chain = [
        tls if isinstance(addon, TlsConfig) else addon
        for addon in default_addons()
        if _addon_name(addon) in NEEDED_DEFAULT_ADDONS
    ]
    return [*chain, TransparentGuard(), LabHosts(), identity, enforcer, request_log]


def _addon_name(addon: Any) -> str:
    return str(getattr(addon, "name", type(addon).__name__)).lower()


def build_master(
    config: cfg.Config, addons: Sequence[Any], trust_bundle: Path | None, modes: Modes | None = None
) -> Master:
    """mitmproxy's master on the running loop, with our addons, options and modes."""
    config.mitmproxy_dir.mkdir(parents=True, exist_ok=True)
    modes = modes or Modes.from_specs(config.mode_specs)
    opts = options.Options(
        listen_host=DEFAULT_LISTEN_HOST,
        confdir=str(config.mitmproxy_dir),
    )
    master = Master(opts, with_termlog=False)
    dispatch: AddonManager = IndexedAddonManager(master)  # each event to its handlers only
    master.addons = dispatch
    connection_hooks.install()  # each connection's hooks without a Task each
    message_checks.install()  # each HTTP message's fields checked by isinstance, not typing
    context_fork.install()  # each layer's context without a throwaway server
    tls_writes.install()  # no write into a TLS connection closed for writing (a crash in 12.3.1)
    master.addons.add(*addons)
    modes.attach(master)
    opts.update(
        # mitmproxy kills clients with public source addresses by default (an open proxy on the
        # internet is its worry); a transparent gateway sees its clients' own addresses, public
        # ones included (IPv6 above all), and only the redirect rules decide who reaches it.
        block_global=not modes.has_transparent,
        connection_strategy="eager",  # upstream TLS first: sniff its names, verify it, block page
        ssl_verify_upstream_trusted_ca=str(trust_bundle) if trust_bundle else None,
        gateway_hosts=str(config.hosts_file or ""),
        gateway_hosts_only=config.hosts_only,
        gateway_require_identity=config.require_device,
    )
    return master


async def run_proxy(
    steps: AsyncExitStack, config: cfg.Config, master: Master, *, drain: timedelta = timedelta(0)
) -> asyncio.Task[None]:
    """mitmproxy's master running, its proxy listening; undone by stopping to listen first,
    then (``drain``) waiting a moment for open connections to finish."""
    running = asyncio.create_task(master.run())
    proxyserver = master.addons.get("proxyserver")

    async def stop() -> None:
        await proxyserver.servers.update([])  # run() returning would leave the sockets open
        await _drained(proxyserver, drain)
        master.shutdown()
        try:
            await running
        except Exception:  # the steps below must still be undone
            logger.exception("mitmproxy's master failed")

    steps.push_async_callback(stop)
    tries = int(LISTEN_TIMEOUT / timedelta(milliseconds=25))
    for _ in range(tries):
        if _all_listening(proxyserver, len(config.mode_specs)) or running.done():
            break
        await asyncio.sleep(0.025)
    if running.done() or not _all_listening(proxyserver, len(config.mode_specs)):
        option = (
            "--mode " + " --mode ".join(config.mode_specs)
            if config.modes
            else f"--proxy-listen {config.proxy_listen}"
        )
        raise cfg.ConfigError(f"{option}: the proxy could not listen (see log)")
    return running


async def _drained(proxyserver: Any, timeout: timedelta) -> None:
    deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
    if proxyserver.connections and timeout:
        logger.info("draining: %d open connection(s) may finish", len(proxyserver.connections))
    while proxyserver.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def _all_listening(proxyserver: Any, count: int) -> bool:
    servers = list(proxyserver.servers)
    return len(servers) >= count and all(server.listen_addrs for server in servers)


def issuer_settings(config: cfg.Config) -> IssuerSettings:
    return IssuerSettings(
        public_base_url=config.public_base_url,
        lifetime=config.leaf_lifetime,
        cache_size=config.leaf_cache_size,
    )


@contextmanager
def ca_node(
    config: cfg.Config,
    service: CertificateService,
    tls: HotTlsConfig,
    accounts: AccountList,
    default_account_id: str,
    *,
    node_id: str,
    name: str,
) -> Iterator[AccountCaNodes]:
    """This process live in the store as a node (every account's CAs loaded) for the block."""
    node = AccountCaNodes(
        service,
        tls,
        accounts,
        default_account_id=default_account_id,
        node_id=node_id,
        settings=issuer_settings(config),
    )
    with node.live(name):
        yield node


class Subscribable(Protocol):
    def subscribe(self, callback: Callable[[], None]) -> None: ...


def enforcer(
    metrics: Metrics,
    identity: DeviceIdentity,
    service: CertificateService,
    policies: PolicyService,
    accounts: AccountList,
    default_account_id: str,
    *,
    changes: Sequence[Subscribable] = (),
) -> tuple[Enforcer, AccountPolicies]:
    """The policy enforcer, kept in step with every change of policies, configuration or
    accounts (each account's policies decide for its devices) that ``changes`` announce."""
    enforcer = Enforcer(metrics, identity_of=identity.identity_of)
    sync = AccountPolicies(enforcer, service, policies, accounts, default_account_id=default_account_id)
    sync.refresh()
    for source in changes:
        source.subscribe(sync.refresh)
    return enforcer, sync


class Following:
    """What a data-plane-only process does when another process changed the store: read the
    store's change journal (``Store.changes``) and forget the devices, posture rules and address
    index it names (all of them when it cannot tell); then, only if the journal says something a
    node loads changed (``plane``: checked against ``Revisions.data_plane``, one digest over every
    account), reload the CAs of accounts whose deployable ones changed (and pick up accounts made
    or deleted), recompile an account's policies only if their revision moved, and refresh the
    settings (``tls_decrypt``, the block page). A heartbeat or a posture report reloads nothing
    but that device. What one call took and could not finish (the store went away) is done by
    the next."""

    def __init__(
        self,
        store: Store,
        node: AccountCaNodes,
        policies: PolicyService,
        policy_sync: AccountPolicies,
        devices: DeviceService,
    ) -> None:
        self._store = store
        self._node = node
        self._policies = policies
        self._policy_sync = policy_sync
        self._devices = devices
        self._pending = NOTHING  # taken from the journal, not yet followed
        store.changes.take()  # where the journal stands: what commits from here is followed
        self._revisions = self._read_revisions()
        self._digest = store.revisions.data_plane()

    def _read_revisions(self) -> dict[str, str]:
        return {a.id: self._store.revisions.policies(a.id) for a in self._store.accounts.list()}

    def __call__(self) -> None:
        self._pending |= self._store.changes.take()
        changes = self._pending
        self._devices.forget_changed(changes)
        if changes.plane or changes.everything:
            self._reload()
        self._pending = NOTHING

    def _reload(self) -> None:
        digest = self._store.revisions.data_plane()
        if digest == self._digest:
            return
        self._node.refresh()
        revisions = self._read_revisions()
        for account_id, revision in revisions.items():
            if self._revisions.get(account_id) not in (None, revision):
                self._policies.reload(account_id)
        self._revisions = revisions
        self._policy_sync.refresh()
        self._digest = digest
