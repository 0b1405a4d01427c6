"""Certificates for tests, made with ``cryptography`` directly (not with ``certs/``, which is what
many of the tests check): one CA factory, one leaf factory, keyword options for every shape the
suite needs (intermediates, expired or not-a-CA roots, weak keys, missing extensions)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
When = timedelta | datetime
"""A validity bound: relative to ``now``, or absolute."""

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
EMAIL_PROTECTION = ExtendedKeyUsageOID.EMAIL_PROTECTION
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: Key

    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self, password: bytes | None = None) -> str:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()

    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.pem`` (certificate) and ``stem.key`` (key, 0600); return both paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_text(self.cert_pem())
        key_path.touch(mode=0o600)
        key_path.write_text(self.key_pem())
        return cert_path, key_path


def new_key(key_type: str = "ec-p256") -> Key:
    """``ec-p256``, ``ec-p384``, ``ec-p521`` or ``rsa-<bits>``."""
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(65537, int(key_type[4:]))
    curves = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1, "ec-p521": ec.SECP521R1}
    return ec.generate_private_key(curves[key_type]())


def name(common_name: str | None, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _at(now: datetime | None, when: When) -> datetime:
    return when if isinstance(when, datetime) else (now or datetime.now(UTC)) + when


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def make_ca(
    common_name: str = "Device CA",
    *,
    organization: str | None = None,
    key: Key | None = None,
    key_type: str = "ec-p256",
    issuer: Issued | None = None,
    now: datetime | None = None,
    not_before: When = timedelta(hours=-1),
    not_after: When = timedelta(days=365),
    ca: bool = True,
    key_usage: bool = True,
    key_cert_sign: bool = True,
    key_identifiers: bool = False,
) -> Issued:
    """A CA certificate, self-signed unless ``issuer`` signs it (an intermediate).

    By default a P-256 root valid from an hour before ``now`` (the real time unless given) for a
    year, with CA basic constraints and a critical key usage that may sign certificates and CRLs.
    ``ca=False`` / ``key_cert_sign=False`` / ``key_usage=False`` make the shapes uploads refuse;
    ``key_identifiers`` adds SKI and AKI (as browsers want them)."""
    key = key or new_key(key_type)
    subject = name(common_name, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(now, not_before))
        .not_valid_after(_at(now, not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage:
        builder = builder.add_extension(_usage(cert_sign=key_cert_sign), critical=True)
    if key_identifiers:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        aki = (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
            if issuer
            else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        )
        builder = builder.add_extension(ski, critical=False).add_extension(aki, critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def issue_leaf(
    ca: Issued | None,
    common_name: str | None,
    *,
    ekus: tuple[x509.ObjectIdentifier, ...] = (CLIENT_AUTH,),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    organization: str | None = None,
    key: Key | None = None,
    key_type: str = "ec-p256",
    now: datetime | None = None,
    valid_from: timedelta = timedelta(hours=-1),
    valid_for: timedelta = timedelta(days=7),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    basic_constraints: bool = True,
    authority_key_identifier: bool = False,
) -> Issued:
    """An end-entity certificate signed by ``ca`` (self-signed when ``ca`` is None): by default a
    P-256 client certificate (clientAuth) valid from an hour before ``now`` for a week.

    The subjectAltName lists ``dns_names``, then ``ip_addresses``, then ``emails`` (rfc822Name),
    and is left out when all three are empty; ``ekus=()`` leaves out the extended key usage.
    ``not_before`` / ``not_after`` are absolute bounds that replace ``valid_from`` / ``valid_for``."""
    key = key or new_key(key_type)
    subject = name(common_name, organization)
    start = not_before or (now or datetime.now(UTC)) + valid_from
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + valid_for)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    sans += [x509.RFC822Name(e) for e in emails]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if authority_key_identifier and ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    return Issued(builder.sign(ca.key if ca else key, hashes.SHA256()), key)


def issue_server(ca: Issued, names: list[str], *, days: int = 30, now: datetime | None = None) -> Issued:
    """A TLS server certificate for DNS ``names`` (wildcards allowed) signed by ``ca``."""
    return issue_leaf(
        ca, names[0], ekus=(SERVER_AUTH,), dns_names=tuple(names), now=now,
        valid_for=timedelta(days=days, hours=1), authority_key_identifier=True,
    )  # fmt: skip


def self_signed_server(host: str = "127.0.0.1") -> Issued:
    """A self-signed TLS server certificate for the IP address ``host`` (what an agent's pin names)."""
    return issue_leaf(
        None, host, ekus=(), ip_addresses=(host,), basic_constraints=False,
        valid_for=timedelta(days=2, hours=1),
    )  # fmt: skip


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256, colon-separated upper-case hex (as the gateway and the agent show it)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
