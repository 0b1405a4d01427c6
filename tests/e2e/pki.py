"""Readers for the certificates the gateway hands out, for e2e assertions. The certificates the
tests make themselves (CAs, origin server certificates, device certificates) come from
``tests.support.pki``."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization


def load_pem(pem: str | bytes) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data)


def load_pems(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data)


def public_key_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki(cert: x509.Certificate) -> bytes | None:
    value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return value.key_identifier


def dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    """Issuer name, AKI and signature all point at `ca`."""
    if leaf.issuer != ca.subject or aki(leaf) != ski(ca):
        return False
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def describe(cert: x509.Certificate) -> str:
    """One line for assertion messages."""
    return f"subject={cert.subject.rfc4514_string()!r} issuer={cert.issuer.rfc4514_string()!r}"
