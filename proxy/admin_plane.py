"""``gateway run --workers N`` (N > 1): this process is the admin plane alone, and N workers
(``proxy/workers.py``) are the data plane.

The admin plane does what happens once per gateway: migrations and first start (steps 1-2 of
``proxy/runtime.py``), the device service (agents' enrollment and posture), the admin API, the
daily expiry warnings. It does not proxy and is not a node: no certificate waits for it.

After an admin API call that changed something (a certificate, a setting, a rule, a device or
its posture: the services' subscribers mark it), the call answers only once every worker has
followed the change (``Workers.sync``), so the next handshake on any worker sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import timedelta

from aiohttp import web
from aiohttp.typedefs import Middleware

from certs.clock import utcnow
from proxy import config as cfg
from proxy import gc_settings
from proxy.api.app import create_app
from proxy.api.wireguard import WIREGUARD
from proxy.banner import banner
from proxy.metrics import Metrics
from proxy.modes import Modes
from proxy.runtime import (
    EXPIRY_CHECK_INTERVAL,
    api_deps,
    device_service,
    open_admin_base,
    serve_admin,
    warn_expiring,
)
from proxy.services.rotation_driver import RotationDriver
from proxy.services.wireguard import WireGuardService
from proxy.worker_launch import check_listeners
from proxy.workers import Workers, dirty_tracker

logger = logging.getLogger(__name__)

READS = frozenset({"GET", "HEAD", "OPTIONS"})

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sync_middleware(changes: Callable[[], int], sync: Callable[[], Awaitable[bool]]) -> Middleware:
    """An API call that changed something answers once every worker followed the change."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in READS:
            return await handler(request)
        before = changes()
        try:
            return await handler(request)
        finally:
            if changes() != before:
                await sync()

    return middleware


def health_middleware(workers: Callable[[], dict[str, object]]) -> Middleware:
    """``GET /healthz`` says how the workers are, besides the admin API answering."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" or request.method != "GET":
            return await handler(request)
        await handler(request)  # the admin API's own check
        state = workers()
        return web.json_response(state, status=503 if state.get("status") == "down" else 200)

    return middleware


async def serve(config: cfg.Config, environ: Mapping[str, str]) -> int:
    """Run the admin plane and its workers until SIGINT/SIGTERM; 0 on a clean stop."""
    os.umask(0o077)
    sys.setswitchinterval(0.001)
    gc_settings.tune()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    steps = AsyncExitStack()
    try:
        await _start(config, environ, steps, stopping)
        if not stopping.is_set():
            await stopping.wait()
    finally:
        await steps.aclose()
        logger.info("stopped")
    return 0


async def _start(
    config: cfg.Config, environ: Mapping[str, str], steps: AsyncExitStack, stopping: asyncio.Event
) -> None:
    Modes.from_specs(config.mode_specs)
    check_listeners(config)
    base = open_admin_base(config, environ, steps)  # 1, 2
    devices = device_service(config, base, steps)  # 4
    bump, changes = dirty_tracker()
    for service in (base.service, base.policies, base.accounts, base.rotations, devices):
        service.subscribe(bump)
    workers = Workers(config, config.workers, env=dict(os.environ))
    deps = dataclasses.replace(
        api_deps(config, base, devices, Metrics(), None), worker_counters=workers.counters
    )
    app = create_app(deps)
    app[WIREGUARD] = WireGuardService(base.store, base.sealer, utcnow, config.wireguard)
    app.middlewares.append(sync_middleware(changes, workers.sync))
    app.middlewares.append(health_middleware(workers.health))
    await serve_admin(steps, config, app, base.admin_tls)  # 6
    await steps.enter_async_context(RotationDriver(base.rotations).running())  # 6b: once per gateway
    _prepare_confdir(config)
    steps.push_async_callback(workers.stop)  # 7: SIGTERM to every worker, first of all
    starting = asyncio.create_task(workers.start())
    stopped = asyncio.create_task(stopping.wait())
    await asyncio.wait({starting, stopped}, return_when="FIRST_COMPLETED")
    stopped.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return
    starting.result()
    account_id = base.account_id
    in_use = base.service.in_use(account_id)
    print(
        banner(
            config,
            account_id=account_id,
            admin_tls=base.admin_tls,
            new_admin_token=base.boot.new_admin_token,
            in_use_id=in_use.id if in_use else None,
        ),
        flush=True,
    )
    warn_expiring(base.store, base.service)
    timer = asyncio.create_task(
        _daily(lambda: warn_expiring(base.store, base.service), EXPIRY_CHECK_INTERVAL)
    )

    async def cancel() -> None:
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)

    steps.push_async_callback(cancel)


def _prepare_confdir(config: cfg.Config) -> None:
    """mitmproxy writes its DH parameters file on first start if missing: write it once here,
    so that workers starting together never read a half-written one."""
    from mitmproxy.certs import DEFAULT_DHPARAM

    config.mitmproxy_dir.mkdir(parents=True, exist_ok=True)
    path = config.mitmproxy_dir / "mitmproxy-dhparam.pem"
    if not path.exists():
        cfg.write_private(path, DEFAULT_DHPARAM)


async def _daily(job: Callable[[], None], interval: timedelta) -> None:
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            job()
        except Exception:
            logger.exception("periodic job failed")
