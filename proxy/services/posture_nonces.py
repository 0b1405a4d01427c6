"""Server nonces for proofs of possession: minted without a write, redeemed once.

A nonce is 32 bytes: its expiry (8, microseconds since the epoch), 8 random bytes, and the first
16 bytes of HMAC-SHA256(key, device id, expiry, random). The server recognises its own nonces by
the MAC, so issuing one costs no write; the MAC binds the device, so a nonce issued to one device
proves nothing for another; the expiry is inside the MAC, so it cannot be stretched. Single use
is kept where it matters: redeeming a nonce inserts it into ``posture_nonces`` in the same
transaction that stores the results it proves, and a second redemption finds it there.

The key is random per process unless the caller passes one: nodes that share a store pass the
same key (``nonce_key_from_master``, from the master key they share anyway) so that a nonce from
one node is honoured by another.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

logger = logging.getLogger(__name__)

NONCE_BYTES: Final = 32
_MAC_BYTES: Final = 16
_LABEL: Final = b"gateway-posture-nonce-v1\n"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def nonce_key_from_master(master_key: bytes) -> bytes:
    """The nonce key derived from the store's master key (the same on every node)."""
    return hmac.new(master_key, b"gateway posture nonce key v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class IssuedNonce:
    nonce: bytes
    expires_at: datetime


class NonceMinter:
    def __init__(self, key: bytes | None, lifetime: timedelta) -> None:
        # keyed once: a copy per nonce costs a fraction of ``hmac.digest`` (which sets the key
        # up, and looks SHA-256 up in OpenSSL, at every call)
        self._keyed = hmac.new(key or secrets.token_bytes(32), _LABEL, hashlib.sha256)
        self.lifetime = lifetime

    def issue(self, device_id: str, now: datetime) -> IssuedNonce:
        expires = now + self.lifetime
        micros = (expires - _EPOCH) // timedelta(microseconds=1)
        body = micros.to_bytes(8, "big") + os.urandom(8)
        return IssuedNonce(body + self._mac(device_id, body), _EPOCH + timedelta(microseconds=micros))

    def problem(self, nonce: bytes, device_id: str, now: datetime) -> str | None:
        """Why ``nonce`` proves nothing for ``device_id`` now; None when it is one of ours,
        issued to this device, and not expired (whether it was used is the store's to say)."""
        if len(nonce) != NONCE_BYTES:
            return f"nonce is not one this server issues ({len(nonce)} bytes, not {NONCE_BYTES})"
        body, mac = nonce[:-_MAC_BYTES], nonce[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(device_id, body)):
            return (
                "nonce was not issued to this device by this server (another device's, made up, "
                "or from before the server's nonce key changed)"
            )
        expires = self.expires_at(nonce)
        if expires <= now:
            return f"nonce is stale: it expired at {expires:%Y-%m-%dT%H:%M:%SZ}"
        return None

    @staticmethod
    def expires_at(nonce: bytes) -> datetime:
        return _EPOCH + timedelta(microseconds=int.from_bytes(nonce[:8], "big"))

    def _mac(self, device_id: str, body: bytes) -> bytes:
        mac = self._keyed.copy()  # already holds the key and _LABEL
        mac.update(device_id.encode("utf-8", "surrogatepass") + b"\n" + body)
        return mac.digest()[:_MAC_BYTES]
