"""The one test clock: aware UTC that moves only when told to, so expiry, rate limits and rotation
are tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certs.clock import ManualClock

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""Where the ``clock`` fixture starts: deterministic dates in messages and stored rows."""


class FakeClock(ManualClock):
    """The library's ``ManualClock`` (a ``certs.clock.Clock``), plus what tests ask of it:
    ``advance(minutes=5)`` beside ``advance(timedelta(...))``, and a monotonic reading in seconds
    since the start for code that takes ``monotonic=`` (the agent's run loop)."""

    def __init__(self, now: datetime = START) -> None:
        super().__init__(now)
        self.start = self.now

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Move on by ``delta`` or by ``timedelta(**parts)`` (negative moves back)."""
        if (delta is None) == (not parts):
            raise TypeError("advance() takes a timedelta or keyword parts, not both or neither")
        return super().advance(delta if delta is not None else timedelta(**parts))

    def monotonic(self) -> float:
        """Seconds since the clock started (a ``time.monotonic`` stand-in)."""
        return (self.now - self.start).total_seconds()

    @classmethod
    def at_wall_time(cls) -> FakeClock:
        """Starting now (whole seconds): for servers whose clients check certificates against the
        real time."""
        return cls(datetime.now(UTC).replace(microsecond=0))
