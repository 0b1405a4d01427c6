"""Proxy nodes (data-plane processes), their heartbeats and the CAs each has loaded."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from datetime import datetime

from proxy.store.database import Database, Row, from_db, to_db
from proxy.store.records import Node, NodeLoadedCa

logger = logging.getLogger(__name__)


def _node(row: Row) -> Node:
    return Node(
        id=row["id"],
        name=row["name"],
        started_at=from_db(row["started_at"]),
        last_heartbeat=from_db(row["last_heartbeat"]),
    )


class Nodes:
    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, node_id: str, name: str, now: datetime) -> None:
        """Insert the node, or restart it: new name and start time, nothing loaded yet."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO nodes (id, name, started_at, last_heartbeat) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat",
                (node_id, name, to_db(now), to_db(now)),
            )
            conn.execute("DELETE FROM node_loaded_cas WHERE node_id = ?", (node_id,))

    def heartbeat(self, node_id: str, now: datetime) -> None:
        """Mark the node alive; a node never registered is registered under its id."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO nodes (id, name, started_at, last_heartbeat) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat",
                (node_id, node_id, to_db(now), to_db(now)),
            )

    def remove(self, node_id: str) -> None:
        """A node stops cleanly: it is no longer live and holds nothing."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM node_loaded_cas WHERE node_id = ?", (node_id,))
            conn.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def list(self) -> list[Node]:
        rows = self._db.connection.execute("SELECT * FROM nodes ORDER BY started_at, id")
        return [_node(row) for row in rows]

    def live(self, since: datetime) -> builtins.list[Node]:
        """Nodes whose last heartbeat is at or after ``since``."""
        rows = self._db.connection.execute(
            "SELECT * FROM nodes WHERE last_heartbeat >= ? ORDER BY started_at, id",
            (to_db(since),),
        )
        return [_node(row) for row in rows]

    def replace_loaded(self, node_id: str, account_id: str, loaded: Mapping[str, str], now: datetime) -> None:
        """Set what ``node_id`` has loaded of the account's certificates.

        Ids that are not certificates of the account are ignored (a node may report a
        certificate deleted meanwhile). ``loaded_at`` is kept for certificates already loaded
        with the same fingerprint.
        """
        with self._db.transaction() as conn:
            existing = {
                row["certificate_id"]: row["fingerprint"]
                for row in conn.execute(
                    "SELECT l.certificate_id, l.fingerprint FROM node_loaded_cas l"
                    " JOIN certificates c ON c.id = l.certificate_id"
                    " WHERE l.node_id = ? AND c.account_id = ?",
                    (node_id, account_id),
                )
            }
            for certificate_id, fingerprint in existing.items():
                if loaded.get(certificate_id) != fingerprint:
                    conn.execute(
                        "DELETE FROM node_loaded_cas WHERE node_id = ? AND certificate_id = ?",
                        (node_id, certificate_id),
                    )
            for certificate_id, fingerprint in loaded.items():
                if existing.get(certificate_id) == fingerprint:
                    continue
                conn.execute(
                    "INSERT INTO node_loaded_cas (node_id, certificate_id, fingerprint, loaded_at)"
                    " SELECT ?, id, ?, ? FROM certificates WHERE id = ? AND account_id = ?",
                    (node_id, fingerprint, to_db(now), certificate_id, account_id),
                )

    def loaded_by(self, node_id: str) -> dict[str, dict[str, str]]:
        """What ``node_id`` has reported: account id → certificate id → fingerprint."""
        rows = self._db.connection.execute(
            "SELECT c.account_id, l.certificate_id, l.fingerprint FROM node_loaded_cas l"
            " JOIN certificates c ON c.id = l.certificate_id WHERE l.node_id = ?",
            (node_id,),
        )
        result: dict[str, dict[str, str]] = {}
        for row in rows:
            result.setdefault(row["account_id"], {})[row["certificate_id"]] = row["fingerprint"]
        return result

    def loaded(self, account_id: str) -> builtins.list[NodeLoadedCa]:
        rows = self._db.connection.execute(
            "SELECT l.* FROM node_loaded_cas l JOIN certificates c ON c.id = l.certificate_id"
            " WHERE c.account_id = ? ORDER BY l.node_id, l.loaded_at",
            (account_id,),
        )
        return [
            NodeLoadedCa(
                node_id=row["node_id"],
                certificate_id=row["certificate_id"],
                fingerprint=row["fingerprint"],
                loaded_at=from_db(row["loaded_at"]),
            )
            for row in rows
        ]
