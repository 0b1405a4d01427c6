"""Device posture rules through the official SDK over a real loopback socket, their refusals, and
the posture log (our addition) with filters and paging."""

from __future__ import annotations

from typing import Any

import cloudflare
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cloudflare import AsyncCloudflare

from proxy.api import ApiDeps
from proxy.services.posture_verify import Report
from tests.support.devices import DeviceCa, Lab, pem, rule_body
from tests.support.server import call

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def deps(lab: Lab) -> ApiDeps:
    """What ``client`` and ``sdk`` serve: the gateway with the device lab's DeviceService."""
    return lab.api()


async def test_sdk_creates_lists_gets_updates_and_deletes_rules(sdk: AsyncCloudflare, lab: Lab) -> None:
    posture = sdk.zero_trust.devices.posture
    created = await posture.create(
        account_id=lab.account,
        name="corp cert v1",
        type="client_certificate",
        input={"certificate_id": lab.ca_id, "cn": "${serial_number}.corp"},
        match=[{"platform": "linux"}, {"platform": "mac"}],
        schedule="5m",
        expiration="1h",
        description="v1 check",
    )
    assert created is not None and created.id and created.type == "client_certificate"
    assert created.expiration == "1h" and created.enabled is True
    assert created.input.certificate_id == lab.ca_id  # type: ignore[union-attr]
    listed = [r.id async for r in posture.list(account_id=lab.account)]
    assert listed == [lab.rule_id, created.id]
    got = await posture.get(created.id, account_id=lab.account)
    assert got is not None and got.name == "corp cert v1" and got.match is not None
    assert [m.platform for m in got.match] == ["linux", "mac"]
    updated = await posture.update(
        created.id,
        account_id=lab.account,
        name="corp cert v2",
        type="client_certificate_v2",
        input={
            "certificate_id": lab.ca_id,
            "check_private_key": True,
            "operating_system": "linux",
            "extended_key_usage": ["clientAuth", "emailProtection"],
        },
    )
    assert updated is not None and updated.name == "corp cert v2" and updated.schedule == "5m"
    assert updated.input.extended_key_usage == ["clientAuth", "emailProtection"]  # type: ignore[union-attr]
    deleted = await posture.delete(created.id, account_id=lab.account)
    assert deleted is not None and deleted.id == created.id
    with pytest.raises(cloudflare.NotFoundError):
        await posture.get(created.id, account_id=lab.account)


async def test_rule_on_a_ca_uploaded_through_the_sdk(sdk: AsyncCloudflare, lab: Lab) -> None:
    ca = DeviceCa.generate(lab.now, name="Uploaded Device CA")
    upload = await sdk.mtls_certificates.create(account_id=lab.account, ca=True, certificates=pem(ca.certificate),
                                                name="devices")  # fmt: skip
    assert upload is not None and upload.id
    rule = await sdk.zero_trust.devices.posture.create(
        account_id=lab.account, name="uploaded", type="client_certificate_v2",
        input={"certificate_id": upload.id, "check_private_key": True, "operating_system": "linux"},
    )  # fmt: skip
    assert rule is not None and rule.id
    device, _ = lab.enroll()
    assert [r.id for r, _ in lab.service.agent_rules(device)] == [lab.rule_id, rule.id]
    (stored,) = await lab.service.submit(
        device, [await lab.passing(device, *ca.issue(lab.now), rule_id=rule.id)], "h"
    )
    assert stored.success and stored.verified


async def test_sdk_sees_refusals_as_400(sdk: AsyncCloudflare, lab: Lab) -> None:
    posture = sdk.zero_trust.devices.posture
    with pytest.raises(cloudflare.BadRequestError) as e:
        await posture.create(
            account_id=lab.account, name="x", type="client_certificate",
            input={"certificate_id": "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60", "cn": "a"},
        )  # fmt: skip
    assert "input.certificate_id: no mTLS certificate" in str(e.value)
    with pytest.raises(cloudflare.BadRequestError, match="not supported by this gateway"):
        await posture.create(account_id=lab.account, name="x", type="firewall", input={"enabled": True})
    with pytest.raises(cloudflare.BadRequestError, match="signs the device certificates"):
        await sdk.mtls_certificates.delete(lab.ca_id, account_id=lab.account)


