"""The rotation service over a real store on the test clock (proxy/services/rotations.py): a
rotation waits for the devices that report their trust stores, switches, keeps the old CA for
the grace period and retires it; it holds at the deadline naming who lacks the new CA; it
survives a restart (a new service on the same store); one at a time per account; cancel leaves
nothing half-done; an uploaded CA can be the new one; automatic rotation before expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from certs.lifecycle import BindingStatus
from certs.sealing import KeySealer
from proxy.services.certificates import CertificateService
from proxy.services.errors import Conflict, InvalidInput, NotFound, Refused
from proxy.services.rotation import OnDeadline
from proxy.services.rotation_input import RotationRequest
from proxy.services.rotations import RotationService
from proxy.store import Device, Store, TrustStoreEntry
from tests.support.clock import FakeClock
from tests.support.devices import Lab
from tests.support.pki import make_ca


def request(
    lab: Lab, *, coverage: int = 100, deadline: timedelta = timedelta(minutes=10), grace: timedelta = timedelta(minutes=5),
    on_deadline: OnDeadline = OnDeadline.HOLD, upload_id: str | None = None,
) -> RotationRequest:  # fmt: skip
    return RotationRequest(coverage, lab.now + deadline, grace, on_deadline, upload_id)


@pytest.fixture
def rotations(lab: Lab) -> RotationService:
    return RotationService(lab.gateway.store, lab.gateway.service, lab.gateway.clock)


def report(lab: Lab, device: Device, *cert_ids: str) -> None:
    """The device's agent reports these certificates installed in its system store."""
    fps = tuple(lab.gateway.service.get(lab.account, c).fingerprint for c in cert_ids)
    lab.gateway.store.trust_reports.replace(device.id, [TrustStoreEntry("system", fps)], lab.now)


def status(lab: Lab, cert_id: str) -> tuple[BindingStatus | None, bool]:
    record = lab.gateway.service.get(lab.account, cert_id)
    return record.binding_status, record.in_use


async def test_a_rotation_switches_only_once_every_reporting_device_has_the_new_ca(
    lab: Lab, rotations: RotationService
) -> None:
    old = lab.gateway.initial_ca_id
    ann, _ = lab.enroll(hostname="ann-laptop", serial="SN-1")
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    report(lab, ann, old)
    report(lab, bob, old)

    started = await rotations.start(lab.account, request(lab))
    new = started.record.new_certificate_id
    assert started.record.state == "running" and started.record.step == "deploy"
    assert started.record.old_certificate_id == old
    assert status(lab, new) == (BindingStatus.AVAILABLE, False)  # no live node: available at once

    rotations.advance()
    view = rotations.get(lab.account, started.record.id)
    assert view.record.step == "install" and view.coverage is not None
    assert (view.coverage.installed, view.coverage.reporting) == (0, 2)

    report(lab, ann, old, new)
    lab.gateway.clock.advance(minutes=1)
    rotations.advance()
    view = rotations.get(lab.account, started.record.id)
    assert view.record.step == "install" and [m.name for m in view.missing] == ["bob-laptop"]
    assert status(lab, new) == (BindingStatus.AVAILABLE, False)

    report(lab, bob, old, new)
    rotations.advance()
    view = rotations.get(lab.account, started.record.id)
    assert view.record.step == "grace" and view.record.switched_at == lab.now
    assert status(lab, new) == (BindingStatus.AVAILABLE, True)
    assert status(lab, old) == (BindingStatus.AVAILABLE, False)  # kept for the grace period

    lab.gateway.clock.advance(minutes=4)
    assert rotations.advance() == 0
    lab.gateway.clock.advance(minutes=1)
    rotations.advance()
    view = rotations.get(lab.account, started.record.id)
    assert status(lab, old) == (BindingStatus.INACTIVE, False)
    assert (view.record.state, view.record.step) == ("completed", "done")
    assert view.record.finished_at == lab.now
    assert [(s.step, s.state) for s in view.record.steps] == [
        ("deploy", "running"), ("install", "running"), ("grace", "running"), ("retire", "running"),
        ("done", "completed"),
    ]  # fmt: skip


async def test_the_deadline_holds_it_naming_the_device_then_continue_switches(
    lab: Lab, rotations: RotationService
) -> None:
    ann, _ = lab.enroll(hostname="ann-laptop", serial="SN-1")
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    started = await rotations.start(lab.account, request(lab))
    new = started.record.new_certificate_id
    report(lab, ann, new)
    report(lab, bob)
    rotations.advance()
    lab.gateway.clock.advance(minutes=10)
    rotations.advance()
    view = rotations.get(lab.account, started.record.id)
    assert view.record.state == "held"
    assert "bob-laptop" in view.record.message and f"({bob.id})" in view.record.message
    assert "ann-laptop" not in view.record.message
    assert status(lab, new) == (BindingStatus.AVAILABLE, False)
    assert rotations.advance() == 0  # held: nothing moves

    with pytest.raises(Refused, match="new deadline"):
        rotations.resume(lab.account, started.record.id)
    continued = rotations.proceed(lab.account, started.record.id)
    assert continued.record.state == "running" and continued.record.on_deadline == "proceed"
    rotations.advance()
    assert status(lab, new) == (BindingStatus.AVAILABLE, True)


