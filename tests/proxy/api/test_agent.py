"""The agent's endpoints over HTTP: enrollment, device credentials, rules, nonces and results.
Every bad input is a 4xx with the reason (logged for the device where it is about one); never a
500 and never a pass."""

from __future__ import annotations

import base64
import io
import json as _json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from certs.proof import proof_message, sign_proof
from proxy.api import ApiDeps, create_app
from tests.support.devices import EMAIL, Lab, pem, token_secret
from tests.support.server import Gateway, Reply, call

Client = TestClient[web.Request, web.Application]
AGENT = "/client/v4/agent"


@pytest.fixture
def deps(lab: Lab) -> ApiDeps:
    """What ``client`` and ``sdk`` serve: the gateway with the device lab's DeviceService."""
    return lab.api()


def basic(device_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{device_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def agent_call(
    client: Client,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    data: str | bytes | None = None,
) -> Reply:
    headers = dict(headers or {})
    if json is not None:
        data = _json.dumps(json)
    if data is not None or method == "POST":
        headers["Content-Type"] = "application/json"
    payload: Any = data.encode() if isinstance(data, str) else data
    if payload is not None and len(payload) > 1024 * 1024:
        payload = io.BytesIO(payload)
    async with client.request(method, AGENT + path, headers=headers, data=payload) as response:
        assert response.content_type == "application/json", await response.text()
        body = await response.json()
        assert body["success"] is (response.status < 400)
        assert response.status < 500, body
        return Reply(response.status, body, response.headers)


async def enroll(client: Client, lab: Lab, **fields: str) -> tuple[str, str]:
    made = await call(
        client, "POST", f"/client/v4/accounts/{lab.account}/devices/enrollment_tokens",
        token=lab.gateway.token, json={"email": EMAIL},
    )  # fmt: skip
    assert made.status == 200, made.body
    body = {"secret": token_secret(made.result["token"]), "name": "laptop-7", "os": "linux",
            "os_version": "6.1", "serial_number": "SN-0042", "hostname": "laptop-7", "email": "", **fields}  # fmt: skip
    reply = await agent_call(client, "POST", "/enroll", json=body)
    assert reply.status == 200, reply.body
    assert reply.result["account_id"] == lab.account
    return reply.result["device_id"], reply.result["device_secret"]


async def test_enroll_check_and_report_with_proof(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    auth = basic(device_id, secret)
    rules = await agent_call(client, "GET", "/posture_rules", headers=auth)
    assert rules.status == 200
    (entry,) = rules.result
    assert entry["rule"]["id"] == lab.rule_id and entry["signing_certificates"] == pem(lab.ca.certificate)
    nonce = await agent_call(client, "POST", "/nonce", headers=auth)
    assert nonce.status == 200 and nonce.result["expires_at"] == "2026-03-01T12:02:00Z"
    raw = base64.b64decode(nonce.result["nonce"])
    assert len(raw) == 32
    cert, key = lab.ca.issue(lab.now)
    signature = sign_proof(key, proof_message(nonce=raw, device_id=device_id, rule_id=lab.rule_id))
    result = {"rule_id": lab.rule_id, "success": True, "reason": "", "nonce": nonce.result["nonce"],
              "certificate": pem(cert), "signature": base64.b64encode(signature).decode()}  # fmt: skip
    stored = await agent_call(client, "POST", "/results", headers=auth, json={"results": [result]})
    assert stored.status == 200, stored.body
    (outcome,) = stored.result
    assert outcome["success"] is True and outcome["verified"] is True
    assert outcome["expires_at"] == "2026-03-01T12:10:00Z"
    assert lab.service.identity(device_id).posture_passed == (lab.rule_id,)
    replay = await agent_call(client, "POST", "/results", headers=auth, json={"results": [result]})
    assert replay.status == 200 and replay.result[0]["success"] is False
    assert "already used" in replay.result[0]["reason"]


async def test_answers_offer_the_nonce_for_the_next_report(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    auth = basic(device_id, secret)
    cert, key = lab.ca.issue(lab.now)

    def proven(nonce: str) -> dict[str, Any]:
        message = proof_message(nonce=base64.b64decode(nonce), device_id=device_id, rule_id=lab.rule_id)
        return {"rule_id": lab.rule_id, "success": True, "nonce": nonce, "certificate": pem(cert),
                "signature": base64.b64encode(sign_proof(key, message)).decode()}  # fmt: skip

    rules = await agent_call(client, "GET", "/posture_rules", headers=auth)
    offered = rules.headers["Gateway-Nonce"]
    assert rules.headers["Gateway-Nonce-Expires-In"] == "120" and len(base64.b64decode(offered)) == 32
    first = await agent_call(client, "POST", "/results", headers=auth, json={"results": [proven(offered)]})
    assert (first.result[0]["success"], first.result[0]["verified"]) == (True, True)
    following = first.headers["Gateway-Nonce"]
    assert following != offered
    replay = await agent_call(client, "POST", "/results", headers=auth, json={"results": [proven(offered)]})
    assert "already used" in replay.result[0]["reason"]
    lab.gateway.clock.advance(seconds=121)  # an offered nonce expires as a requested one does
    stale = await agent_call(client, "POST", "/results", headers=auth, json={"results": [proven(following)]})
    assert stale.result[0]["success"] is False and "nonce is stale" in stale.result[0]["reason"]
    refused = await agent_call(
        client, "POST", "/results", headers=basic(device_id, "wrong"), json={"results": []}
    )
    assert refused.status == 401 and "Gateway-Nonce" not in refused.headers


async def test_enrollment_refusals(client: Client, lab: Lab) -> None:
    made = await call(
        client, "POST", f"/client/v4/accounts/{lab.account}/devices/enrollment_tokens",
        token=lab.gateway.token, json={"expires_in": "2m"},
    )  # fmt: skip
    secret = token_secret(made.result["token"])
    body = {"secret": secret, "name": "n", "os": "linux", "email": EMAIL}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**body, "secret": "guess"}, 401, "not a valid enrollment token"),
        ({**body, "os": "plan9"}, 400, "os: unknown operating system 'plan9'"),
        ({**body, "email": "nobody"}, 400, "email: must be an email address"),
        ({**body, "extra": 1}, 400, "extra: unknown field"),
        ({k: v for k, v in body.items() if k != "secret"}, 400, "secret: required"),
        ({**body, "name": 7}, 400, "name: must be a string"),
    ]
    for sent, status, message in cases:
        reply = await agent_call(client, "POST", "/enroll", json=sent)
        assert (reply.status, message in reply.error) == (status, True), reply.body
    assert (await agent_call(client, "POST", "/enroll", json=body)).status == 200
    used = await agent_call(client, "POST", "/enroll", json=body)
    assert used.status == 400 and "already used" in used.error
    later = await call(
        client, "POST", f"/client/v4/accounts/{lab.account}/devices/enrollment_tokens",
        token=lab.gateway.token, json={},
    )  # fmt: skip
    lab.gateway.clock.advance(hours=1)
    expired = await agent_call(
        client, "POST", "/enroll", json={**body, "secret": token_secret(later.result["token"])}
    )
    assert expired.status == 400 and "expired at 2026-03-01T13:00:00Z" in expired.error


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "device credentials required"),
        ({"Authorization": "Bearer abc"}, "device credentials required"),
        ({"Authorization": "Basic !!!"}, "not base64"),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, "device_id:secret"),
        (basic("unknown-device", "secret"), "unknown device"),
    ],
)
async def test_device_credentials_are_required(
    client: Client, lab: Lab, headers: dict[str, str], message: str
) -> None:
    for method, path in (("GET", "/posture_rules"), ("POST", "/nonce"), ("POST", "/results")):
        reply = await agent_call(client, method, path, headers=headers, json={"results": []})
        assert reply.status == 401 and message in reply.error
        assert reply.headers["WWW-Authenticate"] == 'Basic realm="Gateway device"'


