"""Each enrolled device's WireGuard tunnel (issue 16): its UDP port on the gateway, its tunnel
address, and two X25519 key pairs -- the gateway's end (server) and the device's end (client).

The private keys are sealed (``certs.sealing``, AES-256-GCM under the master key, bound to the
device id and the key's role) and only the public keys are kept in the clear. A tunnel goes
with its device (``ON DELETE CASCADE``). Ports, addresses and client keys are unique: no two
devices share a listener or an identity.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass, field
from datetime import datetime

from proxy.store.database import Database, Row
from proxy.store.devices import from_db, to_db, writing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WireGuardTunnel:
    device_id: str
    account_id: str
    port: int  # the gateway's UDP port for this device alone
    address: str  # the device's address inside the tunnel (IPv4, no prefix)
    server_public_key: str  # base64 of 32 raw bytes, as WireGuard writes keys
    client_public_key: str
    sealed_server_key: bytes = field(repr=False)
    sealed_client_key: bytes = field(repr=False)
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "device_id, account_id, port, address, server_public_key, client_public_key,"
    " sealed_server_key, sealed_client_key, created_at, updated_at"
)


def _tunnel(row: Row) -> WireGuardTunnel:
    return WireGuardTunnel(
        device_id=row["device_id"],
        account_id=row["account_id"],
        port=int(row["port"]),
        address=row["address"],
        server_public_key=row["server_public_key"],
        client_public_key=row["client_public_key"],
        sealed_server_key=bytes(row["sealed_server_key"]),
        sealed_client_key=bytes(row["sealed_client_key"]),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


class WireGuardTunnels:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, tunnel: WireGuardTunnel) -> None:
        with writing(self._db) as conn:
            conn.execute(
                f"INSERT INTO wireguard_tunnels ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tunnel.device_id, tunnel.account_id, tunnel.port, tunnel.address,
                    tunnel.server_public_key, tunnel.client_public_key,
                    tunnel.sealed_server_key, tunnel.sealed_client_key,
                    to_db(tunnel.created_at), to_db(tunnel.updated_at),
                ),
            )  # fmt: skip

    def get(self, device_id: str) -> WireGuardTunnel | None:
        row = self._db.connection.execute(
            f"SELECT {_COLUMNS} FROM wireguard_tunnels WHERE device_id = ?", (device_id,)
        ).fetchone()
        return _tunnel(row) if row is not None else None

    def list(self) -> builtins.list[WireGuardTunnel]:
        """Every tunnel of every account, by port."""
        rows = self._db.connection.execute(f"SELECT {_COLUMNS} FROM wireguard_tunnels ORDER BY port")
        return [_tunnel(row) for row in rows]

    def move(self, device_id: str, port: int, now: datetime) -> None:
        """The tunnel listens on ``port`` from now on (its keys and address stay)."""
        with writing(self._db) as conn:
            conn.execute(
                "UPDATE wireguard_tunnels SET port = ?, updated_at = ? WHERE device_id = ?",
                (port, to_db(now), device_id),
            )

    def devices_without(self) -> builtins.list[tuple[str, str]]:
        """(device id, account id) of every device that has no tunnel yet, oldest first."""
        rows = self._db.connection.execute(
            "SELECT d.id, d.account_id FROM devices d"
            " LEFT JOIN wireguard_tunnels t ON t.device_id = d.id"
            " WHERE t.device_id IS NULL ORDER BY d.created_at, d.id"
        )
        return [(row[0], row[1]) for row in rows]
