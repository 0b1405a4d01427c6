"""Gateway certificates over HTTP: shapes, lifecycle, refusals with exact statuses and messages."""

from __future__ import annotations

import re
from datetime import timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509

from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]
UNKNOWN = "7c0c1a4e-1f4e-4d3c-9a51-7a2d3e4f5a6b"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
FIELDS = {
    "id", "type", "binding_status", "in_use", "certificate", "fingerprint", "issuer_org",
    "issuer_raw", "created_at", "updated_at", "uploaded_on", "expires_on",
}  # fmt: skip


def certs_path(gw: Gateway, suffix: str = "") -> str:
    return f"/client/v4/accounts/{gw.account_id}/gateway/certificates{suffix}"


async def test_list_shows_the_first_start_ca_in_use(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "GET", certs_path(gateway), token=gateway.token)
    assert reply.status == 200
    (cert,) = reply.result
    assert set(cert) == FIELDS
    assert cert["id"] == gateway.initial_ca_id and cert["type"] == "gateway_managed"
    assert cert["binding_status"] == "available" and cert["in_use"] is True
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", cert["fingerprint"])
    assert all(RFC3339_Z.match(cert[k]) for k in ("created_at", "updated_at", "uploaded_on", "expires_on"))
    assert "PRIVATE" not in str(reply.body)
    assert reply.body["result_info"] == {  # one page of everything, as Cloudflare's
        "page": 1,
        "per_page": 1,
        "count": 1,
        "total_count": 1,
        "total_pages": 1,
    }


async def test_create_activate_turn_on_deactivate_delete(client: Client, gateway: Gateway) -> None:
    created = await call(
        client, "POST", certs_path(gateway), token=gateway.token, json={"validity_period_days": 30}
    )
    assert created.status == 200
    cert = created.result
    assert cert["binding_status"] == "inactive" and cert["in_use"] is False
    assert cert["expires_on"] == "2026-03-31T12:00:00Z"
    cid = cert["id"]
    activated = await call(client, "POST", certs_path(gateway, f"/{cid}/activate"), token=gateway.token)
    assert activated.result["binding_status"] == "available"
    settings = {"settings": {"certificate": {"id": cid}}}
    patched = await call(client, "PATCH", f"/client/v4/accounts/{gateway.account_id}/gateway/configuration",
                         token=gateway.token, json=settings)  # fmt: skip
    assert patched.result["settings"]["certificate"] == {"id": cid}
    listed = {
        c["id"]: (c["binding_status"], c["in_use"])
        for c in (await call(client, "GET", certs_path(gateway), token=gateway.token)).result
    }
    assert listed == {gateway.initial_ca_id: ("available", False), cid: ("available", True)}
    old = gateway.initial_ca_id
    assert (
        await call(client, "POST", certs_path(gateway, f"/{old}/deactivate"), token=gateway.token)
    ).result["binding_status"] == "inactive"
    deleted = await call(client, "DELETE", certs_path(gateway, f"/{old}"), token=gateway.token)
    assert deleted.status == 200 and deleted.result["id"] == old
    missing = await call(client, "GET", certs_path(gateway, f"/{old}"), token=gateway.token)
    assert (missing.status, missing.error) == (
        404,
        f"no gateway certificate with id {old!r} in this account",
    )


async def test_pending_until_the_live_node_loaded_it(client: Client, gateway: Gateway) -> None:
    gateway.service.register_node("node-1", "node one")
    cert = (await call(client, "POST", certs_path(gateway), token=gateway.token)).result
    reply = await call(client, "POST", certs_path(gateway, f"/{cert['id']}/activate"), token=gateway.token)
    assert reply.result["binding_status"] == "pending_deployment"
    gateway.service.node_loaded("node-1", gateway.account_id, {cert["id"]: cert["fingerprint"]})
    reply = await call(client, "GET", certs_path(gateway, f"/{cert['id']}"), token=gateway.token)
    assert reply.result["binding_status"] == "available"
    nodes = await call(
        client,
        "GET",
        f"/client/v4/accounts/{gateway.account_id}/gateway/nodes",
        token=gateway.token,
    )
    (node,) = nodes.result
    assert node["id"] == "node-1" and node["live"] is True
    assert [c["id"] for c in node["loaded_certificates"]] == [cert["id"]]


async def test_key_type_extension(client: Client, gateway: Gateway) -> None:
    reply = await call(
        client, "POST", certs_path(gateway), token=gateway.token, json={"key_type": "rsa-2048"}
    )
    assert reply.status == 200
    key = x509.load_pem_x509_certificate(reply.result["certificate"].encode()).public_key()
    assert key.key_size == 2048  # type: ignore[union-attr]


