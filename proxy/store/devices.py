"""Enrolled devices, the enrollment tokens that admit them, and the nonces they sign.

Secrets (the enrollment token's and the device's) are kept as SHA-256 hashes only; both are 256
random bits, so a fast hash is enough. Nonces are not secret: they prove freshness; the ones
redeemed are kept until they expire, so that each is used once.
"""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxy.store.database import Connection, Database, Row

logger = logging.getLogger(__name__)

_MAX_VARIABLES = 990  # host parameters per statement (SQLite's floor is 999)


def from_db(text: str) -> datetime:
    """``database.from_db``, faster (device lists and posture logs read several per row)."""
    return datetime.fromisoformat(text)


@functools.lru_cache(maxsize=4096)
def to_db(moment: datetime) -> str:
    """``database.to_db`` (the same text), faster, and remembered: posture ingest writes the
    same few times (now, an expiry) several times per result."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps aware UTC times only")
    if offset:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@contextmanager
def writing(db: Database) -> Iterator[Connection]:
    """The connection for one write: in a transaction of its own, or, inside one, without the
    savepoint ``Database.transaction`` would add (a statement is atomic by itself; the caller's
    transaction or savepoint covers the rest). Posture ingest writes several per result."""
    if db.in_transaction:
        yield db.connection
    else:
        with db.transaction() as conn:
            yield conn


def insert_rows(
    conn: Connection, statement: str, rows: Sequence[tuple[object, ...]], *, suffix: str = ""
) -> list[Row]:
    """``statement`` (``INSERT ... VALUES``, then ``suffix``) for every row, as multi-row
    statements of at most ``_MAX_VARIABLES`` host parameters; the rows a ``RETURNING`` in
    ``suffix`` gives. SQLite runs each in one step, so Python's sqlite3 lets go of the GIL once
    per statement rather than once per row as ``executemany`` does: in the group-commit thread
    every hand-back of the GIL waits for the busy event loop."""
    if not rows:
        return []
    bulk = getattr(conn, "insert_rows", None)  # PostgreSQL: COPY (``postgres.PgConnection``)
    if bulk is not None:
        copied: list[Row] = bulk(statement, rows, suffix)
        return copied
    width = len(rows[0])
    group = "(" + ", ".join("?" * width) + ")"
    per = max(1, _MAX_VARIABLES // width)
    returned: list[Row] = []
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        values = [value for row in chunk for value in row]
        cursor = conn.execute(f"{statement} {', '.join([group] * len(chunk))}{suffix}", values)
        if "RETURNING" in suffix:
            returned.extend(cursor.fetchall())
    return returned


def _maybe(text: str | None) -> datetime | None:
    return from_db(text) if text is not None else None


@dataclass(frozen=True)
class Device:
    id: str  # UUID
    account_id: str
    secret_sha256: bytes = field(repr=False)
    name: str
    os: str  # a policies.posture.Platform value
    os_version: str
    serial_number: str
    hostname: str
    email: str
    ip: str  # the address it last talked to the server from
    created_at: datetime
    updated_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class EnrollmentToken:
    id: str
    account_id: str
    secret_sha256: bytes = field(repr=False)
    email: str  # "": the enrolling device names its user
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    device_id: str | None = None


@dataclass(frozen=True)
class Nonce:
    nonce: bytes
    device_id: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


_DEVICE_COLUMNS = (
    "id, account_id, secret_sha256, name, os, os_version, serial_number, hostname, email, ip,"
    " created_at, updated_at, last_seen"
)


def _device(row: Row) -> Device:
    return Device(
        id=row["id"],
        account_id=row["account_id"],
        secret_sha256=bytes(row["secret_sha256"]),
        name=row["name"],
        os=row["os"],
        os_version=row["os_version"],
        serial_number=row["serial_number"],
        hostname=row["hostname"],
        email=row["email"],
        ip=row["ip"],
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
        last_seen=from_db(row["last_seen"]),
    )


class Devices:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, device: Device) -> None:
        d = device
        with self._db.transaction() as conn:
            conn.execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                (
                    d.id, d.account_id, d.secret_sha256, d.name, d.os, d.os_version,
                    d.serial_number, d.hostname, d.email, d.ip, to_db(d.created_at),
                    to_db(d.updated_at), to_db(d.last_seen),
                ),
            )  # fmt: skip

    def get(self, device_id: str, *, account_id: str | None = None) -> Device | None:
        row = self._db.connection.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ? AND (? IS NULL OR account_id = ?)",
            (device_id, account_id, account_id),
        ).fetchone()
        return _device(row) if row else None

    def list(self, account_id: str) -> builtins.list[Device]:
        """The account's devices, oldest first."""
        rows = self._db.connection.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_id = ? ORDER BY created_at, rowid",
            (account_id,),
        )
        return [_device(row) for row in rows]

    def with_email(self, account_id: str, email: str) -> builtins.list[Device]:
        """Devices whose user is ``email`` (compared case-insensitively), last seen first."""
        rows = self._db.connection.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_id = ? AND lower(email) = ?"
            " ORDER BY last_seen DESC, id",
            (account_id, email.lower()),
        )
        return [_device(row) for row in rows]

    def seen(self, device_id: str, ip: str, now: datetime) -> None:
        self.seen_many([(device_id, ip, now)])

    def seen_many(self, sightings: Iterable[tuple[str, str, datetime]]) -> None:
        """Each ``(device id, ip, time)``: the device's last sighting."""
        rows = [(to_db(now), ip, device_id) for device_id, ip, now in sightings]
        if not rows:  # most group commits (a sighting is written once a minute per device)
            return
        with writing(self._db) as conn:
            conn.executemany("UPDATE devices SET last_seen = ?, ip = ? WHERE id = ?", rows)

    def delete(self, device_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM devices WHERE id = ?", (device_id,))


def _token(row: Row) -> EnrollmentToken:
    return EnrollmentToken(
        id=row["id"],
        account_id=row["account_id"],
        secret_sha256=bytes(row["secret_sha256"]),
        email=row["email"],
        created_at=from_db(row["created_at"]),
        expires_at=from_db(row["expires_at"]),
        used_at=_maybe(row["used_at"]),
        device_id=row["device_id"],
    )


class EnrollmentTokens:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, token: EnrollmentToken) -> None:
        t = token
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO enrollment_tokens (id, account_id, secret_sha256, email, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (t.id, t.account_id, t.secret_sha256, t.email, to_db(t.created_at),
                 to_db(t.expires_at)),
            )  # fmt: skip

    def by_secret(self, secret_sha256: bytes) -> EnrollmentToken | None:
        row = self._db.connection.execute(
            "SELECT * FROM enrollment_tokens WHERE secret_sha256 = ?", (secret_sha256,)
        ).fetchone()
        return _token(row) if row else None

    def use(self, token_id: str, device_id: str, now: datetime) -> bool:
        """Mark the token used by ``device_id``; False when it was used already."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE enrollment_tokens SET used_at = ?, device_id = ? WHERE id = ? AND used_at IS NULL",
                (to_db(now), device_id, token_id),
            )
        return cursor.rowcount == 1

    def delete_expired(self, before: datetime) -> int:
        """Forget unused tokens that expired before ``before`` (used ones stay as a record)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM enrollment_tokens WHERE used_at IS NULL AND expires_at < ?",
                (to_db(before),),
            )
        return cursor.rowcount


