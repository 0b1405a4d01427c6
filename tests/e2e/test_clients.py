"""Real clients through the running proxy: curl (HTTP/2 and HTTP/1.1), Python's ssl over a CONNECT
tunnel, openssl s_client + verify, and an upstream the gateway must not trust."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from . import curl, tools
from .gateway_process import GatewayProcess, child_env
from .origin import Origin, body_for
from .pki import describe, dns_names, issued_by, load_pem, load_pems, public_key_der, ski
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

CaFile = Callable[[GatewayProcess], Path]


@pytest.mark.parametrize(
    ("flag", "client_version", "origin_protocol"),
    [("--http2", "2", "HTTP/2.0"), ("--http1.1", "1.1", "HTTP/1.1")],
)
def test_curl_gets_origin_body_over_h2_and_h1(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile,
    flag: str, client_version: str, origin_protocol: str,
) -> None:  # fmt: skip
    ca = ca_file(shared_gateway)
    result = curl.via_proxy(shared_gateway.proxy_port, origin.url("origin.test"), cacert=ca, args=(flag,))
    assert result.returncode == 0, result.stderr
    assert result.status == 200
    # The client side spoke `client_version`; the origin page says what nginx was spoken to with.
    assert result.http_version == client_version
    assert body_for("origin.test", origin_protocol) in result.body
    assert result.certs, "curl saw no certificate"
    assert issued_by(result.certs[0], load_pem(ca.read_text())), describe(result.certs[0])


def test_python_sees_leaf_from_in_use_ca(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile
) -> None:
    ca_path = ca_file(shared_gateway)
    ca = load_pem(ca_path.read_text())
    before = dt.datetime.now(dt.UTC)
    got = fetch(shared_gateway.proxy_port, "origin.test", origin.port, client_context(ca_path))
    assert got.status == 200
    assert body_for("origin.test") in got.body
    leaf = got.leaf

    assert leaf.issuer == ca.subject, describe(leaf)
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ski(
        ca
    )
    leaf.verify_directly_issued_by(ca)
    # The web PKI path validator (SAN, EKU, AKI, basicConstraints, criticality, time) accepts it.
    chain = (
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("origin.test")).verify(leaf, [])
    )
    assert chain == [leaf, ca]
    reuses_ca_key = public_key_der(leaf) == public_key_der(ca)
    assert not reuses_ca_key, "the leaf carries the CA's own public key (mitmproxy's default)"
    assert "origin.test" in dns_names(leaf)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca

    # Backdated by about an hour (SPEC §3), not by days; the shared gateway may have cached it.
    assert before - dt.timedelta(hours=2) <= leaf.not_valid_before_utc <= before, leaf.not_valid_before_utc
    assert leaf.not_valid_after_utc > before + dt.timedelta(days=40)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=47), f"leaf lifetime {lifetime} (notBefore to notAfter)"


def test_python_sees_distinct_leaves_per_host(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile
) -> None:
    ctx = client_context(ca_file(shared_gateway))
    a = fetch(shared_gateway.proxy_port, "a.origin.test", origin.port, ctx)
    b = fetch(shared_gateway.proxy_port, "b.origin.test", origin.port, ctx)
    assert body_for("a.origin.test") in a.body and body_for("b.origin.test") in b.body
    assert "a.origin.test" in dns_names(a.leaf)
    assert "b.origin.test" in dns_names(b.leaf)
    assert a.leaf.serial_number != b.leaf.serial_number
    # One leaf key per CA per node (SPEC §3): both leaves carry the same public key.
    assert public_key_der(a.leaf) == public_key_der(b.leaf)


def test_openssl_s_client_leaf_verifies(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile, tmp_path: Path
) -> None:
    openssl = tools.require("openssl")
    ca = ca_file(shared_gateway)
    shown = tools.run(
        [
            openssl, "s_client",
            "-proxy", f"127.0.0.1:{shared_gateway.proxy_port}",
            "-connect", f"origin.test:{origin.port}",
            "-servername", "origin.test",
            "-verify_hostname", "origin.test",
            "-CAfile", str(ca),
            "-showcerts",
        ],
        input=b"",
        env=child_env(),
    )  # fmt: skip
    out = shown.stdout.decode(errors="replace")
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out[-1500:]
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", out, re.S)
    assert pems, out[-1500:]
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_text(pems[0])
    assert "origin.test" in dns_names(load_pems(pems[0])[0])

    verified = tools.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(ca),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "origin.test",
            str(leaf_path),
        ]
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.decode().strip() == f"{leaf_path}: OK"

    # And the check is real: the same leaf does not verify against the origin's CA.
    foreign = tools.run([openssl, "verify", "-CAfile", str(origin.ca_path), str(leaf_path)])
    assert foreign.returncode != 0


def test_untrusted_upstream_gets_block_page_naming_reason(
    shared_gateway: GatewayProcess, origin: Origin, ca_file: CaFile
) -> None:
    ca = ca_file(shared_gateway)
    result = curl.via_proxy(shared_gateway.proxy_port, origin.url("untrusted.test"), cacert=ca)
    # The client's TLS with the proxy succeeds (leaf from our CA); the answer is the gateway's:
    # with no rule saying otherwise, an untrusted upstream gets a block page (SPEC §4).
    assert result.returncode == 0, result.stderr
    assert result.status == 403, f"status {result.status}: {result.body[:500]}"
    assert body_for("untrusted.test") not in result.body
    text = result.body.lower()
    assert "certificate of untrusted.test is not trusted" in text, result.body[:1000]
    assert "unable to get local issuer certificate" in text, result.body[:1000]

    # The trusted origin on the same port still answers through the same proxy.
    ok = curl.via_proxy(shared_gateway.proxy_port, origin.url("origin.test"), cacert=ca)
    assert ok.status == 200 and body_for("origin.test") in ok.body
