"""A TLS server certificate for the gateway's own admin API (SPEC §7 "Exposure").

``ServerCertificate.generate(names)`` makes the self-signed certificate a gateway uses when told
``--admin-tls auto``: EC P-256, the names it is reached by in the SAN, EKU serverAuth, CA:false,
five years. Clients do not chain it to a root: agents pin its SHA-256 fingerprint and the admin
CLI trusts the certificate file itself, so a long life costs nothing and a renewal would break
every pin. ``ServerCertificate.from_pem(chain, key)`` checks a certificate a user brings.

Pure: nothing touches the disk; the private key leaves only as PKCS#8 encrypted with a password
the caller chooses.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import BACKDATE, fingerprint_of, parse_certificates
from certs.clock import Clock, utcnow
from certs.errors import CertError, InvalidCertificate
from certs.issuer import general_names, normalize_names
from certs.keys import PrivateKey, check_key_pair, describe_key

logger = logging.getLogger(__name__)

__all__ = ["SERVER_CERT_VALIDITY_DAYS", "ServerCertificate"]

SERVER_CERT_VALIDITY_DAYS = 1825
"""Five years: clients pin the certificate, they do not chain it (see the module docstring)."""

_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:[A-Z]+ )*PRIVATE KEY)-----\r?\n.*?-----END \1-----", re.DOTALL)

_SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class ServerCertificate:
    """A TLS server certificate, its private key and the issuers to send after it."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False, compare=False)
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        check_key_pair(self.certificate, self.private_key, accepted="an EC or RSA key")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        names: Sequence[str],
        *,
        validity_days: int = SERVER_CERT_VALIDITY_DAYS,
        clock: Clock = utcnow,
    ) -> ServerCertificate:
        """Self-signed, for ``names`` (DNS names or IP literals; the first is the subject CN)."""
        if not 1 <= validity_days <= 3650:
            raise InvalidCertificate(f"validity_days must be 1-3650, got {validity_days}")
        try:
            normalized = normalize_names(names)
        except CertError as e:
            raise InvalidCertificate(str(e)) from None
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, normalized[0][:64])])
        start = clock() - BACKDATE
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_SERVER_KEY_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(general_names(normalized)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        logger.info(
            "generated a self-signed TLS server certificate for %s, valid until %s",
            ", ".join(normalized),
            certificate.not_valid_after_utc.date(),
        )
        return cls(certificate, key)

    @classmethod
    def from_pem(
        cls, certificate_pem: bytes, private_key_pem: bytes, *, password: bytes | None = None
    ) -> ServerCertificate:
        """The first certificate of ``certificate_pem`` with the one private key in
        ``private_key_pem`` (both may be the same text); the other certificates are its chain.
        InvalidCertificate names what is missing or wrong; a key with a passphrase is refused
        unless ``password`` is given."""
        certificates = parse_certificates(certificate_pem)
        key = load_private_key(private_key_pem, password=password)
        if certificates[0].public_key() != key.public_key():
            others = [c for c in certificates[1:] if c.public_key() == key.public_key()]
            hint = ": it belongs to a later certificate (put the server certificate first)" if others else ""
            raise InvalidCertificate(f"the private key does not match the certificate{hint}")
        return cls(certificates[0], key, tuple(certificates[1:]))

    # -- what it is ---------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, colon-separated upper-case hex."""
        return fingerprint_of(self.certificate)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def names(self) -> tuple[str, ...]:
        """The SAN's DNS names and IP addresses, as text."""
        try:
            san = self.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return ()
        dns = san.value.get_values_for_type(x509.DNSName)
        ips = san.value.get_values_for_type(x509.IPAddress)
        return (*dns, *(str(ip) for ip in ips))

    def covers(self, host: str) -> bool:
        """Would a client that verifies host names accept this certificate for ``host``?"""
        host = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(_dns_matches(name.lower(), host) for name in self.names if not _is_ip(name))
        return any(_is_ip(name) and ipaddress.ip_address(name) == address for name in self.names)

    # -- export -------------------------------------------------------------------------------

    def certificate_pem(self) -> bytes:
        """The certificate, then its chain: what a client may trust or a server sends."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain))

    def private_key_pem(self, *, password: bytes) -> bytes:
        """PKCS#8, encrypted with ``password`` (PBES2: PBKDF2 and AES-256-CBC)."""
        if not password:
            raise InvalidCertificate("the private key is only exported encrypted: give a password")
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )


def load_private_key(pem: bytes, *, password: bytes | None = None) -> PrivateKey:
    """The one private key in a PEM text (other blocks, such as certificates, are skipped)."""
    blocks = _KEY_BLOCK.findall(pem)
    if not blocks:
        raise InvalidCertificate("no private key found: expected a '-----BEGIN PRIVATE KEY-----' block")
    if len(blocks) > 1:
        raise InvalidCertificate(f"{len(blocks)} private keys found: expected exactly one")
    block = _KEY_BLOCK.search(pem)
    assert block is not None
    try:
        key = serialization.load_pem_private_key(block.group(0), password=password)
    except TypeError:
        raise InvalidCertificate(
            "the private key is encrypted (has a passphrase): give it without one"
        ) from None
    except ValueError as e:
        if password is not None and "password" in str(e).lower():
            raise InvalidCertificate("could not decrypt the private key: wrong password") from None
        raise InvalidCertificate("could not parse the private key PEM") from None
    except UnsupportedAlgorithm:
        raise InvalidCertificate("could not load the private key: unsupported key type") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidCertificate(f"{describe_key(key)} private keys are not supported: use an EC or RSA key")
    return key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125: exact, or a ``*.`` wildcard standing for exactly one left-most label."""
    if pattern == host:
        return True
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return False
