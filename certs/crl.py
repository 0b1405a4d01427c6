"""The empty, signed CRL that leaves point to (their CRL distribution point, SPEC §3).

The gateway never revokes a leaf (they are short-lived and re-issued), but the CA/Browser Forum
profile wants a revocation pointer, and clients that fetch it must find a current, signed CRL.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.authority import BACKDATE, CertificateAuthority
from certs.clock import Clock, as_utc, format_time, utcnow
from certs.errors import CertError
from certs.keys import signature_hash

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CRL_VALIDITY", "empty_crl"]

DEFAULT_CRL_VALIDITY = timedelta(days=7)


def empty_crl(
    authority: CertificateAuthority,
    *,
    clock: Clock = utcnow,
    validity: timedelta = DEFAULT_CRL_VALIDITY,
) -> bytes:
    """A DER CRL signed by ``authority``, listing no certificate.

    thisUpdate is now - 1 h, nextUpdate now + ``validity`` (capped at the CA's not-after).
    The CRL number is the issue time in microseconds since the epoch, so CRLs issued later
    carry larger numbers (RFC 5280 §5.2.3) without any stored counter. Raises CertError for an
    expired CA (expired CAs sign nothing) or a non-positive validity.
    """
    if validity <= timedelta(0):
        raise CertError(f"CRL validity must be positive, got {validity}")
    now = as_utc(clock(), what="clock()")
    if now >= authority.not_after:
        raise CertError(
            f"CA {authority.fingerprint} expired on {format_time(authority.not_after)}: "
            "it signs nothing, not even a CRL"
        )
    last_update = max(now - BACKDATE, authority.not_before)
    next_update = min(now + validity, authority.not_after)
    number = int(now.timestamp() * 1_000_000)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=authority.subject_key_identifier,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
        .sign(authority.private_key, signature_hash(authority.private_key))
    )
    logger.debug(
        "signed empty CRL %d for CA %s, next update %s",
        number,
        authority.fingerprint,
        format_time(next_update),
    )
    return crl.public_bytes(serialization.Encoding.DER)