async def test_fourth_generation_is_429_not_retried(client: Client, gateway: Gateway) -> None:
    for _ in range(3):
        assert (await call(client, "POST", certs_path(gateway), token=gateway.token)).status == 200
        gateway.clock.advance(minutes=10)
    before = gateway.store.dump()
    reply = await call(client, "POST", certs_path(gateway), token=gateway.token)
    assert reply.status == 429
    assert reply.error == (
        "at most 3 certificates can be generated per 24 hours: the next one is allowed at 2026-03-02T12:00:00Z"
    )
    assert reply.headers["Retry-After"] == str(int(timedelta(hours=23, minutes=30).total_seconds()))
    assert reply.headers["x-should-retry"] == "false"
    assert reply.body["errors"][0]["code"] == 1006
    assert gateway.store.dump() == before


async def test_bad_create_bodies_name_the_field(client: Client, gateway: Gateway) -> None:
    cases = [
        ({"validity_period_days": 0}, "validity_period_days: must be between 1 and 10950, got 0"),
        (
            {"validity_period_days": 10951},
            "validity_period_days: must be between 1 and 10950, got 10951",
        ),
        ({"validity_period_days": "30"}, "validity_period_days: must be an integer, got a string"),
        ({"validity_period_days": True}, "validity_period_days: must be an integer, got a boolean"),
        (
            {"key_type": "dsa"},
            "key_type: must be one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, got 'dsa'",
        ),
        ({"validity": 3}, "validity: unknown field (accepted: key_type, validity_period_days)"),
    ]
    before = gateway.store.dump()
    for body, message in cases:
        reply = await call(client, "POST", certs_path(gateway), token=gateway.token, json=body)
        assert (reply.status, reply.error) == (400, message)
    assert gateway.store.dump() == before


async def test_forbidden_transitions_are_400(client: Client, gateway: Gateway) -> None:
    in_use = gateway.initial_ca_id
    before = gateway.store.dump()
    cases = [
        (
            "POST",
            f"/{in_use}/deactivate",
            f"certificate {in_use} is in use: turn another certificate on first",
        ),
        (
            "DELETE",
            f"/{in_use}",
            f"certificate {in_use} is in use: turn another certificate on first",
        ),
        ("POST", f"/{in_use}/activate", f"certificate {in_use} is already active (available)"),
    ]
    for method, suffix, message in cases:
        reply = await call(client, method, certs_path(gateway, suffix), token=gateway.token)
        assert (reply.status, reply.error) == (400, message)
        assert reply.body["errors"][0]["code"] == 1004
    assert gateway.store.dump() == before


async def test_eleventh_available_is_400_not_429(client: Client, gateway: Gateway) -> None:
    ids = [gateway.service.generate(gateway.account_id, count_towards_limit=False).id for _ in range(10)]
    for cid in ids[:9]:
        gateway.service.activate(gateway.account_id, cid)
    reply = await call(client, "POST", certs_path(gateway, f"/{ids[9]}/activate"), token=gateway.token)
    assert reply.status == 400
    assert reply.error == (
        "at most 10 certificates can be available (pending deployment included) and 10 already are: "
        "deactivate one first"
    )
    assert "Retry-After" not in reply.headers


async def test_unknown_ids_are_404(client: Client, gateway: Gateway) -> None:
    before = gateway.store.dump()
    for method, suffix in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/activate"),
        ("POST", "/deactivate"),
    ]:
        reply = await call(client, method, certs_path(gateway, f"/{UNKNOWN}{suffix}"), token=gateway.token)
        assert (reply.status, reply.error) == (
            404,
            f"no gateway certificate with id {UNKNOWN!r} in this account",
        )
    assert gateway.store.dump() == before


async def test_expiry_warning_is_a_message_on_get_and_list(client: Client, gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id, validity_period_days=10)
    listed = await call(client, "GET", certs_path(gateway), token=gateway.token)
    expected = [{"code": 0, "message": f"certificate {cert.id} expires in 10 days on 2026-03-11T12:00:00Z"}]
    assert listed.body["messages"] == expected
    got = await call(client, "GET", certs_path(gateway, f"/{cert.id}"), token=gateway.token)
    assert got.body["messages"] == expected


async def test_download_pem_and_der(client: Client, gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.token}"}
    path = certs_path(gateway, f"/{gateway.initial_ca_id}/download")
    async with client.get(path, headers=headers) as response:
        assert response.status == 200 and response.content_type == "application/x-pem-file"
        assert (
            response.headers["Content-Disposition"]
            == f'attachment; filename="gateway-ca-{gateway.initial_ca_id}.pem"'
        )
        pem = await response.read()
    async with client.get(path, params={"format": "der"}, headers=headers) as response:
        assert response.status == 200 and response.content_type == "application/pkix-cert"
        der = await response.read()
    assert x509.load_der_x509_certificate(der) == x509.load_pem_x509_certificate(pem)
    assert b"PRIVATE" not in pem
    reply = await call(client, "GET", path + "?format=p12", token=gateway.token)
    assert (reply.status, reply.error) == (400, "format: must be pem or der, got 'p12'")
