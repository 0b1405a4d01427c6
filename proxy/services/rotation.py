"""The CA rotation state machine (issue 12): pure decisions over plain values, no store, no I/O.

A rotation moves one account from the CA in use (the *old* one) to a *new* one without breaking
any device whose agent reports its trust stores (SPEC §5):

    deploy    the new CA is activated; waiting until every live node has loaded it (available)
    install   waiting until enough reporting devices have it installed (``coverage`` percent),
              or the deadline: then ``held`` (naming the devices that lack it) or, when asked
              (``on_deadline: proceed``, or ``continue``), on
    grace     the new CA is in use; the old one stays available (installed, trusted) until
              ``switched_at + grace``, then it is deactivated
    retire    waiting until no node has the old CA loaded (inactive)
    done      completed

States: ``running`` (the driver acts), ``paused`` (it does not), ``held`` (stopped at the
deadline), and the final ``completed``, ``cancelled``, ``failed``. :func:`decide` says what the
driver does next; :func:`check_pause`, :func:`check_resume`, :func:`check_continue` and
:func:`cancel` say what an admin's action does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from certs.clock import format_time
from certs.lifecycle import BindingStatus
from proxy.services.errors import InvalidInput, Refused

logger = logging.getLogger(__name__)

MAX_NAMED = 20  # devices named in a message; the API lists them all


class Step(StrEnum):
    DEPLOY = "deploy"
    INSTALL = "install"
    GRACE = "grace"
    RETIRE = "retire"
    DONE = "done"


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    HELD = "held"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


OPEN = frozenset({State.RUNNING, State.PAUSED, State.HELD})
BEFORE_SWITCH = frozenset({Step.DEPLOY, Step.INSTALL})
ACTIVE = frozenset({BindingStatus.PENDING_DEPLOYMENT, BindingStatus.AVAILABLE})


class OnDeadline(StrEnum):
    HOLD = "hold"
    PROCEED = "proceed"


class Action(Enum):
    NONE = "none"
    TURN_ON_NEW = "turn on the new CA"
    DEACTIVATE_OLD = "deactivate the old CA"
    DEACTIVATE_NEW = "deactivate the new CA"


@dataclass(frozen=True)
class Plan:
    """What the admin asked for."""

    coverage: int  # percent, 0-100
    deadline: datetime
    grace: timedelta
    on_deadline: OnDeadline


@dataclass(frozen=True)
class Progress:
    """Where a rotation is."""

    state: State
    step: Step
    switched_at: datetime | None = None


@dataclass(frozen=True)
class CaView:
    """A certificate as the store has it now; ``status`` None: it is gone (deleted)."""

    id: str
    status: BindingStatus | None
    in_use: bool
    expires_on: datetime


@dataclass(frozen=True)
class Coverage:
    """Of the devices reporting their trust stores, how many have the new CA; who lacks it."""

    installed: int
    reporting: int
    missing: tuple[str, ...] = ()  # names (or ids) of reporting devices without it

    def met(self, percent: int) -> bool:
        """Nobody reporting means nobody to wait for."""
        return self.installed * 100 >= percent * self.reporting

    def describe(self) -> str:
        return f"{self.installed} of {self.reporting} reporting devices have it installed"


@dataclass(frozen=True)
class Observation:
    now: datetime
    new: CaView
    old: CaView | None  # None: no CA was in use when the rotation started
    coverage: Coverage


@dataclass(frozen=True)
class Decision:
    """The next progress, the action that gets there (done by the driver, in the same
    transaction as the record) and the message to record; ``changed`` False: nothing to do."""

    progress: Progress
    action: Action = Action.NONE
    message: str = ""
    changed: bool = True


def unchanged(progress: Progress) -> Decision:
    return Decision(progress, changed=False)


def decide(plan: Plan, progress: Progress, seen: Observation) -> Decision:
    """What a running rotation does now (anything else waits for an admin)."""
    if progress.state is not State.RUNNING:
        return unchanged(progress)
    if progress.step in BEFORE_SWITCH:
        broken = _new_unusable(seen)
        if broken:
            return Decision(Progress(State.FAILED, progress.step), message=broken)
    if progress.step is Step.DEPLOY:
        return _deploy(progress, seen)
    if progress.step is Step.INSTALL:
        return _install(plan, progress, seen)
    if progress.step is Step.GRACE:
        return _grace(plan, progress, seen)
    if progress.step is Step.RETIRE:
        return _retire(progress, seen)
    return unchanged(progress)


def _new_unusable(seen: Observation) -> str:
    new = seen.new
    if new.status is None:
        return f"the new certificate {new.id} was deleted before it was turned on"
    if new.status not in ACTIVE:
        return f"the new certificate {new.id} was deactivated ({new.status}) before it was turned on"
    if new.expires_on <= seen.now:
        return (
            f"the new certificate {new.id} expired on {format_time(new.expires_on)} before it was turned on"
        )
    return ""


def _deploy(progress: Progress, seen: Observation) -> Decision:
    if seen.new.status is not BindingStatus.AVAILABLE:
        return unchanged(progress)
    return Decision(
        Progress(State.RUNNING, Step.INSTALL),
        message=f"certificate {seen.new.id} is available on every live node; waiting for devices "
        f"to install it ({seen.coverage.describe()})",
    )


def _install(plan: Plan, progress: Progress, seen: Observation) -> Decision:
    coverage = seen.coverage
    if coverage.met(plan.coverage):
        return _switch(seen, f"{coverage.describe()} (at least {plan.coverage}% needed)")
    if seen.now < plan.deadline:
        return unchanged(progress)
    lacking = f"lacking it: {names(coverage.missing)}"
    if plan.on_deadline is OnDeadline.PROCEED:
        return _switch(
            seen,
            f"the deadline {format_time(plan.deadline)} passed and {coverage.describe()} "
            f"(needed {plan.coverage}%); going on as asked; {lacking}",
        )
    return Decision(
        Progress(State.HELD, Step.INSTALL),
        message=f"held: the deadline {format_time(plan.deadline)} passed and {coverage.describe()} "
        f"(needed {plan.coverage}%); {lacking}. Continue (turn it on anyway), resume with a new "
        "deadline, or cancel",
    )


def _switch(seen: Observation, why: str) -> Decision:
    old = f"; the old certificate {seen.old.id} stays available for the grace period" if seen.old else ""
    return Decision(
        Progress(State.RUNNING, Step.GRACE, switched_at=seen.now),
        Action.TURN_ON_NEW,
        f"turned on certificate {seen.new.id}: {why}{old}",
    )


def _grace(plan: Plan, progress: Progress, seen: Observation) -> Decision:
    old = seen.old
    if old is None or old.status not in ACTIVE:
        return Decision(
            Progress(State.RUNNING, Step.RETIRE, progress.switched_at),
            message="the old certificate is not active any more: nothing to deactivate",
        )
    if old.in_use:
        return Decision(
            Progress(State.FAILED, Step.GRACE, progress.switched_at),
            message=f"the old certificate {old.id} was turned on again during the grace period: "
            "the rotation stops here (start a new one to move away from it)",
        )
    switched = progress.switched_at or seen.now
    ends = switched + plan.grace
    if seen.now < ends:
        return unchanged(progress)
    return Decision(
        Progress(State.RUNNING, Step.RETIRE, progress.switched_at),
        Action.DEACTIVATE_OLD,
        f"grace period over ({format_time(ends)}): deactivated the old certificate {old.id}",
    )


def _retire(progress: Progress, seen: Observation) -> Decision:
    old = seen.old
    if old is not None and old.status not in (None, BindingStatus.INACTIVE):
        return unchanged(progress)
    what = f"the old certificate {old.id} is inactive" if old else "no old certificate to retire"
    return Decision(
        Progress(State.COMPLETED, Step.DONE, progress.switched_at),
        message=f"{what}: rotation complete, {seen.new.id} in use",
    )


# --- what an admin may do -----------------------------------------------------------------------


def check_pause(progress: Progress) -> Progress:
    if progress.state is State.PAUSED:
        raise Refused("the rotation is already paused")
    if progress.state is not State.RUNNING:
        raise Refused(f"only a running rotation can be paused; this one is {progress.state}")
    return replace(progress, state=State.PAUSED)


def check_resume(plan: Plan, progress: Progress, now: datetime, new_deadline: datetime | None) -> Progress:
    """Paused or held → running. A held rotation needs a new deadline (else it would hold again
    at once): ``continue`` is the way to go on without one."""
    if progress.state not in (State.PAUSED, State.HELD):
        raise Refused(f"only a paused or held rotation can be resumed; this one is {progress.state}")
    deadline = new_deadline or plan.deadline
    if progress.state is State.HELD and progress.step is Step.INSTALL and deadline <= now:
        raise Refused(
            "the rotation is held because its deadline passed: resume it with a new deadline "
            "(deadline), or continue to turn the new certificate on anyway, or cancel it"
        )
    return replace(progress, state=State.RUNNING)


def check_continue(progress: Progress) -> Progress:
    """A held (or paused) rotation goes on past its deadline whatever the coverage."""
    if progress.state not in (State.HELD, State.PAUSED):
        raise Refused(f"only a held or paused rotation can be continued; this one is {progress.state}")
    return replace(progress, state=State.RUNNING)


@dataclass(frozen=True)
class Cancellation:
    progress: Progress
    action: Action
    message: str


def cancel(progress: Progress, new: CaView, old: CaView | None, switched_at: datetime | None) -> Cancellation:
    """Before the switch: the new CA is deactivated (if still active) and the old one stays in
    use. After it: refused, since the new CA is in use and the devices trust it."""
    if progress.state not in OPEN:
        raise Refused(f"the rotation is already {progress.state}: nothing to cancel")
    if progress.step not in BEFORE_SWITCH:
        when = f" since {format_time(switched_at)}" if switched_at else ""
        keep = (
            f"; pause it to keep the old certificate {old.id} available meanwhile"
            if old and progress.step is Step.GRACE
            else ""
        )
        raise Refused(
            f"the new certificate {new.id} is in use{when}: a rotation cannot be cancelled after "
            f"the switch. To move to another CA, let this one finish and start a new rotation "
            f"(`gateway ca rotate`, POST .../gateway/certificates/rotations){keep}"
        )
    stays = f"; certificate {old.id} stays in use" if old else ""
    if new.status in ACTIVE and not new.in_use:
        return Cancellation(
            Progress(State.CANCELLED, progress.step),
            Action.DEACTIVATE_NEW,
            f"cancelled at step {progress.step}: the new certificate {new.id} was deactivated "
            f"(it can be deleted once inactive){stays}",
        )
    return Cancellation(
        Progress(State.CANCELLED, progress.step),
        Action.NONE,
        f"cancelled at step {progress.step}: the new certificate {new.id} was not active any more{stays}",
    )


# --- input ----------------------------------------------------------------------------------------


def check_plan(
    coverage: object, deadline: datetime, grace: timedelta, now: datetime, *, deadline_field: str = "deadline"
) -> int:
    """InvalidInput naming the field for a coverage outside 0-100, a deadline not in the
    future, or a negative grace; the coverage as an int."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float):
        raise InvalidInput("coverage", f"must be a percentage from 0 to 100, got {coverage!r}")
    if not 0 <= coverage <= 100 or coverage != int(coverage):
        raise InvalidInput("coverage", f"must be a whole percentage from 0 to 100, got {coverage}")
    if deadline <= now:
        raise InvalidInput(
            deadline_field,
            f"{format_time(deadline)} is not in the future (now {format_time(now)}): give a "
            'duration such as "7d" or "30m", or a later RFC 3339 time',
        )
    if grace < timedelta(0):
        raise InvalidInput("grace", "must not be negative (0 deactivates the old CA at the switch)")
    return int(coverage)


def names(items: Sequence[str]) -> str:
    """``a, b, c`` (at most MAX_NAMED, then "and N more")."""
    if not items:
        return "none"
    shown = ", ".join(items[:MAX_NAMED])
    more = len(items) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")
