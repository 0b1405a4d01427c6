"""The run loop with a scripted session and a manual clock: each rule on its own schedule (sooner
when results would expire first), rules fetched again, transient errors survived, 401 ends it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agent.checks import AgentRule, RuleCheck, parse_rules
from agent.errors import AgentError
from agent.report import Stored
from agent.run import AgentLoop, Round
from tests.agent.agentlab import rule_api, wire_rule
from tests.support.clock import FakeClock
from tests.support.pki import make_ca

CA = make_ca()


class WaitAdvances(threading.Event):
    """``stop.wait(t)`` moves the manual clock on by ``t`` instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.advance(seconds=timeout or 0.0)
        return self.is_set()


class Session:
    def __init__(self, clock: FakeClock, rules: list[dict[str, Any]]) -> None:
        self.clock = clock
        self.rules = rules
        self.fetches: list[float] = []
        self.reports: list[tuple[float, tuple[str, ...]]] = []
        self.fail_next: AgentError | None = None

    def fetch_rules(self) -> list[AgentRule]:
        self.fetches.append(self.clock.monotonic())
        return parse_rules([wire_rule(r, CA) for r in self.rules])

    def check(self, rules: Sequence[AgentRule]) -> list[RuleCheck]:
        return [RuleCheck(r.rule_id, r.name, False, "scripted") for r in rules]

    def report(self, checks: Sequence[RuleCheck]) -> list[Stored]:
        if self.fail_next:
            error, self.fail_next = self.fail_next, None
            raise error
        self.reports.append((self.clock.monotonic(), tuple(c.rule_id for c in checks)))
        return [Stored(c.rule_id, False, False, c.reason) for c in checks]


def _loop(session: Session, clock: FakeClock, **options: Any) -> AgentLoop:
    return AgentLoop(session, stop=WaitAdvances(clock), monotonic=clock.monotonic, **options)  # type: ignore[arg-type]


def test_each_rule_on_its_schedule_and_before_its_results_expire() -> None:
    clock = FakeClock()
    session = Session(clock, [
        rule_api("five", schedule="5m", expiration="1h"),
        rule_api("two", schedule="2m", expiration="1h"),
        rule_api("short-lived", schedule="5m", expiration="1m"),  # every 48 s, before expiry
    ])  # fmt: skip
    rounds: list[Round] = []
    assert _loop(session, clock, max_rounds=6, on_round=rounds.append).run() == 6
    assert session.reports == [
        (0.0, ("five", "two", "short-lived")),
        (48.0, ("short-lived",)),
        (96.0, ("short-lived",)),
        (120.0, ("two",)),
        (144.0, ("short-lived",)),
        (192.0, ("short-lived",)),
    ]
    assert session.fetches == [0.0, 60.0, 120.0, 180.0]
    assert [r.number for r in rounds] == [1, 2, 3, 4, 5, 6]


def test_interval_scale_shrinks_every_interval() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r", schedule="5m")])
    _loop(session, clock, max_rounds=3, interval_scale=0.01).run()
    assert [at for at, _ in session.reports] == pytest.approx([0.0, 3.0, 6.0])


def test_rules_that_appear_are_checked_at_once_and_gone_ones_dropped() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("old", schedule="5m")])
    loop = _loop(session, clock, max_rounds=1)
    loop.run()
    session.rules = [rule_api("new", schedule="5m")]
    loop.max_rounds = 3
    loop.run()
    assert session.reports == [(0.0, ("old",)), (60.0, ("new",)), (360.0, ("new",))]


def test_a_transient_error_is_retried_soon_and_401_ends_the_loop() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r", schedule="5m")])
    session.fail_next = AgentError("cannot reach the server", status=None)
    loop = _loop(session, clock, max_rounds=2)
    loop.run()
    assert session.reports == [(30.0, ("r",))]  # the failed round at 0 s, again 30 s later
    session.fail_next = AgentError("unknown device (HTTP 401)", status=401)
    clock.advance(seconds=400.0 - clock.monotonic())
    loop.max_rounds = 5
    with pytest.raises(AgentError, match="HTTP 401"):
        loop.run()


def test_stop_ends_the_loop() -> None:
    clock = FakeClock()
    session = Session(clock, [rule_api("r")])
    stop = WaitAdvances(clock)
    loop = AgentLoop(session, stop=stop, monotonic=clock.monotonic, on_round=lambda r: stop.set())  # type: ignore[arg-type]
    assert loop.run() == 1


def test_interval_scale_must_be_positive() -> None:
    with pytest.raises(AgentError, match="--interval-scale must be more than 0"):
        AgentLoop(Session(FakeClock(), []), interval_scale=0)  # type: ignore[arg-type]
