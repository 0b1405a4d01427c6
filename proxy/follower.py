"""Following the store from a data-plane process: changes made by other processes, heartbeats,
and fail static when the database cannot be reached.

Every ``poll_interval`` (50 ms) the follower asks the store whether anyone else committed since
it last looked (``Store.data_version``: microseconds); if so it calls ``on_change`` (forget the
devices and posture rules the change journal names; reload the CAs and the policies if it says
what a node loads changed: ``data_plane.Following``).
Every ``heartbeat_interval`` it calls ``heartbeat`` (``CaNode.sync``: live in the store, what it
has loaded).

When the store raises (the database is down, the file unreadable), nothing that was loaded is
dropped: the proxy keeps signing with the CAs and enforcing the rules it last loaded. The
follower says so once in the log and in ``health()`` (``degraded``, since when), keeps trying at
every poll, and when the store answers again logs the recovery and catches up (a full change
and a heartbeat).

At each heartbeat it also compares this machine's clock with the database's: liveness is
measured by the database's clock, so a skewed node is neither dropped nor kept wrongly, but a
skew of more than ``skew_limit`` is worth a warning (certificates' validity, logs).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from certs.clock import Clock, utcnow
from proxy.store.database import StoreError

logger = logging.getLogger(__name__)

POLL_INTERVAL = timedelta(milliseconds=50)
SKEW_LIMIT = timedelta(seconds=5)

# What a store raises when it cannot be used right now (pg's StoreUnavailable is a StoreError).
UNREACHABLE = (StoreError, sqlite3.Error, OSError)


class FollowedStore(Protocol):
    def data_version(self) -> int: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Health:
    degraded_since: datetime | None = None
    reason: str = ""

    @property
    def status(self) -> str:
        return "ok" if self.degraded_since is None else "degraded"

    def to_json(self) -> dict[str, str]:
        if self.degraded_since is None:
            return {"status": "ok", "database": "ok"}
        since = self.degraded_since.isoformat().replace("+00:00", "Z")
        return {
            "status": "degraded",
            "database": f"unreachable since {since}: {self.reason}",
            "serving": "with the CAs, rules and posture last loaded",
        }


class StoreFollower:
    def __init__(
        self,
        store: FollowedStore,
        *,
        on_change: Callable[[], object],
        heartbeat: Callable[[], object],
        heartbeat_interval: timedelta,
        poll_interval: timedelta = POLL_INTERVAL,
        clock: Clock = utcnow,
        skew_limit: timedelta = SKEW_LIMIT,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval.total_seconds()
        self._poll_interval = poll_interval.total_seconds()
        self._clock = clock
        self._skew_limit = skew_limit
        self._version: int | None = None
        self._health = Health()
        self._skewed = False
        self._next_heartbeat = time.monotonic() + self._heartbeat_interval
        self.changes = 0  # how many changes were followed (tests, metrics)
        self.on_health: Callable[[Health], object] | None = None  # told when the health changes

    def health(self) -> Health:
        return self._health

    async def run(self) -> None:
        """Poll until cancelled."""
        self._version = self._guarded(self._store.data_version)
        while True:
            await asyncio.sleep(self._poll_interval)
            self.check()

    def check(self) -> bool:
        """One round: follow a change, heartbeat if due. True if a change was followed. While
        the store is away, only a probe that reads it (``_probe``) tells it is back."""
        if self._health.degraded_since is not None:
            if self._guarded(self._probe) is None:
                return False
            self._recovered()
            return True
        changed = bool(self._guarded(self._follow))
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + self._heartbeat_interval
            self._guarded(self._beat)
        return changed

    def _probe(self) -> bool:
        """Both calls read the database on one backend or the other (SQLite's clock is this
        machine's; PostgreSQL's data version is counted by a listener thread)."""
        self._store.now()
        self._store.data_version()
        return True

    def _recovered(self) -> None:
        since = self._health.degraded_since
        assert since is not None
        self._set_health(Health())
        logger.warning(
            "store reachable again after %.1f s: catching up with what changed meanwhile",
            (self._clock() - since).total_seconds(),
        )
        self._next_heartbeat = time.monotonic() + self._heartbeat_interval
        self._guarded(self._follow)  # the version was forgotten: everything is followed
        self._guarded(self._beat)

    def _follow(self) -> bool:
        version = self._store.data_version()
        if version == self._version:
            return False
        self._on_change()
        self._version = version
        self.changes += 1
        return True

    def _beat(self) -> bool:
        self._heartbeat()
        self._check_skew()
        return True

    def _guarded[T](self, job: Callable[[], T]) -> T | None:
        try:
            result = job()
        except UNREACHABLE as e:
            self._unreachable(e)
            return None
        except Exception:  # a bug must not stop the heartbeat: log it and go on
            logger.exception("following the store failed (%s)", getattr(job, "__name__", job))
            return None
        return result

    def _unreachable(self, error: BaseException) -> None:
        self._version = None  # whatever the version says once it is back: catch up
        if self._health.degraded_since is not None:
            return
        self._set_health(Health(self._clock(), str(error) or type(error).__name__))
        logger.error(
            "store unreachable (%s): serving on with the CAs, rules and posture last loaded; "
            "retrying every %d ms",
            self._health.reason,
            round(self._poll_interval * 1000),
        )

    def _set_health(self, health: Health) -> None:
        self._health = health
        if self.on_health is not None:
            self.on_health(health)

    def _check_skew(self) -> None:
        skew = self._clock() - self._store.now()
        skewed = abs(skew) > self._skew_limit
        if skewed and not self._skewed:
            logger.warning(
                "this machine's clock is %+.1f s off the database's: liveness is measured by the "
                "database's clock, but fix the clock (NTP): certificate validity and logs use it",
                skew.total_seconds(),
            )
        elif self._skewed and not skewed:
            logger.info("this machine's clock agrees with the database's again")
        self._skewed = skewed
