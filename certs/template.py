"""A signed-leaf template: the DER of everything a CA's leaves share, encoded once.

``x509.CertificateBuilder.sign`` re-encodes the whole certificate (issuer name, public key, every
extension) for each leaf and costs about twice the signature itself. A ``LeafTemplate`` is made
from a builder that already holds the shared parts: it signs one probe certificate with that
builder, keeps the DER of the parts that do not change (version, signature algorithm, issuer,
subject, public key, extensions), and for each leaf only encodes the serial, the validity and the
subjectAltName, concatenates, and signs the to-be-signed bytes once.

The result is the certificate the builder would make with the same serial, validity and names,
byte for byte up to the signature (ECDSA signatures are randomised anyway).
``LeafTemplate.from_builder`` checks exactly that once, at load time, and raises ``CertError``
when the builder's encoding is not the one this module expects, so callers can fall back to the
builder; ``tests/certs/test_template.py`` checks it for many names, serials and dates.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from certs.errors import CertError
from certs.keys import PrivateKey

logger = logging.getLogger(__name__)

__all__ = ["LeafTemplate"]

# DER tags
_SEQUENCE = b"\x30"
_INTEGER = b"\x02"
_BIT_STRING = b"\x03"
_OCTET_STRING = b"\x04"
_VERSION = 0xA0  # [0] EXPLICIT in TBSCertificate
_EXTENSIONS = b"\xa3"  # [3] EXPLICIT in TBSCertificate
_DNS_NAME = b"\x82"  # [2] IMPLICIT IA5String in GeneralName
_IP_ADDRESS = b"\x87"  # [7] IMPLICIT OCTET STRING in GeneralName
# Extension ::= SEQUENCE { extnID 2.5.29.17, critical TRUE, extnValue OCTET STRING }: the head
# of a critical subjectAltName, before the OCTET STRING's length.
_SAN_OID_CRITICAL = bytes.fromhex("0603551d110101ff")

_PROBE_SERIAL = 0x7E57_1EAF_5E41_A1CE
_PROBE_NAMES = ("probe.leaf-template.invalid", "192.0.2.1", "2001:db8::1")


def _length(n: int) -> bytes:
    if n < 0x80:
        return _SHORT_LENGTHS[n]
    if n < 0x100:
        return b"\x81" + n.to_bytes(1, "big")
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


_SHORT_LENGTHS = [bytes((n,)) for n in range(0x80)]


def _tlv(tag: bytes, value: bytes) -> bytes:
    return tag + _length(len(value)) + value


def _time(when: datetime) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Z."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    y, mo, d, h, mi, s = when.year, when.month, when.day, when.hour, when.minute, when.second
    if 1950 <= y < 2050:
        return b"\x17\x0d" + f"{y % 100:02d}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}Z".encode("ascii")
    return b"\x18\x0f" + f"{y:04d}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}Z".encode("ascii")


def looks_like_ip(name: str) -> bool:
    """Cheap pre-check so DNS names skip ipaddress parsing (IPv6 has ':', IPv4 ends in a digit;
    a DNS name's last label, the TLD, never is all digits)."""
    return ":" in name or name[-1:].isdigit()


def _general_names(names: Sequence[str]) -> bytes:
    """GeneralNames for names already normalized: iPAddress for IP literals, dNSName else."""
    parts = []
    for name in names:
        value: bytes | None = None
        tag = _DNS_NAME
        if looks_like_ip(name):
            try:
                value = ipaddress.ip_address(name).packed
                tag = _IP_ADDRESS
            except ValueError:
                pass
        if value is None:
            value = name.encode("ascii")
        parts.append(tag + _length(len(value)) + value)
    return _tlv(_SEQUENCE, b"".join(parts))


def _san_extension(names: Sequence[str]) -> bytes:
    """The critical subjectAltName Extension, DER."""
    return _tlv(_SEQUENCE, _SAN_OID_CRITICAL + _tlv(_OCTET_STRING, _general_names(names)))


def _elements(der: bytes) -> list[bytes]:
    """The TLVs (tag, length and value) in a run of DER, in order; single-byte tags only."""
    out: list[bytes] = []
    i = 0
    while i < len(der):
        start = i
        i += 1  # tag
        first = der[i]
        i += 1
        if first < 0x80:
            n = first
        else:
            width = first & 0x7F
            n = int.from_bytes(der[i : i + width], "big")
            i += width
        i += n
        if i > len(der):
            raise CertError("leaf template: truncated DER in the probe certificate")
        out.append(der[start:i])
    return out


def _value(tlv: bytes) -> bytes:
    """The value of one TLV."""
    first = tlv[1]
    return tlv[2:] if first < 0x80 else tlv[2 + (first & 0x7F) :]


class _Signer:
    """Signs to-be-signed bytes as ``CertificateBuilder.sign`` does for this key and hash."""

    def __init__(self, key: PrivateKey, hash: hashes.SHA256 | hashes.SHA384) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ec.ECDSA(hash)
            self.sign: Callable[[bytes], bytes] = lambda data: key.sign(data, algorithm)
        elif isinstance(key, rsa.RSAPrivateKey):
            pkcs1 = padding.PKCS1v15()
            self.sign = lambda data: key.sign(data, pkcs1, hash)
        else:
            raise CertError(f"leaf template: cannot sign with a {type(key).__name__}")


class LeafTemplate:
    """Signs leaves sharing all but serial, validity and subjectAltName (see the module doc)."""

    def __init__(
        self, *, head: bytes, middle: bytes, tail: bytes, extensions: bytes, algorithm: bytes, signer: _Signer
    ) -> None:
        self._head = head  # [0] version
        self._middle = middle  # signature AlgorithmIdentifier + issuer Name
        self._tail = tail  # subject Name + SubjectPublicKeyInfo
        self._extensions = extensions  # every Extension but the SAN, DER, concatenated
        self._algorithm = algorithm  # signature AlgorithmIdentifier (for the outer Certificate)
        self._signer = signer

    @classmethod
    def from_builder(
        cls, builder: x509.CertificateBuilder, ca_key: PrivateKey, hash: hashes.SHA256 | hashes.SHA384
    ) -> LeafTemplate:
        """Split a probe certificate signed by ``builder`` (which holds subject, issuer, public
        key and every extension but the SAN) and check that the template re-creates it.

        CertError if the builder's encoding is not the expected one (the caller falls back)."""
        not_before = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        try:
            probe = (
                builder.serial_number(_PROBE_SERIAL)
                .not_valid_before(not_before)
                .not_valid_after(not_before + timedelta(days=47))
                .add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.DNSName(_PROBE_NAMES[0]),
                            x509.IPAddress(ipaddress.ip_address(_PROBE_NAMES[1])),
                            x509.IPAddress(ipaddress.ip_address(_PROBE_NAMES[2])),
                        ]
                    ),
                    critical=True,
                )
                .sign(ca_key, hash)
            )
        except ValueError as e:  # e.g. the builder already holds a subjectAltName
            raise CertError(f"leaf template: the probe certificate cannot be built: {e}") from e
        tbs = _elements(probe.tbs_certificate_bytes)
        if len(tbs) != 1 or tbs[0][:1] != _SEQUENCE:
            raise CertError("leaf template: the probe's TBSCertificate is not one SEQUENCE")
        fields = _elements(_value(tbs[0]))
        # version, serial, signature, issuer, validity, subject, spki, [3] extensions
        if len(fields) != 8 or fields[0][0] != _VERSION or fields[7][:1] != _EXTENSIONS:
            raise CertError("leaf template: unexpected TBSCertificate fields in the probe")
        extensions = _elements(_value(fields[7]))
        if len(extensions) != 1:
            raise CertError("leaf template: unexpected extensions wrapper in the probe")
        each = _elements(_value(extensions[0]))
        if not each or each[-1] != _san_extension(_PROBE_NAMES):
            raise CertError("leaf template: the probe's last extension is not the expected SAN")
        outer = _elements(_value(_elements(probe.public_bytes(serialization.Encoding.DER))[0]))
        template = cls(
            head=fields[0],
            middle=fields[2] + fields[3],
            tail=fields[5] + fields[6],
            extensions=b"".join(each[:-1]),
            algorithm=outer[1],
            signer=_Signer(ca_key, hash),
        )
        again = template.tbs(_PROBE_SERIAL, not_before, not_before + timedelta(days=47), _PROBE_NAMES)
        if again != probe.tbs_certificate_bytes or outer[1] != fields[2]:
            raise CertError("leaf template: re-encoding the probe did not give the same bytes")
        return template

    def tbs(
        self,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        names: Sequence[str],
    ) -> bytes:
        """The TBSCertificate DER for these variable parts."""
        serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # non-negative
        validity = _time(not_before) + _time(not_after)
        extensions = _tlv(_SEQUENCE, self._extensions + _san_extension(names))
        body = b"".join(
            (
                self._head,
                _INTEGER,
                _length(len(serial_bytes)),
                serial_bytes,
                self._middle,
                _SEQUENCE,
                _length(len(validity)),
                validity,
                self._tail,
                _EXTENSIONS,
                _length(len(extensions)),
                extensions,
            )
        )
        return _tlv(_SEQUENCE, body)

    def sign(
        self,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        names: Sequence[str],
    ) -> x509.Certificate:
        """The signed leaf (one signature, no re-encoding of the shared parts)."""
        tbs = self.tbs(serial, not_before, not_after, names)
        signature = b"\x00" + self._signer.sign(tbs)
        body = b"".join((tbs, self._algorithm, _BIT_STRING, _length(len(signature)), signature))
        return x509.load_der_x509_certificate(_tlv(_SEQUENCE, body))
