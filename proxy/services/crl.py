"""Signed, current, empty CRLs for the CRL distribution point of leaves, cached per CA.

A CRL is re-signed once half of its validity has passed, so relying parties that fetch it
near its nextUpdate always get a fresh one, and the CA key signs a CRL a few times a week.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from certs.clock import Clock
from certs.crl import DEFAULT_CRL_VALIDITY, empty_crl
from proxy.services.certificates import CertificateService
from proxy.services.errors import NotFound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrlDocument:
    der: bytes
    fingerprint: str  # of the CA that signed it
    next_update: datetime
    refresh_at: datetime


class CrlCache:
    def __init__(
        self,
        service: CertificateService,
        clock: Clock,
        *,
        validity: timedelta = DEFAULT_CRL_VALIDITY,
    ) -> None:
        self._service = service
        self._clock = clock
        self._validity = validity
        self._documents: dict[str, CrlDocument] = {}

    def get(self, cert_id: str) -> CrlDocument:
        """The CRL of CA ``cert_id``; NotFound when there is no such CA with a key."""
        record = self._service.find(cert_id)
        if record is None or not record.has_private_key:
            self._documents.pop(cert_id, None)
            raise NotFound("CA certificate", cert_id)
        now = self._clock()
        cached = self._documents.get(cert_id)
        if cached and cached.fingerprint == record.fingerprint and now < cached.refresh_at:
            return cached
        der = empty_crl(self._service.authority(cert_id), clock=self._clock, validity=self._validity)
        next_update = x509.load_der_x509_crl(der).next_update_utc or now + self._validity
        document = CrlDocument(der, record.fingerprint, next_update, now + (next_update - now) / 2)
        self._documents[cert_id] = document
        logger.info("signed a CRL for CA %s, next update %s", cert_id, next_update.isoformat())
        return document
