"""OpenSSL's own objects for our leaves and leaf keys, converted once rather than per handshake.

pyOpenSSL accepts ``cryptography`` certificates and keys, but converts them at every call by
serialising to DER and parsing again: with OpenSSL 3 that is about 100 µs for a certificate and
as much for an EC key, twice per intercepted handshake. A leaf is served many times (the issuer
caches it) and every leaf of an issuer shares one key, so ``NativeLeaves`` keeps the converted
objects, keyed by the identity of the ``cryptography`` object (kept alive alongside, so an id is
never reused while its entry exists), in bounded LRU maps.

A CA swap needs nothing here: the next handshake gets a leaf of the new issuer, a different
object, converted on first use; the old entries age out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from cryptography import x509
from OpenSSL import SSL, crypto

from certs.keys import PrivateKey

logger = logging.getLogger(__name__)

__all__ = ["NativeLeaves"]

DEFAULT_MAXSIZE = 4096
_KEYS_MAXSIZE = 64  # one leaf key per issuer: a handful are ever in use


class NativeLeaves:
    """Converted leaves and keys; used on the event-loop thread only."""

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE) -> None:
        self._maxsize = maxsize
        self._certificates: OrderedDict[int, tuple[x509.Certificate, crypto.X509]] = OrderedDict()
        self._keys: OrderedDict[int, tuple[PrivateKey, crypto.PKey]] = OrderedDict()
        self.conversions = 0
        """Certificates and keys converted so far (for tests and the bench)."""

    def certificate(self, certificate: x509.Certificate) -> crypto.X509:
        hit = self._certificates.get(id(certificate))
        if hit is not None:
            self._certificates.move_to_end(id(certificate))
            return hit[1]
        native = crypto.X509.from_cryptography(certificate)
        self.conversions += 1
        self._certificates[id(certificate)] = (certificate, native)
        while len(self._certificates) > self._maxsize:
            self._certificates.popitem(last=False)
        return native

    def key(self, key: PrivateKey) -> crypto.PKey:
        hit = self._keys.get(id(key))
        if hit is not None:
            self._keys.move_to_end(id(key))
            return hit[1]
        native = crypto.PKey.from_cryptography_key(key)
        self.conversions += 1
        self._keys[id(key)] = (key, native)
        while len(self._keys) > _KEYS_MAXSIZE:
            self._keys.popitem(last=False)
        return native

    def install(self, ssl_conn: SSL.Connection, certificate: x509.Certificate, key: PrivateKey) -> None:
        """Serve ``certificate`` with ``key`` on ``ssl_conn`` (what ``use_certificate`` and
        ``use_privatekey`` do, without their per-call conversion)."""
        native_certificate = self.certificate(certificate)
        native_key = self.key(key)
        lib = SSL._lib  # type: ignore[attr-defined]
        handle = ssl_conn._ssl
        if lib.SSL_use_certificate(handle, native_certificate._x509) != 1:
            SSL._raise_current_error()  # SSL.Error from OpenSSL's queue
        if lib.SSL_use_PrivateKey(handle, native_key._pkey) != 1:
            SSL._raise_current_error()
