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

from aiohttp import web
from mitmproxy.master import Master

from addons.identity import DeviceIdentity, SourceAddresses
from addons.inspection import HotTlsConfig
from addons.request_log import RequestLog
from addons.wireguard import WireGuardPeers
from certs.clock import utcnow
from certs.sealing import KeySealer
from policies.yaml_io import PolicyFileError, PolicySet, load_files
from proxy import config as cfg
from proxy import data_plane, gc_settings
from proxy.account_nodes import AccountCaNodes, default_account
from proxy.admin_tls import AdminTls, load_admin_tls
from proxy.api.app import ApiDeps, NodeInfo, create_app
from proxy.api.wireguard import WIREGUARD
from proxy.banner import banner
from proxy.bootstrap import BootstrapResult, first_start
from proxy.data_plane import build_addons, build_master
from proxy.follower import StoreFollower
from proxy.jsonlines import JsonLinesFile
from proxy.metrics import Metrics
from proxy.modes import ModeKind, Modes, listen_address
from proxy.services.accounts import AccountService
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.services.rotation_driver import RotationDriver
from proxy.services.rotations import RotationService
from proxy.services.wireguard import WireGuardService
from proxy.store import Store
from proxy.wireguard import WireGuardModes

__all__ = ["build_addons", "build_master", "serve", "setup_logging", "start"]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = timedelta(seconds=10)
EXPIRY_CHECK_INTERVAL = timedelta(days=1)


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


@dataclass(frozen=True)
class AdminBase:
    """Steps 1 and 2, which happen once per gateway (never in a data-plane node): the store
    (migrated), first start, and the services over it."""

    store: Store
    sealer: KeySealer
    admin_tls: AdminTls | None
    service: CertificateService
    policies: PolicyService
    boot: BootstrapResult
    account_id: str  # the default account
    accounts: AccountService
    rotations: RotationService


def open_admin_base(config: cfg.Config, environ: Mapping[str, str], steps: AsyncExitStack) -> AdminBase:
    cfg.prepare_data_dir(config.data_dir)
    sealer = cfg.load_master_key(config.data_dir, dict(environ))
    admin_tls = load_admin_tls(config, sealer)
    store = steps.enter_context(closing(Store.open(config.store_location)))  # 1
    service = CertificateService(
        store, sealer, utcnow, live_node_window=config.node_timeout, live_clock=store.now
    )
    boot = first_start(store, service, admin_token_env=environ.get(cfg.ADMIN_TOKEN_ENV), clock=utcnow)  # 2
    policies = PolicyService(store, utcnow, files=load_policy_files(config.policy_paths))
    account_id = default_account(store.accounts.list(), config.default_account).id
    accounts = AccountService(store, service, utcnow, default_account_id=account_id)
    rotations = RotationService(store, service, utcnow)
    service.expiry_note = rotations.expiry_note
    return AdminBase(store, sealer, admin_tls, service, policies, boot, account_id, accounts, rotations)


def device_service(config: cfg.Config, base: AdminBase, steps: AsyncExitStack) -> DeviceService:
    devices = DeviceService(
        base.store,
        utcnow,
        public_base_url=config.public_base_url,
        server_fingerprint=base.admin_tls.fingerprint if base.admin_tls else "",
        proof_worker=(os.cpu_count() or 1) > 1,  # proof signatures checked off the event loop
    )
    steps.push_async_callback(devices.aclose)  # 4
    return devices


