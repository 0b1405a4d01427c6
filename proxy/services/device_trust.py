"""CA installation by the agent (issue 5), the server half: which root CAs a device should trust,
what its agent reports it does trust, and what that means before a certificate is turned on.

- The agent lists the account's certificates that are ``available`` or ``pending_deployment``
  (the one in use included): :meth:`DeviceTrustService.root_certificates`.
- After each sync it sends a full report: per store (``system`` or ``nss:/abs/path``), the
  SHA-256 fingerprints of those certificates the store trusts, and the store's error.
  :func:`parse_report` validates it (every refusal names the field); :meth:`report` replaces the
  device's previous report with it, through the devices' group-commit writer.
- Admin views: for one certificate, how many *reporting* devices have it installed (in at least
  one store) and how many lack it (:meth:`coverage`), and the same per device
  (:meth:`devices_for`); per device, its stores (:meth:`device_report`).
- A device is *reporting* when its latest report is at most :data:`REPORTING_WINDOW` (7 days)
  old. A device that has not reported in that long is counted nowhere: its agent is not running,
  so what it said last says little about the device now.
- Turning on a certificate that reporting devices lack still works; :meth:`turn_on_warning` is
  the warning that goes with it (code :data:`TRUST_WARNING`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from certs.clock import Clock
from proxy.json_types import type_name
from proxy.services.certificates import LOADABLE, CertificateService
from proxy.services.device_writer import GroupCommit
from proxy.services.devices import Unauthenticated
from proxy.services.errors import InvalidInput
from proxy.store import (
    CertificateRecord,
    Coverage,
    Device,
    Store,
    TrustReport,
    TrustStoreEntry,
)

logger = logging.getLogger(__name__)

__all__ = [
    "REPORTING_WINDOW",
    "TRUST_WARNING",
    "DeviceCoverage",
    "DeviceTrustService",
    "Stored",
    "missing_message",
    "parse_report",
]

REPORTING_WINDOW: Final = timedelta(days=7)
TRUST_WARNING: Final = 10100  # the code of the warning in ``messages``
MAX_STORES: Final = 64
MAX_INSTALLED: Final = 256  # fingerprints per store
MAX_STORE_CHARS: Final = 4096
MAX_ERROR_CHARS: Final = 1000  # the agent cuts its errors to as much
SYSTEM: Final = (
    "system"  # the platform's system store (Linux, macOS System keychain, Windows LocalMachine\Root)
)
NSS: Final = "nss:"
WINDOWS_USER: Final = "windows:CurrentUser\\Root"  # the Windows user's Root store (the agent's --user)
STORE_FIELDS: Final = frozenset({"store", "installed", "error"})
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


def missing_message(missing: int, reporting: int, certificate_id: str) -> str:
    """The warning when ``missing`` of ``reporting`` devices lack a certificate being turned on
    (the CLI's ``gateway ca use`` says the same)."""
    return (
        f"{missing} of {reporting} reporting devices have not installed certificate "
        f"{certificate_id} yet: turning it on breaks TLS for them until their agent syncs"
    )


# --- the report -----------------------------------------------------------------------------


def parse_report(body: dict[str, Any]) -> list[TrustStoreEntry]:
    """``{"stores": [{"store", "installed", "error"}]}`` checked; InvalidInput names the field.

    Fingerprints are normalized to upper case (each kept once per store); an empty list of
    stores is a valid report (an agent with every store switched off)."""
    for key in body:
        if key != "stores":
            raise InvalidInput(key, "unknown field (accepted: stores)")
    if "stores" not in body:
        raise InvalidInput("stores", "required: an array of {store, installed, error}, one per trust store")
    stores = body["stores"]
    if not isinstance(stores, list):
        raise InvalidInput("stores", f"must be an array of stores, got {type_name(stores)}")
    if len(stores) > MAX_STORES:
        raise InvalidInput("stores", f"at most {MAX_STORES} stores per report, got {len(stores)}")
    entries: list[TrustStoreEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(stores):
        entry = _entry(item, f"stores[{index}]")
        if entry.store in seen:
            raise InvalidInput(
                f"stores[{index}].store", f"{entry.store!r} is listed twice: name each store once"
            )
        seen.add(entry.store)
        entries.append(entry)
    return entries


def _entry(item: object, where: str) -> TrustStoreEntry:
    if not isinstance(item, dict):
        raise InvalidInput(where, f"must be an object {{store, installed, error}}, got {type_name(item)}")
    for key in item:
        if key not in STORE_FIELDS:
            raise InvalidInput(
                f"{where}.{key}", f"unknown field (accepted: {', '.join(sorted(STORE_FIELDS))})"
            )
    store = _store(item.get("store"), f"{where}.store")
    installed = _installed(item.get("installed"), f"{where}.installed", "installed" in item)
    error = item.get("error", "")
    if not isinstance(error, str):
        raise InvalidInput(f"{where}.error", f'must be a string ("" for none), got {type_name(error)}')
    if len(error) > MAX_ERROR_CHARS:
        raise InvalidInput(f"{where}.error", f"at most {MAX_ERROR_CHARS} characters, got {len(error)}")
    return TrustStoreEntry(store, installed, error)


def _store(value: object, where: str) -> str:
    expected = f'"system", "nss:" followed by the NSS database\'s absolute path, or "{WINDOWS_USER}"'
    if value is None:
        raise InvalidInput(where, f"required: {expected}")
    if not isinstance(value, str):
        raise InvalidInput(where, f"must be {expected}, got {type_name(value)}")
    if len(value) > MAX_STORE_CHARS:
        raise InvalidInput(where, f"at most {MAX_STORE_CHARS} characters, got {len(value)}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(where, "holds control characters")
    if value in (SYSTEM, WINDOWS_USER):
        return value
    path = value.removeprefix(NSS)
    if value.startswith(NSS) and path.startswith("/") and len(path) > 1:
        return value
    raise InvalidInput(where, f"must be {expected}, got {value[:200]!r}")


def _installed(value: object, where: str, given: bool) -> tuple[str, ...]:
    if not given:
        raise InvalidInput(where, "required: the SHA-256 fingerprints the store trusts ([] for none)")
    if not isinstance(value, list):
        raise InvalidInput(where, f"must be an array of SHA-256 fingerprints, got {type_name(value)}")
    if len(value) > MAX_INSTALLED:
        raise InvalidInput(where, f"at most {MAX_INSTALLED} fingerprints per store, got {len(value)}")
    found: dict[str, None] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _FINGERPRINT.fullmatch(item):
            shown = repr(item[:120]) if isinstance(item, str) else type_name(item)
            raise InvalidInput(
                f"{where}[{index}]",
                f"must be a SHA-256 fingerprint as 32 colon-separated hex bytes, got {shown}",
            )
        found[item.upper()] = None
    return tuple(found)


# --- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """The answer to a report: how many stores, and how many fingerprints in all."""

    stores: int
    installed: int


@dataclass(frozen=True)
class DeviceCoverage:
    """One device and one certificate: whether its latest report lists the certificate."""

    device: Device
    installed: bool  # in at least one store of the latest report
    stores: tuple[str, ...]  # those stores, in report order
    reported_at: datetime | None  # None: never reported
    reporting: bool  # reported within the window (counted in the certificate's coverage)


class DeviceTrustService:
    """Stateless over the store: cheap to make per request. ``writer``: the devices' group commit
    (reports are written through it, off the event loop); without one, reports are written
    directly (tests, tools)."""

    def __init__(
        self,
        store: Store,
        certificates: CertificateService,
        clock: Clock,
        *,
        writer: GroupCommit | None = None,
        window: timedelta = REPORTING_WINDOW,
    ) -> None:
        self._store = store
        self._certificates = certificates
        self._clock = clock
        self._writer = writer
        self.window = window

    # -- the agent ------------------------------------------------------------------------------

    def root_certificates(self, device: Device) -> list[CertificateRecord]:
        """The certificates the device should trust: the account's available and
        pending_deployment ones (the one in use is available), oldest first."""
        records = self._certificates.list(device.account_id)
        return [r for r in records if r.binding_status in LOADABLE]

    async def report(self, device: Device, stores: Sequence[TrustStoreEntry]) -> Stored:
        """Replace the device's report with ``stores`` (from :func:`parse_report`).
        Unauthenticated when the device was deleted meanwhile (nothing is written)."""
        now = self._clock()
        entries = tuple(  # upper case, each once: as parse_report leaves them
            TrustStoreEntry(e.store, tuple(dict.fromkeys(fp.upper() for fp in e.installed)), e.error)
            for e in stores
        )

        def job(store: Store) -> bool:
            if store.devices.get(device.id) is None:
                return False
            store.trust_reports.replace(device.id, entries, now)
            return True

        if self._writer is not None:
            written = await self._writer.run(job)
        else:
            with self._store.transaction():
                written = job(self._store)
        if not written:
            raise Unauthenticated(f"device {device.id} was deleted: enroll again")
        stored = Stored(len(entries), sum(len(e.installed) for e in entries))
        logger.info(
            "device %s: trust stores reported (%s)", device.id,
            ", ".join(f"{e.store}: {len(e.installed)}{' error' if e.error else ''}" for e in entries)
            or "no stores",
        )  # fmt: skip
        return stored

    # -- admin views ----------------------------------------------------------------------------

    def since(self) -> datetime:
        """Reports at or after this moment count as reporting."""
        return self._clock() - self.window

    def coverage(self, record: CertificateRecord) -> Coverage:
        """Of the account's reporting devices, how many have ``record`` installed."""
        return self._store.trust_reports.coverage(record.account_id, record.fingerprint.upper(), self.since())

    def devices_for(self, account_id: str, certificate_id: str) -> list[DeviceCoverage]:
        """Every device of the account (oldest first) and whether it reported ``certificate_id``
        installed; NotFound for an unknown certificate."""
        record = self._certificates.get(account_id, certificate_id)
        fingerprint = record.fingerprint.upper()
        devices = self._store.devices.list(account_id)
        reported = self._store.trust_reports.reported_at(account_id)
        holding = self._store.trust_reports.stores_with(account_id, fingerprint)
        since = self.since()
        return [
            DeviceCoverage(
                device=d,
                installed=d.id in holding,
                stores=tuple(holding.get(d.id, ())),
                reported_at=reported.get(d.id),
                reporting=(at := reported.get(d.id)) is not None and at >= since,
            )
            for d in devices
        ]

    def device_report(self, device: Device) -> TrustReport | None:
        """The device's latest report, whatever its age; None when it never reported."""
        return self._store.trust_reports.for_device(device.id)

    def turn_on_warning(self, account_id: str, certificate_id: str) -> str | None:
        """The warning for turning ``certificate_id`` on: None when every reporting device has it
        (or none reports, or there is no such certificate)."""
        record = self._store.certificates.get(certificate_id, account_id=account_id)
        if record is None:
            return None
        coverage = self.coverage(record)
        if not coverage.missing:
            return None
        logger.warning(
            "account %s: certificate %s turned on while %d of %d reporting devices lack it",
            account_id, certificate_id, coverage.missing, coverage.reporting,
        )  # fmt: skip
        return missing_message(coverage.missing, coverage.reporting, certificate_id)
