"""Devices and ``last_seen_identity`` through the official SDK over loopback; enrollment tokens
and device deletion (our additions) over HTTP."""

from __future__ import annotations

import base64
import json

import cloudflare
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cloudflare import AsyncCloudflare

from proxy.api import ApiDeps
from proxy.services.device_enrollment import user_id
from proxy.services.posture_verify import Report
from tests.support.devices import EMAIL, Lab
from tests.support.server import call

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def deps(lab: Lab) -> ApiDeps:
    """What ``client`` and ``sdk`` serve: the gateway with the device lab's DeviceService."""
    return lab.api()


# zero_trust.devices.list/get are deprecated in the SDK (in favour of physical-devices), yet
# they are the calls that read these paths.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_sdk_lists_and_gets_devices(sdk: AsyncCloudflare, lab: Lab) -> None:
    device, _ = lab.enroll()
    listed = [d async for d in sdk.zero_trust.devices.list(account_id=lab.account)]
    (seen,) = listed
    assert seen.id == device.id and seen.name == "laptop-7" and seen.device_type == "linux"
    assert seen.serial_number == "SN-0042" and seen.ip == "127.0.0.1"
    assert seen.user is not None and seen.user.email == EMAIL and seen.user.id == user_id(EMAIL)
    assert seen.last_seen is not None and seen.last_seen.isoformat() == "2026-03-01T12:00:00+00:00"
    got = await sdk.zero_trust.devices.get(device.id, account_id=lab.account)
    assert got is not None and got.id == device.id and got.name == "laptop-7"
    assert got.active_registrations == 1 and got.created_at == "2026-03-01T12:00:00Z"
    with pytest.raises(cloudflare.NotFoundError):
        await sdk.zero_trust.devices.get("nope", account_id=lab.account)


async def test_sdk_reads_last_seen_identity_with_device_posture(sdk: AsyncCloudflare, lab: Lab) -> None:
    device, _ = lab.enroll()
    cert, key = lab.ca.issue(lab.now)
    await lab.service.submit(device, [await lab.passing(device, cert, key)], "10.0.0.7")
    identity = await sdk.zero_trust.access.users.last_seen_identity.get(
        user_id(EMAIL), account_id=lab.account
    )
    assert identity is not None and identity.email == EMAIL and identity.device_id == device.id
    assert identity.ip == "10.0.0.7" and identity.common_name == "laptop-7.corp"
    assert identity.device_posture is not None
    entry = identity.device_posture[lab.rule_id]
    assert entry.success is True and entry.rule_name == "corp certificate"
    assert entry.type == "client_certificate_v2" and entry.error == ""
    assert entry.timestamp == "2026-03-01T12:00:00Z"
    lab.gateway.clock.advance(minutes=10)
    later = await sdk.zero_trust.access.users.last_seen_identity.get(user_id(EMAIL), account_id=lab.account)
    assert later is not None and later.device_posture is not None
    assert later.device_posture[lab.rule_id].success is False
    assert later.device_posture[lab.rule_id].error == "result expired at 2026-03-01T12:10:00Z"
    with pytest.raises(cloudflare.NotFoundError):
        await sdk.zero_trust.access.users.last_seen_identity.get(user_id("x@y.z"), account_id=lab.account)


async def test_identity_json_spells_device_posture_in_camel_case(client: Client, lab: Lab) -> None:
    device, _ = lab.enroll()
    await lab.service.submit(device, [Report(rule_id=lab.rule_id, success=False, reason="no cert")], "h")
    reply = await call(
        client, "GET", f"/client/v4/accounts/{lab.account}/access/users/{user_id(EMAIL)}/last_seen_identity",
        token=lab.gateway.token,
    )  # fmt: skip
    posture = reply.result["devicePosture"]
    assert set(posture[lab.rule_id]) >= {
        "id",
        "rule_name",
        "type",
        "success",
        "timestamp",
        "description",
        "error",
    }
    assert posture[lab.rule_id]["error"] == "no cert" and posture[lab.rule_id]["success"] is False


async def test_enrollment_token_over_the_api(client: Client, lab: Lab) -> None:
    path = f"/client/v4/accounts/{lab.account}/devices/enrollment_tokens"
    reply = await call(
        client, "POST", path, token=lab.gateway.token, json={"email": "bob@example.com", "expires_in": "30m"}
    )
    assert reply.status == 200
    assert reply.result["email"] == "bob@example.com" and reply.result["expires_at"] == "2026-03-01T12:30:00Z"
    body = reply.result["token"].removeprefix("gwe1.")
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert fields == {"u": "http://127.0.0.1:8081", "a": lab.account, "s": fields["s"], "f": ""}
    assert fields["s"] not in "\n".join(lab.gateway.store.dump())  # only its hash is kept
    for sent, message in (({"ttl": "1h"}, "ttl: unknown field"), ({"expires_in": 5}, "must be a string")):
        bad = await call(client, "POST", path, token=lab.gateway.token, json=sent)
        assert bad.status == 400 and message in bad.error
    assert (await call(client, "POST", path, token=None, json={})).status == 401


async def test_deleting_a_device(client: Client, lab: Lab) -> None:
    device, secret = lab.enroll()
    path = f"/client/v4/accounts/{lab.account}/devices/{device.id}"
    assert (await call(client, "DELETE", path, token=lab.gateway.token)).result == {"id": device.id}
    assert (await call(client, "GET", path, token=lab.gateway.token)).status == 404
    assert lab.service.authenticate(device.id, secret) is None
    listed = await call(client, "GET", f"/client/v4/accounts/{lab.account}/devices", token=lab.gateway.token)
    assert listed.result == []
