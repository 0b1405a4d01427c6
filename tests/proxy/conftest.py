"""Shared fixtures: a frozen clock, a store on disk, the certificate service, a booted gateway."""

from __future__ import annotations

import io
import json as _json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from certs.sealing import KeySealer
from proxy.api import ApiDeps, create_app
from proxy.bootstrap import first_start
from proxy.services.certificates import CertificateService
from proxy.store import Store

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Gateway:
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sealer() -> KeySealer:
    return KeySealer(KeySealer.generate_master_key())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[Store]:
    store = Store.open(db_path, now=clock())
    yield store
    store.close()


@pytest.fixture
def service(store: Store, sealer: KeySealer, clock: FakeClock) -> CertificateService:
    return CertificateService(store, sealer, clock)


@pytest.fixture
def gateway(store: Store, service: CertificateService, clock: FakeClock) -> Gateway:
    """A first-started gateway: one account, its CA in use, an admin token."""
    boot = first_start(store, service, admin_token_env=None, clock=clock)
    assert boot.new_admin_token is not None and boot.generated_ca_id is not None
    return Gateway(store, service, clock, boot.account_id, boot.new_admin_token, boot.generated_ca_id)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_app(gateway.api()))) as client:
        yield client


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
    client: TestClient[web.Request, web.Application],
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
