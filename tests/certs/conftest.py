"""Shared fixtures for the certs tests: clocks, CAs, a certificate factory and a TLS handshake."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certs.authority import CertificateAuthority
from certs.issuer import Leaf
from tests.support.clock import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""Start of the injected ``clock`` fixture: deterministic dates in messages."""

CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

CertificateFactory = Callable[..., x509.Certificate]
Handshake = Callable[[Leaf, str, str], dict[str, Any]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(scope="session")
def root_ca() -> CertificateAuthority:
    """An EC P-256 root valid now (real clock): for handshakes and verification."""
    return CertificateAuthority.generate(
        common_name="Gateway Test Root", organization="Example Org", country="US"
    )


@pytest.fixture(scope="session")
def foreign_ca() -> CertificateAuthority:
    return CertificateAuthority.generate(common_name="Foreign Root", organization="Elsewhere")


@pytest.fixture(scope="session")
def rsa2048_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def build_certificate(
    *,
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str = "Uploaded CA",
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
    ca: bool | None = True,
    bc_critical: bool = True,
    key_usage: x509.KeyUsage | None = CA_KEY_USAGE,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A certificate with exactly the features a test needs (self-signed unless ``issuer``).

    ``ca=None`` leaves basicConstraints out; ``key_usage=None`` leaves keyUsage out.
    """
    now = datetime.now(UTC)
    subject = _name(common_name)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=bc_critical)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    hash_algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, hash_algorithm)


@pytest.fixture(scope="session")
def make_certificate() -> CertificateFactory:
    return build_certificate


Lint = Callable[[str, str], list[tuple[str, str]]]


@pytest.fixture(scope="session")
def lint() -> Lint:
    """pkilint's CA/B Forum TLS lint, in process, as its CLI runs it (finding filters included).

    ``lint(pem, "DV_FINAL_CERTIFICATE" | "ROOT_CA")`` returns (severity, code) for every finding
    at WARNING or worse.
    """
    from pkilint import finding_filter, loader
    from pkilint.cabf import serverauth
    from pkilint.cabf.serverauth import serverauth_constants
    from pkilint.pkix import certificate
    from pkilint.validation import ValidationFindingSeverity

    prepared: dict[str, tuple[Any, Any]] = {}  # building a validator takes ~0.4 s: once per type

    def run(pem_text: str, certificate_type: str) -> list[tuple[str, str]]:
        if certificate_type not in prepared:
            ctype = serverauth_constants.CertificateType[certificate_type]
            prepared[certificate_type] = (
                certificate.create_pkix_certificate_validator_container(
                    serverauth.create_decoding_validators(), serverauth.create_validators(ctype)
                ),
                serverauth.create_serverauth_finding_filters(ctype),
            )
        validator, filters = prepared[certificate_type]
        document = loader.RFC5280CertificateDocumentLoader().load_pem_document(pem_text, "cert")
        results, _ = finding_filter.filter_results(filters, validator.validate(document.root))
        return [
            (fd.finding.severity.name, fd.finding.code)
            for result in results
            for fd in result.finding_descriptions
            if fd.finding.severity <= ValidationFindingSeverity.WARNING
        ]

    return run


def _pem(*items: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def intermediate_ca(root_ca: CertificateAuthority) -> CertificateAuthority:
    """An intermediate CA signed by ``root_ca``, uploaded with the root after it."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_certificate(
        key=key,
        common_name="Gateway Test Intermediate",
        issuer=(root_ca.certificate, root_ca.private_key),
    )
    return CertificateAuthority.from_pem(_pem(cert, root_ca.certificate), _key_pem(key))


def _pump(handshaking: ssl.SSLObject, outgoing: ssl.MemoryBIO, peer_incoming: ssl.MemoryBIO) -> bool:
    """One handshake step; returns True once this side is done. Errors propagate."""
    try:
        handshaking.do_handshake()
        done = True
    except ssl.SSLWantReadError:
        done = False
    data = outgoing.read()
    if data:
        peer_incoming.write(data)
    return done


@pytest.fixture
def handshake(tmp_path: Path) -> Iterator[Handshake]:
    """Serve a leaf with stdlib ssl over memory BIOs to a client that trusts only ``ca_pem`` and
    checks ``hostname``; returns the client's view of the peer certificate or raises
    ssl.SSLCertVerificationError."""

    def run(leaf: Leaf, ca_pem: str, hostname: str) -> dict[str, Any]:
        chain_file = tmp_path / "chain.pem"
        key_file = tmp_path / "key.pem"
        chain_file.write_text(leaf.chain_pem())
        key_file.write_bytes(leaf.private_key_pem())
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(chain_file, key_file)
        client_ctx = ssl.create_default_context(cadata=ca_pem)
        client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        client_done = server_done = False
        for _ in range(10):
            client_done = _pump(client, c_out, s_in)
            server_done = _pump(server, s_out, c_in)
            if client_done and server_done:
                break
        assert client_done and server_done, "handshake did not finish"
        peer = client.getpeercert()
        assert peer is not None
        return dict(peer)

    yield run
