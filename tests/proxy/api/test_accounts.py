"""The accounts API: an admin makes and deletes accounts; a token scoped to one account sees and
touches only that account."""

from __future__ import annotations

import dataclasses

import pytest
from cloudflare import AsyncCloudflare, PermissionDeniedError

from proxy.api import ApiDeps
from proxy.services import accounts
from proxy.services.device_enrollment import DeviceDetails
from proxy.store import TokenOrigin
from tests.support.devices import Lab, token_secret
from tests.support.server import Client, Gateway, call, sdk_for

SCOPED = "scoped-token-0123456789abcdefgh"


@pytest.fixture
def deps(lab: Lab) -> ApiDeps:
    return lab.api()


async def _create(client: Client, gateway: Gateway, name: str) -> str:
    reply = await call(client, "POST", "/client/v4/accounts", token=gateway.token, json={"name": name})
    assert reply.status == 200, reply.body
    return str(reply.result["id"])


async def test_a_new_account_has_its_own_ca_available_and_in_use(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "POST", "/client/v4/accounts", token=gateway.token, json={"name": " Branch "})
    assert reply.status == 200
    created = reply.result
    assert created["name"] == "Branch" and len(created["id"]) == 32 and created["type"] == "standard"
    certs = await call(
        client, "GET", f"/client/v4/accounts/{created['id']}/gateway/certificates", token=gateway.token
    )
    (ca,) = certs.result
    assert (ca["binding_status"], ca["in_use"]) == ("available", True)
    assert ca["id"] in reply.body["messages"][0]["message"]
    first = gateway.service.in_use(gateway.account_id)
    assert first is not None and first.fingerprint != ca["fingerprint"]
    assert "Branch" in ca["issuer_raw"]  # the subject names the account
    listed = await call(client, "GET", "/client/v4/accounts", token=gateway.token)
    assert [a["id"] for a in listed.result] == [gateway.account_id, created["id"]]
    one = await call(client, "GET", f"/client/v4/accounts/{created['id']}", token=gateway.token)
    assert one.result == created
    config = await call(
        client, "GET", f"/client/v4/accounts/{created['id']}/gateway/configuration", token=gateway.token
    )
    assert config.result["settings"]["certificate"]["id"] == ca["id"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "name: required"),
        ({"name": ""}, 400, "name: must not be empty"),
        ({"name": "   "}, 400, "name: must not be empty"),
        ({"name": "x" * 101}, 400, "name: is 101 characters: use at most 100"),
        ({"name": 7}, 400, "name: must be a string"),
        ({"name": "a\tb"}, 400, "name: must hold printable characters only (no control characters)"),
        ({"name": "gateway"}, 409, "is already named 'Gateway': choose another name"),
        ({"name": "New", "colour": "red"}, 400, "colour: unknown field"),
    ],
)
async def test_bad_names_are_refused_and_nothing_is_made(
    client: Client, gateway: Gateway, body: dict[str, object], status: int, message: str
) -> None:
    before = gateway.store.dump()
    reply = await call(client, "POST", "/client/v4/accounts", token=gateway.token, json=body)
    assert reply.status == status
    assert message in reply.error
    if status == 409:
        assert reply.headers["x-should-retry"] == "false"
        assert reply.body["errors"][0]["code"] == 1009
    assert gateway.store.dump() == before