async def test_resume_with_a_new_deadline_waits_again(lab: Lab, rotations: RotationService) -> None:
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    report(lab, bob)
    started = await rotations.start(lab.account, request(lab, deadline=timedelta(seconds=30)))
    lab.gateway.clock.advance(seconds=30)
    rotations.advance()
    assert rotations.get(lab.account, started.record.id).record.state == "held"
    with pytest.raises(InvalidInput, match="^deadline: "):
        rotations.resume(lab.account, started.record.id, "-1m")
    resumed = rotations.resume(lab.account, started.record.id, "5m")
    assert resumed.record.state == "running" and resumed.record.deadline == lab.now + timedelta(minutes=5)
    report(lab, bob, started.record.new_certificate_id)
    rotations.advance()
    assert rotations.get(lab.account, started.record.id).record.step == "grace"


async def test_pause_stops_the_driver_until_resumed(lab: Lab, rotations: RotationService) -> None:
    started = await rotations.start(lab.account, request(lab))
    rotations.pause(lab.account, started.record.id)
    assert rotations.advance() == 0
    assert rotations.get(lab.account, started.record.id).record.step == "deploy"
    rotations.resume(lab.account, started.record.id)
    rotations.advance()  # nobody reports: nothing to wait for
    assert rotations.get(lab.account, started.record.id).record.step == "grace"


async def test_a_restart_resumes_where_it_stopped(lab: Lab, sealer: KeySealer, clock: FakeClock) -> None:
    store = lab.gateway.store
    first = RotationService(store, lab.gateway.service, clock)
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    started = await first.start(lab.account, request(lab))
    first.advance()
    # a new process: new services over the same store (the sealer is the master key)
    again = RotationService(store, CertificateService(store, sealer, clock), clock)
    report(lab, bob, started.record.new_certificate_id)
    again.advance()
    assert again.get(lab.account, started.record.id).record.step == "grace"


async def test_one_rotation_at_a_time(lab: Lab, rotations: RotationService) -> None:
    started = await rotations.start(lab.account, request(lab))
    before = len(lab.gateway.service.list(lab.account))
    with pytest.raises(Conflict, match=f"rotation {started.record.id} is running at step deploy"):
        await rotations.start(lab.account, request(lab))
    assert len(lab.gateway.service.list(lab.account)) == before  # nothing generated


async def test_cancel_before_the_switch_deactivates_the_new_ca(lab: Lab, rotations: RotationService) -> None:
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    report(lab, bob)
    started = await rotations.start(lab.account, request(lab))
    rotations.advance()
    cancelled = rotations.cancel(lab.account, started.record.id)
    assert cancelled.record.state == "cancelled" and "was deactivated" in cancelled.record.message
    assert status(lab, started.record.new_certificate_id) == (BindingStatus.INACTIVE, False)
    assert status(lab, lab.gateway.initial_ca_id) == (BindingStatus.AVAILABLE, True)
    assert rotations.advance() == 0
    again = await rotations.start(lab.account, request(lab))  # a new one may start
    assert again.record.state == "running"


async def test_cancel_after_the_switch_is_refused(lab: Lab, rotations: RotationService) -> None:
    started = await rotations.start(lab.account, request(lab))
    rotations.advance()
    with pytest.raises(Refused, match="cannot be cancelled after the switch.*start a new rotation"):
        rotations.cancel(lab.account, started.record.id)
    view = rotations.get(lab.account, started.record.id)
    assert view.record.state == "running" and view.record.step == "grace"


async def test_an_uploaded_ca_can_be_the_new_one(lab: Lab, rotations: RotationService) -> None:
    own = make_ca("Own rotation CA", now=lab.now)
    upload = lab.gateway.service.create_mtls(
        lab.account, certificates=own.cert_pem(), private_key=own.key_pem(), name="own"
    )
    started = await rotations.start(lab.account, request(lab, upload_id=upload.id))
    assert started.record.new_certificate_id == upload.id
    rotations.advance()
    assert status(lab, upload.id) == (BindingStatus.AVAILABLE, True)


async def test_an_upload_without_its_key_or_active_is_refused(lab: Lab, rotations: RotationService) -> None:
    with pytest.raises(InvalidInput, match="^upload_id: .*no private key"):
        await rotations.start(lab.account, request(lab, upload_id=lab.ca_id))
    with pytest.raises(InvalidInput, match="^upload_id: no mTLS upload"):
        await rotations.start(lab.account, request(lab, upload_id=lab.gateway.initial_ca_id))
    own = make_ca("Own rotation CA", now=lab.now)
    upload = lab.gateway.service.create_mtls(
        lab.account, certificates=own.cert_pem(), private_key=own.key_pem()
    )
    lab.gateway.service.activate(lab.account, upload.id)
    with pytest.raises(InvalidInput, match="^upload_id: .*is available: a rotation takes an inactive upload"):
        await rotations.start(lab.account, request(lab, upload_id=upload.id))


