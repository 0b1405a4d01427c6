"""Public /pki: the in-use CA (PEM, DER), CA by id (AIA) and its CRL (CDP), without a token."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509

from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]


async def _get(client: Client, path: str) -> tuple[int, str, bytes, dict[str, str]]:
    async with client.get(path) as response:
        return response.status, response.content_type, await response.read(), dict(response.headers)


async def test_in_use_ca_as_pem_and_der_follows_turn_on(client: Client, gateway: Gateway) -> None:
    status, content_type, pem, _ = await _get(client, "/pki/ca.pem")
    assert (status, content_type) == (200, "application/x-pem-file")
    status, content_type, der, _ = await _get(client, "/pki/ca.crt")
    assert (status, content_type) == (200, "application/pkix-cert")
    assert x509.load_pem_x509_certificate(pem) == x509.load_der_x509_certificate(der)
    assert pem.decode() == gateway.service.get(gateway.account_id, gateway.initial_ca_id).certificate_pem
    other = gateway.service.generate(gateway.account_id)
    gateway.service.activate(gateway.account_id, other.id)
    gateway.service.turn_on(gateway.account_id, other.id)
    assert (await _get(client, "/pki/ca.pem"))[2].decode() == other.certificate_pem


async def test_ca_by_id_is_der(client: Client, gateway: Gateway) -> None:
    status, content_type, der, _ = await _get(client, f"/pki/{gateway.initial_ca_id}.crt")
    assert (status, content_type) == (200, "application/pkix-cert")
    fingerprint = gateway.service.get(gateway.account_id, gateway.initial_ca_id).fingerprint
    assert gateway.service.authority(gateway.initial_ca_id).fingerprint == fingerprint
    assert x509.load_der_x509_certificate(der).subject.rfc4514_string().startswith("CN=Gateway Inspection CA")


async def test_crl_is_signed_current_empty_and_cached_for_half_its_life(
    client: Client, gateway: Gateway
) -> None:
    path = f"/pki/{gateway.initial_ca_id}.crl"
    status, content_type, der, headers = await _get(client, path)
    assert (status, content_type) == (200, "application/pkix-crl")
    crl = x509.load_der_x509_crl(der)
    ca = x509.load_pem_x509_certificate(
        gateway.service.get(gateway.account_id, gateway.initial_ca_id).certificate_pem.encode()
    )
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert len(crl) == 0 and crl.issuer == ca.subject
    assert crl.next_update_utc == gateway.clock() + timedelta(days=7)
    assert headers["Cache-Control"] == f"public, max-age={int(timedelta(days=3, hours=12).total_seconds())}"
    gateway.clock.advance(days=3)
    assert (await _get(client, path))[2] == der  # cached
    gateway.clock.advance(days=1)
    fresh = x509.load_der_x509_crl((await _get(client, path))[2])
    assert fresh.next_update_utc == gateway.clock() + timedelta(days=7)


async def test_unknown_ids_are_404_envelopes(client: Client, gateway: Gateway) -> None:
    unknown = "7c0c1a4e-1f4e-4d3c-9a51-7a2d3e4f5a6b"
    reply = await call(client, "GET", f"/pki/{unknown}.crt", token=None)
    assert (reply.status, reply.error) == (404, f"no CA certificate with id {unknown!r}")
    reply = await call(client, "GET", f"/pki/{unknown}.crl", token=None)
    assert (reply.status, reply.error) == (404, f"no CA certificate with id {unknown!r}")
    reply = await call(client, "GET", "/pki/whatever.crt", token=None)
    assert reply.status == 404


async def test_an_expired_ca_signs_no_crl(client: Client, gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id, validity_period_days=1)
    gateway.clock.advance(days=2)
    reply = await call(client, "GET", f"/pki/{cert.id}.crl", token=None)
    assert reply.status == 400
    assert reply.error.endswith("it signs nothing, not even a CRL")


async def test_head_works_on_public_files(client: Client) -> None:
    async with client.head("/pki/ca.crt") as response:
        assert response.status == 200 and response.content_type == "application/pkix-cert"
