"""CA installation by the agent (issue 5) over HTTP: the agent's root_certificates and
trust_stores (device credentials; every bad input a 4xx naming the field, never a 500), the admin
views (gateway_devices, certificates/{id}/devices, trust_stores on a device), and the warning
(code 10100) when a certificate that reporting devices lack is turned on, also as the official
SDK sees it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cloudflare import AsyncCloudflare

from proxy.api import ApiDeps, create_app
from proxy.services.device_trust import DeviceTrustService, parse_report
from tests.proxy.api.test_agent import agent_call, basic, enroll
from tests.support.devices import Lab
from tests.support.server import Gateway, Reply, call

Client = TestClient[web.Request, web.Application]
FP_A = ":".join(["AA"] * 32)
NSS = "nss:/home/ann/.pki/nssdb"


@pytest.fixture
def deps(lab: Lab) -> ApiDeps:
    """What ``client`` and ``sdk`` serve: the gateway with the device lab's DeviceService."""
    return lab.api()


def certificate_path(lab: Lab, cert_id: str, suffix: str = "") -> str:
    return f"/client/v4/accounts/{lab.account}/gateway/certificates/{cert_id}{suffix}"


async def admin(client: Client, lab: Lab, method: str, path: str, body: Any = None) -> Reply:
    return await call(client, method, path, token=lab.gateway.token, json=body)


async def report(client: Client, auth: dict[str, str], *stores: dict[str, Any]) -> Reply:
    return await agent_call(client, "POST", "/trust_stores", headers=auth, json={"stores": list(stores)})


def store(name: str, *installed: str, error: str = "") -> dict[str, Any]:
    return {"store": name, "installed": list(installed), "error": error}


async def new_available(client: Client, lab: Lab) -> dict[str, Any]:
    made = await admin(client, lab, "POST", f"/client/v4/accounts/{lab.account}/gateway/certificates", {})
    activated = await admin(client, lab, "POST", certificate_path(lab, made.result["id"], "/activate"))
    assert activated.status == 200 and activated.result["binding_status"] == "available"
    return dict(activated.result)


# --- the agent's endpoints ----------------------------------------------------------------------


