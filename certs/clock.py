"""Time source for the certs library.

Everything that depends on "now" takes a ``Clock`` (or a ``now`` argument) so that expiry, rate
limits and renewal can be tested without sleeping. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

logger = logging.getLogger(__name__)

__all__ = ["Clock", "ManualClock", "as_utc", "format_time", "utcnow"]

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware UTC datetime."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime, *, what: str = "datetime") -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes (ValueError).

    Naive datetimes are a programming error here: they would compare wrongly (or raise
    TypeError) against the aware datetimes that certificates carry.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix and second precision: ``2024-01-01T00:00:00Z``."""
    return as_utc(value).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class ManualClock:
    """A ``Clock`` that moves only when told to: for tests and simulations, never for serving.

    ``clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc)); clock.advance(timedelta(1))``
    """

    def __init__(self, now: datetime) -> None:
        self._now = as_utc(now, what="ManualClock start")

    def __call__(self) -> datetime:
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({format_time(self._now)})"

    @property
    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = as_utc(now, what="ManualClock time")

    def advance(self, delta: timedelta) -> datetime:
        """Move forward (or back, with a negative delta); returns the new time."""
        self._now += delta
        return self._now
