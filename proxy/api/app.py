"""The admin API application factory (model: aiohttp-demos "polls": main / routes / views)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api import offload
from proxy.api.middleware import authenticate, envelope_errors
from proxy.api.routes import setup_routes
from proxy.api.state import ACCOUNTS, CRLS, DEPS, ApiDeps, NodeInfo
from proxy.dashboard.cross_site import refuse_cross_site
from proxy.dashboard.routes import setup_dashboard
from proxy.services.accounts import AccountService
from proxy.services.crl import CrlCache

logger = logging.getLogger(__name__)

__all__ = ["MAX_BODY_BYTES", "ApiDeps", "NodeInfo", "create_app"]

MAX_BODY_BYTES = 1024 * 1024  # larger bodies: 413


def create_app(deps: ApiDeps) -> web.Application:
    """The admin API: ``/client/v4/...`` (bearer token), ``/healthz`` and ``/pki/...`` (public),
    and the dashboard at ``/`` (public page; its data comes from the API with the token)."""
    app = web.Application(
        middlewares=[envelope_errors, refuse_cross_site, authenticate], client_max_size=MAX_BODY_BYTES
    )
    app[DEPS] = deps
    app[CRLS] = CrlCache(deps.certificates, deps.clock)
    app[ACCOUNTS] = deps.accounts or _accounts(deps)
    offload.install(app)  # the admin thread for heavy work (proxy/services/offload.py)
    setup_routes(app)
    setup_dashboard(app)
    return app


def _accounts(deps: ApiDeps) -> AccountService:
    """Without ``deps.accounts``: a service over the store whose default is the first account."""
    first = deps.store.accounts.list()
    default = first[0].id if first else ""
    return AccountService(deps.store, deps.certificates, deps.clock, default_account_id=default)
