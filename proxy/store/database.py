"""The SQLite connection: file creation (0600), pragmas, transactions and time encoding.

One connection, used from the event loop's thread. ``synchronous=FULL`` with WAL makes every
committed transaction durable before ``COMMIT`` returns, so an acknowledged write survives
the process being killed and a power cut. A connection opened with ``power_safe=False``
(``synchronous=NORMAL``) does not wait for the disk at each commit: its commits still survive
the process being killed (they are in the WAL, in the kernel's hands), but the last ones may be
lost in a power cut or a kernel crash. Only agent telemetry is written that way
(``services.device_writer``).

The same class runs the store on PostgreSQL (``proxy.store.postgres``): repositories use only
``connection.execute``/``executemany``, ``transaction``, ``after_commit`` and the rows' name and
index access, which both backends give.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class StoreError(Exception):
    """The database cannot be used (wrong permissions, newer schema, integrity failure)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (server down, network, timeout); the store reconnects
    by itself at a later call. The admin API answers 503 with Retry-After."""


class ConstraintViolation(StoreError):
    """A write broke a constraint of the schema (PostgreSQL's form of ``sqlite3.IntegrityError``)."""


# Catch these, not one backend's class: a write refused by a constraint on either backend.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, ConstraintViolation)


class Row(Protocol):
    """A result row, read by column name or by index (``sqlite3.Row`` and PostgreSQL's rows)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What repositories use of a connection: ``sqlite3.Connection`` and ``postgres.PgConnection``."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Cursor: ...


def to_db(moment: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps aware UTC times only")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def from_db(text: str) -> datetime:
    """What ``to_db`` wrote (``fromisoformat`` reads that format about 20 times faster than
    ``strptime``: a node's sync reads every certificate row of every account)."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite gives WAL files the same mode)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning("store %s had mode %o; restricting it to 0600", path, mode)
            path.chmod(0o600)
        return
    os.close(fd)
    logger.info("created store %s (mode 0600)", path)


class Database:
    """A connection plus nested transactions (outermost: BEGIN IMMEDIATE, inner: SAVEPOINT)."""

    dialect = "sqlite"  # whose SQL ``execute_native`` takes

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        self.location = ""  # the file or URL it was opened from ("" in memory)

    @classmethod
    def open(cls, path: Path | str, *, power_safe: bool = True) -> Database:
        if str(path) != MEMORY:
            _create_private_file(Path(path))
        connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
        connection.row_factory = sqlite3.Row
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(path) != MEMORY and mode != "wal":
            connection.close()
            raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        connection.execute("PRAGMA synchronous=FULL" if power_safe else "PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        db = cls(connection)
        db.location = "" if str(path) == MEMORY else str(path)
        return db

    @property
    def _sqlite(self) -> sqlite3.Connection:
        assert isinstance(self.connection, sqlite3.Connection)
        return self.connection

    def close(self) -> None:
        self._sqlite.close()

    def execute_native(self, sql: str) -> None:
        """Run ``sql`` as this backend's own SQL, untranslated (a migration's native statements)."""
        self._sqlite.execute(sql)

    def dump(self) -> list[str]:
        """Every table and row as SQL text (diagnostics; tests compare before and after), the
        change journal's rows and counter left out: they say that rows were written, not what
        the store holds."""
        return [
            line
            for line in self._sqlite.iterdump()
            if not line.startswith('INSERT INTO "store_changes"')
            and not (line.startswith('INSERT INTO "sqlite_sequence"') and "'store_changes'" in line)
        ]

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        """Held while migrating (SQLite: each migration's ``BEGIN IMMEDIATE`` is enough)."""
        yield

    def _begin(self) -> None:
        self._sqlite.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._sqlite.execute("COMMIT")

    def _rollback(self) -> None:
        if self._sqlite.in_transaction:
            self._sqlite.execute("ROLLBACK")

    def data_version(self) -> int:
        """A number that changes whenever another connection (another process included) has
        committed a change since the last call; this connection's own commits leave it alone.
        Microseconds (SQLite's ``PRAGMA data_version``): cheap enough to poll."""
        return int(self._sqlite.execute("PRAGMA data_version").fetchone()[0])

    def now(self) -> datetime:
        """The database's time, which every node sharing it agrees on (SQLite lives on this
        machine: its clock)."""
        return datetime.now(UTC)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """All writes inside commit together or not at all; nesting joins the outer one."""
        if self._depth:
            yield from self._savepoint()
            return
        self._begin()
        self._depth = 1
        try:
            yield self.connection
            self._commit()
        except BaseException:
            self._depth = 0
            self._after_commit.clear()
            self._rollback()
            raise
        self._depth = 0
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def _savepoint(self) -> Iterator[Connection]:
        name = f"sp{self._depth}"
        pending = len(self._after_commit)
        self.connection.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self.connection
        except BaseException:
            self.connection.execute(f"ROLLBACK TO {name}")
            del self._after_commit[pending:]
            raise
        finally:
            self._depth -= 1
            self.connection.execute(f"RELEASE {name}")

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the outermost transaction commits (now, if there is none)."""
        if self._depth:
            self._after_commit.append(callback)
        else:
            callback()
