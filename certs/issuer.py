"""Leaf issuance for TLS inspection (SPEC §3).

A ``LeafIssuer`` belongs to one loaded CA. It makes its own leaf key once, when constructed
(distinct from the CA key, unlike mitmproxy), so issuing a leaf costs one signature. Leaves are
kept in a bounded LRU cache keyed by (CA fingerprint, names) and re-issued before they expire.

Leaf profile (passes pkilint's DV-FINAL-CERTIFICATE lint for public names): empty subject;
subjectAltName (critical) with dNSName / iPAddress entries; basicConstraints CA=false (critical);
keyUsage digitalSignature (critical; + keyEncipherment for an RSA leaf key); EKU serverAuth;
authorityKeyIdentifier = the CA's SKI; no SKI; certificatePolicies 2.23.140.1.2.1 (DV);
AIA caIssuers and CRL distribution point when their URLs are given; random 64+ bit serial;
valid from now - 1 h, for ``lifetime`` in all (default 47 days, counted from not-before) but never past the CA's not-after.

Names: the first (the SNI) must be a valid host name or IP literal; later ones (usually copied
from the upstream certificate) that are not are left out and logged. Unicode names are IDNA
encoded, DNS names lower-cased, duplicates dropped in order.

Renewal: a cached leaf is re-issued once less than ``renewal_margin(lifetime)`` of its validity
remains: a quarter of the lifetime, but at least one day (client clock skew), and never more than
half the lifetime (so a fresh leaf is not already due). A leaf cut short by the CA's own expiry
is kept until it expires, since a new one could not last longer; the CA then signs nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certs.authority import BACKDATE, CertificateAuthority, is_self_signed
from certs.clock import Clock, as_utc, format_time, utcnow
from certs.errors import CertError
from certs.keys import KeyType, PrivateKey, signature_hash

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_LIFETIME",
    "DV_POLICY_OID",
    "CacheInfo",
    "Leaf",
    "LeafIssuer",
    "general_names",
    "normalize_names",
    "renewal_margin",
]

DEFAULT_LIFETIME = timedelta(days=47)
DEFAULT_CACHE_SIZE = 10_000
DV_POLICY_OID = x509.ObjectIdentifier("2.23.140.1.2.1")
_MIN_MARGIN = timedelta(days=1)
_MAX_NAME_LENGTH = 253


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate for one set of names, with the key to serve it."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    """The issuer's leaf key, never the CA key."""
    chain: tuple[x509.Certificate, ...]
    """Certificates to send after the leaf (empty when a root CA signs directly)."""

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def certificate_pem(self) -> str:
        """The leaf certificate alone, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def chain_pem(self) -> str:
        """The leaf followed by ``chain``, PEM: what a TLS server sends."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for c in (self.certificate, *self.chain)
        )

    def private_key_pem(self) -> bytes:
        """The leaf key, PKCS#8 PEM, unencrypted (for TLS libraries that load PEM)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    """Leaves issued: new names, evicted names and renewals."""
    size: int
    maxsize: int


@dataclass(frozen=True)
class _Entry:
    leaf: Leaf
    not_before: datetime
    renew_at: datetime


def renewal_margin(lifetime: timedelta) -> timedelta:
    """How long before expiry a cached leaf is re-issued (see the module docstring)."""
    return min(max(lifetime / 4, _MIN_MARGIN), lifetime / 2)


class LeafIssuer:
    """Signs leaves with one CA; thread-safe; see the module docstring for the profile."""

    def __init__(
        self,
        authority: CertificateAuthority,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        cache_size: int = DEFAULT_CACHE_SIZE,
        aia_url: str | None = None,
        crl_url: str | None = None,
        leaf_key_type: KeyType = KeyType.EC_P256,
        clock: Clock = utcnow,
    ) -> None:
        if lifetime <= timedelta(0):
            raise CertError(f"leaf lifetime must be positive, got {lifetime}")
        if cache_size < 0:
            raise CertError(f"leaf cache size must be 0 or more, got {cache_size}")
        for what, url in (("AIA caIssuers URL", aia_url), ("CRL URL", crl_url)):
            if url is not None and not url.startswith(("http://", "https://")):
                raise CertError(f"{what} must be an http:// or https:// URL, got {url!r}")
        self._authority = authority
        self._lifetime = lifetime
        self._margin = renewal_margin(lifetime)
        self._maxsize = cache_size
        self._clock = clock
        self._fingerprint = authority.fingerprint
        self._ca_key = authority.private_key
        self._ca_not_before = as_utc(authority.not_before)
        self._ca_not_after = as_utc(authority.not_after)
        self._hash = signature_hash(authority.private_key)
        self._leaf_key = leaf_key_type.generate_private_key()
        self._leaf_public_key = self._leaf_key.public_key()
        self._chain = _chain_to_send(authority)
        # Everything but serial, validity and names is the same for every leaf: build it once.
        self._issuer_name = authority.certificate.subject
        self._extensions = _shared_extensions(
            authority,
            rsa_leaf=isinstance(self._leaf_key, rsa.RSAPrivateKey),
            aia_url=aia_url,
            crl_url=crl_url,
        )
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        logger.info(
            "leaf issuer ready for CA %s: %s leaf key, lifetime %s, cache %d, chain of %d",
            self._fingerprint,
            leaf_key_type.value,
            lifetime,
            cache_size,
            len(self._chain),
        )

    @property
    def authority(self) -> CertificateAuthority:
        return self._authority

    @property
    def fingerprint(self) -> str:
        """The CA's fingerprint (part of every cache key)."""
        return self._fingerprint

    @property
    def lifetime(self) -> timedelta:
        return self._lifetime

    def leaf_for(self, names: Sequence[str]) -> Leaf:
        """The leaf for these names (DNS names / IP literals; the first is the primary).

        Served from the cache while fresh; issued (one signature) otherwise. Raises CertError
        when the CA has expired (expired CAs sign nothing) or a name is not a valid host name.
        """
        now = self._clock()
        if now.tzinfo is not UTC:  # the default clock's times are UTC already
            now = as_utc(now, what="clock()")
        if now >= self._ca_not_after:
            raise CertError(
                f"CA {self._fingerprint} expired on {format_time(self._ca_not_after)}: "
                "it signs nothing; turn on another certificate"
            )
        if now < self._ca_not_before:
            raise CertError(
                f"CA {self._fingerprint} is not valid until {format_time(self._ca_not_before)}: "
                "it signs nothing before then"
            )
        key = (self._fingerprint, tuple(names))
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry.not_before <= now < entry.renew_at:
                self._cache.move_to_end(key)
                self._hits += 1
                return entry.leaf
            self._misses += 1
        entry = self._issue(normalize_names(names), now=now)
        if self._maxsize:
            with self._lock:
                self._cache[key] = entry
                self._cache.move_to_end(key)
                while len(self._cache) > self._maxsize:
                    self._cache.popitem(last=False)
        return entry.leaf

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                hits=self._hits, misses=self._misses, size=len(self._cache), maxsize=self._maxsize
            )

    def cache_clear(self) -> None:
        """Forget every cached leaf (counters are kept)."""
        with self._lock:
            self._cache.clear()

    def _issue(self, names: tuple[str, ...], *, now: datetime) -> _Entry:
        """``now``: timezone-aware UTC (``leaf_for`` sees to it), as the CA's times are."""
        not_before = max(now - BACKDATE, self._ca_not_before)
        wanted_not_after = (
            not_before + self._lifetime
        )  # validity period = not_after - not_before (CA/B Forum)
        capped = wanted_not_after >= self._ca_not_after
        not_after = self._ca_not_after if capped else wanted_not_after
        # One builder made with all its fields at once (each setter of a fluent chain copies the
        # builder and re-checks its extensions); naive UTC times, as the setters would store them
        # (every time here is UTC already: dropping the zone is the conversion).
        san = x509.Extension(_SAN_OID, True, x509.SubjectAlternativeName(general_names(names)))
        certificate = x509.CertificateBuilder(
            issuer_name=self._issuer_name,
            subject_name=_EMPTY_NAME,
            public_key=self._leaf_public_key,
            serial_number=x509.random_serial_number(),
            not_valid_before=not_before.replace(tzinfo=None),
            not_valid_after=not_after.replace(tzinfo=None),
            extensions=[*self._extensions, san],
        ).sign(self._ca_key, self._hash)
        leaf = Leaf(certificate=certificate, private_key=self._leaf_key, chain=self._chain)
        renew_at = not_after if capped else not_after - self._margin
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "issued leaf for %s serial %x until %s",
                ",".join(names),
                certificate.serial_number,
                format_time(not_after),
            )
        return _Entry(leaf=leaf, not_before=not_before, renew_at=renew_at)


