"""GET/PUT/PATCH gateway/configuration: shapes, merge rules, turning a certificate on, refusals."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.services.settings import NIL_CERTIFICATE_REFUSED
from tests.support.server import Gateway, call

Client = TestClient[web.Request, web.Application]
NIL = "00000000-0000-0000-0000-000000000000"


def config_path(gw: Gateway) -> str:
    return f"/client/v4/accounts/{gw.account_id}/gateway/configuration"


async def test_get_shows_the_in_use_certificate_and_defaults(client: Client, gateway: Gateway) -> None:
    reply = await call(client, "GET", config_path(gateway), token=gateway.token)
    assert reply.result == {
        "settings": {
            "certificate": {"id": gateway.initial_ca_id},
            "tls_decrypt": {"enabled": True},
        },
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z",
    }


async def test_patch_merges_and_put_replaces(client: Client, gateway: Gateway) -> None:
    gateway.clock.advance(hours=1)
    patch = {
        "settings": {
            "tls_decrypt": {"enabled": False},
            "block_page": {"enabled": True, "name": "Lab"},
        }
    }
    reply = await call(client, "PATCH", config_path(gateway), token=gateway.token, json=patch)
    assert reply.result["settings"] == {
        "block_page": {"enabled": True, "name": "Lab"},
        "certificate": {"id": gateway.initial_ca_id},
        "tls_decrypt": {"enabled": False},
    }
    assert reply.result["updated_at"] == "2026-03-01T13:00:00Z"
    assert reply.result["created_at"] == "2026-03-01T12:00:00Z"
    reply = await call(client, "PATCH", config_path(gateway), token=gateway.token,
                       json={"settings": {"block_page": None}})  # fmt: skip
    assert "block_page" not in reply.result["settings"]
    reply = await call(client, "PUT", config_path(gateway), token=gateway.token,
                       json={"settings": {"activity_log": {"enabled": True}}})  # fmt: skip
    assert reply.result["settings"] == {
        "activity_log": {"enabled": True},
        "certificate": {"id": gateway.initial_ca_id},
        "tls_decrypt": {"enabled": True},
    }


async def test_turning_on_needs_an_available_certificate(client: Client, gateway: Gateway) -> None:
    cert = gateway.service.generate(gateway.account_id)
    before = gateway.store.dump()
    body = {"settings": {"certificate": {"id": cert.id}, "tls_decrypt": {"enabled": False}}}
    reply = await call(client, "PATCH", config_path(gateway), token=gateway.token, json=body)
    assert reply.status == 400
    assert reply.error == f"certificate {cert.id} is inactive: activate it and wait until it is available"
    assert gateway.store.dump() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"settings": {"certificate": {"id": NIL}}},
            f"settings.certificate.id: {NIL_CERTIFICATE_REFUSED}",
        ),
        ({"settings": {"certificate": None}}, f"settings.certificate: {NIL_CERTIFICATE_REFUSED}"),
        (
            {"settings": {"certificate": {"id": "abc"}}},
            "settings.certificate.id: 'abc' is not a UUID",
        ),
        (
            {"settings": {"certificate": {}}},
            "settings.certificate.id: required: a certificate UUID string, got null",
        ),
        (
            {"settings": {"certificate": {"id": "7c0c1a4e-1f4e-4d3c-9a51-7a2d3e4f5a6b"}}},
            "settings.certificate.id: no gateway certificate with id '7c0c1a4e-1f4e-4d3c-9a51-7a2d3e4f5a6b' in this account",
        ),
        (
            {"settings": {"tls_decrypt": {"enabled": "yes"}}},
            "settings.tls_decrypt.enabled: must be true or false, got a string",
        ),
        (
            {"settings": {"tls_decrypt": True}},
            "settings.tls_decrypt: must be an object, got a boolean",
        ),
        (
            {"settings": {"max_ttl_secs": -1}},
            "settings.max_ttl_secs: must be a non-negative integer, got a number",
        ),
        (
            {"settings": {"tls_decrpyt": {}}},
            (
                "settings.tls_decrpyt: unknown setting (known: activity_log, antivirus, "
                "block_page, body_scanning, browser_isolation, certificate, certificate_rotation, custom_certificate, extended_email_matching, "
                "fips, host_selector, inspection, max_ttl_secs, pac_file, protocol_detection, sandbox, tls_decrypt)"
            ),
        ),
        ({"settings": []}, "settings: must be an object, got an array"),
        ({}, "settings: required: an object of settings"),
        ({"settings": {}, "other": 1}, "other: unknown field (accepted: settings)"),
    ],
)
async def test_bad_settings_are_400_naming_the_field(
    client: Client, gateway: Gateway, body: dict[str, object], message: str
) -> None:
    before = gateway.store.dump()
    for method in ("PATCH", "PUT"):
        reply = await call(client, method, config_path(gateway), token=gateway.token, json=body)
        assert (reply.status, reply.error) == (400, message)
    assert gateway.store.dump() == before


async def test_cloudflare_style_extra_keys_inside_certificate_are_ignored(
    client: Client, gateway: Gateway
) -> None:
    body = {"settings": {"certificate": {"id": gateway.initial_ca_id, "in_use": True}}}
    reply = await call(client, "PATCH", config_path(gateway), token=gateway.token, json=body)
    assert reply.result["settings"]["certificate"] == {"id": gateway.initial_ca_id}
