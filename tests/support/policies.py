"""The policy lab: the admin API with a PolicyService (and policy files), over TestClient or, for
the official SDK, a real loopback socket."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cloudflare import AsyncCloudflare

from policies.yaml_io import load
from proxy.api import ApiDeps, create_app
from proxy.metrics import Metrics
from proxy.services.policies import PolicyService
from tests.support import server
from tests.support.server import Gateway, Reply, call

FILE = "corp/files.yaml"
FILES = """\
gateway_rules:
  - id: file-rule-1
    name: Block gambling (file)
    precedence: 10
    action: block
    traffic: any(http.request.domains[*] == "bets.example")
access_policies:
  - id: file-policy-1
    name: Everyone (file)
    decision: allow
    include: [{everyone: {}}]
access_applications:
  - id: file-app-1
    name: Wiki (file)
    domain: wiki.example
    policies: [file-policy-1]
"""


def deps_with_policies(
    gateway: Gateway, *, files: str | None = FILES, metrics: Metrics | None = None
) -> tuple[ApiDeps, PolicyService]:
    policy_files = load(files, file=FILE) if files is not None else None
    service = PolicyService(gateway.store, gateway.clock, files=policy_files)
    return dataclasses.replace(gateway.api(), policies=service, metrics=metrics), service


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    gateway: Gateway
    service: PolicyService

    def path(self, suffix: str) -> str:
        return f"/client/v4/accounts/{self.gateway.account_id}/{suffix}"

    async def __call__(
        self, method: str, suffix: str, *, json: Any = None, data: str | bytes | None = None
    ) -> Reply:
        return await call(
            self.client, method, self.path(suffix), token=self.gateway.token, json=json, data=data
        )


@asynccontextmanager
async def api_for(gateway: Gateway, **options: Any) -> AsyncIterator[Api]:
    deps, service = deps_with_policies(gateway, **options)
    async with TestClient(TestServer(create_app(deps))) as client:
        yield Api(client, gateway, service)


@asynccontextmanager
async def sdk_for(gateway: Gateway, **options: Any) -> AsyncIterator[AsyncCloudflare]:
    """The official SDK against the real app, with a PolicyService, on a loopback TCP socket."""
    deps, _ = deps_with_policies(gateway, **options)
    async with server.sdk_for(deps, gateway.token) as client:
        yield client
