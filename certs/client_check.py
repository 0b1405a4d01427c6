"""Client-certificate posture checks: one candidate certificate against a ``client_certificate``
rule's requirements (SPEC §5; Cloudflare's WARP client-certificate check).

The agent runs :func:`check_certificate` on every certificate it finds on the device; the
server runs it again on the certificate the agent sends with a passing result, so both sides
decide with the same code. A certificate passes when:

- it was issued by one of the signing certificates *itself*: its issuer name equals the signing
  certificate's subject and its signature verifies with the signing certificate's key. Chains
  are not followed ("WARP does not evaluate the trust chain; this needs to be the issuing
  certificate"): a device certificate issued by an intermediate fails against the root. The
  signing certificate itself (or any certificate with its key), and any CA certificate
  (basicConstraints CA=true: an intermediate found in a trust store), is not a device
  certificate: CA certificates are public, so holding one proves nothing;
- it is valid now (``not_valid_before <= now < not_valid_after``, as ``certs.authority``);
- its CN equals the filled-in template (exact, case-insensitive), when the rule has one;
- every listed SAN value equals (case-insensitive) one of its DNS names, email addresses,
  URIs or IP addresses;
- it carries every listed extended key usage (``anyExtendedKeyUsage`` does not count);
- with ``check_private_key``, the matching private key is present.

:func:`load_candidates` and :func:`pair_key` turn the agent's PEM files (certificate and key in
one file or two) into (certificate, key) candidates.

Reasons are shown to admins (posture logs) and users (the agent's table): they say what the
certificate has and what the rule asks for. They never contain key material.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import describe_name
from certs.clock import as_utc, format_time
from certs.errors import InvalidCertificate
from certs.keys import PrivateKey, describe_key

logger = logging.getLogger(__name__)

__all__ = [
    "EXTENDED_KEY_USAGES",
    "MAX_PEM_FILE_BYTES",
    "Candidate",
    "CheckResult",
    "ClientCertRequirements",
    "check_certificate",
    "common_name",
    "fill_template",
    "load_candidates",
    "pair_key",
]

EXTENDED_KEY_USAGES: Final[dict[str, x509.ObjectIdentifier]] = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,  # 1.3.6.1.5.5.7.3.2
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,  # 1.3.6.1.5.5.7.3.4
}
"""The extended key usages a rule may ask for (Cloudflare's names) and their OIDs."""

TEMPLATE_VARIABLES: Final = ("hostname", "serial_number")

# A device's PEM file is read whole; CA bundles are a few hundred KiB, so this is generous.
MAX_PEM_FILE_BYTES: Final = 4 * 1024 * 1024

Candidate = tuple[x509.Certificate, PrivateKey | None]
"""A certificate found on the device and its private key, when one was found with it."""

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]{1,64})-----")
_KEY_LABELS: Final = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")
_ENCRYPTED_KEY = (
    "private key is encrypted: the agent cannot read keys protected by a passphrase; store it "
    "unencrypted, readable only by the agent (openssl pkey -in key.pem -out key-plain.pem; "
    "chmod 600 key-plain.pem)"
)
# Names shown for the extended key usages a certificate has, beyond the two a rule may ask for.
_EKU_NAMES: Final[dict[x509.ObjectIdentifier, str]] = {
    **{oid: name for name, oid in EXTENDED_KEY_USAGES.items()},
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


# --- requirements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCertRequirements:
    """What one ``client_certificate`` rule asks of a device certificate, templates filled in.

    ``signing_certificates`` are the certificate(s) of the rule's mTLS ``certificate_id`` (an
    upload may hold several); a device certificate issued directly by any of them qualifies.
    ``cn`` ``None`` (or ``""``) means the CN is not checked. Unknown extended key usage names
    and an empty ``signing_certificates`` raise InvalidCertificate here, at construction.
    """

    signing_certificates: tuple[x509.Certificate, ...]
    cn: str | None = None
    subject_alternative_names: tuple[str, ...] = ()
    extended_key_usage: tuple[str, ...] = ()
    check_private_key: bool = False

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the value hashable and immutable.
        for name in ("signing_certificates", "subject_alternative_names", "extended_key_usage"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if not self.signing_certificates:
            raise InvalidCertificate(
                "no signing certificate: the rule's certificate_id must name an uploaded "
                "mTLS certificate that issues the device certificates"
            )
        for usage in self.extended_key_usage:
            if usage not in EXTENDED_KEY_USAGES:
                raise InvalidCertificate(
                    f"unknown extended key usage {usage!r}: use clientAuth or emailProtection"
                )
        for san in self.subject_alternative_names:
            if not san.strip():
                raise InvalidCertificate("a subject alternative name to match must not be empty")

    @classmethod
    def from_templates(
        cls,
        signing_certificates: Iterable[x509.Certificate],
        *,
        hostname: str,
        serial_number: str,
        cn: str | None = None,
        subject_alternative_names: Iterable[str] = (),
        extended_key_usage: Iterable[str] = (),
        check_private_key: bool = False,
    ) -> ClientCertRequirements:
        """Requirements from a rule's templates (``cn``, SANs with ``${hostname}`` and
        ``${serial_number}``) filled in for one device: the agent and the server build them the
        same way."""
        return cls(
            signing_certificates=tuple(signing_certificates),
            cn=(fill_template(cn, hostname=hostname, serial_number=serial_number) if cn else None),
            subject_alternative_names=tuple(
                fill_template(san, hostname=hostname, serial_number=serial_number)
                for san in subject_alternative_names
            ),
            extended_key_usage=tuple(extended_key_usage),
            check_private_key=check_private_key,
        )


def fill_template(template: str, *, hostname: str, serial_number: str) -> str:
    """Replace ``${hostname}`` and ``${serial_number}`` in a CN or SAN template.

    Any other ``${...}`` raises InvalidCertificate (it would never match: better say so than
    compare against the literal text), and so does a variable the device has no value for (an
    empty serial number would turn ``${serial_number}.corp`` into ``.corp``).
    """
    values = {"hostname": hostname, "serial_number": serial_number}
    for match in _VARIABLE.finditer(template):
        name = match.group(1)
        if name not in values:
            raise InvalidCertificate(
                f"unknown variable ${{{name}}} in {template!r}: only ${{hostname}} and "
                "${serial_number} are filled in"
            )
        if not values[name].strip():
            what = "host name" if name == "hostname" else "serial number"
            raise InvalidCertificate(f"{template!r} uses ${{{name}}}, but the device reported no {what}")
    rest = _VARIABLE.sub("", template)
    if "${" in rest:
        raise InvalidCertificate(
            f"unterminated variable in {template!r}: write ${{hostname}} or ${{serial_number}}"
        )
    return _VARIABLE.sub(lambda m: values[m.group(1)].strip(), template)


# --- the check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The outcome for one certificate. ``reason`` says why it failed (every failed condition,
    ``; ``-separated) or, when ``ok``, what it passed on. ``signing_certificate`` is the signing
    certificate that verified it (``None`` when it was not issued by any)."""

    ok: bool
    reason: str
    signing_certificate: x509.Certificate | None = None


def check_certificate(
    cert: x509.Certificate,
    req: ClientCertRequirements,
    *,
    now: datetime,
    private_key: PrivateKey | None = None,
) -> CheckResult:
    """Check one candidate device certificate against a rule's requirements (module docstring).

    A certificate not issued by a signing certificate fails with that reason alone; otherwise
    every failed condition is listed, so one look at the table says everything to fix.
    """
    now = as_utc(now, what="now")
    signer, issuer_problem = _issuing_signer(cert, req.signing_certificates)
    if signer is None:
        return CheckResult(False, issuer_problem)
    problems = [
        problem
        for problem in (
            _validity_problem(cert, now),
            _cn_problem(cert, req.cn),
            *_san_problems(cert, req.subject_alternative_names),
            *_eku_problems(cert, req.extended_key_usage),
            _key_problem(cert, private_key) if req.check_private_key else None,
        )
        if problem is not None
    ]
    if problems:
        return CheckResult(False, "; ".join(problems), signer)
    passed = f"issued by {describe_name(signer.subject)}, valid until {format_time(cert.not_valid_after_utc)}"
    if req.cn:
        passed += f", CN {common_name(cert)!r}"
    if req.check_private_key:
        passed += ", private key present"
    return CheckResult(True, passed, signer)


def common_name(cert: x509.Certificate) -> str | None:
    """The certificate's subject CN (the last one, as TLS libraries read it), or None."""
    values = _common_names(cert)
    return values[-1] if values else None


def _common_names(cert: x509.Certificate) -> list[str]:
    return [
        value if isinstance(value, str) else value.decode("utf-8", errors="replace")
        for value in (a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    ]


def _spki(key: x509.Certificate | PrivateKey) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _same_key(cert: x509.Certificate, other: x509.Certificate) -> bool:
    try:
        return _spki(cert) == _spki(other)
    except (ValueError, UnsupportedAlgorithm):
        return False


def _issuing_signer(
    cert: x509.Certificate, signing: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, str]:
    """The signing certificate that issued ``cert`` directly, or None and the reason."""
    issuer = describe_name(cert.issuer)
    for signer in signing:
        if cert == signer or _same_key(cert, signer):
            return None, (
                f"is the signing certificate {describe_name(signer.subject)} itself, "
                "not a device certificate it issued"
            )
    ca_problem = _ca_problem(cert)
    named = [s for s in signing if s.subject == cert.issuer]
    problem = ""
    for signer in named:
        try:
            cert.verify_directly_issued_by(signer)
        except InvalidSignature:
            problem = (
                f"names {issuer} as its issuer, but its signature does not verify with that "
                "signing certificate's key (issued by another CA with the same name?)"
            )
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            problem = f"names {issuer} as its issuer, but its signature cannot be checked: {e}"
        else:
            return (None, ca_problem) if ca_problem else (signer, "")
    if problem:
        return None, problem
    if len(signing) == 1:
        expected = f"the signing certificate {describe_name(signing[0].subject)}"
    else:
        listed = "; ".join(describe_name(s.subject) for s in signing)
        expected = f"any of the signing certificates ({listed})"
    return None, f"issued by {issuer}, not by {expected}"


def _ca_problem(cert: x509.Certificate) -> str | None:
    """CA certificates are public (trust stores hold them), so having one proves nothing."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as e:
        return f"has a malformed basicConstraints extension: {e}"
    if basic.ca:
        return (
            f"is a CA certificate ({describe_name(cert.subject)}, basicConstraints CA=true), "
            "not a device certificate"
        )
    return None


def _validity_problem(cert: x509.Certificate, now: datetime) -> str | None:
    if now >= cert.not_valid_after_utc:
        return f"expired on {format_time(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"not yet valid: valid from {format_time(cert.not_valid_before_utc)}"
    return None


def _cn_problem(cert: x509.Certificate, expected: str | None) -> str | None:
    if not expected:
        return None
    names = _common_names(cert)
    if not names:
        return f"no CN in the subject {describe_name(cert.subject)!r} (expected {expected!r})"
    wanted = expected.casefold()
    if any(name.casefold() == wanted for name in names):
        return None
    return f"CN {names[-1]!r} does not match {expected!r}"


def _san_values(cert: x509.Certificate) -> list[tuple[str, str]] | None:
    """(kind, value) of every DNS, email, URI and IP entry; None without the extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    values: list[tuple[str, str]] = []
    for kind, general in (
        ("DNS", x509.DNSName),
        ("email", x509.RFC822Name),
        ("URI", x509.UniformResourceIdentifier),
    ):
        values.extend((kind, str(v)) for v in san.get_values_for_type(general))
    values.extend(("IP", str(ip)) for ip in san.get_values_for_type(x509.IPAddress))
    return values


def _san_matches(wanted: str, kind: str, value: str) -> bool:
    if kind == "IP":
        try:
            return ipaddress.ip_address(wanted.strip()) == ipaddress.ip_address(value)
        except ValueError:
            return False
    return wanted.casefold() == value.casefold()


def _san_problems(cert: x509.Certificate, wanted: Sequence[str]) -> list[str]:
    if not wanted:
        return []
    try:
        values = _san_values(cert)
    except (ValueError, x509.DuplicateExtension) as e:
        return [f"has a malformed subjectAltName extension: {e}"]
    if values is None:
        listed = ", ".join(repr(w) for w in wanted)
        return [f"no subjectAltName extension (expected {listed})"]
    shown = ", ".join(f"{kind}:{value}" for kind, value in values[:8]) or "nothing"
    if len(values) > 8:
        shown += f", … ({len(values)} in all)"
    return [
        f"SAN {w!r} not in the certificate (it has {shown})"
        for w in wanted
        if not any(_san_matches(w, kind, value) for kind, value in values)
    ]


def _eku_problems(cert: x509.Certificate, wanted: Sequence[str]) -> list[str]:
    if not wanted:
        return []
    try:
        present = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return [
            f"missing extended key usage {usage} (the certificate has no extendedKeyUsage extension)"
            for usage in wanted
        ]
    except (ValueError, x509.DuplicateExtension) as e:
        return [f"has a malformed extendedKeyUsage extension: {e}"]
    shown = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in present) or "none"
    return [
        f"missing extended key usage {usage} (it has {shown})"
        for usage in wanted
        if EXTENDED_KEY_USAGES[usage] not in present
    ]


def _key_problem(cert: x509.Certificate, private_key: PrivateKey | None) -> str | None:
    if private_key is None:
        return "private key not found"
    try:
        if _spki(private_key) == _spki(cert):
            return None
    except (ValueError, UnsupportedAlgorithm):
        pass
    return "private key does not match the certificate"


# --- PEM files on the device --------------------------------------------------------------------


def load_candidates(pem: bytes | str) -> list[Candidate]:
    """Certificates of one PEM file, each with its private key when the file holds it.

    A file may hold certificates and keys in any order (``cat cert.pem key.pem``); each key is
    paired with the certificate whose public key it matches, and keys matching none are left
    out. A file with only keys gives ``[]`` (pass it to :func:`pair_key`). InvalidCertificate
    for an encrypted or unsupported key, a block that does not parse, or a file over 4 MiB.
    """
    blocks = _pem_blocks(pem)
    certs: list[x509.Certificate] = []
    for number, (label, block) in enumerate(blocks, start=1):
        if label != b"CERTIFICATE":
            continue
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise InvalidCertificate(
                f"PEM block {number} (CERTIFICATE) is not a valid X.509 certificate"
            ) from None
    keys = [
        _load_key(block, number)
        for number, (label, block) in enumerate(blocks, start=1)
        if label in _KEY_LABELS or label == b"ENCRYPTED PRIVATE KEY"
    ]
    return _pair(certs, keys)


def pair_key(certs: Sequence[x509.Certificate | Candidate], key_pem: bytes | str) -> list[Candidate]:
    """Pair the key(s) of a separate key file with the certificates they belong to.

    ``certs`` are certificates or candidates from :func:`load_candidates`; a key already paired
    is kept. InvalidCertificate as :func:`load_candidates` (an encrypted key says so), and
    when the file holds no private key at all.
    """
    blocks = _pem_blocks(key_pem)
    keys = [
        _load_key(block, number)
        for number, (label, block) in enumerate(blocks, start=1)
        if label in _KEY_LABELS or label == b"ENCRYPTED PRIVATE KEY"
    ]
    if not keys:
        raise InvalidCertificate(
            "no private key found: expected PEM text with a '-----BEGIN PRIVATE KEY-----' block"
        )
    candidates = [c if isinstance(c, tuple) else (c, None) for c in certs]
    paired = _pair([cert for cert, _ in candidates], keys)
    return [
        (cert, known if known is not None else found)
        for (cert, known), (_, found) in zip(candidates, paired, strict=True)
    ]


def _pair(certs: Sequence[x509.Certificate], keys: Sequence[PrivateKey]) -> list[Candidate]:
    by_spki = {_spki(key): key for key in keys}
    out: list[Candidate] = []
    for cert in certs:
        try:
            out.append((cert, by_spki.get(_spki(cert))))
        except (ValueError, UnsupportedAlgorithm):
            out.append((cert, None))
    return out


def _pem_blocks(pem: bytes | str) -> list[tuple[bytes, bytes]]:
    """(label, block text) of every BEGIN/END pair, in one linear pass (a BEGIN without its END
    is dropped when the next BEGIN starts)."""
    data = pem.encode("utf-8", errors="replace") if isinstance(pem, str) else bytes(pem)
    if len(data) > MAX_PEM_FILE_BYTES:
        raise InvalidCertificate(
            f"PEM file is {len(data)} bytes: at most {MAX_PEM_FILE_BYTES} (4 MiB) are read"
        )
    blocks: list[tuple[bytes, bytes]] = []
    label: bytes | None = None
    start = 0
    for marker in _PEM_MARKER.finditer(data):
        kind, name = marker.group(1), marker.group(2)
        if kind == b"BEGIN":
            label, start = name, marker.start()
        elif name == label:
            blocks.append((name, data[start : marker.end()] + b"\n"))
            label = None
    return blocks


def _load_key(block: bytes, number: int) -> PrivateKey:
    if block.startswith(b"-----BEGIN ENCRYPTED") or b"Proc-Type: 4,ENCRYPTED" in block:
        raise InvalidCertificate(_ENCRYPTED_KEY)
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise InvalidCertificate(_ENCRYPTED_KEY) from None
    except (ValueError, UnsupportedAlgorithm):
        # The underlying message is dropped on purpose: keep key parsing details out of logs.
        raise InvalidCertificate(
            f"PEM block {number} is not a readable private key: expected an unencrypted "
            "PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidCertificate(
            f"{describe_key(key)} private keys are not supported for device certificates: "
            "use an EC P-256 or P-384 key, or RSA of 2048 bits or more"
        )
    return key
