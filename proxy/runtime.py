"""The composition root: one process, one event loop, mitmproxy and the admin API side by side."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from mitmproxy import options
from mitmproxy.addons import default_addons
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.master import Master

from addons.enforcement import Enforcer, PolicySnapshot
from addons.hosts import LabHosts
from addons.identity import DeviceIdentity
from addons.inspection import HotTlsConfig
from addons.pages import BlockPage
from addons.request_log import RequestLog
from certs.clock import utcnow
from certs.lifecycle import expiry_message
from policies.yaml_io import PolicyFileError, PolicySet, load_files
from proxy import config as cfg
from proxy.admin_tls import AdminTls, load_admin_tls
from proxy.api.app import ApiDeps, NodeInfo, create_app
from proxy.bootstrap import BootstrapResult, first_start
from proxy.jsonlines import JsonLinesFile
from proxy.metrics import Metrics
from proxy.node import CaNode, IssuerSettings
from proxy.services.certificates import CertificateService, state_of
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.store import Store

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = timedelta(seconds=10)
EXPIRY_CHECK_INTERVAL = timedelta(days=1)


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
    return [*chain, LabHosts(), identity, enforcer, request_log]


def _addon_name(addon: Any) -> str:
    return str(getattr(addon, "name", type(addon).__name__)).lower()


@dataclass
class Gateway:
    """Everything a running gateway holds; built by ``start`` and torn down by ``stop``."""

    config: cfg.Config
    store: Store
    service: CertificateService
    master: Master
    node: CaNode
    runner: web.AppRunner
    account_id: str
    boot: BootstrapResult
    requests_file: JsonLinesFile
    devices: DeviceService
    admin_tls: AdminTls | None = None

    async def stop(self) -> None:
        proxyserver = self.master.addons.get("proxyserver")
        await proxyserver.servers.update([])
        await self.runner.cleanup()
        self.requests_file.close()
        await self.devices.aclose()
        self.node.stop()
        self.store.close()


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


async def start(config: cfg.Config, environ: dict[str, str]) -> Gateway:
    cfg.prepare_data_dir(config.data_dir)
    sealer = cfg.load_master_key(config.data_dir, environ)
    admin_tls = load_admin_tls(config, sealer)
    trust_bundle = cfg.upstream_trust_bundle(config.data_dir, config.upstream_ca)
    store = Store.open(config.database_path)
    service = CertificateService(store, sealer, utcnow)
    boot = first_start(store, service, admin_token_env=environ.get(cfg.ADMIN_TOKEN_ENV), clock=utcnow)
    account_id = boot.account_id
    try:
        policies = PolicyService(store, utcnow, files=load_policy_files(config.policy_paths))
    except BaseException:
        store.close()
        raise
    metrics = Metrics()
    node_id = uuid.uuid4().hex

    devices = DeviceService(
        store,
        utcnow,
        public_base_url=config.public_base_url,
        server_fingerprint=admin_tls.fingerprint if admin_tls else "",
        proof_worker=(os.cpu_count() or 1) > 1,  # proof signatures checked off the event loop
    )
    tls = HotTlsConfig()
    identity = DeviceIdentity(devices)
    enforcer = Enforcer(metrics, identity_of=identity.identity_of)
    requests_file = JsonLinesFile(config.data_dir / "requests.jsonl")
    request_log = RequestLog(requests_file.write, node_id=node_id, ca_fingerprint=tls.ca_fingerprint)
    master = build_master(config, build_addons(tls, identity, enforcer, request_log), trust_bundle)

    node = CaNode(
        service,
        tls,
        account_id=account_id,
        node_id=node_id,
        settings=IssuerSettings(
            public_base_url=config.public_base_url,
            lifetime=config.leaf_lifetime,
            cache_size=config.leaf_cache_size,
        ),
    )
    node.start(f"gateway {socket.gethostname()} {config.proxy_listen}")
    service.subscribe(node.sync)
    sync = PolicySync(enforcer, service, policies, account_id)
    sync.refresh()
    service.subscribe(sync.refresh)
    policies.subscribe(sync.refresh)

    app = create_app(
        ApiDeps(
            store=store,
            certificates=service,
            clock=utcnow,
            public_base_url=config.public_base_url,
            node=NodeInfo(node_id, f"gateway {config.proxy_listen}"),
            policies=policies,
            metrics=metrics,
            devices=devices,
        )
    )
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.admin_listen.host,
        config.admin_listen.port,
        ssl_context=admin_tls.context if admin_tls else None,
    )
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        requests_file.close()
        node.stop()
        store.close()
        raise cfg.ConfigError(f"--admin-listen {config.admin_listen}: cannot listen: {e.strerror}") from e
    requests_file.start()
    return Gateway(
        config, store, service, master, node, runner, account_id, boot, requests_file, devices, admin_tls
    )


def build_master(config: cfg.Config, addons: Sequence[Any], trust_bundle: Path | None) -> Master:
    """mitmproxy's master on the running loop, with our addons and options."""
    config.mitmproxy_dir.mkdir(parents=True, exist_ok=True)
    opts = options.Options(
        listen_host=config.proxy_listen.host,
        listen_port=config.proxy_listen.port,
        confdir=str(config.mitmproxy_dir),
    )
    master = Master(opts, with_termlog=False)
    master.addons.add(*addons)
    opts.update(
        connection_strategy="eager",  # upstream TLS first: sniff its names, verify it, block page
        onboarding=False,  # mitm.it would serve mitmproxy's confdir CA, not ours
        ssl_verify_upstream_trusted_ca=str(trust_bundle) if trust_bundle else None,
        gateway_hosts=str(config.hosts_file or ""),
        gateway_require_identity=config.require_device,
    )
    return master