async def test_admin_token_is_no_device_credential(client: Client, lab: Lab) -> None:
    reply = await agent_call(
        client, "GET", "/posture_rules", headers={"Authorization": f"Bearer {lab.gateway.token}"}
    )
    assert reply.status == 401


async def test_wrong_secret_is_401_and_logged(client: Client, lab: Lab) -> None:
    device_id, _ = await enroll(client, lab)
    reply = await agent_call(client, "POST", "/nonce", headers=basic(device_id, "wrong"))
    assert reply.status == 401 and "wrong device secret" in reply.error
    logs = await call(
        client, "GET", f"/client/v4/accounts/{lab.account}/devices/posture/logs", token=lab.gateway.token
    )
    (entry,) = logs.result
    assert entry["device_id"] == device_id and entry["outcome"] == "refused"
    assert entry["reason"].startswith("wrong device secret (from 127.0.0.1)")


async def _refused_logged(client: Client, lab: Lab, device_id: str) -> str:
    logs = await call(
        client, "GET", f"/client/v4/accounts/{lab.account}/devices/posture/logs?device_id={device_id}",
        token=lab.gateway.token,
    )  # fmt: skip
    entry = logs.result[0]
    assert entry["outcome"] == "refused" and entry["verified"] is False
    return str(entry["reason"])


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ('{"results": [', 400, "request body is not valid JSON"),
        ("[1, 2]", 400, "must be a JSON object"),
        ('{"results": {}}', 400, "results: must be an array"),
        ('{"results": []}', 400, "results: must hold at least one result"),
        ('{"results": [7]}', 400, "results[0]: must be an object"),
        ('{"results": [{"success": true}]}', 400, "results[0].rule_id: required"),
        (
            '{"results": [{"rule_id": "r", "success": "yes"}]}',
            400,
            "results[0].success: must be true or false",
        ),
        (
            '{"results": [{"rule_id": "r", "success": true, "nonce": 5}]}',
            400,
            "results[0].nonce: must be a string",
        ),
        ('{"results": [{"rule_id": "r", "success": true, "x": 1}]}', 400, "results[0].x: unknown field"),
        ('{"results": [], "more": 1}', 400, "more: unknown field"),
        ('{"results": [' + ",".join(['{"rule_id": "r", "success": false}'] * 257) + "]}", 400, "at most 256"),
        ('{"results": "' + "x" * (1024 * 1024) + '"}', 413, "larger than 1 MiB"),
        ("\ud800".encode("utf-8", "surrogatepass"), 400, "not UTF-8"),
    ],
)
async def test_malformed_reports_are_4xx_and_logged(
    client: Client, lab: Lab, data: str | bytes, status: int, message: str
) -> None:
    device_id, secret = await enroll(client, lab)
    reply = await agent_call(client, "POST", "/results", headers=basic(device_id, secret), data=data)
    assert reply.status == status and message in reply.error, reply.body
    assert message in await _refused_logged(client, lab, device_id)


