"""GET .../devices/{id}/wireguard (admin) and GET /agent/wireguard (the device) (issue 16)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from certs.sealing import KeySealer
from proxy.api.app import create_app
from proxy.api.wireguard import WIREGUARD
from proxy.services.wireguard import WireGuardService, WireGuardSettings
from tests.support.devices import Lab
from tests.support.server import Client, call

SETTINGS = WireGuardSettings(listen_host="0.0.0.0", ports=range(51820, 51830), endpoint_host="gw.example.com")


def _client(lab: Lab, service: WireGuardService | None) -> TestClient:  # type: ignore[type-arg]
    app = create_app(lab.api())
    if service is not None:
        app[WIREGUARD] = service
    return TestClient(TestServer(app))


@pytest.fixture
async def client(lab: Lab, sealer: KeySealer) -> AsyncIterator[Client]:
    async with _client(lab, WireGuardService(lab.gateway.store, sealer, lab.gateway.clock, SETTINGS)) as c:
        yield c


def _basic(device_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()}


async def test_the_admin_and_the_device_get_the_same_configuration(client: Client, lab: Lab) -> None:
    device, secret = lab.enroll(name="ann")
    admin = await call(client, "GET", f"/client/v4/accounts/{lab.account}/devices/{device.id}/wireguard",
                       token=lab.gateway.token)  # fmt: skip
    assert admin.status == 200, admin.body
    assert admin.headers["Cache-Control"] == "no-store"
    result = admin.result
    assert result["address"] == "100.96.0.2/32" and result["endpoint"] == "gw.example.com:51820"
    assert result["config"].startswith("[Interface]\nPrivateKey = ")
    assert f"PublicKey = {result['public_key']}\n" in result["config"]
    async with client.get("/client/v4/agent/wireguard?format=wg", headers=_basic(device.id, secret)) as r:
        assert r.status == 200
        agent = (await r.json())["result"]
    assert agent["format"] == "wg" and "Address" not in agent["config"]
    assert agent["config"].split("\n")[1] == result["config"].split("\n")[1]  # the same private key


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("format=ini", "format: 'ini' is not a format"),
        ("allowed_ips=10.0.0.0/33", "allowed_ips: '10.0.0.0/33' is not an address or CIDR"),
        ("dns=resolver", "dns: 'resolver' is not an IP address"),
        ("colour=blue", "colour: unknown field"),
    ],
)
async def test_bad_query_names_the_field(client: Client, lab: Lab, query: str, message: str) -> None:
    device, _ = lab.enroll(name="ann")
    path = f"/client/v4/accounts/{lab.account}/devices/{device.id}/wireguard?{query}"
    reply = await call(client, "GET", path, token=lab.gateway.token)
    assert reply.status == 400 and reply.error.startswith(message), reply.error


async def test_the_agent_needs_its_credentials(client: Client, lab: Lab) -> None:
    device, _ = lab.enroll(name="ann")
    async with client.get("/client/v4/agent/wireguard", headers=_basic(device.id, "wrong")) as r:
        assert r.status == 401
        assert "PrivateKey" not in await r.text()
    reply = await call(client, "GET", f"/client/v4/accounts/{lab.account}/devices/nobody/wireguard",
                       token=lab.gateway.token)  # fmt: skip
    assert reply.status == 404


async def test_off_says_how_to_turn_it_on(lab: Lab) -> None:
    device, _ = lab.enroll(name="ann")
    async with _client(lab, None) as client:
        reply = await call(client, "GET", f"/client/v4/accounts/{lab.account}/devices/{device.id}/wireguard",
                           token=lab.gateway.token)  # fmt: skip
    assert reply.status == 400 and "--wireguard-ports" in reply.error