_EMPTY_NAME = x509.Name([])
_SAN_OID = x509.SubjectAlternativeName.oid


def normalize_names(names: Sequence[str]) -> tuple[str, ...]:
    """Host names as they go into the SAN: IP literals canonical, DNS names lower-case A-labels
    (IDNA) without a trailing dot; duplicates dropped, order kept.

    The first name (the SNI, the primary) must be valid, else CertError. Later names (typically
    copied from the upstream certificate) that are not valid host names are left out and logged,
    so one odd upstream SAN does not break the connection.
    """
    if isinstance(names, str):
        raise CertError("names must be a sequence of host names, not a single string")
    if not names:
        raise CertError("a leaf needs at least one host name")
    if len(names) == 1:  # the SNI alone: the common case
        return (_normalize_name(names[0]),)
    result: dict[str, None] = {_normalize_name(names[0]): None}
    for raw in names[1:]:
        try:
            result.setdefault(_normalize_name(raw), None)
        except CertError as e:
            logger.warning("left out of the leaf's names: %s", e)
    return tuple(result)


def _normalize_name(raw: str) -> str:
    if len(raw) <= _MAX_NAME_LENGTH and _PLAIN_NAME.fullmatch(raw) and not _looks_like_ip(raw):
        return raw  # already what it would become: lower-case ASCII labels, no dot at the end
    name = raw.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    elif name.endswith("."):
        name = name[:-1]
    if _looks_like_ip(name):
        try:
            return str(ipaddress.ip_address(name))
        except ValueError:
            pass
    shown = raw if len(raw) <= 80 else raw[:80] + "..."
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise CertError(f"invalid host name {shown!r}: cannot be IDNA-encoded") from None
    name = name.lower()
    if len(name) <= _MAX_NAME_LENGTH and _PLAIN_NAME.fullmatch(name):
        return name  # the common case, decided by one regex instead of the loop below
    if not name or len(name) > _MAX_NAME_LENGTH:
        raise CertError(f"invalid host name {shown!r}: must be 1 to 253 characters")
    labels = name.split(".")
    for position, label in enumerate(labels):
        if label == "*" and position == 0 and len(labels) > 2:
            continue
        if not 1 <= len(label) <= 63 or not all(c in _LABEL_CHARS for c in label):
            raise CertError(
                f"invalid host name {shown!r}: each label must be 1 to 63 letters, digits, "
                "'-' or '_' (a leading '*.' wildcard above a two-label domain is allowed)"
            )
    return name


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
# Labels of 1 to 63 of _LABEL_CHARS, no wildcard: exactly what the loop in _normalize_name
# accepts apart from its wildcard exception.
_PLAIN_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")


