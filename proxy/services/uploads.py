"""Turning a certificate (generated or uploaded) into the facts the store keeps about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
)
from cryptography.x509.oid import NameOID

from certs.authority import (
    CertificateAuthority,
    fingerprint_of,
    parse_certificates,
    validate_ca_certificate,
)
from certs.clock import Clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateFacts:
    fingerprint: str
    issuer_org: str
    issuer_raw: str
    serial: str
    signature_algorithm: str
    expires_on: datetime


@dataclass(frozen=True)
class Upload:
    """A validated upload: the CA certificate, the issuers above it and, if given, its key."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    authority: CertificateAuthority | None

    def certificate_pem(self) -> str:
        return _pem(self.certificate)

    def chain_pem(self) -> str:
        return "".join(_pem(c) for c in self.chain)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def signature_name(certificate: x509.Certificate) -> str:
    """Cloudflare's spelling of the signature algorithm: ``SHA256WithRSA``, ``SHA384WithECDSA``."""
    key = certificate.public_key()
    algorithm = (
        "RSA" if isinstance(key, rsa.RSAPublicKey)
        else "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey)
        else "DSA" if isinstance(key, dsa.DSAPublicKey)
        else "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey)
        else "Ed448" if isinstance(key, ed448.Ed448PublicKey)
        else certificate.signature_algorithm_oid.dotted_string
    )  # fmt: skip
    digest = certificate.signature_hash_algorithm
    if isinstance(certificate.signature_algorithm_parameters, padding.PSS):
        algorithm = "RSAPSS"
    return f"{digest.name.upper()}With{algorithm}" if digest is not None else algorithm


def facts_of(certificate: x509.Certificate) -> CertificateFacts:
    organizations = certificate.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    issuer_org = str(organizations[0].value) if organizations else ""
    return CertificateFacts(
        fingerprint=fingerprint_of(certificate),
        issuer_org=issuer_org,
        issuer_raw=certificate.issuer.rfc4514_string(),
        serial=str(certificate.serial_number),
        signature_algorithm=signature_name(certificate),
        expires_on=certificate.not_valid_after_utc,
    )


def parse_upload(certificates_pem: str, private_key_pem: str | None, *, clock: Clock) -> Upload:
    """Validate an mTLS upload; with a key, every rule a signing CA must meet (SPEC §2).

    Raises ``certs.errors.InvalidCertificate`` naming the problem.
    """
    if private_key_pem is not None:
        authority = CertificateAuthority.from_pem(certificates_pem, private_key_pem, clock=clock)
        return Upload(authority.certificate, authority.chain, authority)
    ca, *chain = parse_certificates(certificates_pem)
    validate_ca_certificate(ca, now=clock())
    return Upload(ca, tuple(chain), None)
