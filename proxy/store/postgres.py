"""The store on PostgreSQL (psycopg 3): the same repositories, schema and migrations as SQLite.

:class:`PgConnection` is what repositories see as ``db.connection``: ``execute`` and
``executemany`` take SQLite's SQL (translated once per statement text, ``proxy.store.dialect``)
and return rows readable by name and by index, as ``sqlite3.Row`` is. Parameters are bound on
the client side (psycopg's ``ClientCursor``), as SQLite binds them: ``? IS NULL`` needs no type.

Transactions (:class:`PostgresDatabase`) start with a transaction-scoped advisory lock that
every writer of the database takes, so that write transactions run one at a time across every
node, as SQLite's ``BEGIN IMMEDIATE`` runs them across processes: a read-check-write (a nonce
claimed once, a port allocated once, a certificate activated once) sees every earlier commit.
A write transaction notifies ``gateway_changes`` (delivered at commit) for the other nodes'
:meth:`PostgresDatabase.data_version`. ``synchronous_commit`` stays on: ``COMMIT`` returns once
the commit is on the server's disk, so an acknowledged write is durable.

Faults: connecting times out after :data:`CONNECT_TIMEOUT` seconds, a statement after
:data:`STATEMENT_TIMEOUT`; a lost connection raises :class:`StoreUnavailable` and the next call
outside a transaction connects again, in a thread, without blocking its caller for more than
:data:`RECONNECT_WAIT` (attempts 1 s apart, then further apart while the server stays away).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import ClientCursor
from psycopg.adapt import Dumper
from psycopg.pq import TransactionStatus

from proxy.store.database import ConstraintViolation, Cursor, Database, StoreError, StoreUnavailable
from proxy.store.dialect import FUNCTIONS, to_postgres
from proxy.store.locator import redact

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5  # seconds to reach the server (libpq's connect_timeout)
STATEMENT_TIMEOUT_MS = 15_000  # a statement (a lock wait included) that takes longer fails
RECONNECT_INTERVAL = 1.0  # seconds before the next connection attempt after a failed one,
RECONNECT_MAX = 8.0  # doubling up to this while the server stays away
RECONNECT_WAIT = 0.25  # seconds the call that starts an attempt waits for it
CHANNEL = "gateway_changes"
_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES")
WRITER_LOCK = 0x6761_7465_7761_7901  # pg_advisory_xact_lock key: one writer at a time
MIGRATION_LOCK = 0x6761_7465_7761_7902  # pg_advisory_lock key: one node migrates


class PgRow:
    """A row by column name or by index, like ``sqlite3.Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PgRow) and tuple(self._values) == tuple(other._values)

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._index, self._values, strict=True))!r})"


def _rows(cursor: Any) -> Any:
    """psycopg row factory: :class:`PgRow` with the statement's column names."""
    description = cursor.description
    index = {column.name: i for i, column in enumerate(description or ())}
    return lambda values: PgRow(index, values)


