"""The two middlewares: errors → Cloudflare envelope with the right status, and bearer auth."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from certs.errors import CertError, InvalidCertificate, LifecycleError, LimitExceeded
from proxy.api import errors
from proxy.api.envelope import failure
from proxy.api.errors import ApiError
from proxy.api.state import DEPS, TOKEN
from proxy.services import accounts
from proxy.services.errors import Conflict, InvalidInput, NotFound, Refused, ServiceError
from proxy.store.database import StoreUnavailable

logger = logging.getLogger(__name__)

API_PREFIX = "/client/v4"
PUBLIC_API_PATHS = frozenset({f"{API_PREFIX}/openapi.json"})
AGENT_PREFIX = f"{API_PREFIX}/agent/"  # device credentials, checked by proxy/api/agent.py

RETRY_AFTER_SECONDS = 2  # the store tries to reconnect at most once a second

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as the error envelope; never a 500 for bad input."""
    try:
        return await handler(request)
    except ApiError as e:
        return failure(e.status, e.code, e.message, e.headers)
    except (CertError, ServiceError) as e:
        mapped = domain_error(e, request.app[DEPS].clock())
        return failure(mapped.status, mapped.code, mapped.message, mapped.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _http_error(request, e)
    except StoreUnavailable as e:  # the database is away: say so, and when to try again
        logger.warning("%s %s: %s", request.method, request.path, e)
        return failure(503, errors.STORE_UNAVAILABLE, str(e), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    except Exception:
        logger.exception("internal error in %s %s", request.method, request.path)
        return failure(500, errors.INTERNAL, "internal error: the gateway logged the details")


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return failure(413, errors.TOO_LARGE, "request body is larger than 1 MiB (1048576 bytes)")
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return failure(
            405,
            errors.METHOD_NOT_ALLOWED,
            f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
            {"Allow": allowed},
        )
    if isinstance(e, web.HTTPNotFound):
        return failure(404, errors.NO_ROUTE, f"no route for {request.method} {request.path}")
    return failure(e.status, e.status, e.reason)


def domain_error(e: CertError | ServiceError, now: datetime) -> ApiError:
    """The HTTP form of a domain refusal (the message is the domain's own)."""
    message = str(e)
    if isinstance(e, LimitExceeded):
        if e.retry_after is None:
            return ApiError(400, errors.LIMIT_REACHED, message)
        wait = max(1, math.ceil((e.retry_after - now).total_seconds()))
        headers = {"Retry-After": str(wait), "x-should-retry": "false"}
        return ApiError(429, errors.RATE_LIMITED, message, headers=headers)
    if isinstance(e, NotFound):
        return ApiError(404, errors.NOT_FOUND, message)
    if isinstance(e, InvalidInput):
        return ApiError(400, errors.INVALID_FIELD, message)
    if isinstance(e, InvalidCertificate):
        return ApiError(400, errors.INVALID_CERTIFICATE, message)
    if isinstance(e, Conflict):
        return ApiError(409, errors.CONFLICT, message, headers={"x-should-retry": "false"})
    if isinstance(e, (LifecycleError, Refused)):
        return ApiError(400, errors.REFUSED, message)
    return ApiError(400, errors.REFUSED, message)


def _needs_token(request: web.Request) -> bool:
    if request.path in PUBLIC_API_PATHS:
        return False
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    if request.path.startswith(AGENT_PREFIX):  # device credentials, unless it matched elsewhere
        return bool(canonical) and not canonical.startswith(AGENT_PREFIX)
    return any(p == API_PREFIX or p.startswith(API_PREFIX + "/") for p in (request.path, canonical))


def _presented_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if not header:
        raise ApiError(
            401,
            errors.AUTHENTICATION,
            "missing Authorization header: send 'Authorization: Bearer <token>'",
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, errors.AUTHENTICATION, "Authorization header must be 'Bearer <token>'")
    return token.strip()


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token on everything under /client/v4 (but the OpenAPI document and the agent's
    paths, which take device credentials); account scope."""
    if not _needs_token(request):
        return await handler(request)
    store = request.app[DEPS].store
    token = accounts.authenticate(store, _presented_token(request))
    if token is None:
        logger.info("refused an API token from %s for %s %s", request.remote, request.method, request.path)
        raise ApiError(
            401,
            errors.AUTHENTICATION,
            "invalid API token (unknown, revoked, or made for an account that was deleted)",
        )
    request[TOKEN] = token
    account_id = request.match_info.get("account_id")
    if account_id is not None:
        if not accounts.may_use(token, account_id):
            raise ApiError(
                403,
                errors.FORBIDDEN,
                f"this token is scoped to account {token.account_id}: it may not act on account "
                f"{account_id!r} (use a token of that account, or one for every account)",
            )
        if store.accounts.get(account_id) is None:
            raise ApiError(404, errors.UNKNOWN_ACCOUNT, f"no account with id {account_id!r}")
    return await handler(request)
