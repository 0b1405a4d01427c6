"""The leaf for a public name passes the CA/Browser Forum lint, and the URLs it carries (CA issuers,
CRL distribution point) are served by the gateway: the CA itself and a signed, current CRL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from .conftest import PUBLIC_HOST
from .gateway_process import GatewayProcess
from .lint import cabf_serverauth_findings
from .origin import Origin, body_for
from .pki import describe, load_pem
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]


def _leaf_for_public_name(gw: GatewayProcess, origin: Origin, ca_path: Path) -> x509.Certificate:
    got = fetch(gw.proxy_port, "www.example.com", origin.port, client_context(ca_path))
    assert got.status == 200 and body_for("www.example.com") in got.body
    return got.leaf


def test_leaf_passes_pkilint_dv_final(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile
) -> None:
    leaf = _leaf_for_public_name(shared_gateway, origin, ca_file(shared_gateway))
    pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    findings = cabf_serverauth_findings(pem)
    assert findings == [], f"pkilint DV-FINAL-CERTIFICATE findings at WARNING or worse: {findings}"


def _uris(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound as e:
        pytest.fail(f"leaf lacks an extension: {e}; {describe(leaf)}")
    ca_issuers = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    crls = [
        name.value
        for point in cdp
        for name in (point.full_name or [])
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    return ca_issuers, crls


def test_leaf_aia_and_crl_urls_are_served(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile
) -> None:
    ca_path = ca_file(shared_gateway)
    ca = load_pem(ca_path.read_text())
    leaf = _leaf_for_public_name(shared_gateway, origin, ca_path)
    ca_issuers, crl_urls = _uris(leaf)
    assert ca_issuers, f"no caIssuers URL in AIA: {describe(leaf)}"
    assert crl_urls, "no URL in the CRL distribution points"

    now = dt.datetime.now(dt.UTC)
    with httpx.Client(trust_env=False, timeout=10) as client:

        def get(url: str) -> httpx.Response:
            """GET a URL under the public name from the gateway's admin listener on loopback."""
            parts = urlsplit(url)
            assert parts.scheme == "http" and parts.hostname == PUBLIC_HOST, url
            assert parts.port == shared_gateway.admin_port, url
            return client.get(f"http://127.0.0.1:{parts.port}{parts.path}", headers={"Host": parts.netloc})

        for url in ca_issuers:
            response = get(url)
            assert response.status_code == 200, f"GET {url}: {response.status_code}"
            served = x509.load_der_x509_certificate(response.content)
            assert served == ca, f"{url} serves {describe(served)}, not the issuing CA"

        for url in crl_urls:
            response = get(url)
            assert response.status_code == 200, f"GET {url}: {response.status_code}"
            crl = x509.load_der_x509_crl(response.content)
            assert crl.issuer == ca.subject
            ca_key = ca.public_key()
            assert isinstance(ca_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey), ca_key
            assert crl.is_signature_valid(ca_key), f"{url}: CRL signature does not verify with the CA"
            assert crl.last_update_utc <= now + dt.timedelta(minutes=5), crl.last_update_utc
            assert crl.next_update_utc is not None and crl.next_update_utc > now, crl.next_update_utc
            assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is None
