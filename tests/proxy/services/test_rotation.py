"""The rotation state machine alone (proxy/services/rotation.py), on the test clock: every step,
the deadline (hold or proceed), the grace period, and what pause, resume, continue and cancel do
at each step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from certs.lifecycle import BindingStatus
from proxy.services.errors import InvalidInput, Refused
from proxy.services.rotation import (
    Action,
    CaView,
    Coverage,
    Observation,
    OnDeadline,
    Plan,
    Progress,
    State,
    Step,
    cancel,
    check_continue,
    check_pause,
    check_plan,
    check_resume,
    decide,
    names,
)
from tests.support.clock import FakeClock

AVAILABLE = BindingStatus.AVAILABLE
PENDING = BindingStatus.PENDING_DEPLOYMENT
YEAR = timedelta(days=365)


def plan(clock: FakeClock, *, coverage: int = 100, on_deadline: OnDeadline = OnDeadline.HOLD) -> Plan:
    return Plan(coverage, clock() + timedelta(minutes=10), timedelta(minutes=5), on_deadline)


def ca(
    cert_id: str, clock: FakeClock, status: BindingStatus | None = AVAILABLE, *, in_use: bool = False
) -> CaView:
    return CaView(cert_id, status, in_use, clock() + YEAR)


def seen(
    clock: FakeClock,
    *,
    new: CaView | None = None,
    old: CaView | None = None,
    coverage: Coverage = Coverage(0, 0),
) -> Observation:
    return Observation(
        clock(),
        new or ca("new", clock),
        old if old is not None else ca("old", clock, in_use=True),
        coverage,
    )


RUNNING_DEPLOY = Progress(State.RUNNING, Step.DEPLOY)
RUNNING_INSTALL = Progress(State.RUNNING, Step.INSTALL)


def test_deploy_waits_until_the_new_ca_is_available(clock: FakeClock) -> None:
    pending = seen(clock, new=ca("new", clock, PENDING))
    assert not decide(plan(clock), RUNNING_DEPLOY, pending).changed
    decision = decide(plan(clock), RUNNING_DEPLOY, seen(clock))
    assert decision.progress == RUNNING_INSTALL and decision.action is Action.NONE
    assert "available on every live node" in decision.message


def test_install_waits_for_coverage_then_turns_the_new_ca_on(clock: FakeClock) -> None:
    short = seen(clock, coverage=Coverage(1, 2, ("laptop-b",)))
    assert not decide(plan(clock), RUNNING_INSTALL, short).changed
    clock.advance(minutes=1)
    decision = decide(plan(clock), RUNNING_INSTALL, seen(clock, coverage=Coverage(2, 2)))
    assert decision.action is Action.TURN_ON_NEW
    assert decision.progress == Progress(State.RUNNING, Step.GRACE, clock())
    assert "2 of 2 reporting devices" in decision.message and "old stays available" in decision.message


@pytest.mark.parametrize(
    ("installed", "reporting", "percent", "met"),
    [
        (0, 0, 100, True),
        (1, 2, 50, True),
        (1, 2, 51, False),
        (3, 4, 75, True),
        (0, 5, 0, True),
        (4, 5, 100, False),
    ],
)
def test_coverage_threshold(installed: int, reporting: int, percent: int, met: bool) -> None:
    assert Coverage(installed, reporting).met(percent) is met


def test_at_the_deadline_short_coverage_holds_and_names_the_devices(clock: FakeClock) -> None:
    asked = plan(clock)
    clock.advance(minutes=10)
    decision = decide(asked, RUNNING_INSTALL, seen(clock, coverage=Coverage(1, 2, ("laptop-b (id-b)",))))
    assert decision.progress == Progress(State.HELD, Step.INSTALL)
    assert decision.action is Action.NONE
    assert "laptop-b (id-b)" in decision.message and "1 of 2" in decision.message
    # held: the driver does nothing more, whatever happens
    assert not decide(asked, decision.progress, seen(clock, coverage=Coverage(2, 2))).changed


def test_at_the_deadline_proceed_turns_it_on_anyway(clock: FakeClock) -> None:
    asked = plan(clock, on_deadline=OnDeadline.PROCEED)
    clock.advance(minutes=11)
    decision = decide(asked, RUNNING_INSTALL, seen(clock, coverage=Coverage(0, 1, ("laptop-b",))))
    assert decision.action is Action.TURN_ON_NEW and decision.progress.step is Step.GRACE
    assert "going on as asked" in decision.message and "laptop-b" in decision.message


def test_grace_keeps_the_old_ca_until_it_ends_then_deactivates_it(clock: FakeClock) -> None:
    switched = Progress(State.RUNNING, Step.GRACE, clock())
    old = ca("old", clock)  # available, no longer in use
    new = ca("new", clock, in_use=True)
    clock.advance(minutes=4, seconds=59)
    assert not decide(plan(clock), switched, seen(clock, new=new, old=old)).changed
    clock.advance(seconds=1)
    decision = decide(plan(clock), switched, seen(clock, new=new, old=old))
    assert decision.action is Action.DEACTIVATE_OLD and decision.progress.step is Step.RETIRE
    assert decision.progress.switched_at == switched.switched_at


def test_grace_fails_when_the_old_ca_was_turned_on_again(clock: FakeClock) -> None:
    switched = Progress(State.RUNNING, Step.GRACE, clock())
    decision = decide(plan(clock), switched, seen(clock, old=ca("old", clock, in_use=True)))
    assert decision.progress.state is State.FAILED and "turned on again" in decision.message


def test_retire_completes_once_the_old_ca_is_inactive(clock: FakeClock) -> None:
    retiring = Progress(State.RUNNING, Step.RETIRE, clock())
    going = seen(clock, old=ca("old", clock, BindingStatus.PENDING_DELETION))
    assert not decide(plan(clock), retiring, going).changed
    done = decide(plan(clock), retiring, seen(clock, old=ca("old", clock, BindingStatus.INACTIVE)))
    assert done.progress.state is State.COMPLETED and done.progress.step is Step.DONE


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (None, "deleted"),
        (BindingStatus.PENDING_DELETION, "deactivated"),
        (BindingStatus.INACTIVE, "deactivated"),
    ],
)
def test_a_new_ca_withdrawn_before_the_switch_fails_the_rotation(
    clock: FakeClock, status: BindingStatus | None, words: str
) -> None:
    decision = decide(plan(clock), RUNNING_INSTALL, seen(clock, new=ca("new", clock, status)))
    assert decision.progress.state is State.FAILED and words in decision.message


def test_paused_does_nothing(clock: FakeClock) -> None:
    paused = Progress(State.PAUSED, Step.INSTALL)
    assert not decide(plan(clock), paused, seen(clock, coverage=Coverage(1, 1))).changed


def test_pause_resume_continue(clock: FakeClock) -> None:
    asked = plan(clock)
    paused = check_pause(RUNNING_INSTALL)
    assert paused.state is State.PAUSED
    with pytest.raises(Refused, match="already paused"):
        check_pause(paused)
    assert check_resume(asked, paused, clock(), None).state is State.RUNNING
    with pytest.raises(Refused, match="only a paused or held"):
        check_resume(asked, RUNNING_INSTALL, clock(), None)
    held = Progress(State.HELD, Step.INSTALL)
    clock.advance(minutes=10)
    with pytest.raises(Refused, match="new deadline"):
        check_resume(asked, held, clock(), None)
    assert check_resume(asked, held, clock(), clock() + timedelta(minutes=5)).state is State.RUNNING
    assert check_continue(held).state is State.RUNNING
    with pytest.raises(Refused, match="held or paused"):
        check_continue(RUNNING_INSTALL)


@pytest.mark.parametrize("step", [Step.DEPLOY, Step.INSTALL])
@pytest.mark.parametrize("state", [State.RUNNING, State.PAUSED, State.HELD])
def test_cancel_before_the_switch_deactivates_the_new_ca(clock: FakeClock, step: Step, state: State) -> None:
    outcome = cancel(Progress(state, step), ca("new", clock), ca("old", clock, in_use=True), None)
    assert outcome.action is Action.DEACTIVATE_NEW
    assert outcome.progress == Progress(State.CANCELLED, step)
    assert "new certificate new was deactivated" in outcome.message and "old stays in use" in outcome.message


def test_cancel_after_the_switch_is_refused_and_points_at_a_new_rotation(clock: FakeClock) -> None:
    grace = Progress(State.RUNNING, Step.GRACE, clock())
    with pytest.raises(Refused, match=r"in use since .*start a new rotation.*pause it to keep"):
        cancel(grace, ca("new", clock, in_use=True), ca("old", clock), clock())
    with pytest.raises(Refused, match="already completed"):
        cancel(Progress(State.COMPLETED, Step.DONE), ca("new", clock), None, clock())


def test_plan_checks_name_the_field(clock: FakeClock) -> None:
    later = clock() + timedelta(minutes=1)
    assert check_plan(100, later, timedelta(0), clock()) == 100
    for coverage in (-1, 101, 50.5, True, "100"):
        with pytest.raises(InvalidInput, match="^coverage: "):
            check_plan(coverage, later, timedelta(0), clock())
    with pytest.raises(InvalidInput, match="^deadline: .*not in the future"):
        check_plan(100, clock(), timedelta(0), clock())
    with pytest.raises(InvalidInput, match="^grace: must not be negative"):
        check_plan(100, later, timedelta(seconds=-1), clock())


def test_names_are_capped() -> None:
    assert names([]) == "none"
    assert names([f"d{i}" for i in range(25)]).endswith("d19 and 5 more")
