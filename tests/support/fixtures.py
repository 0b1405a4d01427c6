"""The pytest fixtures every test folder may use, registered once by ``tests/conftest.py``: the test
clock, a store on disk, the certificate service, a first-started gateway, the admin API over
TestClient (``client``) and over the official SDK (``sdk``), the device lab (``lab``) and the
policy API (``api``).

``client`` and ``sdk`` serve ``deps``: the gateway's own by default; a module that needs more
services overrides ``deps`` (for example ``def deps(lab): return lab.api()``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudflare import AsyncCloudflare

from certs.sealing import KeySealer
from proxy.api import ApiDeps, create_app
from proxy.bootstrap import first_start
from proxy.services.certificates import CertificateService
from proxy.store import Store
from tests.support.clock import FakeClock
from tests.support.devices import Lab, make_lab
from tests.support.policies import Api, api_for
from tests.support.postgres import Cluster
from tests.support.server import Client, Gateway, sdk_for


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sealer() -> KeySealer:
    return KeySealer(KeySealer.generate_master_key())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session (``tests/support/postgres.py``)."""
    cluster = Cluster.start_new()
    yield cluster
    cluster.close()


@pytest.fixture
def pg_url(postgres: Cluster) -> Iterator[str]:
    """A new empty PostgreSQL database for one test, dropped after it."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture
def store_url(db_path: Path) -> str:
    """Where ``store`` lives: SQLite here; folders that run on both backends override it with
    ``both_backends``."""
    return str(db_path)


def both_backends(request: pytest.FixtureRequest, db_path: Path) -> str:
    """``store_url`` for ``sqlite`` and ``postgresql`` (use as ``pytest.fixture(params=BACKENDS)``)."""
    if request.param == "sqlite":
        return str(db_path)
    return str(request.getfixturevalue("pg_url"))


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    store = Store.open(store_url, now=clock())
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
def deps(gateway: Gateway) -> ApiDeps:
    """What ``client`` and ``sdk`` serve."""
    return gateway.api()


@pytest.fixture
async def client(deps: ApiDeps) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(deps))) as client:
        yield client


@pytest.fixture
async def sdk(deps: ApiDeps, gateway: Gateway) -> AsyncIterator[AsyncCloudflare]:
    async with sdk_for(deps, gateway.token) as client:
        yield client


@pytest.fixture
def lab(gateway: Gateway) -> Iterator[Lab]:
    lab = make_lab(gateway)
    yield lab
    lab.service.close()


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[Api]:
    async with api_for(gateway) as api:
        yield api
