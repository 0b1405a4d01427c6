"""The CA sync inside ``gateway agent run``, on a manual clock: at start before the first round,
then every 60 s (scaled) whatever the rules' schedules, within 30 s after a failure, a 401 ends
the loop, and no rule at all still syncs (and ends a --once or --max-rounds run)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.errors import AgentError
from agent.run import AgentLoop, Round
from tests.agent.agentlab import rule_api
from tests.agent.test_run import Session, WaitAdvances
from tests.support.clock import FakeClock


class Syncs:
    def __init__(self, clock: FakeClock, session: Session) -> None:
        self.clock = clock
        self.session = session
        self.at: list[float] = []
        self.failures: list[AgentError] = []

    def __call__(self) -> str:
        self.at.append(self.clock.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return f"report at {self.clock.monotonic():g}"


def _loop(clock: FakeClock, session: Session, syncs: Syncs, **options: Any) -> AgentLoop:
    return AgentLoop(session, stop=WaitAdvances(clock), monotonic=clock.monotonic, ca_sync=syncs, **options)  # type: ignore[arg-type]


def test_a_sync_at_start_then_every_minute_beside_the_rounds() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r", schedule="2m", expiration="1h")])
    syncs = Syncs(clock, session)
    reports: list[str] = []
    loop = _loop(clock, session, syncs, max_rounds=3, on_sync=reports.append)
    loop.run()
    assert session.reports == [(0.0, ("r",)), (120.0, ("r",)), (240.0, ("r",))]
    assert syncs.at == [0.0, 60.0, 120.0, 180.0, 240.0]
    assert reports == [f"report at {t:g}" for t in syncs.at] and loop.syncs == 5


def test_a_failed_sync_is_tried_again_within_30_s_and_401_ends_the_loop() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r", schedule="5m", expiration="1h")])
    syncs = Syncs(clock, session)
    syncs.failures = [AgentError("cannot reach the server")]
    loop = _loop(clock, session, syncs, max_rounds=2, interval_scale=0.5)
    loop.run()
    assert syncs.at == [0.0, 15.0, 45.0, 75.0, 105.0, 135.0]  # 30 s and 60 s, halved
    assert session.reports == [(0.0, ("r",)), (150.0, ("r",))]
    syncs.failures = [AgentError("unknown device (HTTP 401)", status=401)]
    loop.max_rounds = 10
    with pytest.raises(AgentError, match="HTTP 401"):
        loop.run()


def test_without_rules_the_loop_still_syncs() -> None:
    clock = FakeClock()
    session = Session(clock, [])
    syncs = Syncs(clock, session)
    stop = WaitAdvances(clock)
    loop = AgentLoop(session, stop=stop, monotonic=clock.monotonic, ca_sync=syncs,  # type: ignore[arg-type]
                     on_sync=lambda _: stop.set() if len(syncs.at) == 3 else None)  # fmt: skip
    assert loop.run() == 0
    assert syncs.at == [0.0, 60.0, 120.0] and session.reports == []


def test_no_sync_without_a_store() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r")])
    loop = AgentLoop(session, stop=WaitAdvances(clock), monotonic=clock.monotonic, max_rounds=2)  # type: ignore[arg-type]
    loop.run()
    assert loop.syncs == 0


class StopsLate(WaitAdvances):
    """A manual clock that gives up after an hour: a loop that would wait forever ends."""

    def wait(self, timeout: float | None = None) -> bool:
        super().wait(timeout)
        if self.clock.monotonic() > 3600:
            self.set()
        return self.is_set()


@pytest.mark.parametrize("max_rounds", [1, 2])
def test_without_rules_max_rounds_ends_after_the_sync_and_the_fetch(max_rounds: int) -> None:
    clock = FakeClock()
    session = Session(clock, [])
    syncs = Syncs(clock, session)
    rounds: list[Round] = []
    loop = AgentLoop(session, stop=StopsLate(clock), monotonic=clock.monotonic, ca_sync=syncs,  # type: ignore[arg-type]
                     max_rounds=max_rounds, on_round=rounds.append)  # fmt: skip
    assert loop.run() == 0  # nothing reported
    expected = [60.0 * i for i in range(max_rounds)]  # one fetch per minute, each after a sync
    assert session.fetches == expected and syncs.at == expected and session.reports == []
    assert rounds == [Round(i + 1, (), ()) for i in range(max_rounds)] and loop.idle_rounds == max_rounds
