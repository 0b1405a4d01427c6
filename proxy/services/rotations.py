"""CA rotations (issue 12), the service: start one, show it, let an admin pause, resume,
continue or cancel it, and drive it (:meth:`RotationService.advance`, called by
``proxy.services.rotation_driver``). Decisions come from ``proxy.services.rotation``; this module
observes the store, asks, and applies the answer and its record in one transaction.

Everything is per account; at most one rotation per account is open (running, paused or held).
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from certs.clock import Clock, format_time
from certs.errors import CertError
from certs.lifecycle import BindingStatus
from proxy.services import rotation as machine
from proxy.services.certificates import CertificateService
from proxy.services.device_trust import REPORTING_WINDOW, DeviceTrustService
from proxy.services.errors import Conflict, InvalidInput, NotFound, ServiceError
from proxy.services.rotation import Action, CaView, Coverage, OnDeadline, Plan, Progress, State, Step
from proxy.services.rotation_input import AutoRotation, RotationRequest, auto_rotation, parse_deadline
from proxy.services.subscribers import Subscribers
from proxy.store import (
    CertificateKind,
    CertificateRecord,
    OpenRotationExists,
    RotationChange,
    RotationRecord,
    Store,
)

logger = logging.getLogger(__name__)

MANUAL = "manual"
AUTO = "auto"
AUTO_RETRY = timedelta(hours=1)  # after an automatic start failed (generation limit, ...)
MAX_STEPS_PER_ADVANCE = 5
MAX_MISSING = 100  # devices lacking the new CA listed by name (the counts are exact)
RECOUNT = timedelta(seconds=10)  # a waiting rotation's coverage, on the timer alone


@dataclass(frozen=True)
class MissingDevice:
    device_id: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device_id})" if self.name else self.device_id


@dataclass(frozen=True)
class RotationView:
    """A rotation as the API and the CLI show it: the record, and the new CA's coverage now
    (None when the new certificate is gone)."""

    record: RotationRecord
    coverage: Coverage | None
    missing: tuple[MissingDevice, ...]


class _Stale(Exception):
    """The rotation changed between the read and the write: roll back, read again."""


class RotationService:
    def __init__(
        self,
        store: Store,
        certificates: CertificateService,
        clock: Clock,
        *,
        window: timedelta = REPORTING_WINDOW,
    ) -> None:
        self._store = store
        self._certificates = certificates
        self._clock = clock
        self._trust = DeviceTrustService(store, certificates, clock, window=window)
        self._wake = Subscribers("rotation wake-up")
        self._auto_retry_at: dict[str, datetime] = {}
        self._counted_at: dict[str, datetime] = {}  # by rotation id: its last decision

    # -- wake-ups -------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """``callback()`` when a rotation may move: started, resumed, continued, a trust report."""
        self._wake.add(callback)

    def reported(self) -> None:
        """A device posted a trust report: coverage may have changed."""
        self._wake.notify()

    # -- reading --------------------------------------------------------------------------------

    def list(self, account_id: str) -> builtins.list[RotationView]:
        self._certificates.list(account_id)  # NotFound for an unknown account
        return [self._view(r) for r in self._store.rotations.list(account_id)]

    def get(self, account_id: str, rotation_id: str) -> RotationView:
        return self._view(self._record(account_id, rotation_id))

    def current(self, account_id: str) -> RotationView:
        """The open rotation, else the latest one; NotFound when there never was one."""
        self._certificates.list(account_id)
        record = self._store.rotations.open_for(account_id) or self._store.rotations.latest(account_id)
        if record is None:
            none = NotFound("CA rotation", "current")
            none.args = ("no CA rotation in this account yet: start one with `gateway ca rotate`",)
            raise none
        return self._view(record)

    # -- starting -------------------------------------------------------------------------------

    async def start(
        self, account_id: str, request: RotationRequest, *, trigger: str = MANUAL
    ) -> RotationView:
        """Generate (or take the inactive upload ``upload_id``), activate, record. Conflict while
        another rotation of the account is open; nothing is left behind when it fails."""
        old = self._certificates.in_use(account_id)  # NotFound for an unknown account
        self._check_none_open(account_id)
        generated: CertificateRecord | None = None
        if request.upload_id is not None:
            new = self._upload(account_id, request.upload_id)
            how = f"took the uploaded certificate {new.id}"
        else:
            new = generated = await self._certificates.generate_async(
                account_id, request.validity_period_days, request.key_type
            )
            how = f"generated certificate {new.id}"
        now = self._clock()
        record = RotationRecord(
            id=str(uuid.uuid4()), account_id=account_id, trigger=trigger,
            state=State.RUNNING.value, step=Step.DEPLOY.value, new_certificate_id=new.id,
            old_certificate_id=old.id if old else None, coverage=request.coverage,
            deadline=request.deadline, grace_seconds=int(request.grace.total_seconds()),
            on_deadline=request.on_deadline.value,
            message=f"{trigger} rotation: {how} (expires {format_time(new.expires_on)}) and "
            f"activated it, to replace {old.id if old else 'no certificate'}",
            revision=1, created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            with self._store.transaction():
                self._check_none_open(account_id)
                self._certificates.activate(account_id, new.id)
                self._store.rotations.add(record)
        except BaseException as e:
            if generated is not None:
                self._certificates.delete(account_id, generated.id)  # inactive: never used
                logger.info("rotation refused: deleted the certificate %s it generated", generated.id)
            if isinstance(e, OpenRotationExists):
                raise self._open_conflict(account_id) from None
            raise
        logger.info("account %s: rotation %s started: %s", account_id, record.id, record.message)
        self._wake.notify()
        return self.get(account_id, record.id)

    def _check_none_open(self, account_id: str) -> None:
        if self._store.rotations.open_for(account_id) is not None:
            raise self._open_conflict(account_id)

    def _open_conflict(self, account_id: str) -> Conflict:
        current = self._store.rotations.open_for(account_id)
        which = (
            f"rotation {current.id} is {current.state} at step {current.step}"
            if current
            else "a rotation is open"
        )
        return Conflict(
            f"{which}: one rotation at a time per account. Watch it with `gateway ca rotation`, "
            "or cancel it first"
        )

    def _upload(self, account_id: str, upload_id: str) -> CertificateRecord:
        record = self._store.certificates.get(upload_id, account_id=account_id)
        if record is None or record.kind is CertificateKind.GATEWAY_MANAGED:
            raise InvalidInput("upload_id", f"no mTLS upload with id {upload_id!r} in this account")
        if record.kind is not CertificateKind.CUSTOM:
            raise InvalidInput(
                "upload_id",
                f"upload {upload_id} has no private key: upload the CA again with private_key "
                "through mtls_certificates",
            )
        if record.binding_status not in (None, BindingStatus.INACTIVE) or record.in_use:
            raise InvalidInput(
                "upload_id",
                f"certificate {upload_id} is {record.binding_status}: a rotation takes an inactive "
                "upload and activates it itself",
            )
        return record

    # -- an admin's actions ---------------------------------------------------------------------

    def pause(self, account_id: str, rotation_id: str) -> RotationView:
        record = self._record(account_id, rotation_id)
        progress = machine.check_pause(_progress(record))
        return self._change(record, progress, "paused by an admin: the driver waits until it is resumed")

    def resume(self, account_id: str, rotation_id: str, deadline: object = None) -> RotationView:
        record = self._record(account_id, rotation_id)
        now = self._clock()
        new_deadline = None
        if deadline is not None:
            new_deadline = parse_deadline(deadline, now)
            if new_deadline <= now:
                raise InvalidInput("deadline", f"{format_time(new_deadline)} is not in the future")
        progress = machine.check_resume(_plan(record), _progress(record), now, new_deadline)
        extended = f"; new deadline {format_time(new_deadline)}" if new_deadline else ""
        view = self._change(record, progress, f"resumed by an admin{extended}", deadline=new_deadline)
        self._wake.notify()
        return view

    def proceed(self, account_id: str, rotation_id: str) -> RotationView:
        """``continue``: on past the deadline whatever the coverage (on_deadline becomes proceed)."""
        record = self._record(account_id, rotation_id)
        progress = machine.check_continue(_progress(record))
        view = self._change(
            record, progress, "continued by an admin: on past the deadline whatever the coverage",
            on_deadline=OnDeadline.PROCEED.value,
        )  # fmt: skip
        self._wake.notify()
        return view

    def cancel(self, account_id: str, rotation_id: str) -> RotationView:
        record = self._record(account_id, rotation_id)
        new, old = self._ca_views(record)
        outcome = machine.cancel(_progress(record), new, old, record.switched_at)
        now = self._clock()
        try:
            with self._store.transaction():
                if outcome.action is Action.DEACTIVATE_NEW:
                    self._certificates.deactivate(account_id, new.id)
                self._write(record, outcome.progress, outcome.message, now, finished=True)
        except _Stale:
            raise Conflict("the rotation changed meanwhile: look at it again and retry") from None
        logger.info("account %s: rotation %s %s", account_id, record.id, outcome.message)
        return self.get(account_id, rotation_id)

    def _change(
        self,
        record: RotationRecord,
        progress: Progress,
        message: str,
        *,
        deadline: datetime | None = None,
        on_deadline: str | None = None,
    ) -> RotationView:
        change = RotationChange(
            progress.state.value, progress.step.value, message, deadline=deadline, on_deadline=on_deadline
        )
        if not self._store.rotations.update(record.id, record.revision, change, self._clock()):
            raise Conflict("the rotation changed meanwhile: look at it again and retry")
        logger.info("account %s: rotation %s %s", record.account_id, record.id, message)
        return self.get(record.account_id, record.id)

    # -- the driver -----------------------------------------------------------------------------

    def advance(self, *, periodic: bool = False) -> int:
        """Move every running rotation as far as it can go now; the number of steps taken.

        ``periodic`` (the driver's timer, not a wake-up): a rotation waiting for devices is
        counted again only every ``RECOUNT`` (a trust report wakes the driver anyway), or once
        its deadline has come."""
        taken = 0
        now = self._clock()
        for record in self._store.rotations.all_open():
            if periodic and self._counted_recently(record, now):
                continue
            for _ in range(MAX_STEPS_PER_ADVANCE):
                if record.state != State.RUNNING.value or not self._step(record):
                    break
                taken += 1
                record = self._record(record.account_id, record.id)
        return taken

    def _counted_recently(self, record: RotationRecord, now: datetime) -> bool:
        if record.state != State.RUNNING.value or record.step != Step.INSTALL.value or now >= record.deadline:
            return False
        counted = self._counted_at.get(record.id)
        return counted is not None and now - counted < RECOUNT

    def _step(self, record: RotationRecord) -> bool:
        """One decision applied; False when there was nothing to do."""
        new, old = self._ca_views(record)
        plan, now = _plan(record), self._clock()
        self._counted_at[record.id] = now
        waiting = record.step in (Step.DEPLOY.value, Step.INSTALL.value)
        coverage = self._counts(record) if waiting else Coverage(0, 0)
        if waiting and now >= plan.deadline and not coverage.met(plan.coverage):  # the message names them
            coverage = self._coverage(record)[0] or coverage
        seen = machine.Observation(now, new, old, coverage)
        decision = machine.decide(plan, _progress(record), seen)
        if not decision.changed:
            return False
        message = decision.message
        try:
            with self._store.transaction():
                self._act(record, decision.action, new, old)
                self._write(record, decision.progress, message, seen.now)
        except _Stale:
            return False
        except (CertError, ServiceError) as e:
            message = f"could not {decision.action.value}: {e}"
            failed = Progress(State.FAILED, Step(record.step), record.switched_at)
            try:
                self._write(record, failed, message, seen.now)
            except _Stale:
                return False
            decision = machine.Decision(failed)
        log = logger.warning if decision.progress.state in (State.HELD, State.FAILED) else logger.info
        log("account %s: rotation %s: %s", record.account_id, record.id, message)
        return True

    def _act(self, record: RotationRecord, action: Action, new: CaView, old: CaView | None) -> None:
        if action is Action.TURN_ON_NEW:
            self._certificates.turn_on(record.account_id, new.id)
        elif action is Action.DEACTIVATE_OLD and old is not None:
            self._certificates.deactivate(record.account_id, old.id)
        elif action is Action.DEACTIVATE_NEW:
            self._certificates.deactivate(record.account_id, new.id)

    def _write(
        self,
        record: RotationRecord,
        progress: Progress,
        message: str,
        now: datetime,
        *,
        finished: bool = False,
    ) -> None:
        done = finished or progress.state not in machine.OPEN
        change = RotationChange(
            progress.state.value, progress.step.value, message,
            switched_at=progress.switched_at if record.switched_at is None else None,
            finished_at=now if done else None,
        )  # fmt: skip
        if not self._store.rotations.update(record.id, record.revision, change, now):
            raise _Stale()

    # -- automatic rotation ---------------------------------------------------------------------

    async def auto_start(self) -> builtins.list[RotationView]:
        """Start the rotations ``settings.certificate_rotation`` asks for: one per account whose
        in-use CA expires within ``auto_rotate_days_before_expiry`` days, once per CA."""
        started = []
        for account in self._store.accounts.list():
            request = self._auto_due(account.id)
            if request is None:
                continue
            try:
                started.append(await self.start(account.id, request, trigger=AUTO))
            except (CertError, ServiceError) as e:
                self._auto_retry_at[account.id] = self._clock() + AUTO_RETRY
                logger.error("account %s: automatic CA rotation could not start: %s", account.id, e)
        return started

    def _auto_due(self, account_id: str) -> RotationRequest | None:
        now = self._clock()
        if now < self._auto_retry_at.get(account_id, now):
            return None
        setting = self.auto_setting(account_id)
        in_use = self._certificates.in_use(account_id)
        if not setting.enabled or in_use is None:
            return None
        if in_use.expires_on - now > timedelta(days=setting.days_before_expiry):
            return None
        if self._store.rotations.open_for(account_id) is not None:
            return None
        if self._store.rotations.started_for(account_id, in_use.id, AUTO):
            return None  # once per CA: a cancelled automatic rotation is not restarted
        halfway = max((in_use.expires_on - now) / 2, timedelta(minutes=1))
        return RotationRequest(setting.coverage, now + halfway, setting.grace, setting.on_deadline)

    def auto_setting(self, account_id: str) -> AutoRotation:
        stored = self._certificates.configuration(account_id).settings
        return auto_rotation(stored.get("certificate_rotation"))

    def expiry_note(self, record: CertificateRecord) -> str:
        """What the expiry warning of the in-use certificate adds about rotation."""
        account_id = record.account_id
        current = self._store.rotations.open_for(account_id)
        if current is not None:
            return f"rotation {current.id} is {current.state} at step {current.step}"
        setting = self.auto_setting(account_id)
        if setting.enabled:
            starts = record.expires_on - timedelta(days=setting.days_before_expiry)
            if self._store.rotations.started_for(account_id, record.id, AUTO):
                return "its automatic rotation was started before and did not complete: start one with `gateway ca rotate`"
            return f"automatic rotation starts {format_time(max(starts, self._clock()))}"
        return (
            "no rotation is under way and automatic rotation is not configured "
            "(settings.certificate_rotation.auto_rotate_days_before_expiry): start one with `gateway ca rotate`"
        )

    # -- internals ------------------------------------------------------------------------------

    def _record(self, account_id: str, rotation_id: str) -> RotationRecord:
        self._certificates.list(account_id)  # NotFound for an unknown account
        record = self._store.rotations.get(rotation_id, account_id=account_id)
        if record is None:
            raise NotFound("CA rotation", rotation_id)
        return record

    def _ca_views(self, record: RotationRecord) -> tuple[CaView, CaView | None]:
        by_id = {r.id: r for r in self._certificates.list(record.account_id)}
        new = _ca_view(record.new_certificate_id, by_id.get(record.new_certificate_id))
        old = record.old_certificate_id
        return new, None if old is None else _ca_view(old, by_id.get(old))

    def _counts(self, record: RotationRecord) -> Coverage:
        """Installed and reporting only: one aggregate query, what the driver needs every second
        while it waits (the names only when a message needs them)."""
        cert = self._store.certificates.get(record.new_certificate_id, account_id=record.account_id)
        if cert is None:
            return Coverage(0, 0)
        counted = self._trust.coverage(cert)
        return Coverage(counted.installed, counted.reporting)

    def _coverage(self, record: RotationRecord) -> tuple[Coverage | None, tuple[MissingDevice, ...]]:
        """The counts, and the reporting devices that lack the new CA (at most ``MAX_MISSING``)."""
        cert = self._store.certificates.get(record.new_certificate_id, account_id=record.account_id)
        if cert is None:
            return None, ()
        counted = self._trust.coverage(cert)
        rows = self._store.trust_reports.lacking(
            record.account_id, cert.fingerprint.upper(), self._trust.since(), MAX_MISSING
        )
        missing = tuple(MissingDevice(device_id, name) for device_id, name in rows)
        coverage = Coverage(counted.installed, counted.reporting, tuple(m.label for m in missing))
        return coverage, missing

    def _view(self, record: RotationRecord) -> RotationView:
        coverage, missing = self._coverage(record)
        return RotationView(record, coverage, missing)


def _ca_view(cert_id: str, record: CertificateRecord | None) -> CaView:
    if record is None:
        return CaView(cert_id, None, False, datetime.max.replace(tzinfo=UTC))
    return CaView(cert_id, record.binding_status or BindingStatus.INACTIVE, record.in_use, record.expires_on)


def _plan(record: RotationRecord) -> Plan:
    return Plan(
        coverage=record.coverage,
        deadline=record.deadline,
        grace=timedelta(seconds=record.grace_seconds),
        on_deadline=OnDeadline(record.on_deadline),
    )


def _progress(record: RotationRecord) -> Progress:
    return Progress(State(record.state), Step(record.step), record.switched_at)