def _looks_like_ip(name: str) -> bool:
    """Cheap pre-check so DNS names skip ipaddress parsing (IPv6 has ':', IPv4 ends in a digit;
    a DNS name's last label, the TLD, never is all digits)."""
    return ":" in name or name[-1:].isdigit()


def general_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    """SAN entries for names already normalized (``normalize_names``): IP literals as IPAddress."""
    result: list[x509.GeneralName] = []
    for name in names:
        if _looks_like_ip(name):
            try:
                result.append(x509.IPAddress(ipaddress.ip_address(name)))
                continue
            except ValueError:
                pass
        result.append(x509.DNSName(name))
    return result


def _chain_to_send(authority: CertificateAuthority) -> tuple[x509.Certificate, ...]:
    """For a root CA nothing (clients hold it); for an intermediate, itself and its issuers
    without the self-signed root."""
    if is_self_signed(authority.certificate):
        return ()
    return (authority.certificate, *(c for c in authority.chain if not is_self_signed(c)))


def _shared_extensions(
    authority: CertificateAuthority,
    *,
    rsa_leaf: bool,
    aia_url: str | None,
    crl_url: str | None,
) -> tuple[x509.Extension[x509.ExtensionType], ...]:
    """The extensions every leaf of this issuer carries, in order, all but the SAN."""
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_leaf,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (
            x509.AuthorityKeyIdentifier(
                key_identifier=authority.subject_key_identifier,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            False,
        ),
        (x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]), False),
    ]
    if aia_url is not None:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia_url)
        )
        extensions.append((x509.AuthorityInformationAccess([access]), False))
    if crl_url is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        extensions.append((x509.CRLDistributionPoints([point]), False))
    # Encoded to DER once here (by cryptography), so signing a leaf only copies the bytes; the
    # certificate is byte-for-byte what the typed extension would give.
    return tuple(
        x509.Extension(
            extension.oid, critical, x509.UnrecognizedExtension(extension.oid, extension.public_bytes())
        )
        for extension, critical in extensions
    )
