"""The admin API's side of ``proxy.services.offload``: the app's one :class:`Offload` (made and
closed with the app) and the mapping of :class:`Overloaded` to a 503 with Retry-After."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.api.state import DEPS
from proxy.services.offload import Offload, Overloaded, Ticket

logger = logging.getLogger(__name__)

BUSY = 1009  # error code: the admin API is busy (503)
OFFLOAD = web.AppKey("offload", Offload)


def install(app: web.Application) -> None:
    """Give ``app`` its admin thread (started on first use), closed with the app."""
    app[OFFLOAD] = Offload()
    app.cleanup_ctx.append(_closing)


async def _closing(app: web.Application) -> AsyncIterator[None]:
    """On cleanup: the admin thread, then the policy service's connection that thread used."""
    yield
    app[OFFLOAD].close()
    policies = app[DEPS].policies
    if policies is not None:
        policies.close()


def offload_of(request: web.Request) -> Offload:
    return request.app[OFFLOAD]


def busy(e: Overloaded) -> ApiError:
    headers = {"Retry-After": str(e.retry_after)}
    return ApiError(503, BUSY, str(e), headers=headers)


async def offloaded[T](request: web.Request, work: Callable[[Ticket], T]) -> T:
    """``work(ticket)`` in the admin thread; 503 with Retry-After when busy or over budget."""
    return await calling(request, lambda offload: offload.run(work))


async def calling[T](request: web.Request, call: Callable[[Offload], Awaitable[T]]) -> T:
    """``call(offload)`` (a service method that offloads its heavy part); 503 with Retry-After
    when busy or over budget."""
    try:
        return await call(offload_of(request))
    except Overloaded as e:
        raise busy(e) from None
