"""A private key the platform keeps and signs with for the agent, without giving it out.

On Windows a key in a certificate store is used in place (PowerShell asks the key's provider for
a signature, so a key marked "not exportable" can still prove possession). The agent never holds
such a key: it holds a :class:`StoreKey`, which signs a message in the format of
``certs.proof`` (ECDSA DER, RSA-PSS-SHA256) or raises ``KeyUnavailable`` saying why the platform
refused. Before a store key counts as the certificate's, :meth:`StoreKey.prove` signs a random
challenge with it and verifies the signature with the certificate's public key (the same check
the server makes), so "private key present" means "usable and matching", not "the store says so".
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod

from cryptography import x509

from certs.errors import CertError
from certs.proof import proof_message, verify_proof

logger = logging.getLogger(__name__)


class KeyUnavailable(Exception):
    """The candidate's private key cannot be had; the message is the reason to show."""


class StoreKey(ABC):
    """A handle on a key the platform signs with; ``where`` names it in messages."""

    where: str

    @abstractmethod
    def sign(self, message: bytes) -> bytes:
        """A signature over ``message`` in ``certs.proof``'s format; ``KeyUnavailable`` when
        the platform refuses."""

    def prove(self, certificate: x509.Certificate) -> None:
        """Check that the key signs and matches ``certificate`` (``KeyUnavailable`` if not)."""
        challenge = proof_message(nonce=secrets.token_bytes(32), device_id="local", rule_id="key check")
        signature = self.sign(challenge)
        try:
            verify_proof(certificate, challenge, signature)
        except CertError as e:
            raise KeyUnavailable(
                f"the private key {self.where} does not make valid signatures for it: {e}"
            ) from None
        logger.debug("the key %s signs for its certificate", self.where)