async def test_root_certificates_lists_what_the_device_should_trust(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    auth = basic(device_id, secret)
    first = lab.gateway.service.get(lab.account, lab.gateway.initial_ca_id)
    inactive = await admin(client, lab, "POST", f"/client/v4/accounts/{lab.account}/gateway/certificates", {})
    assert inactive.result["binding_status"] == "inactive"

    reply = await agent_call(client, "GET", "/root_certificates", headers=auth)
    assert reply.status == 200
    assert reply.result == [{"id": first.id, "fingerprint": first.fingerprint, "certificate": first.certificate_pem,
                             "binding_status": "available", "in_use": True}]  # fmt: skip

    second = await new_available(client, lab)
    reply = await agent_call(client, "GET", "/root_certificates", headers=auth)
    assert [(c["id"], c["binding_status"], c["in_use"]) for c in reply.result] == [
        (first.id, "available", True), (second["id"], "available", False),
    ]  # fmt: skip


@pytest.mark.parametrize("path", ["/root_certificates", "/trust_stores"])
async def test_device_credentials_are_required(client: Client, lab: Lab, path: str) -> None:
    device_id, _ = await enroll(client, lab)
    method = "GET" if path == "/root_certificates" else "POST"
    for headers, message in (
        ({}, "device credentials required"),
        (basic(device_id, "wrong"), "wrong device secret"),
        (basic("no-such-device", "x"), "unknown device"),
        (
            {"Authorization": f"Bearer {lab.gateway.token}"},
            "device credentials required",
        ),  # the admin token is not one
    ):
        reply = await agent_call(client, method, path, headers=headers, json={"stores": []})
        assert reply.status == 401 and message in reply.error, reply.body
        assert reply.headers["WWW-Authenticate"] == 'Basic realm="Gateway device"'


async def test_a_report_is_stored_and_shown(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    auth = basic(device_id, secret)
    first = lab.gateway.service.get(lab.account, lab.gateway.initial_ca_id)
    stored = await report(
        client, auth,
        store("system", first.fingerprint.lower(), FP_A),
        store(NSS, first.fingerprint),
        store("nss:/etc/pki/nssdb", error="no NSS database here"),
    )  # fmt: skip
    assert stored.status == 200 and stored.result == {"stores": 3, "installed": 3}

    device = await admin(client, lab, "GET", f"/client/v4/accounts/{lab.account}/devices/{device_id}")
    at = "2026-03-01T12:00:00Z"
    assert device.result["trust_stores"] == [
        {"store": "system", "installed": sorted([first.fingerprint, FP_A]), "error": "", "reported_at": at},
        {"store": NSS, "installed": [first.fingerprint], "error": "", "reported_at": at},
        {"store": "nss:/etc/pki/nssdb", "installed": [], "error": "no NSS database here", "reported_at": at},
    ]
    cert = await admin(client, lab, "GET", certificate_path(lab, first.id))
    assert cert.result["gateway_devices"] == {"installed": 1, "missing": 0, "reporting": 1}
    listed = await admin(client, lab, "GET", certificate_path(lab, first.id, "/devices"))
    assert listed.result == [{"device_id": device_id, "name": "laptop-7", "installed": True,
                              "stores": ["system", NSS], "reported_at": at, "reporting": True}]  # fmt: skip
    assert listed.body["result_info"]["total_count"] == 1

    # the next report replaces it whole
    lab.gateway.clock.advance(minutes=1)
    assert (await report(client, auth, store(NSS))).result == {"stores": 1, "installed": 0}
    device = await admin(client, lab, "GET", f"/client/v4/accounts/{lab.account}/devices/{device_id}")
    assert device.result["trust_stores"] == [
        {"store": NSS, "installed": [], "error": "", "reported_at": "2026-03-01T12:01:00Z"}
    ]
    cert = await admin(client, lab, "GET", certificate_path(lab, first.id))
    assert cert.result["gateway_devices"] == {"installed": 0, "missing": 1, "reporting": 1}


async def test_devices_that_never_reported(client: Client, lab: Lab) -> None:
    device_id, _ = await enroll(client, lab)
    first = lab.gateway.initial_ca_id
    device = await admin(client, lab, "GET", f"/client/v4/accounts/{lab.account}/devices/{device_id}")
    assert device.result["trust_stores"] == []
    cert = await admin(client, lab, "GET", certificate_path(lab, first))
    assert cert.result["gateway_devices"] == {"installed": 0, "missing": 0, "reporting": 0}
    listed = await admin(client, lab, "GET", certificate_path(lab, first, "/devices"))
    assert listed.result == [{"device_id": device_id, "name": "laptop-7", "installed": False, "stores": [],
                              "reported_at": None, "reporting": False}]  # fmt: skip
    missing = await admin(
        client, lab, "GET", certificate_path(lab, "9d3c2a1b-0000-4000-8000-000000000000", "/devices")
    )
    assert missing.status == 404 and missing.error == (
        "no gateway certificate with id '9d3c2a1b-0000-4000-8000-000000000000' in this account"
    )


async def _refused_logged(client: Client, lab: Lab, device_id: str) -> str:
    logs = await call(
        client, "GET", f"/client/v4/accounts/{lab.account}/devices/posture/logs?device_id={device_id}",
        token=lab.gateway.token,
    )  # fmt: skip
    entry = logs.result[0]
    assert entry["outcome"] == "refused" and entry["rule_id"] == ""
    return str(entry["reason"])


@pytest.mark.parametrize(
    ("data", "status", "code", "message"),
    [
        ("", 400, 1002, "stores: required: an array of {store, installed, error}, one per trust store"),
        ('{"stores": [', 400, 1001, "request body is not valid JSON"),
        ('[{"store": "system"}]', 400, 1001, "request body must be a JSON object, got an array"),
        ('{"stores": null}', 400, 1002, "stores: must be an array of stores, got null"),
        ('{"stores": [], "device": "x"}', 400, 1002, "device: unknown field (accepted: stores)"),
        ('{"stores": [{"store": "C:\\\\certs", "installed": []}]}', 400, 1002,
         "stores[0].store: must be \"system\", \"nss:\" followed by the NSS database's absolute path, or \"windows:CurrentUser\\Root\", got 'C:\\\\certs'"),
        ('{"stores": [{"store": "system", "installed": ["sha256"]}]}', 400, 1002,
         "stores[0].installed[0]: must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got 'sha256'"),
        ('{"stores": [{"store": "system", "installed": [], "error": 0}]}', 400, 1002,
         "stores[0].error: must be a string (\"\" for none), got a number"),
        ('{"stores": "' + "x" * (1024 * 1024) + '"}', 413, 1008, "request body is larger than 1 MiB (1048576 bytes)"),
    ],
)  # fmt: skip
async def test_bad_reports_are_4xx_naming_the_field_and_logged(
    client: Client, lab: Lab, data: str, status: int, code: int, message: str
) -> None:
    device_id, secret = await enroll(client, lab)
    reply = await agent_call(client, "POST", "/trust_stores", headers=basic(device_id, secret), data=data)
    (error,) = reply.body["errors"]
    assert (reply.status, error["code"]) == (status, code)
    assert error["message"] == message or error["message"].startswith(message + ": "), (
        error
    )  # JSON errors say where
    reason = await _refused_logged(client, lab, device_id)
    assert reason.startswith(("trust store report refused: ", "request refused: "))
    device = await admin(client, lab, "GET", f"/client/v4/accounts/{lab.account}/devices/{device_id}")
    assert device.result["trust_stores"] == []  # nothing stored


async def test_wrong_methods_and_a_deleted_device(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    auth = basic(device_id, secret)
    assert (await agent_call(client, "POST", "/root_certificates", headers=auth)).status == 405
    assert (await agent_call(client, "GET", "/trust_stores", headers=auth)).status == 405
    await admin(client, lab, "DELETE", f"/client/v4/accounts/{lab.account}/devices/{device_id}")
    reply = await report(client, auth, store("system"))
    assert reply.status == 401 and "unknown device" in reply.error


# --- turning a certificate on -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_turning_on_a_certificate_devices_lack_warns(client: Client, lab: Lab, method: str) -> None:
    first = lab.gateway.service.get(lab.account, lab.gateway.initial_ca_id)
    second = await new_available(client, lab)
    auths = [basic(*await enroll(client, lab)) for _ in range(3)]
    await enroll(client, lab)  # a fourth device never reports: not counted
    for auth in auths:
        await report(client, auth, store("system", first.fingerprint))
    await report(client, auths[0], store("system", first.fingerprint), store(NSS, second["fingerprint"]))
    cert = await admin(client, lab, "GET", certificate_path(lab, second["id"]))
    assert cert.result["gateway_devices"] == {"installed": 1, "missing": 2, "reporting": 3}

    path = f"/client/v4/accounts/{lab.account}/gateway/configuration"
    turned = await admin(client, lab, method, path, {"settings": {"certificate": {"id": second["id"]}}})
    assert turned.status == 200  # it still works
    assert turned.result["settings"]["certificate"] == {"id": second["id"]}
    assert turned.body["messages"] == [{"code": 10100, "message": (
        f"2 of 3 reporting devices have not installed certificate {second['id']} yet: "
        "turning it on breaks TLS for them until their agent syncs")}]  # fmt: skip
    assert lab.gateway.service.get(lab.account, second["id"]).in_use

    # the same request again turns nothing on: nothing to warn about
    again = await admin(client, lab, method, path, {"settings": {"certificate": {"id": second["id"]}}})
    assert again.status == 200 and again.body["messages"] == []
    # back to the first, which every reporting device has: no warning
    back = await admin(client, lab, method, path, {"settings": {"certificate": {"id": first.id}}})
    assert back.status == 200 and back.body["messages"] == []
    # other settings alone: no warning either
    other = await admin(client, lab, "PATCH", path, {"settings": {"tls_decrypt": {"enabled": True}}})
    assert other.status == 200 and other.body["messages"] == []


async def test_a_refused_turn_on_is_the_usual_400(client: Client, lab: Lab) -> None:
    inactive = await admin(client, lab, "POST", f"/client/v4/accounts/{lab.account}/gateway/certificates", {})
    device_id, secret = await enroll(client, lab)
    await report(client, basic(device_id, secret), store("system"))
    path = f"/client/v4/accounts/{lab.account}/gateway/configuration"
    reply = await admin(
        client, lab, "PATCH", path, {"settings": {"certificate": {"id": inactive.result["id"]}}}
    )
    assert reply.status == 400 and reply.body["messages"] == []
    assert reply.body["errors"][0]["code"] == 1004


async def test_reports_older_than_seven_days_do_not_count(client: Client, lab: Lab) -> None:
    second = await new_available(client, lab)
    device_id, secret = await enroll(client, lab)
    await report(client, basic(device_id, secret), store("system"))
    lab.gateway.clock.advance(days=7, seconds=1)
    cert = await admin(client, lab, "GET", certificate_path(lab, second["id"]))
    assert cert.result["gateway_devices"] == {"installed": 0, "missing": 0, "reporting": 0}
    listed = await admin(client, lab, "GET", certificate_path(lab, second["id"], "/devices"))
    assert [(d["reporting"], d["reported_at"]) for d in listed.result] == [(False, "2026-03-01T12:00:00Z")]
    path = f"/client/v4/accounts/{lab.account}/gateway/configuration"
    turned = await admin(client, lab, "PATCH", path, {"settings": {"certificate": {"id": second["id"]}}})
    assert turned.status == 200 and turned.body["messages"] == []


async def test_without_devices_the_admin_views_still_answer(gateway: Gateway) -> None:
    async with TestClient(TestServer(create_app(gateway.api()))) as client:
        path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates/{gateway.initial_ca_id}"
        cert = await call(client, "GET", path, token=gateway.token)
        assert cert.result["gateway_devices"] == {"installed": 0, "missing": 0, "reporting": 0}
        assert (await call(client, "GET", path + "/devices", token=gateway.token)).result == []
        reply = await agent_call(client, "GET", "/root_certificates", headers=basic("d", "s"))
        assert reply.status == 404 and reply.error == "devices and device posture are not enabled here"


# --- the official SDK -----------------------------------------------------------------------------


# zero_trust.devices.get is deprecated in the SDK (api/test_devices.py), yet still served
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_the_sdk_turns_a_certificate_on_and_the_warning_is_in_the_raw_response(
    sdk: AsyncCloudflare, lab: Lab
) -> None:
    account = lab.account
    certificates = sdk.zero_trust.gateway.certificates
    second = await certificates.create(account_id=account)
    await certificates.activate(second.id or "", account_id=account)
    device, _ = lab.enroll()
    trust_report = [{"store": "system", "installed": [], "error": ""}]
    trust = DeviceTrustService(
        lab.gateway.store, lab.gateway.service, lab.gateway.clock, writer=lab.service.writer
    )
    await trust.report(device, parse_report({"stores": trust_report}))

    got = await certificates.get(second.id or "", account_id=account)
    assert got.binding_status == "available"
    assert (got.model_extra or {})["gateway_devices"] == {"installed": 0, "missing": 1, "reporting": 1}

    raw = await sdk.zero_trust.gateway.configurations.with_raw_response.edit(
        account_id=account, settings={"certificate": {"id": second.id or ""}}
    )
    assert raw.http_response.status_code == 200
    body = json.loads(await raw.read())
    assert body["messages"] == [{"code": 10100, "message": (
        f"1 of 1 reporting devices have not installed certificate {second.id} yet: "
        "turning it on breaks TLS for them until their agent syncs")}]  # fmt: skip
    parsed = await raw.parse()
    assert parsed.settings and parsed.settings.certificate and parsed.settings.certificate.id == second.id

    # the plain call works as before (the warning does not get in its way)
    await sdk.zero_trust.gateway.configurations.edit(
        account_id=account, settings={"certificate": {"id": lab.gateway.initial_ca_id}}
    )
    in_use = {c.id: c.in_use async for c in certificates.list(account_id=account)}
    assert in_use == {lab.gateway.initial_ca_id: True, second.id: False}
    # a device with trust_stores still reads as the SDK's device
    fetched = await sdk.zero_trust.devices.get(device.id, account_id=account)
    assert fetched is not None and (fetched.model_extra or {})["trust_stores"][0]["store"] == "system"
