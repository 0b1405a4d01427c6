"""``gateway agent run``: check and report each rule on its own schedule until stopped.

Rules are fetched at start and again every ``refetch`` (60 s); a rule that appears is checked at
once, one that disappears is dropped. Each rule is next due after its ``schedule``, or sooner
when its results would expire first (at 4/5 of ``expiration``), so that a passing device never
lapses between two reports. Every wait is cut short by SIGINT or SIGTERM (set ``stop``); a
server that cannot be reached is retried within 30 s; a refused device secret (401)
ends the loop. ``interval_scale`` multiplies every interval (tests and labs), ``max_rounds``
stops after that many rounds. A fetch that finds no rule counts as a round too (an idle one,
with nothing to report), so that ``max_rounds`` ends on a device without rules.

With ``ca_sync`` (``trust.TrustSync.run``) the loop also keeps the device's trust stores in step
with the gateway's root CAs: a sync at start, before the first round of reports, then every
``CA_SYNC`` (60 s, scaled like the rest), again within 30 s after a failure; a 401 ends the loop
there too. ``on_sync`` gets each sync's report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent.checks import AgentRule, RuleCheck
from agent.errors import AgentError
from agent.report import Stored
from agent.session import AgentSession

logger = logging.getLogger(__name__)

REFETCH = timedelta(seconds=60)
RETRY = timedelta(seconds=30)
DEFAULT_SCHEDULE = timedelta(minutes=5)
CA_SYNC = timedelta(seconds=60)
WAIT_SLICE = 0.5  # seconds: the longest the loop sleeps before it looks at ``stop`` again


@dataclass(frozen=True)
class Round:
    """One round of reports: what was checked and what the server stored."""

    number: int
    checks: tuple[RuleCheck, ...]
    stored: tuple[Stored, ...]
    failed: bool = False  # the report could not be made or sent (the reason was logged)


def interval(rule: AgentRule) -> timedelta:
    if rule.rule is None:
        return DEFAULT_SCHEDULE
    return min(rule.rule.schedule, rule.rule.expiration * 4 / 5)


class AgentLoop:
    def __init__(
        self,
        session: AgentSession,
        *,
        interval_scale: float = 1.0,
        max_rounds: int | None = None,
        stop: threading.Event | None = None,
        on_round: Callable[[Round], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        ca_sync: Callable[[], Any] | None = None,
        on_sync: Callable[[Any], None] | None = None,
    ) -> None:
        if interval_scale <= 0:
            raise AgentError("--interval-scale must be more than 0")
        self.session = session
        self.scale = interval_scale
        self.max_rounds = max_rounds
        self.stop = stop or threading.Event()
        self.on_round = on_round or (lambda _: None)
        self._now = monotonic
        self._rules: dict[str, AgentRule] = {}
        self._due: dict[str, float] = {}
        self._next_fetch = 0.0
        self.rounds = 0  # rounds of reports
        self.idle_rounds = 0  # fetches that found no rule
        self.ca_sync = ca_sync
        self.on_sync = on_sync or (lambda _: None)
        self._next_sync = 0.0 if ca_sync is not None else float("inf")
        self.syncs = 0

    def seconds(self, value: timedelta) -> float:
        return value.total_seconds() * self.scale

    def run(self) -> int:
        """Loop until stopped or ``max_rounds`` (idle rounds included); the number of rounds reported."""
        while not self.stop.is_set() and (
            self.max_rounds is None or self.rounds + self.idle_rounds < self.max_rounds
        ):
            now = self._now()
            if now >= self._next_sync:
                self._sync(now)
            if now >= self._next_fetch:
                self._refresh(now)
            due = [rule for rule_id, rule in self._rules.items() if self._due[rule_id] <= now]
            if due:
                self._round(due, now)
                continue
            wake = min([self._next_fetch, self._next_sync, *self._due.values()])
            # In slices: a signal that lands just before the thread blocks in ``wait`` does not
            # interrupt it (CPython runs handlers between bytecodes), so a long wait could
            # outlast a SIGTERM by a whole interval.
            self.stop.wait(min(WAIT_SLICE, max(0.0, wake - self._now())))
        logger.info("agent loop ends after %d round(s)", self.rounds)
        return self.rounds

    def _sync(self, now: float) -> None:
        assert self.ca_sync is not None
        try:
            report = self.ca_sync()
        except AgentError as e:
            if e.status == 401:
                raise
            logger.warning("cannot sync the root certificates: %s (trying again soon)", e)
            self._next_sync = now + min(self.seconds(RETRY), self.seconds(CA_SYNC))
            return
        self.syncs += 1
        self._next_sync = now + self.seconds(CA_SYNC)
        self.on_sync(report)

    def _refresh(self, now: float) -> None:
        try:
            rules = self.session.fetch_rules()
        except AgentError as e:
            if e.status == 401:
                raise
            logger.warning("cannot fetch the posture rules (keeping %d known): %s", len(self._rules), e)
            self._next_fetch = now + min(self.seconds(RETRY), self.seconds(REFETCH))
            return
        self._next_fetch = now + self.seconds(REFETCH)
        fresh = {rule.rule_id: rule for rule in rules if rule.rule_id}
        for rule_id in set(self._due) - set(fresh):
            logger.info("rule %s is gone", rule_id)
            del self._due[rule_id]
        for rule_id in fresh:
            self._due.setdefault(rule_id, now)
        self._rules = fresh
        if not fresh:
            # No rule, no report: the fetch (and the CA sync before it) is the whole round, so
            # that --once and --max-rounds end on a device without rules too.
            self.idle_rounds += 1
            number = self.rounds + self.idle_rounds
            logger.info("round %d: no posture rules apply to this device", number)
            self.on_round(Round(number, (), ()))

    def _round(self, due: list[AgentRule], now: float) -> None:
        self.rounds += 1
        failed = False
        try:
            checks = self.session.check(due)
            stored = self.session.report(checks)
        except AgentError as e:
            if e.status == 401:
                raise
            logger.warning("round %d: cannot report: %s (trying again soon)", self.rounds, e)
            checks, stored, failed = [], [], True
        for rule in due:
            wait = self.seconds(interval(rule))
            self._due[rule.rule_id] = now + (min(wait, self.seconds(RETRY)) if failed else wait)
        self.on_round(Round(self.rounds + self.idle_rounds, tuple(checks), tuple(stored), failed))
