"""The addresses of devices: those their agent registered, and networks an admin bound to them.

Transparent mode identifies a client by its source address (``proxy/services/device_addresses.py``
resolves it); this module only keeps the rows.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from proxy.store.database import Database, Row
from proxy.store.devices import from_db, to_db, writing

logger = logging.getLogger(__name__)


class AddressSource(StrEnum):
    AGENT = "agent"  # reported by the device's agent (enrollment, each report)
    ADMIN = "admin"  # bound by an administrator


@dataclass(frozen=True)
class DeviceAddress:
    device_id: str
    account_id: str
    network: str  # canonical CIDR: "10.0.0.5/32", "2001:db8::/64"
    source: AddressSource
    first_seen: datetime
    last_seen: datetime


_COLUMNS = "device_id, account_id, network, source, first_seen, last_seen"


def _row(row: Row) -> DeviceAddress:
    return DeviceAddress(
        device_id=row["device_id"],
        account_id=row["account_id"],
        network=row["network"],
        source=AddressSource(row["source"]),
        first_seen=from_db(row["first_seen"]),
        last_seen=from_db(row["last_seen"]),
    )


class DeviceAddresses:
    def __init__(self, db: Database) -> None:
        self._db = db

    def all(self) -> builtins.list[DeviceAddress]:
        """Every row of every account (the resolver's index is built from them)."""
        rows = self._db.connection.execute(f"SELECT {_COLUMNS} FROM device_addresses")
        return [_row(row) for row in rows]

    def of_device(self, device_id: str) -> builtins.list[DeviceAddress]:
        rows = self._db.connection.execute(
            f"SELECT {_COLUMNS} FROM device_addresses WHERE device_id = ? ORDER BY source, network",
            (device_id,),
        )
        return [_row(row) for row in rows]

    def register(self, device_id: str, account_id: str, networks: Sequence[str], now: datetime) -> None:
        """The agent's addresses now: the ones it no longer has go, the others are seen now
        (keeping when each was first seen)."""
        with writing(self._db) as conn:
            marks = ", ".join("?" * len(networks))
            conn.execute(
                "DELETE FROM device_addresses WHERE device_id = ? AND source = 'agent'"
                + (f" AND network NOT IN ({marks})" if networks else ""),
                (device_id, *networks),
            )
            conn.executemany(
                f"INSERT INTO device_addresses ({_COLUMNS}) VALUES (?, ?, ?, 'agent', ?, ?)"
                " ON CONFLICT (device_id, source, network) DO UPDATE SET last_seen = excluded.last_seen",
                [(device_id, account_id, network, to_db(now), to_db(now)) for network in networks],
            )

    def bind(self, device_id: str, account_id: str, network: str, now: datetime) -> DeviceAddress:
        with writing(self._db) as conn:
            conn.execute(
                f"INSERT INTO device_addresses ({_COLUMNS}) VALUES (?, ?, ?, 'admin', ?, ?)"
                " ON CONFLICT (device_id, source, network) DO UPDATE SET last_seen = excluded.last_seen",
                (device_id, account_id, network, to_db(now), to_db(now)),
            )
        return next(a for a in self.of_device(device_id) if a.source == "admin" and a.network == network)

    def unbind(self, device_id: str, network: str) -> bool:
        with writing(self._db) as conn:
            cursor = conn.execute(
                "DELETE FROM device_addresses WHERE device_id = ? AND source = 'admin' AND network = ?",
                (device_id, network),
            )
        return cursor.rowcount > 0
