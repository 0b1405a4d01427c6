"""The gateway in process: a first-started store and certificate service on the test clock, one
request to its admin API (``call`` -> ``Reply``), the app on a loopback socket for real clients
(``serving``), the official Cloudflare SDK against it (``sdk_for``) and the server the device agent
talks to over HTTP or HTTPS (``agent_server``)."""

from __future__ import annotations

import dataclasses
import io
import json as _json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from cloudflare import AsyncCloudflare

from proxy.api import ApiDeps, create_app
from proxy.services.certificates import CertificateService
from proxy.services.devices import DeviceService
from proxy.store import Store
from tests.support.clock import FakeClock
from tests.support.pki import fingerprint, self_signed_server

Client = TestClient[web.Request, web.Application]


@dataclass
class Gateway:
    """A first-started gateway: one account, its CA in use, an admin token."""

    store: Store
    service: CertificateService
    clock: FakeClock
    account_id: str
    token: str
    initial_ca_id: str

    def api(self) -> ApiDeps:
        return ApiDeps(
            store=self.store,
            certificates=self.service,
            clock=self.clock,
            public_base_url="http://127.0.0.1:8081",
        )


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def result(self) -> Any:
        return self.body["result"]

    @property
    def error(self) -> str:
        (error,) = self.body["errors"]
        return str(error["message"])


async def call(
    client: Client,
    method: str,
    path: str,
    *,
    token: str | None,
    json: Any = None,
    data: str | bytes | None = None,
) -> Reply:
    """One request to the API; the answer must be an envelope in JSON, whatever the status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if json is not None:
        data = _json.dumps(json)
    if data is not None or method in ("POST", "PUT", "PATCH", "DELETE"):
        headers["Content-Type"] = "application/json"
    payload: Any = data
    if isinstance(data, str):
        payload = data.encode()
    if payload is not None and len(payload) > 1024 * 1024:
        payload = io.BytesIO(payload)  # aiohttp warns about large raw bodies
    async with client.request(method, path, headers=headers, data=payload) as response:
        assert response.content_type == "application/json", await response.text()
        body = await response.json()
        assert set(body) >= {"success", "errors", "messages", "result"}
        assert body["success"] is (response.status < 400)
        if response.status >= 400:
            assert body["result"] is None and len(body["errors"]) == 1
        return Reply(response.status, body, response.headers)


@asynccontextmanager
async def serving(
    deps: ApiDeps, *, port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """The admin app (``create_app(deps)``) on a loopback TCP port; yields the port."""
    runner = web.AppRunner(create_app(deps), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def sdk_for(deps: ApiDeps, token: str) -> AsyncIterator[AsyncCloudflare]:
    """The official SDK against the real app on a loopback TCP socket."""
    async with (
        serving(deps) as port,
        AsyncCloudflare(
            base_url=f"http://127.0.0.1:{port}/client/v4", api_token=token, max_retries=0
        ) as client,
    ):
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class AgentServer:
    """The gateway as a device agent meets it: admin and agent APIs on one loopback URL."""

    url: str
    gateway: Gateway
    devices: DeviceService

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One admin request; the envelope, which must say success."""
        headers = {"Authorization": f"Bearer {self.gateway.token}"}
        url = f"{self.url}/client/v4{path}"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
            session.request(method, url, json=body, headers=headers) as reply,
        ):
            envelope: dict[str, Any] = await reply.json()
        assert envelope["success"], envelope
        return envelope

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        return (await self.call(method, path, body))["result"]


@asynccontextmanager
async def agent_server(gateway: Gateway, scheme: str, directory: Path) -> AsyncIterator[AgentServer]:
    """Serve ``gateway`` with a DeviceService over ``scheme`` (``http`` or ``https``, with a
    self-signed certificate that enrollment tokens pin)."""
    port = free_port()  # the URL goes into enrollment tokens before the site starts
    context, pin = None, ""
    if scheme == "https":
        issued = self_signed_server()
        (directory / "server.pem").write_text(issued.cert_pem())
        (directory / "server.key").write_text(issued.key_pem())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        pin = fingerprint(issued.certificate)
    url = f"{scheme}://127.0.0.1:{port}"
    devices = DeviceService(gateway.store, gateway.clock, public_base_url=url, server_fingerprint=pin)
    async with serving(dataclasses.replace(gateway.api(), devices=devices), port=port, ssl_context=context):
        yield AgentServer(url, gateway, devices)