async def test_automatic_rotation_starts_before_expiry_once(lab: Lab, rotations: RotationService) -> None:
    service = lab.gateway.service
    lab.gateway.service.expiry_note = rotations.expiry_note
    in_use = service.get(lab.account, lab.gateway.initial_ca_id)
    lab.gateway.clock.advance(in_use.expires_on - lab.now - timedelta(days=20))
    (warning,) = service.expiry_messages([in_use])
    assert "automatic rotation is not configured" in warning

    service.update_configuration(
        lab.account, {"certificate_rotation": {"auto_rotate_days_before_expiry": 14}}
    )
    assert await rotations.auto_start() == []
    (warning,) = service.expiry_messages([in_use])
    assert "automatic rotation starts" in warning

    lab.gateway.clock.advance(days=6)
    (started,) = await rotations.auto_start()
    assert started.record.trigger == "auto" and started.record.on_deadline == "proceed"
    assert started.record.deadline == lab.now + timedelta(days=7)  # halfway to the expiry
    (warning,) = service.expiry_messages([in_use])
    assert f"rotation {started.record.id} is running" in warning
    assert await rotations.auto_start() == []

    rotations.cancel(lab.account, started.record.id)
    assert await rotations.auto_start() == []  # once per CA: a cancelled one is not restarted


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"auto_rotate_days_before_expiry": -1}, "auto_rotate_days_before_expiry"),
        ({"auto_rotate_days_before_expiry": "14"}, "auto_rotate_days_before_expiry"),
        ({"coverage": 101}, "coverage"),
        ({"grace": "-1d"}, "grace"),
        ({"on_deadline": "later"}, "on_deadline"),
        ({"deadline": "1d"}, "deadline"),
    ],
)
def test_the_setting_is_checked(lab: Lab, setting: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput, match=f"^settings.certificate_rotation.{field}: "):
        lab.gateway.service.update_configuration(lab.account, {"certificate_rotation": setting})


def test_the_store_keeps_one_open_rotation_per_account(lab: Lab) -> None:
    from proxy.store import OpenRotationExists, RotationRecord

    now = lab.now
    record = RotationRecord(
        id="r1", account_id=lab.account, trigger="manual", state="running", step="deploy",
        new_certificate_id="n", old_certificate_id=None, coverage=100, deadline=now, grace_seconds=0,
        on_deadline="hold", message="m", revision=1, created_at=now, updated_at=now,
    )  # fmt: skip
    store: Store = lab.gateway.store
    store.rotations.add(record)
    with pytest.raises(OpenRotationExists):
        store.rotations.add(replace(record, id="r2"))
    store.rotations.add(replace(record, id="r3", state="completed"))  # a finished one does not count


async def test_on_the_timer_alone_a_waiting_rotation_is_counted_every_10_seconds(
    lab: Lab, rotations: RotationService
) -> None:
    bob, _ = lab.enroll(hostname="bob-laptop", serial="SN-2")
    report(lab, bob)
    started = await rotations.start(lab.account, request(lab))
    rotations.advance()
    report(lab, bob, started.record.new_certificate_id)  # seen at a wake-up (advance()) at once...
    lab.gateway.clock.advance(seconds=9)
    assert rotations.advance(periodic=True) == 0  # ... by the timer alone only 10 s after the last count
    lab.gateway.clock.advance(seconds=1)
    assert rotations.advance(periodic=True) >= 1
    assert rotations.get(lab.account, started.record.id).record.step == "grace"


async def test_each_account_rotates_on_its_own(lab: Lab, rotations: RotationService) -> None:
    from proxy.services.accounts import AccountService

    service = lab.gateway.service
    accounts = AccountService(lab.gateway.store, service, lab.gateway.clock, default_account_id=lab.account)
    other, other_ca = accounts.create("Other")
    mine = await rotations.start(lab.account, request(lab))
    theirs = await rotations.start(other.id, request(lab))  # one open rotation per account, not per gateway
    assert theirs.record.old_certificate_id == other_ca.id
    assert {r.record.id for r in rotations.list(other.id)} == {theirs.record.id}
    rotations.pause(other.id, theirs.record.id)
    rotations.advance()  # mine moves on to the switch (nobody reports), theirs stays paused
    assert service.get(lab.account, mine.record.new_certificate_id).in_use
    assert service.get(other.id, other_ca.id).in_use
    with pytest.raises(NotFound):
        rotations.get(other.id, mine.record.id)  # another account's rotation is not found
