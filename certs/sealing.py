"""Encryption of private keys at rest (SPEC §2 "At rest"): AES-256-GCM under a master key.

Sealed format: ``b"v1" || nonce (12 random bytes) || ciphertext+tag``. The caller's ``context``
(for example the certificate id) is bound as associated data, so a sealed key copied onto
another record does not decrypt.

``derive(purpose=...)`` gives a secret of its own to each other use of the master key (HKDF-SHA256,
the purpose as ``info``), such as the password of the admin API's TLS key file.
"""

from __future__ import annotations

import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certs.errors import CertError

logger = logging.getLogger(__name__)

__all__ = ["MASTER_KEY_BYTES", "KeySealer"]

MASTER_KEY_BYTES = 32
_VERSION = b"v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class KeySealer:
    """Seals and unseals secrets with one master key. Holds the key; never shows it."""

    __slots__ = ("_aead", "_master_key")

    def __init__(self, master_key: bytes) -> None:
        if not isinstance(master_key, (bytes, bytearray)):
            raise CertError(
                f"master key must be exactly {MASTER_KEY_BYTES} bytes (AES-256), "
                f"got {type(master_key).__name__}"
            )
        if len(master_key) != MASTER_KEY_BYTES:
            raise CertError(
                f"master key must be exactly {MASTER_KEY_BYTES} bytes (AES-256), got {len(master_key)} bytes"
            )
        self._aead = AESGCM(bytes(master_key))
        self._master_key = bytes(master_key)

    def __repr__(self) -> str:
        return "KeySealer(<master key hidden>)"

    @staticmethod
    def generate_master_key() -> bytes:
        """32 random bytes from the OS CSPRNG."""
        return AESGCM.generate_key(bit_length=MASTER_KEY_BYTES * 8)

    def derive(self, *, purpose: bytes, length: int = 32) -> bytes:
        """A secret for one ``purpose`` (HKDF-SHA256 over the master key, ``purpose`` as info):
        the same for the same master key and purpose, unrelated to any other purpose's."""
        if not purpose:
            raise CertError("a derived secret needs a purpose")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"gateway/" + purpose)
        return hkdf.derive(self._master_key)

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def unseal(self, blob: bytes, *, context: bytes) -> bytes:
        """The plaintext; CertError when the master key or context is wrong or data was altered."""
        if not blob.startswith(_VERSION):
            raise CertError("could not decrypt private key: unknown sealed format (expected version v1)")
        if len(blob) < len(_VERSION) + _NONCE_BYTES + _TAG_BYTES:
            raise CertError("could not decrypt private key: sealed data is truncated")
        nonce = blob[len(_VERSION) : len(_VERSION) + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[len(_VERSION) + _NONCE_BYTES :], context)
        except InvalidTag:
            logger.warning("could not decrypt a sealed private key (context %r)", context)
            raise CertError("could not decrypt private key: wrong master key or corrupted data") from None