async def test_a_scoped_token_sees_and_touches_only_its_account(client: Client, gateway: Gateway) -> None:
    other = await _create(client, gateway, "Branch")
    accounts.add_token(gateway.store, SCOPED, TokenOrigin.GENERATED, gateway.clock, account_id=other)
    listed = await call(client, "GET", "/client/v4/accounts", token=SCOPED)
    assert [a["id"] for a in listed.result] == [other]
    assert (await call(client, "GET", f"/client/v4/accounts/{other}", token=SCOPED)).status == 200
    for method, path in [
        ("GET", f"/client/v4/accounts/{gateway.account_id}"),
        ("GET", f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"),
        ("GET", f"/client/v4/accounts/{gateway.account_id}/devices"),
        ("DELETE", f"/client/v4/accounts/{gateway.account_id}"),
        ("GET", f"/client/v4/accounts/{'f' * 32}"),  # not even whether it exists
    ]:
        reply = await call(client, method, path, token=SCOPED)
        assert reply.status == 403, (method, path)
        assert reply.error.startswith(f"this token is scoped to account {other}: it may not act on account")
        assert reply.body["errors"][0]["code"] == 9109
    made = await call(client, "POST", "/client/v4/accounts", token=SCOPED, json={"name": "Mine"})
    assert made.status == 403 and "only a token for every account" in made.error
    own = await call(client, "DELETE", f"/client/v4/accounts/{other}", token=SCOPED)
    assert own.status == 403 and "may delete an account" in own.error
    assert gateway.store.accounts.get(other) is not None


async def test_deleting_an_account_with_devices_is_409_naming_how_many(
    client: Client, gateway: Gateway, lab: Lab
) -> None:
    other = await _create(client, gateway, "Branch")
    for n in range(2):
        issued = lab.service.create_enrollment_token(other, email=f"u{n}@example.com")
        details = DeviceDetails.from_api(
            {"name": f"d{n}", "os": "linux", "hostname": f"d{n}", "serial_number": "1"}
        )
        lab.service.enroll(token_secret(issued.token), details, "127.0.0.1")
    before = gateway.store.dump()
    reply = await call(client, "DELETE", f"/client/v4/accounts/{other}", token=gateway.token)
    assert reply.status == 409 and reply.headers["x-should-retry"] == "false"
    assert f"account {other} (Branch) still has 2 devices: delete them first" in reply.error
    assert gateway.store.dump() == before
    for device in lab.service.devices(other):
        lab.service.delete_device(other, device.id)
    accounts.add_token(gateway.store, SCOPED, TokenOrigin.GENERATED, gateway.clock, account_id=other)
    deleted = await call(client, "DELETE", f"/client/v4/accounts/{other}", token=gateway.token)
    assert (deleted.status, deleted.result) == (200, {"id": other})
    gone = await call(client, "GET", f"/client/v4/accounts/{other}", token=gateway.token)
    assert gone.status == 404
    assert not [r for r in gateway.store.dump() if other in r]  # nothing of it is left
    refused = await call(client, "GET", "/client/v4/accounts", token=SCOPED)  # its token went with it
    assert refused.status == 401 and "account that was deleted" in refused.error


async def test_the_default_account_cannot_be_deleted(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "DELETE", f"/client/v4/accounts/{gateway.account_id}", token=gateway.token)
    assert reply.status == 400
    assert "is this gateway's default account" in reply.error and "--default-account" in reply.error
    assert gateway.store.accounts.get(gateway.account_id) is not None
    unknown = await call(client, "DELETE", f"/client/v4/accounts/{'e' * 32}", token=gateway.token)
    assert (unknown.status, unknown.error) == (404, f"no account with id {'e' * 32!r}")


async def test_the_sdk_makes_lists_and_deletes_accounts(deps: ApiDeps, gateway: Gateway) -> None:
    async with sdk_for(deps, gateway.token) as sdk:
        made = await sdk.accounts.create(name="Branch", type="standard")
        assert made is not None and made.name == "Branch"
        names = [a.name async for a in sdk.accounts.list()]
        assert names == ["Gateway", "Branch"]
        deleted = await sdk.accounts.delete(account_id=made.id)
        assert deleted is not None and deleted.id == made.id
    accounts.add_token(
        gateway.store, SCOPED, TokenOrigin.GENERATED, gateway.clock, account_id=gateway.account_id
    )
    scoped: AsyncCloudflare
    async with sdk_for(dataclasses.replace(deps), SCOPED) as scoped:
        with pytest.raises(PermissionDeniedError):
            await scoped.accounts.create(name="Mine")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_device_cannot_be_moved_to_another_account(
    client: Client, gateway: Gateway, lab: Lab, method: str
) -> None:
    """A device's account is fixed at enrollment: no call changes it (docs/api.md)."""
    device, _ = lab.enroll()
    other = await _create(client, gateway, "Branch")
    path = f"/client/v4/accounts/{gateway.account_id}/devices/{device.id}"
    reply = await call(client, method, path, token=gateway.token, json={"account_id": other})
    assert reply.status == 405 and "allowed: DELETE, GET, HEAD" in reply.error
    elsewhere = await call(
        client, "GET", f"/client/v4/accounts/{other}/devices/{device.id}", token=gateway.token
    )
    assert elsewhere.status == 404
    assert lab.service.device(gateway.account_id, device.id).account_id == gateway.account_id
