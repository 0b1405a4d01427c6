"""Accounts and API tokens (tokens are kept as SHA-256 hashes only)."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from proxy.store.database import Connection, Database, Row, from_db, to_db
from proxy.store.records import Account, ApiToken, TokenOrigin

logger = logging.getLogger(__name__)


def _account(row: Row) -> Account:
    return Account(id=row["id"], name=row["name"], created_at=from_db(row["created_at"]))


def _token(row: Row) -> ApiToken:
    return ApiToken(
        id=row["id"],
        account_id=row["account_id"],
        token_sha256=bytes(row["token_sha256"]),
        origin=TokenOrigin(row["origin"]),
        created_at=from_db(row["created_at"]),
        name=row["name"],
    )


class Accounts:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, account: Account) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
                (account.id, account.name, to_db(account.created_at)),
            )

    def get(self, account_id: str) -> Account | None:
        row = self._db.connection.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
        return _account(row) if row else None

    def list(self) -> list[Account]:
        rows = self._db.connection.execute("SELECT * FROM accounts ORDER BY created_at, rowid")
        return [_account(row) for row in rows]

    def transaction(self) -> AbstractContextManager[Connection]:
        """A transaction of the store (several account updates committed at once)."""
        return self._db.transaction()

    def delete(self, account_id: str) -> bool:
        """Delete the account and, by the schema's cascades, everything that belongs to it
        (certificates, policies, configuration, tokens scoped to it); False when there is none."""
        with self._db.transaction() as conn:
            cursor = conn.execute("DELETE FROM accounts WHERE id = ?", (account_id,))
        return cursor.rowcount > 0

    def device_count(self, account_id: str) -> int:
        row = self._db.connection.execute(
            "SELECT count(*) FROM devices WHERE account_id = ?", (account_id,)
        ).fetchone()
        return int(row[0])


class Tokens:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, token: ApiToken) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, account_id, token_sha256, origin, created_at, name)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    token.id,
                    token.account_id,
                    token.token_sha256,
                    token.origin.value,
                    to_db(token.created_at),
                    token.name,
                ),
            )

    def list(self) -> list[ApiToken]:
        rows = self._db.connection.execute("SELECT * FROM api_tokens ORDER BY created_at, rowid")
        return [_token(row) for row in rows]

    def delete_by_origin(self, origin: TokenOrigin, *, keep_sha256: bytes | None = None) -> int:
        """Delete every token of ``origin`` except the one with hash ``keep_sha256``."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM api_tokens WHERE origin = ? AND token_sha256 IS DISTINCT FROM ?",
                (origin.value, keep_sha256),
            )
        return cursor.rowcount

    def delete(self, token_id: str) -> bool:
        """Revoke one token; False when there is no token ``token_id``."""
        with self._db.transaction() as conn:
            cursor = conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
        return cursor.rowcount > 0

    def count(self) -> int:
        row = self._db.connection.execute("SELECT count(*) FROM api_tokens").fetchone()
        return int(row[0])