async def _start(config: cfg.Config, environ: Mapping[str, str], steps: AsyncExitStack) -> Gateway:
    modes = Modes.from_specs(config.mode_specs)
    base = open_admin_base(config, environ, steps)  # 1, 2
    store, service, policies, accounts = base.store, base.service, base.policies, base.accounts
    trust_bundle = cfg.upstream_trust_bundle(config.data_dir, config.upstream_ca)
    tls = HotTlsConfig()
    node = steps.enter_context(
        data_plane.ca_node(
            config, service, tls, accounts, base.account_id,
            node_id=uuid.uuid4().hex, name=node_name(config, "gateway"),
        )
    )  # 3  # fmt: skip
    service.subscribe(node.sync)
    accounts.subscribe(node.sync)
    devices = device_service(config, base, steps)  # 4
    requests_file = JsonLinesFile(config.data_dir / "requests.jsonl")
    steps.callback(requests_file.close)  # 5
    metrics = Metrics()
    wireguard = WireGuardService(store, base.sealer, utcnow, config.wireguard)
    tunnels = WireGuardModes(
        wireguard, config.data_dir / "wireguard", partial(modes.set_dynamic, "wireguard")
    )
    peers = WireGuardPeers(tunnels)
    identity = DeviceIdentity(devices, resolvers=[peers, SourceAddresses(devices)])
    tls.account_of = identity.account_of  # each device's leaves from its own account's CA
    enforcer, _ = data_plane.enforcer(
        metrics, identity, service, policies, accounts, base.account_id, changes=(service, policies, accounts)
    )
    request_log = RequestLog(requests_file.write, node_id=node.node_id, ca_fingerprint=tls.ca_fingerprint)
    master = data_plane.build_master(
        config, [*data_plane.build_addons(tls, identity, enforcer, request_log), peers], trust_bundle, modes
    )
    app = create_app(
        api_deps(config, base, devices, metrics, NodeInfo(node.node_id, node_name(config, "gateway")))
    )
    app[WIREGUARD] = wireguard
    await serve_admin(steps, config, app, base.admin_tls)  # 6
    await steps.enter_async_context(RotationDriver(base.rotations).running())  # 6b: drives CA rotations
    requests_file.start()
    running = await data_plane.run_proxy(steps, config, master)  # 7: stops at once, as before
    steps.push_async_callback(tunnels.aclose)
    await tunnels.sync()  # a listener per device tunnel, then one more per enrolled device
    devices.subscribe(tunnels.changed)
    gateway = Gateway(
        config, store, service, master, node, base.account_id, base.boot, devices, base.admin_tls,
        modes, running, steps,
    )  # fmt: skip
    _start_timers(steps, gateway)  # 8
    return gateway


def node_name(config: cfg.Config, what: str) -> str:
    """How ``gateway nodes`` names this process: program, host, pid, listeners."""
    return f"{what} {socket.gethostname()} pid {os.getpid()} {' '.join(config.mode_specs)}"


def api_deps(
    config: cfg.Config, base: AdminBase, devices: DeviceService, metrics: Metrics, node: NodeInfo | None
) -> ApiDeps:
    modes = Modes.from_specs(config.mode_specs)
    return ApiDeps(
        store=base.store,
        certificates=base.service,
        clock=utcnow,
        public_base_url=config.public_base_url,
        node=node,
        policies=base.policies,
        metrics=metrics,
        devices=devices,
        proxy_listen=next(
            (str(cfg.HostPort(*listen_address(m))) for m in modes.of_kind(ModeKind.REGULAR)), ""
        ),
        request_log=config.data_dir / "requests.jsonl",
        accounts=base.accounts,
        rotations=base.rotations,
    )


async def serve_admin(
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


def _start_timers(steps: AsyncExitStack, gateway: Gateway) -> None:
    follower = StoreFollower(
        gateway.store,
        # Every change this plane's node cares about is made in this process and reaches it by the
        # services' subscribers; the follower beats, and says when the store is away.
        on_change=lambda: None,
        heartbeat=gateway.node.heartbeat,
        heartbeat_interval=heartbeat_interval(gateway.config.node_timeout),
    )
    timers = [
        asyncio.create_task(follower.run()),
        asyncio.create_task(
            _every(EXPIRY_CHECK_INTERVAL, lambda: warn_expiring(gateway.store, gateway.service))
        ),
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
    """Run until SIGINT/SIGTERM; 0 on a clean stop (also when stopped while starting).
    (``--workers N`` > 1 runs ``proxy/admin_plane.py`` instead.)"""
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
                warn_expiring(gateway.store, gateway.service)
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


def heartbeat_interval(node_timeout: timedelta) -> timedelta:
    """Three heartbeats within the live window, at most one every 10 s."""
    return min(HEARTBEAT_INTERVAL, node_timeout / 3)


def warn_expiring(store: Store, service: CertificateService) -> None:
    """Every account's certificates near expiry; the in-use one's warning names its rotation."""
    for account in store.accounts.list():
        for cert in service.list(account.id):
            for message in service.expiry_messages([cert]):
                log = logger.error if cert.in_use else logger.warning
                log("account %s: certificate %s: %s", account.id, cert.id, message)
