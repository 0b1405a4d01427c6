"""Gateway certificate lifecycle: statuses, transitions and limits (SPEC §2).

Pure rules over plain values: callers (the certificate service) load the state, ask these
functions whether a change is allowed and what the new status is, then store it.

    inactive --activate--> pending_deployment --(every live node loaded it)--> available
    available / pending_deployment --deactivate--> pending_deletion --(no node has it)--> inactive

``in_use`` is orthogonal: only an available, unexpired certificate can be turned on, and the
in-use certificate can be neither deactivated nor deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from certs.clock import as_utc, format_time
from certs.errors import LifecycleError, LimitExceeded

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVE_STATUSES",
    "EXPIRY_WARNING",
    "GENERATION_WINDOW",
    "MAX_AVAILABLE",
    "MAX_GENERATIONS",
    "BindingStatus",
    "CertificateState",
    "activate",
    "check_delete",
    "check_generation_allowed",
    "deactivate",
    "expiry_message",
    "turn_on",
]

MAX_AVAILABLE = 10
MAX_GENERATIONS = 3
GENERATION_WINDOW = timedelta(hours=24)
EXPIRY_WARNING = timedelta(days=30)


class BindingStatus(StrEnum):
    INACTIVE = "inactive"
    PENDING_DEPLOYMENT = "pending_deployment"
    AVAILABLE = "available"
    PENDING_DELETION = "pending_deletion"


ACTIVE_STATUSES = frozenset({BindingStatus.PENDING_DEPLOYMENT, BindingStatus.AVAILABLE})
"""Statuses that count towards MAX_AVAILABLE."""


@dataclass(frozen=True)
class CertificateState:
    id: str
    binding_status: BindingStatus
    in_use: bool
    not_after: datetime

    def __post_init__(self) -> None:
        as_utc(self.not_after, what="not_after")
        if not isinstance(self.binding_status, BindingStatus):
            object.__setattr__(self, "binding_status", BindingStatus(self.binding_status))

    def is_expired(self, now: datetime) -> bool:
        return as_utc(now, what="now") >= self.not_after


def check_generation_allowed(previous: Sequence[datetime], now: datetime) -> None:
    """Refuse a 4th generation within a rolling 24 hours (LimitExceeded with retry_after).

    ``previous`` holds the creation times of the account's earlier generated certificates
    (deleted ones included; the CA made automatically on first start excluded).
    """
    now = as_utc(now, what="now")
    window_start = now - GENERATION_WINDOW
    recent = sorted(t for t in (as_utc(p, what="generation time") for p in previous) if t > window_start)
    if len(recent) < MAX_GENERATIONS:
        return
    # The (len - MAX + 1)-th oldest must leave the window before one more fits in it.
    retry_after = recent[len(recent) - MAX_GENERATIONS] + GENERATION_WINDOW
    message = (
        f"at most {MAX_GENERATIONS} certificates can be generated per 24 hours: "
        f"the next one is allowed at {format_time(retry_after)}"
    )
    logger.info("refused certificate generation: %s", message)
    raise LimitExceeded(message, retry_after=retry_after)


def activate(cert: CertificateState, others: Sequence[CertificateState], now: datetime) -> BindingStatus:
    """inactive → pending_deployment; refuses active, deactivating, expired or over-limit."""
    status = cert.binding_status
    if status in ACTIVE_STATUSES:
        raise LifecycleError(f"certificate {cert.id} is already active ({status})")
    if status is BindingStatus.PENDING_DELETION:
        raise LifecycleError(
            f"certificate {cert.id} is being deactivated (pending_deletion): "
            "wait until it is inactive, then activate it again"
        )
    if cert.is_expired(now):
        raise LifecycleError(
            f"certificate {cert.id} expired on {format_time(cert.not_after)}: it cannot be activated"
        )
    active = sum(1 for o in others if o.id != cert.id and o.binding_status in ACTIVE_STATUSES)
    if active >= MAX_AVAILABLE:
        raise LimitExceeded(
            f"at most {MAX_AVAILABLE} certificates can be available (pending deployment "
            f"included) and {active} already are: deactivate one first"
        )
    logger.info("certificate %s: inactive -> pending_deployment", cert.id)
    return BindingStatus.PENDING_DEPLOYMENT


def deactivate(cert: CertificateState) -> BindingStatus:
    """available / pending_deployment → pending_deletion; never the in-use certificate."""
    if cert.in_use:
        raise LifecycleError(f"certificate {cert.id} is in use: turn another certificate on first")
    status = cert.binding_status
    if status is BindingStatus.INACTIVE:
        raise LifecycleError(f"certificate {cert.id} is not active (inactive)")
    if status is BindingStatus.PENDING_DELETION:
        raise LifecycleError(f"certificate {cert.id} is already being deactivated (pending_deletion)")
    logger.info("certificate %s: %s -> pending_deletion", cert.id, status)
    return BindingStatus.PENDING_DELETION


def turn_on(cert: CertificateState, now: datetime) -> None:
    """Allow making ``cert`` the in-use certificate: it must be available and unexpired.

    Turning on the certificate already in use is allowed (a no-op for the caller).
    """
    status = cert.binding_status
    if status is BindingStatus.PENDING_DEPLOYMENT:
        raise LifecycleError(
            f"certificate {cert.id} is still being deployed to the proxy nodes "
            "(pending_deployment): wait until it is available"
        )
    if status is BindingStatus.INACTIVE:
        raise LifecycleError(f"certificate {cert.id} is inactive: activate it and wait until it is available")
    if status is BindingStatus.PENDING_DELETION:
        raise LifecycleError(
            f"certificate {cert.id} is being deactivated (pending_deletion): "
            "only an available certificate can be turned on"
        )
    if cert.is_expired(now):
        raise LifecycleError(
            f"certificate {cert.id} expired on {format_time(cert.not_after)}: it cannot be turned on"
        )


def check_delete(cert: CertificateState) -> None:
    """Only an inactive certificate that is not in use can be deleted."""
    if cert.in_use:
        raise LifecycleError(f"certificate {cert.id} is in use: turn another certificate on first")
    if cert.binding_status is not BindingStatus.INACTIVE:
        raise LifecycleError(
            f"certificate {cert.id} is {cert.binding_status}: only inactive certificates can be "
            "deleted (deactivate it and wait until it is inactive)"
        )


def expiry_message(cert: CertificateState, now: datetime) -> str | None:
    """None when more than 30 days remain; otherwise a warning, loudest for the in-use one."""
    now = as_utc(now, what="now")
    remaining = cert.not_after - now
    if remaining > EXPIRY_WARNING:
        return None
    when = format_time(cert.not_after)
    if remaining <= timedelta(0):
        if cert.in_use:
            return (
                f"IN-USE certificate {cert.id} expired on {when}: the proxy cannot sign leaves; "
                "turn another certificate on now"
            )
        return f"certificate {cert.id} expired on {when}"
    days = remaining.days
    span = "less than a day" if days == 0 else f"{days} day" + ("" if days == 1 else "s")
    if cert.in_use:
        return (
            f"IN-USE certificate {cert.id} expires in {span} on {when}: generate or upload "
            "another, activate it and turn it on before then"
        )
    return f"certificate {cert.id} expires in {span} on {when}"
