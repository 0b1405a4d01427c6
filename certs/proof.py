"""Proof of possession: the device signs a fresh server nonce with its certificate's private key.

The agent sends, with each passing client-certificate result, the certificate and a signature
over :func:`proof_message`; the server rebuilds the message from the nonce it issued (single
use, short-lived), the authenticated device id and the rule id, and calls :func:`verify_proof`.
Binding the device and rule ids means a signature made for one device or rule proves nothing
for another.

Message (bytes)::

    b"gateway-posture-proof-v1\\n" + nonce + b"\\n" + device_id + b"\\n" + rule_id

``nonce`` is the raw 16 to 64 bytes (not its base64 text); the ids are UTF-8 and may not
contain a newline, so the message splits back into its parts in exactly one way.

Signatures, by the certificate's key:

- EC P-256: ECDSA with SHA-256; EC P-384: ECDSA with SHA-384 (the hash that matches the curve,
  as ``certs.keys.signature_hash``). DER-encoded (r, s), as ``cryptography`` produces.
- RSA (2048 to 8192 bits): RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt length = 32 bytes
  (the digest length).

Other keys (Ed25519, P-521, RSA under 2048 bits, ...) are refused on both sides with
CertError, as for uploaded CAs (``certs.keys.check_public_key``).
"""

from __future__ import annotations

import logging
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certs.errors import CertError, InvalidCertificate
from certs.keys import PublicKey, check_public_key, describe_key, signature_hash

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "PROOF_PREFIX",
    "proof_key",
    "proof_message",
    "sign_proof",
    "verify_proof",
    "verify_proof_with",
]

PROOF_PREFIX: Final = b"gateway-posture-proof-v1\n"
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
# The longest signature of an accepted key: RSA-8192 is 1,024 bytes; ECDSA P-384 at most 104.
MAX_SIGNATURE_BYTES: Final = 1024
MAX_ID_CHARS: Final = 256

PROOF_FAILED: Final = "proof of possession failed: signature does not verify with the certificate's key"


def proof_message(*, nonce: bytes, device_id: str, rule_id: str) -> bytes:
    """The bytes the device signs; CertError for a nonce outside 16..64 bytes or a bad id."""
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise CertError(f"nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes, got {len(nonce)}")
    for what, value in (("device id", device_id), ("rule id", rule_id)):
        if not value or not value.strip():
            raise CertError(f"{what} must not be empty")
        if "\n" in value or "\r" in value:
            raise CertError(f"{what} must not contain a line break")
        if len(value) > MAX_ID_CHARS:
            raise CertError(f"{what} is {len(value)} characters: at most {MAX_ID_CHARS}")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise CertError(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return b"".join((PROOF_PREFIX, bytes(nonce), b"\n", device_id.encode(), b"\n", rule_id.encode()))


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign_proof(private_key: PrivateKeyTypes, message: bytes) -> bytes:
    """Sign ``message`` with the device key (ECDSA for EC, RSA-PSS for RSA; module docstring)."""
    if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidCertificate(
            f"{describe_key(private_key)} keys cannot make a proof of possession: "
            "use an EC P-256 or P-384 key, or RSA of 2048 to 8192 bits"
        )
    try:
        check_public_key(private_key.public_key())
    except InvalidCertificate as e:
        raise InvalidCertificate(f"cannot make a proof of possession: {e}") from None
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, _pss(), hashes.SHA256())
    return private_key.sign(message, ec.ECDSA(signature_hash(private_key)))


def verify_proof(cert: x509.Certificate, message: bytes, signature: bytes) -> None:
    """Check that ``signature`` over ``message`` was made with ``cert``'s private key.

    Returns None on success; raises CertError otherwise: ``PROOF_FAILED`` when the signature
    does not verify, or a reason naming the unsupported key.
    """
    verify_proof_with(proof_key(cert), message, signature)


def proof_key(cert: x509.Certificate) -> PublicKey:
    """The certificate's public key, if it can make proofs (CertError naming it otherwise);
    a verifier that sees the same certificate often keeps it for :func:`verify_proof_with`."""
    return _public_key(cert)


def verify_proof_with(key: PublicKey, message: bytes, signature: bytes) -> None:
    """:func:`verify_proof` with the key from :func:`proof_key`."""
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise CertError(f"{PROOF_FAILED} (signature of {len(signature)} bytes)")
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, _pss(), hashes.SHA256())
        else:
            key.verify(signature, message, ec.ECDSA(signature_hash(key)))
    except (InvalidSignature, ValueError):
        raise CertError(PROOF_FAILED) from None


def _public_key(cert: x509.Certificate) -> PublicKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCertificate(
            "the certificate's public key is of an unsupported algorithm: a proof of possession "
            "needs an EC P-256 or P-384 key, or RSA of 2048 to 8192 bits"
        ) from None
    try:
        return check_public_key(key)
    except InvalidCertificate as e:
        raise InvalidCertificate(f"cannot verify a proof of possession: {e}") from None
