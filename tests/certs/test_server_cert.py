"""certs/server_cert.py: the admin API's TLS server certificate (generated, or brought by the user)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.authority import CertificateAuthority
from certs.errors import InvalidCertificate
from certs.server_cert import SERVER_CERT_VALIDITY_DAYS, ServerCertificate, load_private_key
from tests.support.clock import FakeClock

from .conftest import T0, build_certificate

NAMES = ("gw.example.com", "localhost", "127.0.0.1", "::1")
PASSWORD = b"derived-password-for-tests"


@pytest.fixture(scope="module")
def server() -> ServerCertificate:
    return ServerCertificate.generate(NAMES)


def _plain_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- generation ---------------------------------------------------------------------------------


def test_generated_certificate_names_every_host_in_the_san(server: ServerCertificate) -> None:
    san = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert server.names == NAMES


def test_generated_certificate_is_a_p256_server_leaf_not_a_ca(server: ServerCertificate) -> None:
    cert = server.certificate
    assert isinstance(server.private_key, ec.EllipticCurvePrivateKey)
    assert server.private_key.curve.name == "secp256r1"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)


def test_generated_certificate_lives_five_years_from_the_injected_clock() -> None:
    clock = FakeClock(T0)
    made = ServerCertificate.generate(["localhost"], clock=clock)
    life = made.certificate.not_valid_after_utc - made.certificate.not_valid_before_utc
    assert life == timedelta(days=SERVER_CERT_VALIDITY_DAYS)
    assert made.certificate.not_valid_before_utc <= T0 < made.not_after


def test_each_generation_makes_a_new_key_and_fingerprint(server: ServerCertificate) -> None:
    other = ServerCertificate.generate(NAMES)
    assert other.fingerprint != server.fingerprint
    assert len(server.fingerprint.split(":")) == 32
    assert server.fingerprint == server.fingerprint.upper()


@pytest.mark.parametrize("names", [[], ["bad name!"]])
def test_generation_refuses_unusable_names(names: list[str]) -> None:
    with pytest.raises(InvalidCertificate):
        ServerCertificate.generate(names)


@pytest.mark.parametrize(
    ("host", "covered"),
    [
        ("gw.example.com", True),
        ("GW.Example.com.", True),
        ("localhost", True),
        ("127.0.0.1", True),
        ("[::1]", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("10.0.0.1", False),
        ("other.example.com", False),
        ("example.com", False),
    ],
)
def test_covers_matches_host_names_as_a_verifying_client_would(
    server: ServerCertificate, host: str, covered: bool
) -> None:
    assert server.covers(host) is covered


def test_a_wildcard_covers_one_label_only() -> None:
    wild = ServerCertificate.generate(["*.corp.example"])
    assert wild.covers("gw.corp.example")
    assert not wild.covers("a.b.corp.example")
    assert not wild.covers("corp.example")


# -- the key at rest ----------------------------------------------------------------------------


def test_private_key_is_exported_only_encrypted(server: ServerCertificate) -> None:
    pem = server.private_key_pem(password=PASSWORD)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError, match="Password was not given but private key is encrypted"):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(InvalidCertificate, match="give a password"):
        server.private_key_pem(password=b"")


def test_stored_pair_loads_back_with_the_same_fingerprint(server: ServerCertificate) -> None:
    again = ServerCertificate.from_pem(
        server.certificate_pem(), server.private_key_pem(password=PASSWORD), password=PASSWORD
    )
    assert again.fingerprint == server.fingerprint
    assert again.names == server.names


def test_a_wrong_password_is_refused(server: ServerCertificate) -> None:
    with pytest.raises(InvalidCertificate, match="wrong password"):
        ServerCertificate.from_pem(
            server.certificate_pem(), server.private_key_pem(password=PASSWORD), password=b"other"
        )


# -- a certificate the user brings --------------------------------------------------------------


def test_chain_and_key_in_one_file(root_ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_certificate(
        key=key, common_name="gw.example.com", issuer=(root_ca.certificate, root_ca.private_key), ca=False
    )
    pem = leaf.public_bytes(serialization.Encoding.PEM) + root_ca.certificate_pem().encode() + _plain_key(key)
    loaded = ServerCertificate.from_pem(pem, pem)
    assert loaded.certificate == leaf
    assert loaded.chain == (root_ca.certificate,)
    assert loaded.certificate_pem().count(b"BEGIN CERTIFICATE") == 2


def test_refusals_name_the_problem(server: ServerCertificate) -> None:
    cert_pem = server.certificate_pem()
    other_key = _plain_key(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InvalidCertificate, match="no certificate found"):
        ServerCertificate.from_pem(b"just text", other_key)
    with pytest.raises(InvalidCertificate, match="no private key found"):
        ServerCertificate.from_pem(cert_pem, cert_pem)
    with pytest.raises(InvalidCertificate, match="does not match the certificate$"):
        ServerCertificate.from_pem(cert_pem, other_key)
    with pytest.raises(InvalidCertificate, match="is encrypted"):
        ServerCertificate.from_pem(cert_pem, server.private_key_pem(password=PASSWORD))
    with pytest.raises(InvalidCertificate, match="2 private keys found"):
        load_private_key(other_key + other_key)


def test_a_key_of_a_later_certificate_says_to_put_the_server_certificate_first(
    server: ServerCertificate,
) -> None:
    other = ServerCertificate.generate(["other.example"])
    pem = other.certificate_pem() + server.certificate_pem()
    with pytest.raises(InvalidCertificate, match="put the server certificate first"):
        ServerCertificate.from_pem(pem, _plain_key(server.private_key))  # type: ignore[arg-type]


# -- a real handshake ---------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path, server: ServerCertificate) -> Iterator[tuple[int, Path]]:
    """A stdlib TLS server on a loopback port serving ``server``; yields (port, certificate file)."""
    cert_file, key_file = tmp_path / "admin-tls.crt", tmp_path / "admin-tls.key"
    cert_file.write_bytes(server.certificate_pem())
    key_file.write_bytes(server.private_key_pem(password=PASSWORD))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file, password=PASSWORD)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate: that is what some tests want

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, cert_file
    stop.set()
    thread.join(5)
    listener.close()


def _fetch(port: int, cadata: str | None = None, *, cafile: Path | None = None, host: str) -> bytes:
    client = ssl.create_default_context(cafile=cafile, cadata=cadata)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client.wrap_socket(raw, server_hostname=host) as tls:
            return tls.recv(2)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "gw.example.com"])
def test_a_client_trusting_the_certificate_file_completes_the_handshake(
    tls_server: tuple[int, Path], host: str
) -> None:
    port, cert_file = tls_server
    assert _fetch(port, cafile=cert_file, host=host) == b"ok"


def test_a_wrong_host_or_another_certificate_fails(
    tls_server: tuple[int, Path], root_ca: CertificateAuthority
) -> None:
    port, cert_file = tls_server
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _fetch(port, cafile=cert_file, host="elsewhere.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        _fetch(port, cadata=ServerCertificate.generate(NAMES).certificate_pem().decode(), host="localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _fetch(port, cadata=root_ca.certificate_pem(), host="localhost")
