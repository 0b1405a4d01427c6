"""Exceptions raised by the certs library.

Every message is shown verbatim to users (the admin API returns it as an HTTP 4xx message, the
CLI prints it), so it names the problem and, where possible, what would be accepted instead.
Messages never contain private key material.
"""

from __future__ import annotations

import logging
from datetime import datetime

logger = logging.getLogger(__name__)

__all__ = ["CertError", "InvalidCertificate", "LifecycleError", "LimitExceeded"]


class CertError(Exception):
    """Base class of every error raised by ``certs``."""


class InvalidCertificate(CertError):
    """A certificate, key or generation request is refused (bad input: HTTP 400)."""


class LifecycleError(CertError):
    """A status transition is not allowed in the certificate's current state (HTTP 400)."""


class LimitExceeded(CertError):
    """A limit is reached (HTTP 429 when ``retry_after`` is set, otherwise 400).

    ``retry_after`` is the aware UTC time at which the operation will be allowed again, or
    ``None`` when waiting alone will not help (for example: too many available certificates).
    """

    def __init__(self, message: str, retry_after: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
