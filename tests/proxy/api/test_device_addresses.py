"""Device addresses (transparent mode): the agent registers them, an admin binds networks, and
the resolver picks the device at a source address."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.api import create_app
from proxy.store import Device
from tests.support.devices import Lab, make_lab
from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def lab(gateway: Gateway) -> Iterator[Lab]:
    lab = make_lab(gateway)
    yield lab
    lab.service.close()


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(lab.api()))) as client:
        yield client


async def _register(client: Client, device: Device, secret: str, addresses: object) -> tuple[int, object]:
    raw = base64.b64encode(f"{device.id}:{secret}".encode()).decode()
    async with client.put(
        "/client/v4/agent/addresses", json={"addresses": addresses}, headers={"Authorization": f"Basic {raw}"}
    ) as response:
        body = await response.json()
        return response.status, body["result"] if response.status < 400 else body["errors"][0]["message"]


async def test_the_agent_registers_its_addresses_and_the_resolver_finds_it(client: Client, lab: Lab) -> None:
    device, secret = lab.enroll()
    status, result = await _register(
        client, device, secret, ["10.213.0.2", "127.0.0.1", "fe80::1%eth0", "2001:db8::7"]
    )
    assert (status, result) == (200, {"addresses": ["10.213.0.2", "2001:db8::7"]})
    assert lab.service.device_at("10.213.0.2") == device.id
    assert lab.service.device_at("::ffff:10.213.0.2") == device.id
    assert lab.service.device_at("10.213.0.3") is None
    path = f"/client/v4/accounts/{lab.account}/devices/{device.id}/addresses"
    listed = await call(client, "GET", path, token=lab.gateway.token)
    assert [(a["network"], a["source"]) for a in listed.result] == [
        ("10.213.0.2/32", "agent"),
        ("2001:db8::7/128", "agent"),
    ]


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ("10.0.0.1", "must be an array"),
        (["nope"], "addresses[0]: 'nope' is not an IP address"),
        ([1], "must be a string"),
    ],
)
async def test_bad_addresses_are_refused_naming_the_field(
    client: Client, lab: Lab, addresses: object, message: str
) -> None:
    device, secret = lab.enroll()
    status, error = await _register(client, device, secret, addresses)
    assert status == 400 and message in str(error)


async def test_the_most_specific_binding_wins_then_the_latest_registration(client: Client, lab: Lab) -> None:
    one, one_secret = lab.enroll(hostname="one")
    two, two_secret = lab.enroll(hostname="two")
    three, _ = lab.enroll(hostname="three")
    await _register(client, one, one_secret, ["10.0.0.5"])
    lab.gateway.clock.advance(minutes=2)
    await _register(client, two, two_secret, ["10.0.0.5"])
    assert lab.service.device_at("10.0.0.5") == two.id  # the latest registration
    base = f"/client/v4/accounts/{lab.account}/devices"
    bound = await call(
        client,
        "PUT",
        f"{base}/{three.id}/addresses",
        token=lab.gateway.token,
        json={"network": "10.0.0.0/24"},
    )
    assert bound.result["network"] == "10.0.0.0/24" and bound.result["source"] == "admin"
    assert lab.service.device_at("10.0.0.5") == three.id  # a binding beats a registration
    await call(
        client, "PUT", f"{base}/{one.id}/addresses", token=lab.gateway.token, json={"network": "10.0.0.4/30"}
    )
    assert lab.service.device_at("10.0.0.5") == one.id  # the most specific binding
    await call(
        client, "PUT", f"{base}/{two.id}/addresses", token=lab.gateway.token, json={"network": "10.0.0.4/30"}
    )
    assert lab.service.device_at("10.0.0.5") is None  # ambiguous
    await call(client, "DELETE", f"{base}/{two.id}/addresses?network=10.0.0.4/30", token=lab.gateway.token)
    assert lab.service.device_at("10.0.0.5") == one.id
    lab.service.delete_device(lab.account, one.id)
    assert lab.service.device_at("10.0.0.5") == three.id


async def test_binding_refuses_host_bits_and_unknown_devices(client: Client, lab: Lab) -> None:
    device, _ = lab.enroll()
    base = f"/client/v4/accounts/{lab.account}/devices"
    bad = await call(
        client,
        "PUT",
        f"{base}/{device.id}/addresses",
        token=lab.gateway.token,
        json={"network": "10.0.0.5/24"},
    )
    assert bad.status == 400 and "did you mean 10.0.0.0/24" in bad.error
    missing = await call(
        client, "PUT", f"{base}/nope/addresses", token=lab.gateway.token, json={"network": "10.0.0.5"}
    )
    assert missing.status == 404
    gone = await call(
        client, "DELETE", f"{base}/{device.id}/addresses?network=10.9.0.0/16", token=lab.gateway.token
    )
    assert gone.status == 404


async def test_enrollment_registers_the_addresses_it_carries(lab: Lab) -> None:
    from proxy.services.device_enrollment import DeviceDetails
    from tests.support.devices import token_secret

    issued = lab.service.create_enrollment_token(lab.account, email="a@example.com")
    details = DeviceDetails.from_api({"name": "n", "os": "linux"})
    enrolled = lab.service.enroll(token_secret(issued.token), details, "127.0.0.1", ["192.0.2.9/32"])
    assert lab.service.device_at("192.0.2.9") == enrolled.device.id