class _BoolAsInteger(Dumper):
    """SQLite stores ``True`` as 1: the schema's flags are integer columns."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"

    def quote(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _reads(sql: str) -> bool:
    """True for a statement that changes nothing, or only opens a transaction: safe to repeat."""
    head = sql.lstrip()[:6].upper()
    return head in ("SELECT", "BEGIN;")


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(url: str) -> psycopg.Connection[Any]:
    """A new connection in autocommit mode (transactions are explicit); :class:`StoreError` with
    a line a user can act on (wrong credentials, no such database, server unreachable)."""
    options = (
        f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout=60000"
        " -c synchronous_commit=on"  # COMMIT returns once on the server's disk, whatever its default
    )
    try:
        connection: psycopg.Connection[Any] = psycopg.Connection.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="gateway",
            options=options,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=CONNECT_TIMEOUT * 3000,
            cursor_factory=ClientCursor,
            row_factory=_rows,
        )
    except psycopg.OperationalError as e:
        raise _connect_error(url, e) from None
    except psycopg.Error as e:
        raise StoreError(f"{redact(url)}: {_reason(e)}") from None
    connection.adapters.register_dumper(bool, _BoolAsInteger)
    return connection


def _connect_error(url: str, error: psycopg.OperationalError) -> StoreError:
    reason = _reason(error)
    if "connection failed: " in reason:
        reason = reason.split("connection failed: ", 1)[1]
    where = redact(url)
    if "password authentication failed" in reason or "no password supplied" in reason:
        return StoreError(f"{where}: the server refused the credentials ({reason})")
    if "does not exist" in reason:
        return StoreError(f"{where}: {reason} (create it, or fix the URL)")
    return StoreUnavailable(f"the database is unreachable: {where}: {reason}")


class PgConnection:
    """A psycopg connection that speaks the store's SQLite dialect and comes back by itself."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # guards what the reconnecting thread hands over
        self._reconnecting: threading.Thread | None = None
        self._ready: psycopg.Connection[Any] | None = None  # made by that thread, not yet in use
        self._failures = 0
        self._last_error = ""
        self._next_attempt = 0.0
        self._closed = False
        self._conn = connect(url)
        self.pinned = False  # in a transaction: a lost connection is not replaced silently
        # staging tables of ``insert_rows`` this session has (a temporary table lives as long as
        # its session); forgotten at every rollback and error, which may have undone a CREATE
        self._staged: set[str] = set()

    @property
    def backend_pid(self) -> int:
        return self._conn.info.backend_pid if self._conn is not None else 0

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, or :class:`StoreUnavailable` at once. A lost connection is made again
        in a thread of its own (connecting may take the whole connect timeout, and the caller
        may be the proxy's event loop): the call that starts an attempt waits for it at most
        :data:`RECONNECT_WAIT` (a server that is back answers sooner), the others not at all."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self.pinned:
            raise StoreUnavailable(
                "the database is unreachable: the connection was lost in a transaction; retrying"
            )
        started = self._start_reconnect()
        if started is not None:
            started.join(RECONNECT_WAIT)
        with self._lock:
            ready, self._ready = self._ready, None
            reason = self._last_error
        if ready is None:
            raise StoreUnavailable(reason or f"the database is unreachable: {redact(self._url)}; retrying")
        self._discard()
        self._conn = ready
        self._staged.clear()
        logger.info("store: connected to %s again", redact(self._url))
        return ready

    def _start_reconnect(self) -> threading.Thread | None:
        with self._lock:
            busy = self._reconnecting is not None and self._reconnecting.is_alive()
            if busy or self._ready is not None or time.monotonic() < self._next_attempt:
                return None
            thread = threading.Thread(target=self._reconnect, name="store-reconnect", daemon=True)
            self._reconnecting = thread
        thread.start()
        return thread

    def _reconnect(self) -> None:
        try:
            conn = connect(self._url)
        except StoreError as e:
            with self._lock:
                self._failures += 1
                backoff = min(RECONNECT_MAX, RECONNECT_INTERVAL * 2 ** (self._failures - 1))
                self._next_attempt = time.monotonic() + backoff
                self._last_error = f"{e}; retrying"
            return
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._failures = 0
            self._last_error = ""
            self._ready = conn

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a broken connection: nothing left to release
            self._conn = None

    def _lost(self, error: psycopg.Error) -> StoreError:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            logger.warning("store: lost the database connection: %s", _reason(error))
            return StoreUnavailable(f"the database is unreachable: {_reason(error)}; retrying")
        return StoreUnavailable(f"the database failed: {_reason(error)}; retrying")

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        if sql.startswith("ROLLBACK"):  # ``ROLLBACK TO`` a savepoint may undo a staging table
            self._staged.clear()
        query = to_postgres(sql)
        return self._run(lambda conn: conn.execute(query, parameters), retry=_reads(sql))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        query, rows = to_postgres(sql), list(parameters)

        def run(conn: psycopg.Connection[Any]) -> Cursor:
            cursor = conn.cursor()
            cursor.executemany(query, rows)
            return cursor

        return self._run(run, retry=False)

    def execute_native(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        """``sql`` as PostgreSQL text (no translation)."""
        return self._run(lambda conn: conn.execute(sql, parameters), retry=_reads(sql))

    def _run(self, call: Callable[[psycopg.Connection[Any]], Cursor], *, retry: bool) -> Cursor:
        """``call`` on the live connection. A read, or the start of a transaction, that finds
        the connection lost (the server restarted since the last call) runs again, once, on a
        new connection: it changed nothing, so the caller need not see the restart."""
        for attempt in (1, 2):
            conn = self._live()
            try:
                return call(conn)
            except psycopg.Error as e:
                self._staged.clear()  # the transaction that made a staging table may be lost
                if isinstance(e, psycopg.IntegrityError):
                    raise ConstraintViolation(_reason(e)) from e
                if not isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                    raise
                error = self._lost(e)
                if attempt == 2 or not retry or self.pinned or not (conn.closed or conn.broken):
                    raise error from e
        raise AssertionError("unreachable")

    def insert_rows(self, statement: str, rows: Sequence[tuple[object, ...]], suffix: str) -> list[Any]:
        """``devices.insert_rows`` on PostgreSQL: the rows go by COPY, which costs a tenth of
        the CPU of a multi-row INSERT through psycopg (posture ingest writes thousands a
        second); with ``suffix`` (``ON CONFLICT ...``, ``RETURNING ...``) they are copied to a
        temporary table first and inserted from there with it. Inside the caller's transaction;
        the rows ``RETURNING`` gives."""
        match = _INSERT.fullmatch(statement.strip())
        if match is None:
            raise ValueError(
                f"insert_rows: not an 'INSERT INTO table (columns) VALUES' statement: {statement!r}"
            )
        table, columns = match.group(1), match.group(2)
        target = table
        if suffix:
            target = f"stage_{table}"
            if target not in self._staged:  # a round trip less per group commit once made
                self.execute_native(
                    f"CREATE TEMP TABLE IF NOT EXISTS {target} (LIKE {table}) ON COMMIT DELETE ROWS"
                )
                self._staged.add(target)

        def copy(conn: psycopg.Connection[Any]) -> Cursor:
            cursor = conn.cursor()
            with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as pipe:
                for row in rows:
                    pipe.write_row(row)
            return cursor

        self._run(copy, retry=False)
        if not suffix:
            return []
        cursor = self.execute_native(  # the cursor holds the first statement's rows
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {target}{to_postgres(suffix)};"
            f" DELETE FROM {target}"
        )
        return cursor.fetchall() if "RETURNING" in suffix else []

    def forget_staged(self) -> None:
        """The transaction is rolled back: a staging table made in it is gone."""
        self._staged.clear()

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, None
        if ready is not None:
            ready.close()
        self._discard()

    def __del__(self) -> None:  # a store dropped unclosed (a helper's second connection)
        self._discard()


class PostgresDatabase(Database):
    """:class:`Database` on PostgreSQL: same transactions, plus a change counter across nodes."""

    dialect = "postgresql"

    def __init__(self, connection: PgConnection, url: str) -> None:
        super().__init__(connection)
        self.location = url
        self._pg = connection
        self._listener: _Listener | None = None

    @classmethod
    def connect(cls, url: str) -> PostgresDatabase:
        return cls(PgConnection(url), url)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._pg.close()

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        """A session advisory lock: of several nodes starting at once, one migrates while the
        others wait, then find the schema current. SQLite's JSON functions are made here."""
        self._pg.execute_native(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            for statement in FUNCTIONS:
                self._pg.execute_native(statement)
            yield
        finally:
            try:
                self._pg.execute_native(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            except StoreError as e:  # the connection is gone: the server released the lock
                logger.debug("store: migration lock released with the connection: %s", e)

    def _begin(self) -> None:
        try:
            self._pg.execute_native(f"BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})")
        except BaseException:
            self._rollback()
            raise
        self._pg.pinned = True  # from here, a lost connection ends the transaction with an error

    def _commit(self) -> None:
        self._pg.execute_native(
            f"SELECT pg_notify('{CHANNEL}', '') WHERE txid_current_if_assigned() IS NOT NULL; COMMIT"
        )
        self._pg.pinned = False

    def _rollback(self) -> None:
        self._pg.pinned = False
        self._pg.forget_staged()
        if self._pg.in_transaction:
            try:
                self._pg.execute_native("ROLLBACK")
            except StoreError as e:  # the connection is gone, and the transaction with it
                logger.debug("store: rollback on a lost connection: %s", e)

    def execute_native(self, sql: str) -> None:
        self._pg.execute_native(sql)

    def data_version(self) -> int:
        """Counts other connections' committed write transactions (LISTEN ``gateway_changes``
        on a connection of its own, in a thread); also changes when that connection was lost
        and made again, since notifications may have been missed meanwhile."""
        if self._listener is None:
            self._listener = _Listener(self.location, lambda: self._pg.backend_pid)
            self._listener.start()
        return self._listener.count

    def now(self) -> datetime:
        """The server's clock: every node on the database measures heartbeats by the same one."""
        moment = self._pg.execute_native("SELECT statement_timestamp()").fetchone()[0]
        assert isinstance(moment, datetime)
        return moment.astimezone(UTC)

    def dump(self) -> list[str]:
        """Every table's rows (SQLite's implicit ``rowid`` and the change journal left out, as
        ``Database.dump`` does), in the order of their values."""
        columns: dict[str, list[str]] = {}
        for table, column in self._pg.execute_native(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name != 'rowid'"
            " AND table_name != 'store_changes'"
            " ORDER BY table_name, ordinal_position"
        ):
            columns.setdefault(table, []).append(f'"{column}"')
        lines: list[str] = []
        for table, names in columns.items():
            listed = ", ".join(names)
            order = ", ".join(str(i + 1) for i in range(len(names)))
            query = f'SELECT {listed} FROM "{table}" ORDER BY {order}'
            lines.extend(
                f'INSERT INTO "{table}" VALUES{tuple(row)!r};' for row in self._pg.execute_native(query)
            )
        return lines


class _Listener:
    """LISTEN ``gateway_changes`` in a thread; ``count`` grows with each notification from a
    connection other than the database's own."""

    def __init__(self, url: str, own_pid: Any) -> None:
        self._url = url
        self._own_pid = own_pid
        self._lock = threading.Lock()
        self._count = 0
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-listen", daemon=True)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def start(self) -> None:
        self._thread.start()
        self._listening.wait(CONNECT_TIMEOUT + 1)  # changes after this call are counted

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=3)

    def _bump(self) -> None:
        with self._lock:
            self._count += 1

    def _run(self) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                with connect(self._url) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self._bump()  # notifications may have been missed while away
                    first = False
                    self._listening.set()
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            if notify.pid != self._own_pid():
                                self._bump()
            except (StoreError, psycopg.Error) as e:
                self._listening.set()
                logger.warning("store: change notifications interrupted (%s); listening again", _reason(e))
                self._stopping.wait(RECONNECT_INTERVAL)