async def test_result_for_a_rule_the_device_is_not_under(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab, os="mac")
    assert (await agent_call(client, "GET", "/posture_rules", headers=basic(device_id, secret))).result == []
    result = {"rule_id": lab.rule_id, "success": False, "reason": "x"}
    reply = await agent_call(
        client, "POST", "/results", headers=basic(device_id, secret), json={"results": [result]}
    )
    assert reply.status == 400
    assert "rule not assigned to this device: the rule matches linux; this device is mac" in reply.error
    assert "rule not assigned to this device" in await _refused_logged(client, lab, device_id)


async def test_bad_proof_over_http_is_stored_failed(client: Client, lab: Lab) -> None:
    device_id, secret = await enroll(client, lab)
    cert, _ = lab.ca.issue(lab.now)
    result = {"rule_id": lab.rule_id, "success": True, "nonce": base64.b64encode(b"n" * 32).decode(),
              "certificate": pem(cert), "signature": base64.b64encode(b"s" * 64).decode()}  # fmt: skip
    reply = await agent_call(
        client, "POST", "/results", headers=basic(device_id, secret), json={"results": [result]}
    )
    assert reply.status == 200
    assert reply.result[0]["success"] is False and reply.result[0]["verified"] is False
    assert reply.result[0]["reason"].startswith("nonce was not issued to this device by this server")


async def test_agent_paths_answer_404_without_the_device_service(gateway: Gateway) -> None:
    async with TestClient(TestServer(create_app(gateway.api()))) as client:
        reply = await agent_call(client, "POST", "/enroll", json={"secret": "x"})
        assert reply.status == 404 and "not enabled" in reply.error
