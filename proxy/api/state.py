"""What the admin API's handlers share: dependencies and the aiohttp state keys."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from certs.clock import Clock
from proxy.api.errors import NOT_FOUND, ApiError
from proxy.metrics import Metrics, WorkerCounters
from proxy.services.accounts import AccountService
from proxy.services.certificates import CertificateService
from proxy.services.crl import CrlCache
from proxy.services.devices import DeviceService
from proxy.services.policies import PolicyService
from proxy.services.rotations import RotationService
from proxy.store import ApiToken, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeInfo:
    """The node serving this API (marked ``current`` in the nodes list)."""

    id: str
    name: str


@dataclass(frozen=True)
class ApiDeps:
    store: Store
    certificates: CertificateService
    clock: Clock
    public_base_url: str
    node: NodeInfo | None = None
    policies: PolicyService | None = None  # None: the policy endpoints answer 404
    metrics: Metrics | None = None  # None: GET /metrics answers 404
    devices: DeviceService | None = None  # None: device, posture and agent endpoints answer 404
    # The explicit proxy's listen address (HOST:PORT) that GET /proxy.pac names; "": the public
    # URL's host, port 8080
    proxy_listen: str = ""
    # The proxy's request log (DATA_DIR/requests.jsonl) that GET .../gateway/requests reads;
    # None: that endpoint answers 404
    request_log: Path | None = None
    # Accounts made and deleted through the API; None: one is made over the store, whose
    # default account is the first one (tests; `gateway run` gives its own, with --default-account)
    accounts: AccountService | None = None
    rotations: RotationService | None = None  # None: the CA rotation endpoints answer 404
    # gateway run --workers N: the workers' counters, which GET /metrics adds to this process's
    worker_counters: Callable[[], Awaitable[WorkerCounters]] | None = None


DEPS = web.AppKey("deps", ApiDeps)
CRLS = web.AppKey("crls", CrlCache)
TOKEN = web.RequestKey("token", ApiToken)
ACCOUNTS = web.AppKey("accounts", AccountService)


def deps_of(request: web.Request) -> ApiDeps:
    return request.app[DEPS]


def account_of(request: web.Request) -> str:
    """The ``{account_id}`` of the path (the middleware checked the token may use it)."""
    return request.match_info["account_id"]


def policies_of(request: web.Request) -> PolicyService:
    service = deps_of(request).policies
    if service is None:
        raise ApiError(404, NOT_FOUND, "Gateway rules and Access policies are not enabled here")
    return service


def devices_of(request: web.Request) -> DeviceService:
    service = deps_of(request).devices
    if service is None:
        raise ApiError(404, NOT_FOUND, "devices and device posture are not enabled here")
    return service


def rotations_of(request: web.Request) -> RotationService:
    service = deps_of(request).rotations
    if service is None:
        raise ApiError(404, NOT_FOUND, "CA rotations are not enabled here")
    return service
