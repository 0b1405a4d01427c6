"""Generating gateway CAs: the validity range, the 3-per-24-hours limit, the subject, the record."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from certs import lifecycle
from certs.authority import MAX_VALIDITY_DAYS, CertificateAuthority, KeyType
from certs.clock import Clock
from certs.lifecycle import BindingStatus
from certs.sealing import KeySealer
from proxy.services.errors import InvalidInput
from proxy.services.records import new_record
from proxy.store import Account, CertificateKind, CertificateRecord, Store

logger = logging.getLogger(__name__)


def check_validity(days: object) -> None:
    if isinstance(days, bool) or not isinstance(days, int):
        raise InvalidInput("validity_period_days", "must be an integer")
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise InvalidInput("validity_period_days", f"must be between 1 and {MAX_VALIDITY_DAYS}, got {days}")


def check_limit(store: Store, account_id: str, now: datetime) -> None:
    """LimitExceeded (with ``retry_after``) for a 4th counted generation in 24 hours."""
    since = now - lifecycle.GENERATION_WINDOW
    lifecycle.check_generation_allowed(store.certificates.generations_since(account_id, since), now)


def new_authority(
    account: Account, validity_days: int, key_type: KeyType, clock: Clock
) -> CertificateAuthority:
    """A new root CA whose subject names the account (O) and is unique among its CAs (CN)."""
    return CertificateAuthority.generate(
        common_name=f"{account.name[:40]} Inspection CA {uuid.uuid4().hex[:8]}",
        organization=account.name[:64],
        validity_days=validity_days,
        key_type=key_type,
        clock=clock,
    )


def save_generated(
    store: Store,
    sealer: KeySealer,
    account_id: str,
    authority: CertificateAuthority,
    now: datetime,
    *,
    counted: bool,
    auto_generated: bool = False,
) -> CertificateRecord:
    """Store the CA (inactive) and, if it counts, the generation: in one transaction."""
    with store.transaction():
        if counted:  # again: another request may have generated one meanwhile
            check_limit(store, account_id, now)
            store.certificates.record_generation(account_id, now)
        record = new_record(
            account_id, CertificateKind.GATEWAY_MANAGED, authority.certificate, (), authority,
            sealer, name=authority.certificate.subject.rfc4514_string(), now=now,
            binding_status=BindingStatus.INACTIVE, auto_generated=auto_generated,
        )  # fmt: skip
        store.certificates.add(record)
    logger.info("account %s: generated CA %s (%s)", account_id, record.id, record.fingerprint)
    return record
