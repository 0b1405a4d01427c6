"""Gateway lists saved through the admin API: one row per list, one per item.

A list's row carries a ``revision`` that every save bumps, so a reader can tell that a list
changed without reading its items (a list may hold 100,000 of them). Items keep their order
(``position``) and are unique per list. The policy service validates before every write.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from proxy.store.database import Connection, Database, Row, to_db
from proxy.store.policies import from_db

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredList:
    """A list without its items (``revision`` changes at every save)."""

    account_id: str
    id: str
    name: str
    description: str
    type: str
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredListItem:
    value: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class ListRecord:
    """A list and all its items, as a save replaces them."""

    list: StoredList
    items: tuple[StoredListItem, ...]
    delta: tuple[tuple[StoredListItem, ...], frozenset[str]] | None = None  # (appended, removed)


def _list(row: Row) -> StoredList:
    return StoredList(
        account_id=row["account_id"],
        id=row["id"],
        name=row["name"],
        description=row["description"],
        type=row["type"],
        revision=int(row["revision"]),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


class GatewayLists:
    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self, account_id: str) -> builtins.list[StoredList]:
        """The account's lists, oldest first (Cloudflare's default order), without items."""
        rows = self._db.connection.execute(
            "SELECT * FROM gateway_lists WHERE account_id = ? ORDER BY created_at, id", (account_id,)
        )
        return [_list(row) for row in rows]

    def items(self, account_id: str, list_id: str) -> builtins.list[StoredListItem]:
        rows = self._db.connection.execute(
            "SELECT value, description, created_at FROM gateway_list_items"
            " WHERE account_id = ? AND list_id = ? ORDER BY position",
            (account_id, list_id),
        )
        return [StoredListItem(value, description, from_db(at)) for value, description, at in rows]

    def save(self, record: ListRecord) -> None:
        """Insert, or replace the list of the same id and all its items; a record that says
        which items were appended and removed (``delta``) writes only those."""
        head = record.list
        if record.delta is not None:
            appended, removed = record.delta
            self.change(head, append=appended, remove=removed)
            return
        with self._db.transaction() as conn:
            self._save_head(conn, head)
            conn.execute(
                "DELETE FROM gateway_list_items WHERE account_id = ? AND list_id = ?",
                (head.account_id, head.id),
            )
            self._insert(conn, head, record.items, 0)

    def change(
        self,
        head: StoredList,
        *,
        append: Sequence[StoredListItem] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Save the list's own fields, remove the items of these values, append these items:
        the cost of the change, not of the list."""
        with self._db.transaction() as conn:
            self._save_head(conn, head)
            conn.executemany(
                "DELETE FROM gateway_list_items WHERE account_id = ? AND list_id = ? AND value = ?",
                [(head.account_id, head.id, value) for value in remove],
            )
            last = conn.execute(
                "SELECT max(position) FROM gateway_list_items WHERE account_id = ? AND list_id = ?",
                (head.account_id, head.id),
            ).fetchone()[0]
            self._insert(conn, head, append, 0 if last is None else int(last) + 1)

    def delete(self, account_id: str, list_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM gateway_lists WHERE account_id = ? AND id = ?", (account_id, list_id))

    def delete_all(self, account_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM gateway_lists WHERE account_id = ?", (account_id,))

    @staticmethod
    def _save_head(conn: Connection, head: StoredList) -> None:
        conn.execute(
            "INSERT INTO gateway_lists (account_id, id, name, description, type, revision,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (account_id, id) DO UPDATE SET name = excluded.name,"
            " description = excluded.description, type = excluded.type,"
            " revision = gateway_lists.revision + 1, created_at = excluded.created_at,"
            " updated_at = excluded.updated_at",
            (
                head.account_id,
                head.id,
                head.name,
                head.description,
                head.type,
                to_db(head.created_at),
                to_db(head.updated_at),
            ),
        )

    @staticmethod
    def _insert(conn: Connection, head: StoredList, items: Iterable[StoredListItem], first: int) -> None:
        times: dict[datetime, str] = {}  # items saved together share their time: format it once

        def at(moment: datetime) -> str:
            text = times.get(moment)
            if text is None:
                text = times[moment] = to_db(moment)
            return text

        conn.executemany(
            "INSERT INTO gateway_list_items (account_id, list_id, position, value, description,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                (head.account_id, head.id, first + i, item.value, item.description, at(item.created_at))
                for i, item in enumerate(items)
            ),
        )
