"""Following the store from a data-plane process (``proxy/follower.py``): a change by another
connection is followed once, heartbeats keep their pace, an unreachable store degrades (logged
once) while what was loaded stays, and the node catches up when the store answers again."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from proxy.follower import StoreFollower
from proxy.store import Store
from proxy.store.database import StoreError
from tests.support.clock import FakeClock


class StoreUnavailable(StoreError):
    """What the PostgreSQL store raises when the database cannot be reached (a stand-in)."""


class FlakyStore:
    """A store whose data version and clock can be set, and which can be made unreachable."""

    def __init__(self, clock: FakeClock) -> None:
        self.version = 1
        self.down = False
        self.clock = clock
        self.skew = timedelta(0)

    def data_version(self) -> int:
        if self.down:
            raise StoreUnavailable("connection refused (127.0.0.1:5432)")
        return self.version

    def now(self) -> datetime:
        if self.down:
            raise StoreUnavailable("connection refused (127.0.0.1:5432)")
        return self.clock() - self.skew


def _follower(store: FlakyStore, clock: FakeClock, calls: list[str]) -> StoreFollower:
    def changed() -> None:
        if store.down:
            raise StoreUnavailable("connection refused")
        calls.append("change")

    def heartbeat() -> None:
        if store.down:
            raise StoreUnavailable("connection refused")
        calls.append("heartbeat")

    return StoreFollower(
        store,
        on_change=changed,
        heartbeat=heartbeat,
        heartbeat_interval=timedelta(0),  # every check beats: the pace is tested below
        clock=clock,
    )


def test_a_change_is_followed_once() -> None:
    clock = FakeClock()
    store = FlakyStore(clock)
    calls: list[str] = []
    follower = _follower(store, clock, calls)
    assert follower.check() is True  # the first look: nothing was followed yet
    assert follower.check() is False
    store.version = 2
    assert follower.check() is True
    assert calls.count("change") == 2
    assert follower.changes == 2


def test_an_unreachable_store_degrades_once_and_catches_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    store = FlakyStore(clock)
    calls: list[str] = []
    follower = _follower(store, clock, calls)
    follower.check()
    calls.clear()
    store.down = True
    with caplog.at_level(logging.INFO, logger="proxy.follower"):
        for _ in range(5):
            follower.check()
            clock.advance(seconds=1)
    health = follower.health().to_json()
    assert health["status"] == "degraded"
    assert health["database"].startswith("unreachable since 2026-03-01T12:00:00Z")
    assert "connection refused" in health["database"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "serving on with the CAs, rules and posture last loaded" in errors[0].getMessage()
    assert calls == []

    caplog.clear()
    store.down = False  # same data version as before: the catch-up must not depend on it
    with caplog.at_level(logging.INFO, logger="proxy.follower"):
        follower.check()
    assert follower.health().to_json() == {"status": "ok", "database": "ok"}
    assert "change" in calls and "heartbeat" in calls
    assert any("reachable again after 5.0 s" in r.getMessage() for r in caplog.records)


def test_heartbeats_keep_their_pace() -> None:
    clock = FakeClock()
    store = FlakyStore(clock)
    calls: list[str] = []
    follower = StoreFollower(
        store,
        on_change=lambda: None,
        heartbeat=lambda: calls.append("heartbeat"),
        heartbeat_interval=timedelta(hours=1),
        clock=clock,
    )
    for _ in range(20):
        follower.check()
    assert calls == []


def test_a_skewed_clock_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    store = FlakyStore(clock)
    store.skew = timedelta(minutes=3)  # this machine runs 3 minutes ahead of the database
    follower = _follower(store, clock, [])
    with caplog.at_level(logging.WARNING, logger="proxy.follower"):
        for _ in range(3):
            follower.check()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "+180.0 s off the database's" in warnings[0]
    store.skew = timedelta(seconds=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="proxy.follower"):
        follower.check()
    assert not caplog.records


def test_data_version_moves_only_for_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    mine, other = Store.open(path), Store.open(path)
    try:
        before = mine.data_version()
        mine.nodes.heartbeat("mine", mine.now())
        assert mine.data_version() == before
        other.nodes.heartbeat("other", other.now())
        assert mine.data_version() != before
    finally:
        mine.close()
        other.close()
