"""Public, like /healthz: GET /metrics, the process's counters in Prometheus' text format."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.api.errors import NOT_FOUND, ApiError
from proxy.api.state import deps_of

logger = logging.getLogger(__name__)


async def metrics(request: web.Request) -> web.Response:
    registry = deps_of(request).metrics
    if registry is None:
        raise ApiError(404, NOT_FOUND, "no metrics are kept by this server")
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
