"""Key types: generation, strength rules and the signature hash that goes with each key.

The rules are the upload rules of SPEC §2: EC P-256 / P-384 and RSA of at least 2048 bits are
accepted; anything else (RSA-1024, P-521, Ed25519, DSA, ...) is refused with a message that says
what would be accepted.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from certs.errors import InvalidCertificate

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "check_key_pair",
    "check_public_key",
    "describe_key",
    "signature_hash",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048
# Not a security limit: signing with larger RSA keys takes too long for per-host leaves.
MAX_RSA_BITS = 8192

_ACCEPTED = "use an EC P-256 or P-384 key, or RSA of 2048 to 8192 bits"

_CURVES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384"}
_OTHER_CURVE_NAMES: dict[str, str] = {
    "secp521r1": "P-521",
    "secp224r1": "P-224",
    "secp192r1": "P-192",
}


class KeyType(Enum):
    """Key algorithms the gateway generates."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    def generate_private_key(self) -> PrivateKey:
        """A fresh private key of this type (RSA with public exponent 65537)."""
        if self is KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is KeyType.EC_P384:
            return ec.generate_private_key(ec.SECP384R1())
        bits = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}[self]
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)

    @classmethod
    def of(cls, key: PrivateKey | PublicKey) -> KeyType | None:
        """The KeyType of a key, or None for an accepted key the gateway does not generate
        (for example RSA-8192 in an uploaded CA)."""
        if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
            return {"secp256r1": cls.EC_P256, "secp384r1": cls.EC_P384}.get(key.curve.name)
        return {2048: cls.RSA_2048, 3072: cls.RSA_3072, 4096: cls.RSA_4096}.get(key.key_size)


def describe_key(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    """Human name of a key: ``EC P-256``, ``RSA 2048``, ``Ed25519``..."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        name = key.curve.name
        return f"EC {_CURVES.get(name) or _OTHER_CURVE_NAMES.get(name) or name}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return f"DSA {key.key_size}"
    names: list[tuple[tuple[type, ...], str]] = [
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "Ed25519"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "Ed448"),
        ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "X25519"),
        ((x448.X448PrivateKey, x448.X448PublicKey), "X448"),
    ]
    for types, name in names:
        if isinstance(key, types):
            return name
    return type(key).__name__


def check_public_key(key: CertificatePublicKeyTypes | PublicKeyTypes) -> PublicKey:
    """Return the key narrowed to EC/RSA, or raise InvalidCertificate naming why it is refused."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidCertificate(
                f"RSA key of {key.key_size} bits is too weak: at least {MIN_RSA_BITS} required"
            )
        if key.key_size > MAX_RSA_BITS:
            raise InvalidCertificate(
                f"RSA key of {key.key_size} bits is too large: at most {MAX_RSA_BITS} supported"
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise InvalidCertificate(
                f"{describe_key(key)} key ({key.curve.name}) is not supported: {_ACCEPTED}"
            )
        return key
    raise InvalidCertificate(f"{describe_key(key)} keys are not supported: {_ACCEPTED}")


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash used when ``key`` signs: SHA-384 for P-384, SHA-256 otherwise."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) or key.curve.name != "secp384r1":
        return hashes.SHA256()
    return hashes.SHA384()


def check_key_pair(certificate: x509.Certificate, private_key: PrivateKeyTypes, *, accepted: str) -> None:
    """InvalidCertificate unless ``private_key`` is an EC or RSA key and the certificate's
    (``accepted`` says which keys would be, in the refusal)."""
    if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidCertificate(
            f"{describe_key(private_key)} private keys are not supported: use {accepted}"
        )
    if certificate.public_key() != private_key.public_key():
        raise InvalidCertificate("private key does not match the certificate")
