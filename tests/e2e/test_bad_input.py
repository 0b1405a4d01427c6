"""Representative refusals from the real admin API over HTTP (envelope, status, message), after
which the process still answers the API and still proxies."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from . import sdk
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"


def _error(response: httpx.Response, status: int) -> str:
    """Assert a Cloudflare-shaped error envelope with `status`; return its first message."""
    assert response.status_code == status, f"want {status}, got {response.status_code}: {response.text[:500]}"
    body = response.json()
    assert body["success"] is False, body
    assert body["errors"] and body["errors"][0]["message"], body
    assert isinstance(body["errors"][0]["code"], int), body
    return str(body["errors"][0]["message"])


def test_bad_requests_are_refused_and_process_keeps_serving(
    gateway: GatewayProcess, origin: Origin, tmp_path: Path
) -> None:
    with sdk.client(gateway) as c:
        account = sdk.account_id(c)
    base = f"/accounts/{account}"

    with gateway.api(token=None) as anonymous:
        _error(anonymous.get("/accounts"), 401)
        _error(anonymous.get(f"{base}/gateway/certificates"), 401)
    with gateway.api(token="not-the-token") as wrong:
        _error(wrong.get(f"{base}/gateway/certificates"), 401)

    with gateway.api() as api:
        message = _error(
            api.post(
                f"{base}/mtls_certificates",
                json={
                    "name": "broken",
                    "ca": True,
                    "certificates": GARBAGE_PEM,
                    "private_key": GARBAGE_PEM,
                },
            ),
            400,
        )
        assert "certificate" in message.lower(), message

        message = _error(api.post(f"{base}/gateway/certificates", json={"validity_period_days": 0}), 400)
        assert "validity_period_days" in message, message

        _error(
            api.post(
                f"{base}/gateway/certificates",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        )

        _error(api.get(f"{base}/gateway/certificates/{UNKNOWN_ID}"), 404)
        _error(api.post(f"{base}/gateway/certificates/{UNKNOWN_ID}/activate"), 404)
        _error(api.delete(f"{base}/gateway/certificates/{UNKNOWN_ID}"), 404)

        big = json.dumps({"name": "big", "ca": True, "certificates": "A" * (1024 * 1024 + 10)}).encode()
        _error(
            api.post(
                f"{base}/mtls_certificates",
                content=big,
                headers={"Content-Type": "application/json"},
            ),
            413,
        )

        # Still alive: the API answers and nothing was created by the refusals.
        listing = api.get(f"{base}/gateway/certificates")
        assert listing.status_code == 200
        assert len(listing.json()["result"]) == 1, listing.json()["result"]
        mtls = api.get(f"{base}/mtls_certificates")
        assert mtls.status_code == 200 and mtls.json()["result"] == []

    ca_path = tmp_path / "ca.pem"
    ca_path.write_text(gateway.ca_pem())
    got = fetch(gateway.proxy_port, "origin.test", origin.port, client_context(ca_path))
    assert got.status == 200 and body_for("origin.test") in got.body
