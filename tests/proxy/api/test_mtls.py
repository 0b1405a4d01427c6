"""mTLS certificates over HTTP: upload refusals with exact messages, listing, custom activation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.clock import START
from tests.support.pki import make_ca
from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]
FIELDS = {
    "id", "name", "ca", "certificates", "issuer", "serial_number", "signature", "type",
    "uploaded_on", "updated_at", "expires_on",
}  # fmt: skip


def mtls_path(gw: Gateway, suffix: str = "") -> str:
    return f"/client/v4/accounts/{gw.account_id}/mtls_certificates{suffix}"


async def test_upload_with_key_then_activate_as_custom(client: Client, gateway: Gateway) -> None:
    pems = make_ca("BYO Root", organization="Lab", now=START)
    body = {"name": "byo", "ca": True, "certificates": pems.cert_pem(), "private_key": pems.key_pem()}
    created = await call(client, "POST", mtls_path(gateway), token=gateway.token, json=body)
    assert created.status == 200
    upload = created.result
    assert set(upload) == FIELDS
    assert upload["type"] == "custom" and upload["ca"] is True and upload["name"] == "byo"
    assert upload["issuer"] == "CN=BYO Root,O=Lab" and upload["signature"] == "SHA256WithECDSA"
    assert upload["expires_on"] == "2027-03-01T12:00:00Z"
    assert "PRIVATE KEY" not in str(created.body)
    gw_path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates"
    activated = await call(client, "POST", f"{gw_path}/{upload['id']}/activate", token=gateway.token)
    assert activated.result["type"] == "custom" and activated.result["binding_status"] == "available"
    assert activated.result["issuer_org"] == "Lab"
    listed = await call(client, "GET", gw_path, token=gateway.token)
    assert {c["id"]: c["type"] for c in listed.result}[upload["id"]] == "custom"
    refused = await call(client, "DELETE", mtls_path(gateway, f"/{upload['id']}"), token=gateway.token)
    assert refused.status == 400
    assert refused.error == (
        f"certificate {upload['id']} is activated as a gateway certificate (available): deactivate it "
        "through gateway/certificates and wait until it is inactive before deleting it"
    )


async def test_upload_without_key_cannot_be_a_gateway_certificate(client: Client, gateway: Gateway) -> None:
    body = {"ca": True, "certificates": make_ca(now=START).cert_pem()}
    upload = (await call(client, "POST", mtls_path(gateway), token=gateway.token, json=body)).result
    before = gateway.store.dump()
    path = f"/client/v4/accounts/{gateway.account_id}/gateway/certificates/{upload['id']}/activate"
    reply = await call(client, "POST", path, token=gateway.token)
    assert reply.status == 400
    assert reply.error.startswith(f"mTLS certificate {upload['id']} was uploaded without its private key")
    assert "needs one to sign leaves" in reply.error
    assert gateway.store.dump() == before
    deleted = await call(client, "DELETE", mtls_path(gateway, f"/{upload['id']}"), token=gateway.token)
    assert deleted.status == 200 and deleted.result["id"] == upload["id"]
    gone = await call(client, "GET", mtls_path(gateway, f"/{upload['id']}"), token=gateway.token)
    assert (gone.status, gone.error) == (
        404,
        f"no mTLS certificate with id {upload['id']!r} in this account",
    )


def _bad_uploads() -> list[tuple[str, dict[str, object], str]]:
    ok = make_ca(now=START)
    rsa_1024 = make_ca(now=START, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    p521 = make_ca(now=START, key=ec.generate_private_key(ec.SECP521R1()))
    expired = make_ca(now=START, not_before=timedelta(days=-30), not_after=timedelta(days=-1))
    leaf = make_ca(now=START, ca=False)
    garbage_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    return [
        ("malformed PEM", {"certificates": "hello"},
         "no certificate found: expected PEM text with a '-----BEGIN CERTIFICATE-----' block"),
        ("broken PEM block", {"certificates": garbage_block},
         ("could not parse the certificate PEM: a CERTIFICATE block is not valid PEM-encoded X.509 "
         "(check the BEGIN/END lines and the base64 text between them)")),
        ("key mismatch", {"certificates": ok.cert_pem(), "private_key": make_ca(now=START).key_pem()},
         "private key does not match the certificate"),
        ("not a CA", {"certificates": leaf.cert_pem()}, "certificate is not a CA: basicConstraints CA=false"),
        ("not a CA, with key", {"certificates": leaf.cert_pem(), "private_key": leaf.key_pem()},
         "certificate is not a CA: basicConstraints CA=false"),
        ("expired", {"certificates": expired.cert_pem(), "private_key": expired.key_pem()},
         "certificate expired on 2026-02-28T12:00:00Z"),
        ("RSA 1024", {"certificates": rsa_1024.cert_pem(), "private_key": rsa_1024.key_pem()},
         "RSA key of 1024 bits is too weak: at least 2048 required"),
        ("P-521", {"certificates": p521.cert_pem()},
         ("EC P-521 key (secp521r1) is not supported: use an EC P-256 or P-384 key, or RSA of 2048 to "
         "8192 bits")),
        ("larger than 64 KiB", {"certificates": ok.cert_pem() + "#" * 65536},
         f"certificate PEM is {len(ok.cert_pem()) + 65536} bytes: at most 65536 (64 KiB) accepted"),
    ]  # fmt: skip


BAD_UPLOADS = _bad_uploads()


@pytest.mark.parametrize(("case", "fields", "message"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
async def test_bad_uploads_are_refused_naming_the_problem(
    client: Client, gateway: Gateway, case: str, fields: dict[str, object], message: str
) -> None:
    before = gateway.store.dump()
    reply = await call(client, "POST", mtls_path(gateway), token=gateway.token, json={"ca": True, **fields})
    assert (reply.status, reply.error) == (400, message), case
    assert reply.body["errors"][0]["code"] == 1003
    assert gateway.store.dump() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"certificates": "x"}, "ca: required: true (only CA certificates can be uploaded here)"),
        (
            {"ca": False, "certificates": "x"},
            "ca: must be true: only CA certificates can be uploaded here",
        ),
        ({"ca": "yes", "certificates": "x"}, "ca: must be true or false, got a string"),
        ({"ca": True}, "certificates: required"),
        ({"ca": True, "certificates": 5}, "certificates: must be a string, got a number"),
        (
            {"ca": True, "certificates": "x", "private_key": ["k"]},
            "private_key: must be a string, got an array",
        ),
        (
            {"ca": True, "certificates": "x", "name": "n" * 256},
            "name: at most 255 characters, got 256",
        ),
        (
            {"ca": True, "certificates": "x", "key": "k"},
            "key: unknown field (accepted: ca, certificates, name, private_key)",
        ),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    client: Client, gateway: Gateway, body: dict[str, object], message: str
) -> None:
    reply = await call(client, "POST", mtls_path(gateway), token=gateway.token, json=body)
    assert (reply.status, reply.error) == (400, message)


async def test_list_filters_by_type_repeated_or_comma_separated(client: Client, gateway: Gateway) -> None:
    body = {"ca": True, "certificates": make_ca(now=START).cert_pem(), "name": "signing"}
    upload = (await call(client, "POST", mtls_path(gateway), token=gateway.token, json=body)).result
    for query in (
        "",
        "?type=custom",
        "?type=gateway_managed&type=custom",
        "?type=access_managed,custom",
    ):
        reply = await call(client, "GET", mtls_path(gateway, query), token=gateway.token)
        assert [c["id"] for c in reply.result] == [upload["id"]], query
    reply = await call(client, "GET", mtls_path(gateway, "?type=gateway_managed"), token=gateway.token)
    assert reply.result == []
    bad = await call(client, "GET", mtls_path(gateway, "?type=custom,bogus"), token=gateway.token)
    assert (bad.status, bad.error) == (
        400,
        "type: must be among custom, gateway_managed, access_managed, got 'bogus'",
    )
