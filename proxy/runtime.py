"""The composition root: one process, one event loop, mitmproxy and the admin API side by side.

Start-up is one ordered stack of steps (aiohttp's cleanup contexts are the model): each step
registers its teardown on an ``AsyncExitStack`` right after it has made its resource, so a
failure at any step undoes exactly the steps before it, the last first, and ``Gateway.stop()``
runs that same teardown. The steps, and what undoing each does:

  1. the store                                      close (last of all)
  2. first start: account, CA, admin token; the ``--policies`` files
  3. this node, live in the store with its CAs      leave the store's live-node list
  4. the device service (writer thread, proof worker) close
  5. the request log                                flush and close
  6. the admin API listening                        stop it (aiohttp runner cleanup)
     and the CA rotation driver (once per gateway)    cancel it
  7. the proxy listening (mitmproxy's master runs)  stop listening, then the master's ``done``
     and the device tunnels' WireGuard listeners     remove their conf files
  8. timers: heartbeat, daily expiry check          cancel (first of all)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from mitmproxy import options
from mitmproxy.addons import default_addons
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.master import Master

from addons.enforcement import Enforcer
from addons.hosts import LabHosts
from addons.identity import DeviceIdentity, SourceAddresses
from addons.inspection import HotTlsConfig
from addons.request_log import RequestLog
from addons.transparent import TransparentGuard
from addons.wireguard import WireGuardPeers
from certs.clock import utcnow
from policies.yaml_io import PolicyFileError, PolicySet, load_files
from proxy import config as cfg
from proxy import gc_settings
from proxy.account_nodes import AccountCaNodes, AccountPolicies, default_account
from proxy.admin_tls import AdminTls, load_admin_tls
from proxy.api.app import ApiDeps, NodeInfo, create_app
from proxy.api.wireguard import WIREGUARD
from proxy.banner import banner
from proxy.bootstrap import BootstrapResult, first_start
from proxy.jsonlines import JsonLinesFile
from proxy.metrics import Metrics
from proxy.modes import DEFAULT_LISTEN_HOST, ModeKind, Modes, listen_address
from proxy.node_sync import IssuerSettings
from proxy.services.accounts import AccountService
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.services.rotation_driver import RotationDriver
from proxy.services.rotations import RotationService
from proxy.services.wireguard import WireGuardService
from proxy.store import Store
from proxy.wireguard import WireGuardModes

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = timedelta(seconds=10)
EXPIRY_CHECK_INTERVAL = timedelta(days=1)
LISTEN_TIMEOUT = timedelta(seconds=5)


# mitmproxy's default addons a gateway needs; every event is offered to every addon, so the
# other ~20 (playback, map/modify, save, sticky cookies, ...) would cost about a millisecond
# per keep-alive request for nothing (measured: docs/performance.md).
NEEDED_DEFAULT_ADDONS = frozenset(
    {"core", "block", "onboarding", "proxyserver", "dnsresolver", "nextlayer", "tlsconfig", "disableh2c"}
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
    master.addons.add(*addons)
    modes.attach(master)
    opts.update(
        # mitmproxy kills clients with public source addresses by default (an open proxy on the
        # internet is its worry); a transparent gateway sees its clients' own addresses, public
        # ones included (IPv6 above all), and only the redirect rules decide who reaches it.
        block_global=not modes.has_transparent,
        connection_strategy="eager",  # upstream TLS first: sniff its names, verify it, block page
        onboarding=False,  # mitm.it would serve mitmproxy's confdir CA, not ours
        ssl_verify_upstream_trusted_ca=str(trust_bundle) if trust_bundle else None,
        gateway_hosts=str(config.hosts_file or ""),
        gateway_hosts_only=config.hosts_only,
        gateway_require_identity=config.require_device,
    )
    return master


@dataclass
class Gateway:
    """A started gateway: what the banner and the timers read, and the teardown of every step."""

    config: cfg.Config
    store: Store
    service: CertificateService
    master: Master
    node: AccountCaNodes
    account_id: str
    boot: BootstrapResult
    devices: DeviceService
    admin_tls: AdminTls | None
    modes: Modes  # the listeners; set_dynamic() adds and removes modes while it runs
    master_run: asyncio.Task[None]  # mitmproxy's master.run()
    teardown: AsyncExitStack

    async def stop(self) -> None:
        """Undo every start-up step, the last first: the code a failed start runs too."""
        await self.teardown.aclose()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if level.lower() != "debug":
        # mitmproxy logs every client connect at INFO: keep only its warnings.
        logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def start(config: cfg.Config, environ: Mapping[str, str]) -> Gateway:
    """Every step of start-up (module docstring), or none: a failure undoes the steps before it."""
    steps = AsyncExitStack()
    try:
        return await _start(config, environ, steps)
    except BaseException:
        await steps.aclose()
        raise


async def _start(config: cfg.Config, environ: Mapping[str, str], steps: AsyncExitStack) -> Gateway:
    modes = Modes.from_specs(config.mode_specs)
    cfg.prepare_data_dir(config.data_dir)
    sealer = cfg.load_master_key(config.data_dir, dict(environ))
    admin_tls = load_admin_tls(config, sealer)
    trust_bundle = cfg.upstream_trust_bundle(config.data_dir, config.upstream_ca)
    store = steps.enter_context(closing(Store.open(config.database_path)))  # 1
    service = CertificateService(store, sealer, utcnow)
    boot = first_start(store, service, admin_token_env=environ.get(cfg.ADMIN_TOKEN_ENV), clock=utcnow)  # 2
    policies = PolicyService(store, utcnow, files=load_policy_files(config.policy_paths))
    account_id = default_account(store.accounts.list(), config.default_account).id
    accounts = AccountService(store, service, utcnow, default_account_id=account_id)
    tls = HotTlsConfig()
    node = steps.enter_context(_ca_node(config, service, tls, accounts))  # 3
    service.subscribe(node.sync)
    accounts.subscribe(node.sync)
    devices = DeviceService(
        store,
        utcnow,
        public_base_url=config.public_base_url,
        server_fingerprint=admin_tls.fingerprint if admin_tls else "",
        proof_worker=(os.cpu_count() or 1) > 1,  # proof signatures checked off the event loop
    )
    steps.push_async_callback(devices.aclose)  # 4
    rotations = RotationService(store, service, utcnow)
    service.expiry_note = rotations.expiry_note
    requests_file = JsonLinesFile(config.data_dir / "requests.jsonl")
    steps.callback(requests_file.close)  # 5
    metrics = Metrics()
    wireguard = WireGuardService(store, sealer, utcnow, config.wireguard)
    tunnels = WireGuardModes(
        wireguard, config.data_dir / "wireguard", partial(modes.set_dynamic, "wireguard")
    )
    peers = WireGuardPeers(tunnels)
    identity = DeviceIdentity(devices, resolvers=[peers, SourceAddresses(devices)])
    tls.account_of = identity.account_of  # each device's leaves from its own account's CA
    enforcer = _enforcer(metrics, identity, service, policies, accounts)
    request_log = RequestLog(requests_file.write, node_id=node.node_id, ca_fingerprint=tls.ca_fingerprint)
    master = build_master(
        config, [*build_addons(tls, identity, enforcer, request_log), peers], trust_bundle, modes
    )
    deps = ApiDeps(
        store=store,
        certificates=service,
        clock=utcnow,
        public_base_url=config.public_base_url,
        node=NodeInfo(node.node_id, f"gateway {' '.join(config.mode_specs)}"),
        policies=policies,
        metrics=metrics,
        devices=devices,
        proxy_listen=next(
            (str(cfg.HostPort(*listen_address(m))) for m in modes.of_kind(ModeKind.REGULAR)), ""
        ),
        request_log=requests_file.path,
        accounts=accounts,
        rotations=rotations,
    )
    app = create_app(deps)
    app[WIREGUARD] = wireguard
    await _serve_admin(steps, config, app, admin_tls)  # 6
    await steps.enter_async_context(RotationDriver(rotations).running())  # 6b: drives CA rotations
    requests_file.start()
    running = await _run_proxy(steps, config, master)  # 7
    steps.push_async_callback(tunnels.aclose)
    await tunnels.sync()  # a listener per device tunnel, then one more per enrolled device
    devices.subscribe(tunnels.changed)
    gateway = Gateway(
        config, store, service, master, node, account_id, boot, devices, admin_tls, modes, running, steps
    )
    _start_timers(steps, gateway)  # 8
    return gateway


def _enforcer(
    metrics: Metrics,
    identity: DeviceIdentity,
    service: CertificateService,
    policies: PolicyService,
    accounts: AccountService,
) -> Enforcer:
    """The policy enforcer, kept in step with every change of policies, configuration or
    accounts (each account's policies decide for its devices)."""
    enforcer = Enforcer(metrics, identity_of=identity.identity_of)
    sync = AccountPolicies(
        enforcer, service, policies, accounts, default_account_id=accounts.default_account_id
    )
    sync.refresh()
    service.subscribe(sync.refresh)
    policies.subscribe(sync.refresh)
    accounts.subscribe(sync.refresh)
    return enforcer


@contextmanager
def _ca_node(
    config: cfg.Config, service: CertificateService, tls: HotTlsConfig, accounts: AccountService
) -> Iterator[AccountCaNodes]:
    settings = IssuerSettings(
        public_base_url=config.public_base_url,
        lifetime=config.leaf_lifetime,
        cache_size=config.leaf_cache_size,
    )
    node = AccountCaNodes(
        service,
        tls,
        accounts,
        default_account_id=accounts.default_account_id,
        node_id=uuid.uuid4().hex,
        settings=settings,
    )
    with node.live(f"gateway {socket.gethostname()} {' '.join(config.mode_specs)}"):
        yield node


async def _serve_admin(
    steps: AsyncExitStack, config: cfg.Config, app: web.Application, admin_tls: AdminTls | None
) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    steps.push_async_callback(runner.cleanup)
    site = web.TCPSite(
        runner,
        config.admin_listen.host,
        config.admin_listen.port,
        ssl_context=admin_tls.context if admin_tls else None,
    )
    try:
        await site.start()
    except OSError as e:
        raise cfg.ConfigError(f"--admin-listen {config.admin_listen}: cannot listen: {e.strerror}") from e


async def _run_proxy(steps: AsyncExitStack, config: cfg.Config, master: Master) -> asyncio.Task[None]:
    """mitmproxy's master running, its proxy listening; undone by stopping to listen first."""
    running = asyncio.create_task(master.run())
    proxyserver = master.addons.get("proxyserver")

    async def stop() -> None:
        await proxyserver.servers.update([])  # run() returning would leave the sockets open
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


def _all_listening(proxyserver: Any, count: int) -> bool:
    servers = list(proxyserver.servers)
    return len(servers) >= count and all(server.listen_addrs for server in servers)


def _start_timers(steps: AsyncExitStack, gateway: Gateway) -> None:
    timers = [
        asyncio.create_task(_every(HEARTBEAT_INTERVAL, gateway.node.sync)),
        asyncio.create_task(_every(EXPIRY_CHECK_INTERVAL, lambda: warn_expiring(gateway))),
    ]

    async def cancel() -> None:
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    steps.push_async_callback(cancel)


def load_policy_files(paths: Sequence[Path]) -> PolicySet | None:
    """The rules of ``--policies``: every problem of every file, or nothing starts."""
    if not paths:
        return None
    try:
        policy_set = load_files(paths)
    except PolicyFileError as e:
        raise cfg.ConfigError("--policies: " + "; ".join(str(p) for p in e.problems)) from e
    logger.info(
        "policy files: %d gateway rules, %d Access applications, %d Access policies from %s",
        len(policy_set.gateway_rules),
        len(policy_set.access_applications),
        len(policy_set.access_policies),
        ", ".join(map(str, paths)),
    )
    return policy_set


async def serve(config: cfg.Config, environ: Mapping[str, str]) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop (also when stopped while starting)."""
    os.umask(0o077)  # every file this process creates is its owner's only
    sys.setswitchinterval(0.001)  # the admin thread yields the GIL to the loop within 1 ms
    gc_settings.tune()  # fewer, cheaper collections (proxy/gc_settings.py)
    stopping = asyncio.Event()
    with _on_signals((signal.SIGINT, signal.SIGTERM), stopping.set):
        gateway = await start(config, environ)
        try:
            if not stopping.is_set():
                gc_settings.freeze_startup_heap()  # what start-up made leaves the collector's walks
                print(_banner(gateway), flush=True)
                warn_expiring(gateway)
                await _first_done(gateway.master_run, stopping)
        finally:
            await gateway.stop()
            logger.info("stopped")
    return 0


@contextmanager
def _on_signals(signals: Sequence[signal.Signals], handler: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _first_done(running: asyncio.Task[None], stopping: asyncio.Event) -> None:
    """Until a signal asks to stop, or mitmproxy's master stops by itself."""
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


def _banner(gateway: Gateway) -> str:
    return banner(
        gateway.config,
        account_id=gateway.account_id,
        admin_tls=gateway.admin_tls,
        new_admin_token=gateway.boot.new_admin_token,
        in_use_id=gateway.node.in_use_id,
        modes=gateway.modes.all(),
    )


async def _every(interval: timedelta, job: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            job()
        except Exception:  # a timer must not die: log and try again next time
            logger.exception("periodic job %s failed", getattr(job, "__name__", job))


def warn_expiring(gateway: Gateway) -> None:
    """Every account's certificates near expiry; the in-use one's warning names its rotation."""
    for account in gateway.store.accounts.list():
        for cert in gateway.service.list(account.id):
            for message in gateway.service.expiry_messages([cert]):
                log = logger.error if cert.in_use else logger.warning
                log("account %s: certificate %s: %s", account.id, cert.id, message)
