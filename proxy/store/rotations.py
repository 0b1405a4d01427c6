"""CA rotations (issue 12): one row per rotation and one per step it took.

Values are plain strings here (``proxy.services.rotation`` owns their enums); the schema checks
them. Every change goes through :meth:`Rotations.update`, which compares and bumps ``revision``:
a change made from a stale read changes nothing and says so (``False``), so that two drivers on
one store (or a driver and an admin) never both act on the same step.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from datetime import datetime

from proxy.store.database import INTEGRITY_ERRORS, Connection, Database, Row, from_db, to_db

logger = logging.getLogger(__name__)

OPEN_STATES = ("running", "paused", "held")
_OPEN_SQL = "state IN ('running', 'paused', 'held')"


@dataclass(frozen=True)
class RotationStep:
    """One entry of a rotation's record: the step and state it entered, when, and why."""

    at: datetime
    step: str
    state: str
    message: str


@dataclass(frozen=True)
class RotationRecord:
    id: str  # UUID
    account_id: str
    trigger: str  # manual | auto
    state: str  # running | paused | held | completed | cancelled | failed
    step: str  # deploy | install | grace | retire | done
    new_certificate_id: str
    old_certificate_id: str | None  # the CA in use when it started (None: none was)
    coverage: int  # percent of reporting devices that must have the new CA
    deadline: datetime
    grace_seconds: int
    on_deadline: str  # hold | proceed
    message: str  # the latest step's message
    revision: int
    created_at: datetime
    updated_at: datetime
    switched_at: datetime | None = None
    finished_at: datetime | None = None
    steps: tuple[RotationStep, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class RotationChange:
    """What :meth:`Rotations.update` writes; ``None`` leaves a column as it is."""

    state: str
    step: str
    message: str
    switched_at: datetime | None = None
    finished_at: datetime | None = None
    deadline: datetime | None = None
    on_deadline: str | None = None


class OpenRotationExists(Exception):
    """The account already has an open rotation (the unique index said so)."""


class Rotations:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, record: RotationRecord) -> None:
        """Insert a new rotation with its first step; OpenRotationExists when one is open."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO ca_rotations (id, account_id, trigger, state, step,"
                    " new_certificate_id, old_certificate_id, coverage, deadline, grace_seconds,"
                    " on_deadline, message, revision, created_at, updated_at, switched_at,"
                    " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, NULL, NULL)",
                    (
                        record.id, record.account_id, record.trigger, record.state, record.step,
                        record.new_certificate_id, record.old_certificate_id, record.coverage,
                        to_db(record.deadline), record.grace_seconds, record.on_deadline,
                        record.message, to_db(record.created_at), to_db(record.created_at),
                    ),
                )  # fmt: skip
                self._add_step(conn, record.id, record.created_at, record.step, record.state, record.message)
        except INTEGRITY_ERRORS as e:
            if "one_open_rotation_per_account" in str(e) or "ca_rotations.account_id" in str(e):
                raise OpenRotationExists(record.account_id) from None
            raise

    def update(self, rotation_id: str, revision: int, change: RotationChange, now: datetime) -> bool:
        """Apply ``change`` if the rotation is still at ``revision``; record the step. False: it
        changed meanwhile (nothing was written)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE ca_rotations SET state = ?, step = ?, message = ?, revision = revision + 1,"
                " updated_at = ?, switched_at = coalesce(?, switched_at),"
                " finished_at = coalesce(?, finished_at), deadline = coalesce(?, deadline),"
                " on_deadline = coalesce(?, on_deadline) WHERE id = ? AND revision = ?",
                (
                    change.state, change.step, change.message, to_db(now),
                    _opt(change.switched_at), _opt(change.finished_at), _opt(change.deadline),
                    change.on_deadline, rotation_id, revision,
                ),
            )  # fmt: skip
            if cursor.rowcount != 1:
                return False
            self._add_step(conn, rotation_id, now, change.step, change.state, change.message)
        return True

    def get(self, rotation_id: str, *, account_id: str) -> RotationRecord | None:
        row = self._db.connection.execute(
            "SELECT * FROM ca_rotations WHERE id = ? AND account_id = ?", (rotation_id, account_id)
        ).fetchone()
        return None if row is None else self._record(row)

    def open_for(self, account_id: str) -> RotationRecord | None:
        row = self._db.connection.execute(
            f"SELECT * FROM ca_rotations WHERE account_id = ? AND {_OPEN_SQL}", (account_id,)
        ).fetchone()
        return None if row is None else self._record(row)

    def latest(self, account_id: str) -> RotationRecord | None:
        row = self._db.connection.execute(
            "SELECT * FROM ca_rotations WHERE account_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (account_id,),
        ).fetchone()
        return None if row is None else self._record(row)

    def list(self, account_id: str) -> builtins.list[RotationRecord]:
        """The account's rotations, newest first."""
        rows = self._db.connection.execute(
            "SELECT * FROM ca_rotations WHERE account_id = ? ORDER BY created_at DESC, rowid DESC",
            (account_id,),
        ).fetchall()
        return [self._record(row) for row in rows]

    def all_open(self) -> builtins.list[RotationRecord]:
        """Every account's open rotation (running, paused or held)."""
        rows = self._db.connection.execute(
            f"SELECT * FROM ca_rotations WHERE {_OPEN_SQL} ORDER BY created_at"
        ).fetchall()
        return [self._record(row) for row in rows]

    def started_for(self, account_id: str, old_certificate_id: str, trigger: str) -> bool:
        """Whether a rotation away from ``old_certificate_id`` was ever started by ``trigger``."""
        row = self._db.connection.execute(
            "SELECT 1 FROM ca_rotations WHERE account_id = ? AND old_certificate_id = ? AND trigger = ?",
            (account_id, old_certificate_id, trigger),
        ).fetchone()
        return row is not None

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _add_step(
        conn: Connection, rotation_id: str, at: datetime, step: str, state: str, message: str
    ) -> None:
        conn.execute(
            "INSERT INTO ca_rotation_steps (rotation_id, seq, at, step, state, message) VALUES"
            " (?, (SELECT coalesce(max(seq), 0) + 1 FROM ca_rotation_steps WHERE rotation_id = ?),"
            " ?, ?, ?, ?)",
            (rotation_id, rotation_id, to_db(at), step, state, message),
        )

    def _record(self, row: Row) -> RotationRecord:
        steps = tuple(
            RotationStep(from_db(s["at"]), s["step"], s["state"], s["message"])
            for s in self._db.connection.execute(
                "SELECT at, step, state, message FROM ca_rotation_steps WHERE rotation_id = ? ORDER BY seq",
                (row["id"],),
            )
        )
        return RotationRecord(
            id=row["id"],
            account_id=row["account_id"],
            trigger=row["trigger"],
            state=row["state"],
            step=row["step"],
            new_certificate_id=row["new_certificate_id"],
            old_certificate_id=row["old_certificate_id"],
            coverage=int(row["coverage"]),
            deadline=from_db(row["deadline"]),
            grace_seconds=int(row["grace_seconds"]),
            on_deadline=row["on_deadline"],
            message=row["message"],
            revision=int(row["revision"]),
            created_at=from_db(row["created_at"]),
            updated_at=from_db(row["updated_at"]),
            switched_at=_from_opt(row["switched_at"]),
            finished_at=_from_opt(row["finished_at"]),
            steps=steps,
        )


def _opt(moment: datetime | None) -> str | None:
    return None if moment is None else to_db(moment)


def _from_opt(text: str | None) -> datetime | None:
    return None if text is None else from_db(text)
