"""Certificates (gateway CAs and mTLS uploads) and the record of CA generations."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection
from datetime import datetime

from certs.lifecycle import BindingStatus
from proxy.store.database import Database, Row, from_db, to_db
from proxy.store.records import CertificateBinding, CertificateKind, CertificateRecord

logger = logging.getLogger(__name__)

_COLUMNS = (
    "id, account_id, kind, name, certificate_pem, chain_pem, sealed_private_key, fingerprint,"
    " issuer_org, issuer_raw, serial, signature_algorithm, binding_status, in_use,"
    " auto_generated, created_at, updated_at, uploaded_on, expires_on"
)


def _record(row: Row) -> CertificateRecord:
    sealed = row["sealed_private_key"]
    return CertificateRecord(
        id=row["id"],
        account_id=row["account_id"],
        kind=CertificateKind(row["kind"]),
        name=row["name"],
        certificate_pem=row["certificate_pem"],
        chain_pem=row["chain_pem"],
        sealed_private_key=bytes(sealed) if sealed is not None else None,
        fingerprint=row["fingerprint"],
        issuer_org=row["issuer_org"],
        issuer_raw=row["issuer_raw"],
        serial=row["serial"],
        signature_algorithm=row["signature_algorithm"],
        binding_status=BindingStatus(status) if (status := row["binding_status"]) else None,
        in_use=bool(row["in_use"]),
        auto_generated=bool(row["auto_generated"]),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
        uploaded_on=from_db(row["uploaded_on"]),
        expires_on=from_db(row["expires_on"]),
    )


def _values(rec: CertificateRecord) -> tuple[object, ...]:
    return (
        rec.id, rec.account_id, rec.kind.value, rec.name, rec.certificate_pem, rec.chain_pem,
        rec.sealed_private_key, rec.fingerprint, rec.issuer_org, rec.issuer_raw, rec.serial,
        rec.signature_algorithm, _status(rec.binding_status), int(rec.in_use), int(rec.auto_generated),
        to_db(rec.created_at), to_db(rec.updated_at), to_db(rec.uploaded_on),
        to_db(rec.expires_on),
    )  # fmt: skip


def _status(status: BindingStatus | None) -> str | None:
    return status.value if status is not None else None


class Certificates:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, record: CertificateRecord) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                f"INSERT INTO certificates ({_COLUMNS}) VALUES ({', '.join('?' * 19)})",
                _values(record),
            )

    def get(self, certificate_id: str, *, account_id: str | None = None) -> CertificateRecord | None:
        """One certificate by id, optionally only if it belongs to ``account_id``."""
        row = self._db.connection.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE id = ? AND (? IS NULL OR account_id = ?)",
            (certificate_id, account_id, account_id),
        ).fetchone()
        return _record(row) if row else None

    def list(
        self, account_id: str, *, kinds: Collection[CertificateKind] | None = None
    ) -> list[CertificateRecord]:
        """The account's certificates, oldest first, optionally of some kinds only."""
        rows = self._db.connection.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE account_id = ? ORDER BY created_at, rowid",
            (account_id,),
        )
        records = [_record(row) for row in rows]
        if kinds is None:
            return records
        return [r for r in records if r.kind in kinds]

    def with_status(self, statuses: Collection[BindingStatus]) -> builtins.list[CertificateBinding]:
        """Every account's certificates in one of ``statuses``, oldest first: one query, of the
        few columns a node's heartbeat compares across accounts."""
        if not statuses:
            return []
        marks = ", ".join("?" * len(statuses))
        rows = self._db.connection.execute(
            "SELECT id, account_id, kind, fingerprint, binding_status, in_use FROM certificates"
            f" WHERE binding_status IN ({marks}) ORDER BY created_at, rowid",
            tuple(sorted(status.value for status in statuses)),
        )
        return [
            CertificateBinding(
                row["id"],
                row["account_id"],
                CertificateKind(row["kind"]),
                row["fingerprint"],
                BindingStatus(row["binding_status"]),
                bool(row["in_use"]),
            )
            for row in rows
        ]

    def set_binding_status(self, certificate_id: str, status: BindingStatus | None, now: datetime) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE certificates SET binding_status = ?, updated_at = ? WHERE id = ?",
                (_status(status), to_db(now), certificate_id),
            )

    def set_in_use(self, account_id: str, certificate_id: str, now: datetime) -> None:
        """Make ``certificate_id`` the account's only in-use certificate."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE certificates SET in_use = 0, updated_at = ?"
                " WHERE account_id = ? AND in_use = 1 AND id != ?",
                (to_db(now), account_id, certificate_id),
            )
            conn.execute(
                "UPDATE certificates SET in_use = 1, updated_at = ? WHERE id = ? AND in_use = 0",
                (to_db(now), certificate_id),
            )

    def delete(self, certificate_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM certificates WHERE id = ?", (certificate_id,))

    def record_generation(self, account_id: str, at: datetime) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO ca_generations (account_id, at) VALUES (?, ?)",
                (account_id, to_db(at)),
            )

    def generations_since(self, account_id: str, since: datetime) -> builtins.list[datetime]:
        rows = self._db.connection.execute(
            "SELECT at FROM ca_generations WHERE account_id = ? AND at > ? ORDER BY at",
            (account_id, to_db(since)),
        )
        return [from_db(row["at"]) for row in rows]
