"""certs/lifecycle.py: status transitions, limits and expiry warnings (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certs.errors import CertError, LifecycleError, LimitExceeded
from certs.lifecycle import (
    EXPIRY_WARNING,
    GENERATION_WINDOW,
    MAX_AVAILABLE,
    MAX_GENERATIONS,
    BindingStatus,
    CertificateState,
    activate,
    check_delete,
    check_generation_allowed,
    deactivate,
    expiry_message,
    turn_on,
)
from tests.support.clock import FakeClock

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=365)

INACTIVE = BindingStatus.INACTIVE
PENDING = BindingStatus.PENDING_DEPLOYMENT
AVAILABLE = BindingStatus.AVAILABLE
DELETING = BindingStatus.PENDING_DELETION


def state(
    status: BindingStatus, *, in_use: bool = False, not_after: datetime = LATER, id: str = "c1"
) -> CertificateState:
    return CertificateState(id=id, binding_status=status, in_use=in_use, not_after=not_after)


def test_binding_status_values_match_cloudflare() -> None:
    assert [s.value for s in BindingStatus] == [
        "inactive",
        "pending_deployment",
        "available",
        "pending_deletion",
    ]
    assert BindingStatus("available") is AVAILABLE and f"{AVAILABLE}" == "available"


def test_limits() -> None:
    assert (MAX_AVAILABLE, MAX_GENERATIONS) == (10, 3)
    assert timedelta(hours=24) == GENERATION_WINDOW and timedelta(days=30) == EXPIRY_WARNING


def test_state_accepts_status_strings_and_refuses_naive_times() -> None:
    assert CertificateState("c", "available", False, LATER).binding_status is AVAILABLE  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not_after must be timezone-aware"):
        CertificateState("c", AVAILABLE, False, datetime(2027, 1, 1))


# -- activate ---------------------------------------------------------------------------------


def test_activate_moves_inactive_to_pending_deployment() -> None:
    assert activate(state(INACTIVE), [], NOW) is PENDING


@pytest.mark.parametrize(
    ("status", "match"),
    [
        (PENDING, r"^certificate c1 is already active \(pending_deployment\)$"),
        (AVAILABLE, r"^certificate c1 is already active \(available\)$"),
        (
            DELETING,
            r"^certificate c1 is being deactivated \(pending_deletion\): wait until it is "
            r"inactive, then activate it again$",
        ),
    ],
)
def test_activate_refuses_other_statuses(status: BindingStatus, match: str) -> None:
    with pytest.raises(LifecycleError, match=match):
        activate(state(status), [], NOW)


def test_activate_refuses_an_expired_certificate() -> None:
    with pytest.raises(
        LifecycleError,
        match=r"^certificate c1 expired on 2026-01-01T00:00:00Z: it cannot be activated$",
    ):
        activate(state(INACTIVE, not_after=NOW), [], NOW)


def _others(count: int, status: BindingStatus) -> list[CertificateState]:
    return [state(status, id=f"o{i}") for i in range(count)]


@pytest.mark.parametrize(
    ("others", "allowed"),
    [
        (_others(9, AVAILABLE), True),
        (_others(5, AVAILABLE) + _others(4, PENDING), True),
        (_others(10, AVAILABLE), False),
        (_others(6, AVAILABLE) + _others(4, PENDING), False),
        (_others(9, AVAILABLE) + _others(5, DELETING) + _others(5, INACTIVE), True),
        (_others(9, AVAILABLE) + [state(INACTIVE)], True),  # the certificate itself, listed
    ],
)
def test_activate_keeps_at_most_ten_available(others: list[CertificateState], allowed: bool) -> None:
    if allowed:
        assert activate(state(INACTIVE), others, NOW) is PENDING
        return
    with pytest.raises(LimitExceeded, match=r"^at most 10 certificates can be available") as caught:
        activate(state(INACTIVE), others, NOW)
    assert caught.value.retry_after is None
    assert isinstance(caught.value, CertError)


# -- deactivate -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [AVAILABLE, PENDING])
def test_deactivate_moves_active_to_pending_deletion(status: BindingStatus) -> None:
    assert deactivate(state(status)) is DELETING


@pytest.mark.parametrize(
    ("cert", "match"),
    [
        (
            state(AVAILABLE, in_use=True),
            r"^certificate c1 is in use: turn another certificate on first$",
        ),
        (state(INACTIVE), r"^certificate c1 is not active \(inactive\)$"),
        (state(DELETING), r"^certificate c1 is already being deactivated \(pending_deletion\)$"),
    ],
)
def test_deactivate_refuses(cert: CertificateState, match: str) -> None:
    with pytest.raises(LifecycleError, match=match):
        deactivate(cert)


# -- turn on ----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_use", [False, True])
def test_turn_on_allows_an_available_certificate(in_use: bool) -> None:
    turn_on(state(AVAILABLE, in_use=in_use), NOW)


@pytest.mark.parametrize(
    ("cert", "match"),
    [
        (
            state(PENDING),
            r"still being deployed to the proxy nodes \(pending_deployment\): wait "
            r"until it is available$",
        ),
        (
            state(INACTIVE),
            r"^certificate c1 is inactive: activate it and wait until it is available$",
        ),
        (state(DELETING), r"being deactivated \(pending_deletion\): only an available certificate"),
        (
            state(AVAILABLE, not_after=NOW - timedelta(days=1)),
            r"^certificate c1 expired on 2025-12-31T00:00:00Z: it cannot be turned on$",
        ),
    ],
)
def test_turn_on_refuses(cert: CertificateState, match: str) -> None:
    with pytest.raises(LifecycleError, match=match):
        turn_on(cert, NOW)


# -- delete -----------------------------------------------------------------------------------


def test_delete_allows_an_inactive_certificate() -> None:
    check_delete(state(INACTIVE))


@pytest.mark.parametrize(
    ("cert", "match"),
    [
        (
            state(INACTIVE, in_use=True),
            r"^certificate c1 is in use: turn another certificate on first$",
        ),
        (state(AVAILABLE, in_use=True), r"is in use"),
        (
            state(AVAILABLE),
            r"^certificate c1 is available: only inactive certificates can be deleted",
        ),
        (state(PENDING), r"is pending_deployment: only inactive"),
        (state(DELETING), r"is pending_deletion: only inactive"),
    ],
)
def test_delete_refuses(cert: CertificateState, match: str) -> None:
    with pytest.raises(LifecycleError, match=match):
        check_delete(cert)


# -- generation rate limit --------------------------------------------------------------------


def test_three_generations_per_rolling_day(clock: FakeClock) -> None:
    made: list[datetime] = []
    for _ in range(3):
        check_generation_allowed(made, clock.now)
        made.append(clock.now)
        clock.advance(timedelta(hours=1))
    with pytest.raises(LimitExceeded) as caught:
        check_generation_allowed(made, clock.now)
    assert caught.value.retry_after == made[0] + timedelta(hours=24)
    assert str(caught.value) == (
        "at most 3 certificates can be generated per 24 hours: "
        "the next one is allowed at 2026-01-02T00:00:00Z"
    )
    clock.set(caught.value.retry_after - timedelta(seconds=1))
    with pytest.raises(LimitExceeded, match="at most 3 certificates can be generated per 24 hours"):
        check_generation_allowed(made, clock.now)
    clock.set(caught.value.retry_after)
    check_generation_allowed(made, clock.now)  # the oldest left the window


@pytest.mark.parametrize(
    ("ages_hours", "allowed"),
    [
        ([], True),
        ([1, 2], True),
        ([1, 2, 3], False),
        ([1, 2, 24], True),  # exactly 24 h ago is outside the window
        ([1, 2, 30, 40, 50], True),
        ([0, 0, 0], False),
    ],
)
def test_generation_window(ages_hours: list[int], allowed: bool) -> None:
    previous = [NOW - timedelta(hours=h) for h in ages_hours]
    if allowed:
        check_generation_allowed(previous, NOW)
    else:
        with pytest.raises(LimitExceeded, match="at most 3 certificates can be generated per 24 hours"):
            check_generation_allowed(previous, NOW)


def test_generation_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_generation_allowed([datetime(2026, 1, 1)], NOW)


# -- expiry warnings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "in_use", "expected"),
    [
        (timedelta(days=31), False, None),
        (timedelta(days=30, seconds=1), True, None),
        (timedelta(days=30), False, "certificate c1 expires in 30 days on 2026-01-31T00:00:00Z"),
        (
            timedelta(days=1, hours=2),
            False,
            "certificate c1 expires in 1 day on 2026-01-02T02:00:00Z",
        ),
        (
            timedelta(hours=5),
            False,
            "certificate c1 expires in less than a day on 2026-01-01T05:00:00Z",
        ),
        (
            timedelta(days=10),
            True,
            "IN-USE certificate c1 expires in 10 days on 2026-01-11T00:00:00Z: generate or upload "
            "another, activate it and turn it on before then",
        ),
        (timedelta(0), False, "certificate c1 expired on 2026-01-01T00:00:00Z"),
        (-timedelta(days=3), False, "certificate c1 expired on 2025-12-29T00:00:00Z"),
        (
            -timedelta(days=3),
            True,
            "IN-USE certificate c1 expired on 2025-12-29T00:00:00Z: the proxy cannot sign leaves; "
            "turn another certificate on now",
        ),
    ],
)
def test_expiry_message(remaining: timedelta, in_use: bool, expected: str | None) -> None:
    cert = state(AVAILABLE, in_use=in_use, not_after=NOW + remaining)
    assert expiry_message(cert, NOW) == expected


def test_expiry_message_follows_the_clock(clock: FakeClock) -> None:
    cert = state(AVAILABLE, not_after=clock.now + timedelta(days=45))
    assert expiry_message(cert, clock.now) is None
    clock.advance(timedelta(days=20))
    assert expiry_message(cert, clock.now) == ("certificate c1 expires in 25 days on 2026-02-15T00:00:00Z")
