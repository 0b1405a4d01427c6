"""Public, like /healthz: GET /metrics, the process's counters in Prometheus' text format
(with workers, the gateway's: this process's and every worker's, ``proxy/metrics.py``)."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.api.errors import NOT_FOUND, ApiError
from proxy.api.state import deps_of

logger = logging.getLogger(__name__)


async def metrics(request: web.Request) -> web.Response:
    deps = deps_of(request)
    if deps.metrics is None:
        raise ApiError(404, NOT_FOUND, "no metrics are kept by this server")
    workers = await deps.worker_counters() if deps.worker_counters is not None else None
    body = deps.metrics.exposition(workers)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
