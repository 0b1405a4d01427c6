"""Server-side verification of one posture result an agent reports (SPEC §5).

A failing result is stored as the agent says (``verified`` false). A passing one is a claim:
the server checks it with the certificate and the signature the agent sent, and stores a pass
only when every check holds:

1. the nonce is one this server issued to this device, unused and not expired;
2. the certificate parses and passes ``certs.client_check.check_certificate`` against the
   rule's signing certificates, with the CN and SAN templates filled in from the device's
   *registered* host name and serial number (the agent cannot choose them);
3. the signature verifies over ``certs.proof.proof_message(nonce, device id, rule id)`` with the
   certificate's key, which proves the device holds the private key.

Anything else is stored as failed, with the reason. A pass expires after the rule's
``expiration``, or when the certificate does, whichever comes first.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certs.authority import parse_certificates
from certs.client_check import ClientCertRequirements, check_certificate, common_name
from certs.errors import CertError
from certs.proof import MAX_NONCE_BYTES, proof_message, verify_proof
from policies.posture import PostureRule
from proxy.services.posture_rules import Signers
from proxy.store import Device, Nonce

logger = logging.getLogger(__name__)

MAX_CERTIFICATE_PEM: Final = 64 * 1024
MAX_REASON_CHARS: Final = 1000
NO_PROOF: Final = (
    "no proof of possession: a passing result needs the nonce, the certificate and a signature"
)


@dataclass(frozen=True)
class Report:
    """One result as the agent sent it (types checked at the edge)."""

    rule_id: str
    success: bool
    reason: str = ""
    nonce: str | None = None  # base64, as the server issued it
    certificate: str | None = None  # PEM
    signature: str | None = None  # base64


@dataclass(frozen=True)
class Verdict:
    """What the server stores for one report."""

    rule: PostureRule
    success: bool
    verified: bool
    reason: str
    expires_at: datetime
    fingerprint: str = ""
    cn: str | None = None
    nonce: bytes | None = None  # to mark used when the verdict is stored (passes only)


class Refusal(Exception):
    """The claim does not hold; the message is the stored reason."""


def decode_nonce(text: str | None) -> bytes | None:
    """The raw nonce of a report, or None when it is absent or not base64 of a sane length."""
    if not text or len(text) > 4 * MAX_NONCE_BYTES:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def fingerprint(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def judge(
    report: Report,
    rule: PostureRule,
    device: Device,
    signers: Signers | None,
    nonce: Nonce | None,
    *,
    now: datetime,
) -> Verdict:
    """The verdict on one report; ``nonce`` is the store's record of the report's nonce."""
    expires = now + rule.expiration
    if not report.success:
        reason = _clip(report.reason.strip()) or "the agent reported a failure without a reason"
        return Verdict(rule, False, False, reason, expires)
    try:
        raw_nonce = _check_nonce(report, device, nonce, now)
        cert = _certificate(report.certificate)
        passed = _check(cert, rule, device, signers, now)
        _check_proof(report.signature, cert, raw_nonce, device.id, rule.id)
    except Refusal as e:
        return Verdict(rule, False, False, _clip(str(e)), expires)
    reason = f"verified: {passed}; proof of possession checked"
    expires = min(expires, cert.not_valid_after_utc)
    return Verdict(
        rule, True, True, reason, expires, fingerprint(cert), common_name(cert), raw_nonce
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _check_nonce(report: Report, device: Device, nonce: Nonce | None, now: datetime) -> bytes:
    if not report.nonce or not report.certificate or not report.signature:
        said = report.reason.strip()
        raise Refusal(f"{NO_PROOF} (the agent said: {said})" if said else NO_PROOF)
    raw = decode_nonce(report.nonce)
    if raw is None:
        raise Refusal("nonce is not base64 of a nonce this server issues")
    if nonce is None:
        raise Refusal("nonce was not issued by this server (or expired long ago)")
    if nonce.device_id != device.id:
        raise Refusal("nonce was issued to another device")
    if nonce.used_at is not None:
        raise Refusal("nonce was already used (a replayed report)")
    if nonce.expires_at <= now:
        raise Refusal(f"nonce is stale: it expired at {nonce.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    return raw


def _certificate(pem: str | None) -> x509.Certificate:
    if not pem or len(pem) > MAX_CERTIFICATE_PEM:
        raise Refusal("certificate: expected one PEM certificate of at most 64 KiB")
    try:
        found = parse_certificates(pem)
    except CertError as e:
        raise Refusal(f"certificate: {e}") from None
    if len(found) != 1:
        raise Refusal(f"certificate: expected one PEM certificate, got {len(found)}")
    return found[0]


def _check(
    cert: x509.Certificate, rule: PostureRule, device: Device, signers: Signers | None, now: datetime
) -> str:
    if signers is None:
        raise Refusal(f"the rule's mTLS certificate {rule.certificate_id} is gone")
    try:
        requirements = ClientCertRequirements.from_templates(
            signers.certificates,
            hostname=device.hostname,
            serial_number=device.serial_number,
            cn=rule.cn_template,
            subject_alternative_names=rule.san_templates,
            extended_key_usage=rule.extended_key_usage,
        )
        result = check_certificate(cert, requirements, now=now)
    except CertError as e:
        raise Refusal(f"certificate: {e}") from None
    except ValueError as e:  # a certificate cryptography parses lazily and chokes on
        raise Refusal(f"certificate: cannot be read: {e}") from None
    if not result.ok:
        raise Refusal(f"certificate: {result.reason}")
    return result.reason


def _check_proof(
    signature: str | None, cert: x509.Certificate, nonce: bytes, device_id: str, rule_id: str
) -> None:
    try:
        raw = base64.b64decode(signature or "", validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("signature is not base64") from None
    try:
        verify_proof(cert, proof_message(nonce=nonce, device_id=device_id, rule_id=rule_id), raw)
    except CertError as e:
        raise Refusal(str(e)) from None
