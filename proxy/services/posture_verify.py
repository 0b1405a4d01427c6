"""Server-side verification of one posture result an agent reports (SPEC §5).

A failing result is stored as the agent says (``verified`` false). A passing one is a claim:
the server checks it with the certificate and the signature the agent sent, and stores a pass
only when every check holds:

1. the nonce is one this server issued to this device, not expired, and not used before (the
   last is settled when the verdict is stored, in the transaction that claims the nonce);
2. the certificate parses and passes ``certs.client_check.check_certificate`` against the
   rule's signing certificates, with the CN and SAN templates filled in from the device's
   *registered* host name and serial number (the agent cannot choose them);
3. the signature verifies over ``certs.proof.proof_message(nonce, device id, rule id)`` with the
   certificate's key, which proves the device holds the private key.

Anything else is stored as failed, with the reason. A pass expires after the rule's
``expiration``, or when the certificate does, whichever comes first.

Agents present the same certificate report after report, so :class:`CertificateChecks` keeps
the outcome of step 2 for a (certificate, requirements) pair: that outcome depends on the time
only through the validity period, which is checked again on every use. The proof (step 3) is
verified every time: the nonce is new.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certs.authority import parse_certificates
from certs.client_check import ClientCertRequirements, check_certificate, common_name
from certs.errors import CertError
from certs.proof import MAX_NONCE_BYTES, proof_key, proof_message
from policies.posture import PostureRule
from proxy.services.posture_rules import Signers
from proxy.store import Device

logger = logging.getLogger(__name__)

MAX_CERTIFICATE_PEM: Final = 64 * 1024
MAX_REASON_CHARS: Final = 1000
NO_PROOF: Final = "no proof of possession: a passing result needs the nonce, the certificate and a signature"


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


@dataclass(frozen=True)
class Proof:
    """A pass whose signature (step 3) is still to be verified: ``verdict`` is stored when it
    verifies, a failure with the reason otherwise (:func:`settle`)."""

    key_der: bytes  # the certificate's SubjectPublicKeyInfo
    message: bytes
    signature: bytes
    verdict: Verdict
    expires_if_failed: datetime

    @property
    def item(self) -> tuple[bytes, bytes, bytes]:
        """What ``proof_worker`` verifies."""
        return self.key_der, self.message, self.signature


@dataclass(frozen=True)
class NonceStatus:
    """What the minter says of a report's nonce: ``problem`` when it is not ours, another
    device's, or stale. Whether it was used before is settled when the verdict is stored: the
    store claims each nonce once (``device_reports``)."""

    problem: str | None


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
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass(frozen=True)
class Checked:
    """A certificate that passed step 2, and what the server stores of it."""

    certificate: x509.Certificate
    key_der: bytes  # the key proofs are verified with (SubjectPublicKeyInfo DER)
    reason: str
    fingerprint: str
    cn: str | None
    not_before: datetime
    not_after: datetime


class CertificateChecks:
    """Step 2 with a bounded cache of the certificates that passed (module docstring)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._passed: OrderedDict[tuple[object, ...], Checked] = OrderedDict()
        self.hits = 0

    def check(
        self, pem: str | None, rule: PostureRule, device: Device, signers: Signers | None, now: datetime
    ) -> Checked:
        """The certificate and what it passed on; Refusal naming the first problem."""
        if signers is None:
            raise Refusal(f"the rule's mTLS certificate {rule.certificate_id} is gone")
        key = (pem, signers.pem, rule.cn_template, rule.san_templates, rule.extended_key_usage,
               device.hostname, device.serial_number)  # fmt: skip
        cached = self._passed.get(key)
        if cached is not None and cached.not_before <= now < cached.not_after:
            self._passed.move_to_end(key)
            self.hits += 1
            return cached
        cert = _certificate(pem)
        reason = _check(cert, rule, device, signers, now)
        try:
            public_key = proof_key(cert)
        except CertError as e:
            raise Refusal(str(e)) from None
        der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        passed = Checked(cert, der, reason, fingerprint(cert), common_name(cert),
                         cert.not_valid_before_utc, cert.not_valid_after_utc)  # fmt: skip
        self._passed[key] = passed
        if len(self._passed) > self._size:
            self._passed.popitem(last=False)
        return passed


def assess(
    report: Report,
    rule: PostureRule,
    device: Device,
    signers: Signers | None,
    nonce: NonceStatus | None,
    *,
    now: datetime,
    checks: CertificateChecks | None = None,
) -> Verdict | Proof:
    """The verdict on one report as far as steps 1 and 2 go (module docstring): a failed
    verdict, or the proof whose signature (step 3) is still to verify, by
    ``proof_worker.verify_items`` or the proof worker, before :func:`settle`. ``nonce`` is what
    the server knows of the report's nonce (None when it has none, or it is not base64)."""
    expires = now + rule.expiration
    if not report.success:
        reason = _clip(report.reason.strip()) or "the agent reported a failure without a reason"
        return Verdict(rule, False, False, reason, expires)
    try:
        raw_nonce = _check_nonce(report, nonce)
        checked = (checks or CertificateChecks(0)).check(report.certificate, rule, device, signers, now)
        signature = _signature(report.signature)
        message = _message(raw_nonce, device.id, rule.id)
    except Refusal as e:
        return Verdict(rule, False, False, _clip(str(e)), expires)
    reason = f"verified: {checked.reason}; proof of possession checked"
    passed = Verdict(
        rule, True, True, reason, min(expires, checked.not_after), checked.fingerprint, checked.cn,
        raw_nonce,
    )  # fmt: skip
    return Proof(checked.key_der, message, signature, passed, expires)


def settle(proof: Proof, problem: str | None) -> Verdict:
    """The verdict once the proof's signature was checked: ``problem`` None when it verified."""
    if problem is None:
        return proof.verdict
    return Verdict(proof.verdict.rule, False, False, _clip(problem), proof.expires_if_failed)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _check_nonce(report: Report, nonce: NonceStatus | None) -> bytes:
    if not report.nonce or not report.certificate or not report.signature:
        said = report.reason.strip()
        raise Refusal(f"{NO_PROOF} (the agent said: {said})" if said else NO_PROOF)
    raw = decode_nonce(report.nonce)
    if raw is None or nonce is None:
        raise Refusal("nonce is not base64 of a nonce this server issues")
    if nonce.problem:
        raise Refusal(nonce.problem)
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


def _check(cert: x509.Certificate, rule: PostureRule, device: Device, signers: Signers, now: datetime) -> str:
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


def _signature(text: str | None) -> bytes:
    try:
        return base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("signature is not base64") from None


def _message(nonce: bytes, device_id: str, rule_id: str) -> bytes:
    try:
        return proof_message(nonce=nonce, device_id=device_id, rule_id=rule_id)
    except CertError as e:
        raise Refusal(str(e)) from None