class PolicySync:
    """Keeps the enforcer's snapshot (engines, tls_decrypt, block page) in step with the store."""

    def __init__(
        self, enforcer: Enforcer, certificates: CertificateService, policies: PolicyService, account_id: str
    ) -> None:
        self._enforcer = enforcer
        self._certificates = certificates
        self._policies = policies
        self._account_id = account_id

    def refresh(self) -> None:
        settings = self._certificates.configuration(self._account_id).settings
        block_page = settings.get("block_page")
        self._enforcer.use(
            PolicySnapshot(
                engines=self._policies.engines(self._account_id),
                tls_decrypt=self._certificates.tls_decrypt_enabled(self._account_id),
                block_page=BlockPage.from_settings(block_page if isinstance(block_page, dict) else None),
            )
        )


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


async def serve(config: cfg.Config, environ: dict[str, str]) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop (also when stopped while starting)."""
    os.umask(0o077)  # every file this process creates is its owner's only
    gateway = await start(config, environ)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        gateway.master.shutdown()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    run = asyncio.create_task(gateway.master.run())
    timers: list[asyncio.Task[None]] = []
    try:
        if await _wait_listening(gateway, run, stopping):
            print(banner(gateway), flush=True)
            warn_expiring(gateway)
            timers = [
                asyncio.create_task(_every(HEARTBEAT_INTERVAL, gateway.node.sync)),
                asyncio.create_task(_every(EXPIRY_CHECK_INTERVAL, lambda: warn_expiring(gateway))),
            ]
        await run
    finally:
        for timer in timers:
            timer.cancel()
        await gateway.stop()
        logger.info("stopped")
    return 0


async def _wait_listening(gateway: Gateway, run: asyncio.Task[None], stopping: asyncio.Event) -> bool:
    """True once the proxy listens; False when a signal asked to stop first."""
    proxyserver = gateway.master.addons.get("proxyserver")
    for _ in range(200):
        if proxyserver.listen_addrs() or run.done() or stopping.is_set():
            break
        await asyncio.sleep(0.025)
    if stopping.is_set():
        return False
    if run.done() or not proxyserver.listen_addrs():
        gateway.master.shutdown()
        raise cfg.ConfigError(
            f"--proxy-listen {gateway.config.proxy_listen}: the proxy could not listen (see log)"
        )
    return True


async def _every(interval: timedelta, job: Any) -> None:
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            job()
        except Exception:  # a timer must not die: log and try again next time
            logger.exception("periodic job %s failed", getattr(job, "__name__", job))


def warn_expiring(gateway: Gateway) -> None:
    now = utcnow()
    for cert in gateway.service.list(gateway.account_id):
        message = expiry_message(state_of(cert), now)
        if message:
            (logger.error if cert.in_use else logger.warning)("certificate %s: %s", cert.id, message)


def banner(gateway: Gateway) -> str:
    config = gateway.config
    proxy_url = config.proxy_listen.url()
    admin = config.admin_url
    ca_url = f"{config.public_base_url}/pki/ca.pem"
    lines: Sequence[str] = [
        "Gateway is running",
        f"  proxy        {proxy_url}   (explicit HTTP proxy; HTTPS is intercepted)",
        f"  admin API    {admin}/client/v4   (account {gateway.account_id})",
    ]
    curl = "curl"
    if gateway.admin_tls:
        lines = [*lines, f"  admin TLS    SHA-256 {gateway.admin_tls.fingerprint}   (agents pin it)"]
        if config.admin_tls_auto:
            cacert = gateway.admin_tls.certificate_file
            curl = f"curl --cacert {cacert}"
            lines = [*lines, f"               self-signed: trust it with --cacert {cacert}"]
    if gateway.boot.new_admin_token:
        lines = [
            *lines,
            f"  admin token  {gateway.boot.new_admin_token}",
            "               shown once: keep it now (only its hash is stored; or set GATEWAY_ADMIN_TOKEN)",
        ]
    in_use = gateway.node.in_use_id
    lines = [
        *lines,
        f"  root CA      {ca_url}   (in use: {in_use or 'none'})",
        "Trust the root CA on clients:",
        f"  {curl} -o gateway-ca.pem {ca_url}",
        f"  curl -x {proxy_url} --cacert gateway-ca.pem https://example.com/",
        '  certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "Gateway root CA" -i gateway-ca.pem   # Chromium, Firefox (NSS)',
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)