async def test_put_id_must_match_and_unknown_rules_are_404(client: Client, lab: Lab) -> None:
    base = f"/client/v4/accounts/{lab.account}/devices/posture"
    token = lab.gateway.token
    reply = await call(
        client, "PUT", f"{base}/{lab.rule_id}", token=token, json={**rule_body(lab.ca_id), "id": "other"}
    )
    assert reply.status == 400 and "does not match the id in the path" in reply.error
    assert (await call(client, "GET", f"{base}/nope", token=token)).status == 404
    assert (await call(client, "DELETE", f"{base}/nope", token=token)).status == 404
    assert (await call(client, "POST", base, token=token, data="{")).status == 400
    assert (await call(client, "GET", base, token=None)).status == 401


async def _logs(client: Client, lab: Lab, query: str = "") -> Any:
    reply = await call(
        client,
        "GET",
        f"/client/v4/accounts/{lab.account}/devices/posture/logs{query}",
        token=lab.gateway.token,
    )
    assert reply.status == 200, reply.body
    return reply.body


async def test_posture_log_filters_and_pages_newest_first(client: Client, lab: Lab) -> None:
    first, _ = lab.enroll(hostname="first")
    second, _ = lab.enroll(hostname="second")
    for i in range(3):
        await lab.service.submit(
            first, [Report(rule_id=lab.rule_id, success=False, reason=f"first {i}")], "h"
        )
        lab.gateway.clock.advance(minutes=1)
    cert, key = lab.ca.issue(lab.now, cn="second.corp")
    await lab.service.submit(second, [await lab.passing(second, cert, key)], "h")
    everything = await _logs(client, lab)
    assert [e["reason"][:7] for e in everything["result"]] == ["verifie", "first 2", "first 1", "first 0"]
    newest = everything["result"][0]
    assert newest["outcome"] == "passed" and newest["verified"] is True and newest["success"] is True
    assert newest["device_name"] == "second" and newest["email"] == "ana@example.com"
    assert newest["rule_name"] == "corp certificate" and newest["certificate_cn"] == "second.corp"
    assert newest["timestamp"] == "2026-03-01T12:03:00Z" and newest["expires_at"] == "2026-03-01T12:13:00Z"
    page = await _logs(client, lab, f"?device_id={first.id}&per_page=2&page=2")
    assert [e["reason"] for e in page["result"]] == ["first 0"]
    assert page["result_info"] == {"page": 2, "per_page": 2, "count": 1, "total_count": 3, "total_pages": 2}
    assert (await _logs(client, lab, "?since=90s"))["result_info"]["total_count"] == 2
    assert (await _logs(client, lab, "?since=2026-03-01T12:02:00Z"))["result_info"]["total_count"] == 2
    assert (await _logs(client, lab, f"?rule_id={lab.rule_id}"))["result_info"]["total_count"] == 4
    assert (await _logs(client, lab, "?rule_id=other"))["result"] == []
    assert (await _logs(client, lab, "?page=9"))["result"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [("?since=yesterday", "since: must be an RFC 3339 time"), ("?since=2026-03-01T12:00:00", "needs a time zone"),
     ("?per_page=5000", "per_page: must be at most 1000"), ("?device_id=" + "x" * 200, "device_id: at most")],
)  # fmt: skip
async def test_bad_log_queries_are_400(client: Client, lab: Lab, query: str, message: str) -> None:
    reply = await call(
        client,
        "GET",
        f"/client/v4/accounts/{lab.account}/devices/posture/logs{query}",
        token=lab.gateway.token,
    )
    assert reply.status == 400 and message in reply.error


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=100000000000000000", "page: must be at most 1000000, got 100000000000000000"),
        ("page=1e400", "page: must be a positive integer, got '1e400'"),
        ("page=0", "page: must be a positive integer, got '0'"),
        ("per_page=1001", "per_page: must be at most 1000, got 1001"),
        ("per_page=nan", "per_page: must be a positive integer, got 'nan'"),
    ],
)
async def test_paging_out_of_range_is_400_naming_the_parameter(
    client: Client, lab: Lab, query: str, message: str
) -> None:
    """The posture log pages in the database: a page past 64-bit offsets was a 500."""
    path = f"/client/v4/accounts/{lab.gateway.account_id}/devices/posture/logs?{query}"
    reply = await call(client, "GET", path, token=lab.gateway.token)
    assert (reply.status, reply.error) == (400, message)


async def test_the_last_page_allowed_answers_an_empty_page(client: Client, lab: Lab) -> None:
    path = f"/client/v4/accounts/{lab.gateway.account_id}/devices/posture/logs?page=1000000&per_page=1000"
    reply = await call(client, "GET", path, token=lab.gateway.token)
    assert reply.status == 200
    assert reply.result == []
