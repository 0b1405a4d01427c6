"""The store: one database (SQLite by default, or PostgreSQL), opened and migrated, with one
repository per table group."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from proxy.store.accounts import Accounts, Tokens
from proxy.store.certificates import Certificates
from proxy.store.changes import ChangeJournal
from proxy.store.configuration import Configurations
from proxy.store.database import MEMORY, Database, StoreError
from proxy.store.device_addresses import DeviceAddresses
from proxy.store.devices import Devices, EnrollmentTokens, Nonces
from proxy.store.lists import GatewayLists
from proxy.store.locator import Backend, locate
from proxy.store.migrations import MIGRATIONS, current_version, migrate
from proxy.store.nodes import Nodes
from proxy.store.policies import AccessApplications, AccessPolicies, GatewayRules
from proxy.store.posture import PostureLogs, PostureResults, PostureRules
from proxy.store.revisions import Revisions
from proxy.store.rotations import Rotations
from proxy.store.trust import TrustReports
from proxy.store.wireguard import WireGuardTunnels

logger = logging.getLogger(__name__)


def open_database(path: Path | str, *, power_safe: bool = True) -> Database:
    """The connection to ``path`` (a SQLite file or a ``postgresql://`` URL), not migrated."""
    where = locate(path)
    if where.backend is Backend.POSTGRESQL:
        from proxy.store.postgres import PostgresDatabase  # psycopg only for PostgreSQL

        return PostgresDatabase.connect(where.target)
    return Database.open(where.target, power_safe=power_safe)


class Store:
    """Repositories over one connection. Each repository call is one transaction; wrap several
    calls in ``with store.transaction():`` to make them one."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.accounts = Accounts(db)
        self.tokens = Tokens(db)
        self.certificates = Certificates(db)
        self.configurations = Configurations(db)
        self.nodes = Nodes(db)
        self.gateway_rules = GatewayRules(db)
        self.access_policies = AccessPolicies(db)
        self.access_applications = AccessApplications(db)
        self.gateway_lists = GatewayLists(db)
        self.devices = Devices(db)
        self.enrollment_tokens = EnrollmentTokens(db)
        self.nonces = Nonces(db)
        self.posture_rules = PostureRules(db)
        self.posture_results = PostureResults(db)
        self.posture_logs = PostureLogs(db)
        self.trust_reports = TrustReports(db)
        self.device_addresses = DeviceAddresses(db)
        self.wireguard_tunnels = WireGuardTunnels(db)
        self.rotations = Rotations(db)
        self.revisions = Revisions(db)
        self.changes = ChangeJournal(db)

    @classmethod
    def open(
        cls,
        path: Path | str = MEMORY,
        *,
        now: datetime | None = None,
        power_safe: bool = True,
        migrations: bool = True,
    ) -> Store:
        """Open and migrate the store at ``path``: a SQLite file (created 0600 if needed), or a
        ``postgresql://`` URL (``locator``); ``power_safe=False``: on SQLite, commits survive the
        process being killed, not a power cut (``database`` module); PostgreSQL always waits for
        the server's disk; ``migrations=False`` (data-plane nodes: only the admin plane
        migrates): refuse a store at any other schema version than this code's."""
        where = locate(path)
        db = open_database(path, power_safe=power_safe)
        try:
            version = migrate(db, now or datetime.now(UTC)) if migrations else _expect_latest(db, path)
        except BaseException:
            db.close()
            raise
        logger.info("store %s open at schema version %d", where.display, version)
        return cls(db)

    def close(self) -> None:
        self._db.close()

    def data_version(self) -> int:
        """Changes when another connection commits (``Database.data_version``)."""
        return self._db.data_version()

    def now(self) -> datetime:
        """The database's notion of time: heartbeats and liveness are measured by it."""
        return self._db.now()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._db.transaction():
            yield

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the current transaction commits (at once outside one)."""
        self._db.after_commit(callback)

    def dump(self) -> list[str]:
        """Every table and row as SQL statements (diagnostics; tests compare before and after)."""
        return self._db.dump()

    @property
    def path(self) -> str:
        """What the store was opened from, to open another connection to it: the database file
        or PostgreSQL URL (password included: never log it), or ``""`` for an in-memory store."""
        return self._db.location

    @property
    def schema_version(self) -> int:
        return current_version(self._db)


def _expect_latest(db: Database, path: Path | str) -> int:
    version, latest = current_version(db), MIGRATIONS[-1].version
    if version != latest:
        raise StoreError(
            f"{path}: the store is at schema version {version}, this node runs version {latest}: "
            + (
                "start the admin plane (gateway run) of this version first: it migrates the store"
                if version < latest
                else "upgrade this node to the admin plane's version"
            )
        )
    return version
