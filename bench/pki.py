"""Test PKI for the benchmark: the origin's CA and per-host certificates, and a static proxy CA.

Everything here is throwaway lab material written into the run's temp dir. The origin gets one
certificate per host name (nginx picks it by ``$ssl_server_name``), so that a proxy that mimics
the upstream certificate (Squid) or sniffs its SANs (mitmproxy) really has to issue a new leaf for
every new name instead of hitting a cache keyed by a shared wildcard certificate.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gateway bench"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def write_host_certs(ca: Authority, names: Iterable[str], cert_dir: Path, key_file: Path) -> int:
    """One leaf per name, all sharing one EC key (written once to ``key_file``); returns the count."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_file.write_bytes(_key_pem(key))
    os.chmod(key_file, 0o644)  # nginx workers may run unprivileged; this is a throwaway lab key
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    now = _now()
    count = 0
    for name in names:
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(eku, critical=False)
            .add_extension(aki, critical=False)
            .sign(ca.key, hashes.SHA256())
        )
        (cert_dir / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        count += 1
    return count
