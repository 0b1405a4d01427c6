"""The trust stores of each device: the latest report of its agent (issue 5), replaced whole by
the next one.

A report names, per store (``system`` or ``nss:/abs/path``), the SHA-256 fingerprints (upper-case
colon hex) of the gateway's root CAs the store trusts, and the store's error (``""`` when none).
Values are validated by ``proxy.services.device_trust`` before they get here; the schema checks
the store name's form and the fingerprint's length again.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from proxy.store.database import Database
from proxy.store.devices import from_db, to_db, writing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustStoreEntry:
    """One store of a report."""

    store: str  # "system" or "nss:/abs/path"
    installed: tuple[str, ...]  # fingerprints, each once (read back in sorted order)
    error: str = ""


@dataclass(frozen=True)
class TrustReport:
    """A device's latest report: its stores in the order the agent listed them."""

    device_id: str
    reported_at: datetime
    stores: tuple[TrustStoreEntry, ...]


@dataclass(frozen=True)
class Coverage:
    """Of the account's devices that reported since a moment, how many have a fingerprint
    installed in at least one store."""

    installed: int
    reporting: int

    @property
    def missing(self) -> int:
        return self.reporting - self.installed


class TrustReports:
    def __init__(self, db: Database) -> None:
        self._db = db

    def replace(self, device_id: str, stores: Sequence[TrustStoreEntry], reported_at: datetime) -> None:
        """The device's report is now ``stores`` (what it reported before is gone)."""
        with writing(self._db) as conn:
            conn.execute("DELETE FROM device_trust_reports WHERE device_id = ?", (device_id,))
            conn.execute(
                "INSERT INTO device_trust_reports (device_id, reported_at) VALUES (?, ?)",
                (device_id, to_db(reported_at)),
            )
            conn.executemany(
                "INSERT INTO device_trust_stores (device_id, store, position, error) VALUES (?, ?, ?, ?)",
                [(device_id, s.store, i, s.error) for i, s in enumerate(stores)],
            )
            conn.executemany(
                "INSERT INTO device_trust_installed (device_id, store, fingerprint) VALUES (?, ?, ?)",
                [(device_id, s.store, fp) for s in stores for fp in s.installed],
            )

    def for_device(self, device_id: str) -> TrustReport | None:
        row = self._db.connection.execute(
            "SELECT reported_at FROM device_trust_reports WHERE device_id = ?", (device_id,)
        ).fetchone()
        if row is None:
            return None
        stores = self._db.connection.execute(
            "SELECT store, error FROM device_trust_stores WHERE device_id = ? ORDER BY position",
            (device_id,),
        ).fetchall()
        installed: dict[str, list[str]] = {s["store"]: [] for s in stores}
        for item in self._db.connection.execute(
            "SELECT store, fingerprint FROM device_trust_installed WHERE device_id = ?"
            " ORDER BY store, fingerprint",
            (device_id,),
        ):
            installed[item["store"]].append(item["fingerprint"])
        return TrustReport(
            device_id=device_id,
            reported_at=from_db(row["reported_at"]),
            stores=tuple(
                TrustStoreEntry(s["store"], tuple(installed[s["store"]]), s["error"]) for s in stores
            ),
        )

    def coverage(self, account_id: str, fingerprint: str, since: datetime) -> Coverage:
        """Devices of the account that reported at or after ``since``, and how many of them have
        ``fingerprint`` in at least one store."""
        row = self._db.connection.execute(
            "SELECT count(*) AS reporting, coalesce(sum(CASE WHEN EXISTS (SELECT 1 FROM"
            " device_trust_installed i WHERE i.device_id = r.device_id AND i.fingerprint = ?)"
            " THEN 1 ELSE 0 END), 0)"
            " AS installed FROM device_trust_reports r JOIN devices d ON d.id = r.device_id"
            " WHERE d.account_id = ? AND r.reported_at >= ?",
            (fingerprint, account_id, to_db(since)),
        ).fetchone()
        return Coverage(installed=int(row["installed"]), reporting=int(row["reporting"]))

    def reported_at(self, account_id: str) -> dict[str, datetime]:
        """When each device of the account last reported, by device id (devices that never did
        are absent)."""
        rows = self._db.connection.execute(
            "SELECT r.device_id, r.reported_at FROM device_trust_reports r"
            " JOIN devices d ON d.id = r.device_id WHERE d.account_id = ?",
            (account_id,),
        )
        return {row["device_id"]: from_db(row["reported_at"]) for row in rows}

    def stores_with(self, account_id: str, fingerprint: str) -> dict[str, builtins.list[str]]:
        """By device id: the stores (in report order) whose latest report lists ``fingerprint``."""
        rows = self._db.connection.execute(
            "SELECT i.device_id, i.store FROM device_trust_installed i"
            " JOIN device_trust_stores s ON s.device_id = i.device_id AND s.store = i.store"
            " JOIN devices d ON d.id = i.device_id"
            " WHERE d.account_id = ? AND i.fingerprint = ? ORDER BY i.device_id, s.position",
            (account_id, fingerprint),
        )
        found: dict[str, builtins.list[str]] = {}
        for row in rows:
            found.setdefault(row["device_id"], []).append(row["store"])
        return found

    def lacking(
        self, account_id: str, fingerprint: str, since: datetime, limit: int
    ) -> builtins.list[tuple[str, str]]:
        """``(device id, name)`` of the account's devices that reported at or after ``since``
        without ``fingerprint`` in any store, in enrollment order, at most ``limit``."""
        rows = self._db.connection.execute(
            "SELECT d.id, d.name FROM device_trust_reports r JOIN devices d ON d.id = r.device_id"
            " WHERE d.account_id = ? AND r.reported_at >= ? AND NOT EXISTS (SELECT 1 FROM"
            " device_trust_installed i WHERE i.device_id = r.device_id AND i.fingerprint = ?)"
            " ORDER BY d.rowid LIMIT ?",
            (account_id, to_db(since), fingerprint, limit),
        )
        return [(row["id"], row["name"]) for row in rows]
