"""The lab's PKI: a CA for the demo origins (the gateway trusts it upstream) with a leaf per
site, and a device CA (uploaded as an mTLS certificate) with the demo laptop's client
certificate. Made fresh for every run; nothing is kept."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import CertificateAuthority
from certs.clock import Clock, utcnow
from certs.issuer import Leaf, LeafIssuer

ORGANIZATION = "Gateway demo lab"
CLIENT_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class ClientCertificate:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def pkcs12(self, nickname: str, password: bytes) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            nickname.encode(),
            self.private_key,
            self.certificate,
            None,
            serialization.BestAvailableEncryption(password),
        )


@dataclass(frozen=True)
class LabPki:
    origin_ca: CertificateAuthority
    device_ca: CertificateAuthority

    @classmethod
    def generate(cls, *, clock: Clock = utcnow) -> LabPki:
        return cls(
            origin_ca=CertificateAuthority.generate(
                common_name="Gateway Demo Origins CA",
                organization=ORGANIZATION,
                validity_days=30,
                clock=clock,
            ),
            device_ca=CertificateAuthority.generate(
                common_name="Gateway Demo Device CA", organization=ORGANIZATION, validity_days=30, clock=clock
            ),
        )

    def origin_leaves(self, names: tuple[str, ...], *, clock: Clock = utcnow) -> dict[str, Leaf]:
        issuer = LeafIssuer(self.origin_ca, lifetime=timedelta(days=7), clock=clock)
        return {name: issuer.leaf_for([name]) for name in names}

    def client_certificate(self, common_name: str, *, clock: Clock = utcnow) -> ClientCertificate:
        """Signed by the device CA itself (posture checks take no chains): CN, clientAuth."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = clock() - timedelta(minutes=5)
        ca_key = self.device_ca.private_key
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.device_ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + CLIENT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return ClientCertificate(cert, key)


def write_leaf(leaf: Leaf, directory: Path, name: str) -> tuple[Path, Path]:
    """``name.pem`` (the leaf, then its chain) and ``name.key`` (0600)."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_text(leaf.chain_pem())
    key_path.touch(mode=0o600)
    key_path.write_bytes(leaf.private_key_pem())
    return cert_path, key_path


def new_password() -> bytes:
    return secrets.token_urlsafe(18).encode()
