"""``gateway node``: a data-plane process alone (no admin API), on a store an admin plane owns.

A node signs, enforces and logs like ``gateway run``'s proxy; it registers in the store,
heartbeats, loads the deployable CAs and reports them, and follows what other processes change
(``proxy/follower.py``: the store's data version every 50 ms). It never migrates the store and
never makes an account, a CA or a token: that is the admin plane's work (``gateway run``). The
workers of ``gateway run --workers N`` are nodes too, started with a control channel on their
stdin/stdout (``proxy/workers.py``).

Start-up steps, each undone in reverse by the same ``AsyncExitStack``:

  1. the store (at this code's schema version)      close (last of all)
  2. this node, live in the store with its CAs       leave the store's live-node list
  3. the device service (lookups for the proxy)      close
  4. the request log                                 flush and close
  5. the health endpoint (``--health-listen``)       stop it
  6. the proxy listening                             stop listening, drain, stop the master
  7. following the store; the control channel        cancel (first of all)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.identity import DeviceIdentity, SourceAddresses
from addons.inspection import HotTlsConfig
from addons.request_log import RequestLog
from certs.clock import utcnow
from proxy import config as cfg
from proxy import data_plane, gc_settings, reuse_port
from proxy.account_nodes import default_account
from proxy.follower import StoreFollower
from proxy.health import serve_health
from proxy.jsonlines import JsonLinesFile
from proxy.metrics import Metrics, samples_to_json
from proxy.runtime import heartbeat_interval, load_policy_files, node_name
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.store import Store
from proxy.store.locator import Backend, locate
from proxy.worker_control import ControlChannel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeOptions:
    config: cfg.Config  # data directory, modes, leaves, hosts, --public-url, --node-timeout
    database: str  # the store the admin plane made: a SQLite file or a postgresql:// URL
    node_id: str | None = None  # --node-id: stable across restarts; None: a new one per start
    health_listen: cfg.HostPort | None = None
    reuse_port: bool = False  # a worker of gateway run --workers N: share the listeners
    control: bool = False  # a worker: "sync N" on stdin, "ack N" / "ready" on stdout
    what: str = "node"  # how gateway nodes names it ("node", "worker 2")


@dataclass
class RunningNode:
    options: NodeOptions
    node_id: str
    follower: StoreFollower
    metrics: Metrics
    master_run: asyncio.Task[None]
    teardown: AsyncExitStack


def _open_store(options: NodeOptions, steps: AsyncExitStack) -> Store:
    where = locate(options.database)
    if where.backend is Backend.SQLITE and not Path(where.target).is_file():
        raise cfg.ConfigError(
            f"no gateway store at {options.database}: a node joins a gateway's store; start the "
            "admin plane (gateway run --data-dir DIR) once first, then give the node the same "
            "--data-dir (or --database)"
        )
    return steps.enter_context(closing(Store.open(options.database, migrations=False)))


def _master_key(options: NodeOptions, environ: Mapping[str, str]) -> Any:
    data_dir = options.config.data_dir
    if not environ.get(cfg.MASTER_KEY_ENV) and not (data_dir / "master.key").is_file():
        raise cfg.ConfigError(
            f"no master key: set {cfg.MASTER_KEY_ENV} to the admin plane's key, or give the "
            f"--data-dir that holds master.key (not found in {data_dir})"
        )
    return cfg.load_master_key(data_dir, dict(environ))


async def start_node(options: NodeOptions, environ: Mapping[str, str]) -> RunningNode:
    steps = AsyncExitStack()
    try:
        return await _start(options, environ, steps)
    except BaseException:
        await steps.aclose()
        raise


async def _start(options: NodeOptions, environ: Mapping[str, str], steps: AsyncExitStack) -> RunningNode:
    config = options.config
    if options.reuse_port:
        reuse_port.enable()
    store = _open_store(options, steps)  # 1
    sealer = _master_key(options, environ)
    if not store.accounts.list():
        raise cfg.ConfigError(
            f"the store at {locate(options.database).display} has no account yet: start gateway run first"
        )
    account_id = default_account(store.accounts.list(), config.default_account).id
    service = CertificateService(
        store, sealer, utcnow, live_node_window=config.node_timeout, live_clock=store.now
    )
    node_id = options.node_id or uuid.uuid4().hex
    # (A restarted worker takes over its predecessor's id: the parent knows that one is gone.)
    if options.node_id and not options.control and service.node_is_live(node_id):
        raise cfg.ConfigError(
            f"--node-id {node_id}: a node with this id is live in the store (heartbeat within "
            f"{config.node_timeout.total_seconds():g} s): give each node its own id, or wait until "
            "the other one has stopped or timed out"
        )
    policies = PolicyService(store, utcnow, files=load_policy_files(config.policy_paths))
    tls = HotTlsConfig()
    name = node_name(config, options.what)
    node = steps.enter_context(
        data_plane.ca_node(config, service, tls, store.accounts, account_id, node_id=node_id, name=name)
    )  # 2
    devices = DeviceService(store, utcnow, public_base_url=config.public_base_url)
    steps.push_async_callback(devices.aclose)  # 3
    requests_file = JsonLinesFile(config.data_dir / "requests.jsonl")
    steps.callback(requests_file.close)  # 4
    metrics = Metrics()
    identity = DeviceIdentity(devices, resolvers=[SourceAddresses(devices)])
    tls.account_of = identity.account_of  # each device's leaves from its own account's CA
    enforcer, policy_sync = data_plane.enforcer(
        metrics, identity, service, policies, store.accounts, account_id, changes=(policies,)
    )
    request_log = RequestLog(requests_file.write, node_id=node_id, ca_fingerprint=tls.ca_fingerprint)
    trust_bundle = cfg.upstream_trust_bundle(
        config.data_dir, config.upstream_ca, name=f"upstream-trust.{os.getpid()}.pem"
    )
    if trust_bundle is not None:
        steps.callback(trust_bundle.unlink, missing_ok=True)
    master = data_plane.build_master(
        config, data_plane.build_addons(tls, identity, enforcer, request_log), trust_bundle
    )
    follower = StoreFollower(
        store,
        on_change=data_plane.Following(store, node, policies, policy_sync, devices),
        heartbeat=node.heartbeat,
        heartbeat_interval=heartbeat_interval(config.node_timeout),
    )

    def report() -> dict[str, Any]:
        return {**follower.health().to_json(), "node": node_id, "in_use": node.in_use_id, "pid": os.getpid()}

    if options.health_listen is not None:
        await serve_health(steps, options.health_listen, report)  # 5
    requests_file.start()
    running = await data_plane.run_proxy(steps, config, master, drain=data_plane.DRAIN_TIMEOUT)  # 6
    following = asyncio.create_task(follower.run())  # 7

    async def stop_following() -> None:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

    steps.push_async_callback(stop_following)
    logger.info(
        "%s %s serving (%s); store %s",
        options.what,
        node_id,
        " ".join(config.mode_specs),
        locate(options.database).display,
    )
    return RunningNode(options, node_id, follower, metrics, running, steps)


async def serve_node(options: NodeOptions, environ: Mapping[str, str]) -> int:
    """Run until SIGINT/SIGTERM (or, for a worker, until its parent closes the control channel)."""
    os.umask(0o077)
    sys.setswitchinterval(0.001)
    gc_settings.tune()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    running = await start_node(options, environ)
    channel: ControlChannel | None = None
    try:
        gc_settings.freeze_startup_heap()
        if options.control:
            metrics = running.metrics
            channel = await ControlChannel.open(
                running.follower.check,
                on_closed=stopping.set,
                counters=lambda: samples_to_json(metrics.samples()),
            )
            channel.send("ready " + running.node_id)
            tell = channel.send  # the admin plane's /healthz shows each worker's
            running.follower.on_health = lambda health: tell("health " + json.dumps(health.to_json()))
        else:
            print(
                f"gateway node {running.node_id} serving: {' '.join(options.config.mode_specs)}", flush=True
            )
        stopped = asyncio.create_task(stopping.wait())
        await asyncio.wait({running.master_run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        if channel is not None:
            channel.close()
        await running.teardown.aclose()
        logger.info("%s %s stopped", options.what, running.node_id)
    return 0
