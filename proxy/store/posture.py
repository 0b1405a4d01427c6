"""Device posture rules, the latest result of each rule on each device, and the posture log.

Rule bodies are kept as the API's JSON without id and timestamps (the device service validates
them with ``policies.posture`` before every write). ``posture_results`` holds one row per device
and rule (the latest, replaced by the next); ``posture_logs`` keeps every result, and every
report the server refused, newest last.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from proxy.store.database import Database, Row
from proxy.store.devices import from_db, insert_rows, to_db, writing

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    PASSED = "passed"  # verified by the server
    FAILED = "failed"  # stored as failed: the agent said so, or the server could not verify it
    REFUSED = "refused"  # not stored as a result at all (bad credentials, rule not assigned, ...)


@dataclass(frozen=True)
class StoredPostureRule:
    account_id: str
    id: str
    body: dict[str, Any]  # the rule's API JSON without id and timestamps
    created_at: datetime
    updated_at: datetime

    @property
    def certificate_id(self) -> str | None:
        given = self.body.get("input")
        value = given.get("certificate_id") if isinstance(given, dict) else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PostureResult:
    """The latest result of one rule on one device. ``success`` implies ``verified``."""

    device_id: str
    rule_id: str
    success: bool
    verified: bool
    reason: str
    certificate_fingerprint: str  # "" when no certificate was verified
    certificate_cn: str | None
    at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class PostureLogEntry:
    account_id: str
    device_id: str
    rule_id: str  # "": about the device rather than one rule
    rule_name: str
    outcome: Outcome
    verified: bool
    reason: str
    at: datetime
    certificate_fingerprint: str = ""
    certificate_cn: str | None = None
    expires_at: datetime | None = None
    seq: int = 0  # assigned by the store


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, allow_nan=False, ensure_ascii=False)


def _rule(row: Row) -> StoredPostureRule:
    return StoredPostureRule(
        account_id=row["account_id"],
        id=row["id"],
        body=json.loads(row["body"]),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


class PostureRules:
    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self, account_id: str) -> builtins.list[StoredPostureRule]:
        rows = self._db.connection.execute(
            "SELECT * FROM device_posture_rules WHERE account_id = ? ORDER BY created_at, rowid",
            (account_id,),
        )
        return [_rule(row) for row in rows]

    def get(self, account_id: str, rule_id: str) -> StoredPostureRule | None:
        row = self._db.connection.execute(
            "SELECT * FROM device_posture_rules WHERE account_id = ? AND id = ?",
            (account_id, rule_id),
        ).fetchone()
        return _rule(row) if row else None

    def save(self, rule: StoredPostureRule) -> None:
        """Insert, or replace the rule with the same id."""
        r = rule
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO device_posture_rules (account_id, id, certificate_id, body, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, id) DO UPDATE SET"
                " certificate_id = excluded.certificate_id, body = excluded.body,"
                " created_at = excluded.created_at, updated_at = excluded.updated_at",
                (r.account_id, r.id, r.certificate_id, _dumps(r.body), to_db(r.created_at),
                 to_db(r.updated_at)),
            )  # fmt: skip

    def delete(self, account_id: str, rule_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM device_posture_rules WHERE account_id = ? AND id = ?",
                (account_id, rule_id),
            )

    def using_certificate(self, account_id: str, certificate_id: str) -> builtins.list[str]:
        """Ids of the rules whose ``input.certificate_id`` is ``certificate_id``."""
        rows = self._db.connection.execute(
            "SELECT id FROM device_posture_rules WHERE account_id = ? AND certificate_id = ? ORDER BY id",
            (account_id, certificate_id),
        )
        return [row["id"] for row in rows]


def _result(row: Row) -> PostureResult:
    return PostureResult(
        device_id=row["device_id"],
        rule_id=row["rule_id"],
        success=bool(row["success"]),
        verified=bool(row["verified"]),
        reason=row["reason"],
        certificate_fingerprint=row["certificate_fingerprint"],
        certificate_cn=row["certificate_cn"],
        at=from_db(row["at"]),
        expires_at=from_db(row["expires_at"]),
    )


class PostureResults:
    def __init__(self, db: Database) -> None:
        self._db = db

    def for_device(self, device_id: str) -> builtins.list[PostureResult]:
        rows = self._db.connection.execute(
            "SELECT * FROM posture_results WHERE device_id = ? ORDER BY rule_id", (device_id,)
        )
        return [_result(row) for row in rows]

    def save(self, results: Iterable[PostureResult]) -> None:
        """Each replaces the device's previous result for that rule."""
        latest = {
            (r.device_id, r.rule_id): (
                r.device_id, r.rule_id, int(r.success), int(r.verified), r.reason,
                r.certificate_fingerprint, r.certificate_cn, to_db(r.at), to_db(r.expires_at))
            for r in results
        }  # fmt: skip  # one row per key: an upsert may not touch a row twice in one statement
        with writing(self._db) as conn:
            insert_rows(
                conn,
                "INSERT INTO posture_results (device_id, rule_id, success, verified, reason,"
                " certificate_fingerprint, certificate_cn, at, expires_at) VALUES",
                list(latest.values()),
                suffix=" ON CONFLICT (device_id, rule_id) DO UPDATE SET success = excluded.success,"
                " verified = excluded.verified, reason = excluded.reason,"
                " certificate_fingerprint = excluded.certificate_fingerprint,"
                " certificate_cn = excluded.certificate_cn, at = excluded.at,"
                " expires_at = excluded.expires_at",
            )

    def delete_for_rule(self, rule_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM posture_results WHERE rule_id = ?", (rule_id,))


def _entry(row: Row) -> PostureLogEntry:
    expires = row["expires_at"]
    return PostureLogEntry(
        seq=int(row["seq"]),
        account_id=row["account_id"],
        device_id=row["device_id"],
        rule_id=row["rule_id"],
        rule_name=row["rule_name"],
        outcome=Outcome(row["outcome"]),
        verified=bool(row["verified"]),
        reason=row["reason"],
        certificate_fingerprint=row["certificate_fingerprint"],
        certificate_cn=row["certificate_cn"],
        at=from_db(row["at"]),
        expires_at=from_db(expires) if expires is not None else None,
    )


@dataclass(frozen=True)
class LogQuery:
    """Filters of the posture log; ``None`` (or ``""`` for ids) does not filter."""

    account_id: str
    device_id: str | None = None
    rule_id: str | None = None
    since: datetime | None = None

    def where(self) -> tuple[str, tuple[object, ...]]:
        clauses, values = ["account_id = ?"], [self.account_id]
        for column, value in (("device_id", self.device_id), ("rule_id", self.rule_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if self.since is not None:
            clauses.append("at >= ?")
            values.append(to_db(self.since))
        return " AND ".join(clauses), tuple(values)


class PostureLogs:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, entries: Iterable[PostureLogEntry]) -> None:
        rows = [
            (e.account_id, e.device_id, e.rule_id, e.rule_name, e.outcome.value, int(e.verified),
             e.reason, e.certificate_fingerprint, e.certificate_cn, to_db(e.at),
             to_db(e.expires_at) if e.expires_at is not None else None)
            for e in entries
        ]  # fmt: skip
        with writing(self._db) as conn:
            insert_rows(
                conn,
                "INSERT INTO posture_logs (account_id, device_id, rule_id, rule_name, outcome,"
                " verified, reason, certificate_fingerprint, certificate_cn, at, expires_at) VALUES",
                rows,
            )

    def query(
        self, query: LogQuery, *, offset: int, limit: int
    ) -> tuple[builtins.list[PostureLogEntry], int]:
        """One page of matching entries, newest first, and how many match in all."""
        where, values = query.where()
        total = self._db.connection.execute(
            f"SELECT count(*) FROM posture_logs WHERE {where}", values
        ).fetchone()[0]
        rows = self._db.connection.execute(
            f"SELECT * FROM posture_logs WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*values, limit, offset),
        )
        return [_entry(row) for row in rows], int(total)
