"""Browsers on other sites get nothing from the admin API.

The API's only credential is the bearer token, which a page sends from JavaScript (never a
cookie), so a cross-site form or script cannot make an authenticated request: there is nothing for
the browser to attach. This middleware makes the refusal explicit anyway. A request under
``/client/v4`` that a browser marks as coming from another site (``Sec-Fetch-Site: cross-site`` or
``same-site``), or, from a browser without Fetch Metadata, whose ``Origin`` is not this server, is
refused with 403 before the token is looked at; CORS preflights (``OPTIONS``) are refused the same
way, and no ``Access-Control-Allow-*`` header is ever sent. Clients that are not browsers (the
SDK, curl, the agent) send neither header and are not affected."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.api import errors
from proxy.api.errors import ApiError

logger = logging.getLogger(__name__)

API_PREFIX = "/client/v4"
FOREIGN_SITES = frozenset({"cross-site", "same-site"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def foreign_origin(request: web.Request) -> str | None:
    """Why ``request`` comes from a page of another origin, or None."""
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    if site:
        return f"Sec-Fetch-Site: {site}" if site in FOREIGN_SITES else None
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"Origin: {origin}"
    return None


@web.middleware
async def refuse_cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/"):
        why = foreign_origin(request) or ("a CORS preflight" if request.method == "OPTIONS" else None)
        if why is not None:
            logger.info("refused %s %s from %s: %s", request.method, request.path, request.remote, why)
            raise ApiError(
                403,
                errors.FORBIDDEN,
                f"cross-origin browser requests are refused ({why}): use the dashboard on this "
                "server, or a client that is not a browser",
            )
    return await handler(request)
