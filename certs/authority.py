"""Certificate authorities: generate one, or validate an uploaded one (SPEC §2).

``CertificateAuthority.generate(...)`` makes a root CA the CA/Browser Forum root profile accepts;
``CertificateAuthority.from_pem(cert, key)`` refuses, with a message naming the problem, every
upload that could not sign leaves that browsers and strict verifiers accept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs.clock import Clock, as_utc, format_time, utcnow
from certs.errors import InvalidCertificate
from certs.keys import (
    KeyType,
    PrivateKey,
    check_key_pair,
    check_public_key,
    describe_key,
    signature_hash,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_VALIDITY_DAYS",
    "MAX_PEM_BYTES",
    "MAX_VALIDITY_DAYS",
    "CertificateAuthority",
    "KeyType",
    "describe_name",
    "fingerprint_of",
    "is_self_signed",
    "parse_certificates",
    "validate_ca_certificate",
]

MAX_PEM_BYTES = 64 * 1024
DEFAULT_VALIDITY_DAYS = 1825
MAX_VALIDITY_DAYS = 10950
BACKDATE = timedelta(hours=1)
"""Certificates start this long before "now", to tolerate clients whose clocks run behind."""

_BEGIN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key; signs leaves (``certs.issuer``) and CRLs.

    Constructing one directly checks only that the key is EC/RSA and matches the certificate
    (cheap, for CAs read back from the store); ``from_pem`` applies every upload rule.
    Equality and hashing use the certificate and chain (a certificate has exactly one key).
    """

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False, compare=False)
    chain: tuple[x509.Certificate, ...] = ()
    """Issuers above an uploaded (intermediate) CA, in order, as uploaded; empty for a root."""

    def __post_init__(self) -> None:
        check_key_pair(self.certificate, self.private_key, accepted="an EC P-256/P-384 or RSA key")
        if not isinstance(self.chain, tuple):
            object.__setattr__(self, "chain", tuple(self.chain))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        *,
        common_name: str,
        organization: str,
        country: str | None = None,
        validity_days: int = DEFAULT_VALIDITY_DAYS,
        key_type: KeyType = KeyType.EC_P256,
        clock: Clock = utcnow,
    ) -> CertificateAuthority:
        """A new self-signed root CA (SPEC §2 "Generate").

        Raises InvalidCertificate for a validity outside 1..10950 days or an unusable subject.
        """
        if isinstance(validity_days, bool) or not 1 <= validity_days <= MAX_VALIDITY_DAYS:
            raise InvalidCertificate(
                f"validity_period_days must be between 1 and {MAX_VALIDITY_DAYS}, got {validity_days!r}"
            )
        subject = _subject(common_name=common_name, organization=organization, country=country)
        now = as_utc(clock(), what="clock()")
        key = key_type.generate_private_key()
        public_key = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, signature_hash(key))
        )
        authority = cls(certificate=certificate, private_key=key)
        logger.info(
            "generated CA %s (%s, %s) valid until %s",
            authority.fingerprint,
            subject.rfc4514_string(),
            describe_key(key),
            format_time(authority.not_after),
        )
        return authority

    @classmethod
    def from_pem(
        cls,
        certificate_pem: str | bytes,
        private_key_pem: str | bytes,
        *,
        clock: Clock = utcnow,
    ) -> CertificateAuthority:
        """Validate an uploaded CA (SPEC §2 "Upload") and its key.

        ``certificate_pem`` holds the CA certificate first, optionally followed by its issuers in
        order (kept in ``chain``). Raises InvalidCertificate naming the first problem found.
        """
        now = as_utc(clock(), what="clock()")
        try:
            certificates = parse_certificates(certificate_pem)
            ca, *chain = certificates
            validate_ca_certificate(ca, now=now)
            key = _load_private_key(private_key_pem)
            if ca.public_key() != key.public_key():
                raise InvalidCertificate("private key does not match the certificate")
            _validate_chain(ca, chain, now=now)
            authority = cls(certificate=ca, private_key=key, chain=tuple(chain))
        except InvalidCertificate as e:
            logger.info("refused uploaded CA: %s", e)
            raise
        logger.info(
            "accepted uploaded CA %s (%s, %s, %d chain certificates) valid until %s",
            authority.fingerprint,
            ca.subject.rfc4514_string(),
            describe_key(key),
            len(chain),
            format_time(authority.not_after),
        )
        return authority

    # -- properties ---------------------------------------------------------------------------

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, colon-separated upper-case hex ("E9:19:...")."""
        return fingerprint_of(self.certificate)

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def key_type(self) -> KeyType | None:
        """The key's KeyType, or None for an accepted uploaded key outside the enum (RSA-8192)."""
        return KeyType.of(self.private_key)

    @cached_property
    def subject_key_identifier(self) -> bytes:
        """The CA certificate's SKI, or (if it has none) the RFC 5280 method-1 key hash."""
        try:
            ext = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            return ext.value.key_identifier
        except x509.ExtensionNotFound:
            return x509.SubjectKeyIdentifier.from_public_key(self.private_key.public_key()).key_identifier

    def is_expired(self, now: datetime) -> bool:
        return as_utc(now) >= self.not_after

    # -- export -------------------------------------------------------------------------------

    def certificate_pem(self) -> str:
        """The CA certificate alone, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def certificate_der(self) -> bytes:
        """The CA certificate alone, DER (the ``.crt`` download and the AIA caIssuers body)."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def chain_pem(self) -> str:
        """The CA certificate followed by its uploaded chain, PEM."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for c in (self.certificate, *self.chain)
        )

    def private_key_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: only for sealing at rest (``certs.sealing``)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


_CA_KEY_USAGE = x509.KeyUsage(
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


def fingerprint_of(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated upper-case hex."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def describe_name(name: x509.Name) -> str:
    """A short, readable form of a name for messages (RFC 4514, or "empty subject")."""
    text = name.rfc4514_string()
    return text if text else "empty subject"


def is_self_signed(certificate: x509.Certificate) -> bool:
    """True when the certificate names itself as issuer and its own key verifies it."""
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def parse_certificates(pem: str | bytes) -> list[x509.Certificate]:
    """All certificates in a PEM text, in order. InvalidCertificate on garbage or oversize."""
    data = _as_bytes(pem, what="certificate PEM")
    if _BEGIN_CERTIFICATE not in data:
        if b"PRIVATE KEY-----" in data:
            raise InvalidCertificate(
                "no certificate found: the certificate PEM holds a private key "
                "(were the certificate and the key swapped?)"
            )
        raise InvalidCertificate(
            "no certificate found: expected PEM text with a '-----BEGIN CERTIFICATE-----' block"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidCertificate(
            "could not parse the certificate PEM: a CERTIFICATE block is not valid PEM-encoded "
            "X.509 (check the BEGIN/END lines and the base64 text between them)"
        ) from None


def validate_ca_certificate(cert: x509.Certificate, *, now: datetime, label: str = "certificate") -> None:
    """Check that ``cert`` can act as a CA now; raise InvalidCertificate naming the problem.

    The checks of an upload without its key (mTLS signing CAs): basicConstraints present,
    critical and CA=true; keyUsage present with keyCertSign; a supported key of sufficient
    strength; valid at ``now``. ``label`` names the certificate in messages.
    """
    now = as_utc(now, what="now")
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension) as e:
        raise InvalidCertificate(f"{label} has a malformed extension: {e}") from None
    try:
        basic = extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise InvalidCertificate(f"{label} is not a CA: basicConstraints extension missing") from None
    if not basic.value.ca:
        raise InvalidCertificate(f"{label} is not a CA: basicConstraints CA=false")
    if not basic.critical:
        # RFC 5280 §4.2.1.9; webpki verifiers (cryptography, Chromium's) reject the path.
        raise InvalidCertificate(f"{label} is not usable as a CA: basicConstraints must be marked critical")
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        # RFC 5280 §4.2.1.3 requires it on CAs; strict verifiers reject leaves signed without.
        raise InvalidCertificate(
            f"{label} is not usable as a CA: keyUsage extension missing (keyCertSign required)"
        ) from None
    if not key_usage.key_cert_sign:
        raise InvalidCertificate(f"{label} is not a CA: keyUsage lacks keyCertSign")
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCertificate(
            f"{label} has a public key of an unsupported algorithm: "
            "use an EC P-256 or P-384 key, or RSA of 2048 to 8192 bits"
        ) from None
    try:
        check_public_key(public_key)
    except InvalidCertificate as e:
        if label == "certificate":
            raise
        raise InvalidCertificate(f"{label} has an unusable key: {e}") from None
    if now >= cert.not_valid_after_utc:
        raise InvalidCertificate(f"{label} expired on {format_time(cert.not_valid_after_utc)}")
    if now < cert.not_valid_before_utc:
        raise InvalidCertificate(
            f"{label} is not yet valid: valid from {format_time(cert.not_valid_before_utc)}"
        )


def _validate_chain(ca: x509.Certificate, chain: list[x509.Certificate], *, now: datetime) -> None:
    """The certificates after the CA must each have issued the one before, and be valid CAs."""
    if not chain:
        return
    if is_self_signed(ca):
        raise InvalidCertificate(
            f"the first certificate is a self-signed root, so nothing may follow it "
            f"(found {len(chain)} more certificate(s)): upload the root alone"
        )
    child, child_label = ca, "certificate 1"
    for position, issuer in enumerate(chain, start=2):
        label = f"certificate {position} of the chain ({describe_name(issuer.subject)})"
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise InvalidCertificate(
                f"{label} did not issue {child_label} ({describe_name(child.subject)}): "
                "list the CA first, then each issuer in order"
            ) from None
        validate_ca_certificate(issuer, now=now, label=label)
        child, child_label = issuer, f"certificate {position}"


def _load_private_key(pem: str | bytes) -> PrivateKey:
    data = _as_bytes(pem, what="private key PEM")
    if b"PRIVATE KEY-----" not in data:
        if _BEGIN_CERTIFICATE in data:
            raise InvalidCertificate(
                "no private key found: the private key PEM holds a certificate "
                "(were the certificate and the key swapped?)"
            )
        raise InvalidCertificate(
            "no private key found: expected PEM text with a '-----BEGIN PRIVATE KEY-----' block"
        )
    encrypted = InvalidCertificate(
        "private key is encrypted: upload it without a passphrase "
        "(for example: openssl pkey -in key.pem -out key-plain.pem)"
    )
    if b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise encrypted
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise encrypted from None
    except (ValueError, UnsupportedAlgorithm):
        # The underlying message is dropped on purpose: keep key parsing details out of logs.
        raise InvalidCertificate(
            "could not parse the private key PEM: expected an unencrypted PKCS#8, "
            "PKCS#1 (RSA) or SEC1 (EC) key"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidCertificate(
            f"{describe_key(key)} keys are not supported: "
            "use an EC P-256 or P-384 key, or RSA of 2048 to 8192 bits"
        )
    return key


def _as_bytes(pem: str | bytes, *, what: str) -> bytes:
    data = pem.encode("utf-8", errors="replace") if isinstance(pem, str) else bytes(pem)
    if len(data) > MAX_PEM_BYTES:
        raise InvalidCertificate(f"{what} is {len(data)} bytes: at most {MAX_PEM_BYTES} (64 KiB) accepted")
    return data


def _subject(*, common_name: str, organization: str, country: str | None) -> x509.Name:
    attributes: list[x509.NameAttribute[str]] = []
    if country is not None:
        code = country.strip().upper()
        if len(code) != 2 or not code.isascii() or not code.isalpha():
            raise InvalidCertificate(
                f"country must be a two-letter ISO 3166 code such as 'US', got {country!r}"
            )
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, code))
    for oid, value, what in (
        (NameOID.ORGANIZATION_NAME, organization, "organization"),
        (NameOID.COMMON_NAME, common_name, "common name"),
    ):
        value = value.strip()
        if not 1 <= len(value) <= 64:
            raise InvalidCertificate(f"{what} must be 1 to 64 characters, got {len(value)}")
        attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)
