"""The official Cloudflare SDK walks the whole root-CA lifecycle against the running process, and
the proxy follows: generated CA, then a CA we bring ourselves (uploaded with its key)."""

from __future__ import annotations

from pathlib import Path

import cloudflare
import pytest

from tests.support.pki import make_ca

from . import curl, sdk
from .gateway_process import GatewayProcess
from .origin import Origin, body_for
from .pki import describe, issued_by, load_pem

pytestmark = pytest.mark.e2e


def _leaf_through_proxy(gw: GatewayProcess, origin: Origin, cacert: Path) -> curl.CurlResult:
    result = curl.via_proxy(gw.proxy_port, origin.url("origin.test"), cacert=cacert)
    assert result.returncode == 0, f"curl trusting {cacert.name}: {result.stderr}"
    assert result.status == 200 and body_for("origin.test") in result.body
    return result


def test_sdk_certificate_lifecycle(gateway: GatewayProcess, origin: Origin, tmp_path: Path) -> None:
    with sdk.client(gateway) as c:
        account = sdk.account_id(c)
        certs = c.zero_trust.gateway.certificates

        # First start made one CA and turned it on; it is what /pki/ca.pem publishes.
        initial = sdk.certificates(c, account)
        in_use = [x for x in initial.values() if x.in_use]
        assert len(in_use) == 1, initial
        old = in_use[0]
        assert old.binding_status == "available"
        assert old.type == "gateway_managed"
        assert load_pem(old.certificate) == load_pem(gateway.ca_pem())

        # Generate → activate → available → turn on.
        new = sdk.generate_available(c, account)
        assert new.type == "gateway_managed"
        assert new.id != old.id and new.fingerprint != old.fingerprint
        assert new.in_use is False
        sdk.turn_on(c, account, new.id)
        listing = sdk.certificates(c, account)
        assert listing[new.id].in_use is True
        assert listing[old.id].in_use is False
        assert listing[old.id].binding_status == "available"
        assert [x.id for x in listing.values() if x.in_use] == [new.id]

        # The proxy signs with the new CA at once.
        new_ca = tmp_path / "new-ca.pem"
        new_ca.write_text(new.certificate)
        assert load_pem(gateway.ca_pem()) == load_pem(new.certificate)
        leaf = _leaf_through_proxy(gateway, origin, new_ca).certs[0]
        assert issued_by(leaf, load_pem(new.certificate)), describe(leaf)

        # The in-use CA cannot be deactivated; a refusal the SDK will not retry (4xx).
        with pytest.raises(
            cloudflare.BadRequestError, match="is in use: turn another certificate on first"
        ) as refused:
            certs.deactivate(new.id, account_id=account)
        assert 400 <= refused.value.status_code < 500 and refused.value.status_code not in (
            408,
            409,
            429,
        )

        # An available CA cannot be deleted before it is deactivated.
        with pytest.raises(
            cloudflare.BadRequestError, match="only inactive certificates can be deleted"
        ) as refused:
            certs.delete(old.id, account_id=account)
        assert 400 <= refused.value.status_code < 500 and refused.value.status_code not in (
            408,
            409,
            429,
        )

        # Retire the old one: deactivate → inactive → delete → gone.
        certs.deactivate(old.id, account_id=account)
        sdk.wait_binding_status(c, account, old.id, "inactive")
        certs.delete(old.id, account_id=account)
        with pytest.raises(cloudflare.NotFoundError):
            certs.get(old.id, account_id=account)
        assert old.id not in sdk.certificates(c, account)

        # Bring your own CA: upload it with its key as an mTLS certificate, activate that id.
        byo = make_ca("e2e Bring-Your-Own Root", organization="e2e BYO Org", key_identifiers=True)
        uploaded = c.mtls_certificates.create(
            account_id=account,
            ca=True,
            name="e2e byo root",
            certificates=byo.cert_pem(),
            private_key=byo.key_pem(),
        )
        assert uploaded is not None and uploaded.id
        certs.activate(uploaded.id, account_id=account)
        sdk.wait_binding_status(c, account, uploaded.id, "available")
        listing = sdk.certificates(c, account)
        assert listing[uploaded.id].type == "custom"
        assert load_pem(listing[uploaded.id].certificate) == byo.certificate
        assert listing[new.id].in_use is True

        sdk.turn_on(c, account, uploaded.id)
        listing = sdk.certificates(c, account)
        assert [x.id for x in listing.values() if x.in_use] == [uploaded.id]
        assert listing[new.id].binding_status == "available"

    byo_path = tmp_path / "byo-ca.pem"
    byo_path.write_text(byo.cert_pem())
    leaf = _leaf_through_proxy(gateway, origin, byo_path).certs[0]
    assert issued_by(leaf, byo.certificate), describe(leaf)

    # The key went in; it never comes back out, through any of these.
    with gateway.api() as api:
        for path in (
            f"/accounts/{account}/gateway/certificates",
            f"/accounts/{account}/gateway/certificates/{uploaded.id}",
            f"/accounts/{account}/mtls_certificates",
            f"/accounts/{account}/mtls_certificates/{uploaded.id}",
        ):
            response = api.get(path)
            assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:300]}"
            assert "PRIVATE KEY" not in response.text, path
            assert byo.key_pem().splitlines()[1] not in response.text, path
