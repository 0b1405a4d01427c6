"""The health endpoint of a data-plane node (``gateway node --health-listen HOST:PORT``): a
load balancer's check, with no admin API around it.

``GET /healthz`` answers 200 while the node serves, also when its store cannot be reached
(fail static: it serves with what it last loaded, so a load balancer should keep it), with
``{"status": "ok" | "degraded", "database": ..., "node": ID, "in_use": CERTIFICATE ID}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from proxy import config as cfg

logger = logging.getLogger(__name__)

type HealthReport = Callable[[], dict[str, Any]]
HEALTH_REPORT: web.AppKey[HealthReport] = web.AppKey("health_report")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH_REPORT]())


def create_health_app(report: HealthReport) -> web.Application:
    app = web.Application()
    app[HEALTH_REPORT] = report
    app.router.add_get("/healthz", _healthz)
    return app


async def serve_health(steps: AsyncExitStack, listen: cfg.HostPort, report: HealthReport) -> None:
    """Listening for the ``with`` of ``steps``; a port it cannot take is a ConfigError."""
    runner = web.AppRunner(create_health_app(report), handle_signals=False, access_log=None)
    await runner.setup()
    steps.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, listen.host, listen.port)
    try:
        await site.start()
    except OSError as e:
        raise cfg.ConfigError(f"--health-listen {listen}: cannot listen: {e.strerror}") from e