class Nonces:
    """Redeemed nonces (``posture_nonces``), kept until they expire: the server mints nonces
    without a write (``proxy.services.posture_nonces``) and records each once it is used."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, nonce: bytes) -> Nonce | None:
        row = self._db.connection.execute("SELECT * FROM posture_nonces WHERE nonce = ?", (nonce,)).fetchone()
        if row is None:
            return None
        return Nonce(
            nonce=bytes(row["nonce"]),
            device_id=row["device_id"],
            issued_at=from_db(row["issued_at"]),
            expires_at=from_db(row["expires_at"]),
            used_at=_maybe(row["used_at"]),
        )

    def claim(self, nonce: Nonce) -> bool:
        """Record the nonce as redeemed; False when it was redeemed before.

        Insert-or-ignore is the check and the mark in one statement: of two reports racing with
        one nonce, exactly one claims it."""
        with writing(self._db) as conn:
            cursor = conn.execute(
                "INSERT INTO posture_nonces (nonce, device_id, issued_at, expires_at, used_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (nonce.nonce, nonce.device_id, to_db(nonce.issued_at), to_db(nonce.expires_at),
                 to_db(nonce.used_at or nonce.issued_at)),
            )  # fmt: skip
        return cursor.rowcount == 1

    def claim_many(self, nonces: Iterable[Nonce]) -> set[bytes]:
        """Record every nonce not redeemed before (the first of equal ones); the set of those
        recorded. One insert-or-ignore for any number (``RETURNING`` says which went in): of two
        transactions racing with one nonce, exactly one claims it."""
        fresh: dict[bytes, Nonce] = {}
        for nonce in nonces:
            fresh.setdefault(nonce.nonce, nonce)
        with writing(self._db) as conn:
            claimed = insert_rows(
                conn,
                "INSERT INTO posture_nonces (nonce, device_id, issued_at, expires_at, used_at) VALUES",
                [(n.nonce, n.device_id, to_db(n.issued_at), to_db(n.expires_at),
                  to_db(n.used_at or n.issued_at)) for n in fresh.values()],
                suffix=" ON CONFLICT DO NOTHING RETURNING nonce",
            )  # fmt: skip
        return {bytes(row[0]) for row in claimed}

    def delete_expired(self, before: datetime) -> int:
        with writing(self._db) as conn:
            cursor = conn.execute("DELETE FROM posture_nonces WHERE expires_at < ?", (to_db(before),))
        return cursor.rowcount
