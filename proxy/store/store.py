"""The store: one SQLite database, opened and migrated, with one repository per table group."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from proxy.store.accounts import Accounts, Tokens
from proxy.store.certificates import Certificates
from proxy.store.configuration import Configurations
from proxy.store.database import MEMORY, Database, StoreError
from proxy.store.device_addresses import DeviceAddresses
from proxy.store.devices import Devices, EnrollmentTokens, Nonces
from proxy.store.lists import GatewayLists
from proxy.store.migrations import MIGRATIONS, current_version, migrate
from proxy.store.nodes import Nodes
from proxy.store.policies import AccessApplications, AccessPolicies, GatewayRules
from proxy.store.posture import PostureLogs, PostureResults, PostureRules
from proxy.store.revisions import Revisions
from proxy.store.rotations import Rotations
from proxy.store.trust import TrustReports
from proxy.store.wireguard import WireGuardTunnels

logger = logging.getLogger(__name__)


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

    @classmethod
    def open(
        cls,
        path: Path | str = MEMORY,
        *,
        now: datetime | None = None,
        power_safe: bool = True,
        migrations: bool = True,
    ) -> Store:
        """Open (creating 0600 if needed) and migrate the database at ``path``;
        ``power_safe=False``: commits survive the process being killed, not a power cut
        (``database`` module); ``migrations=False`` (data-plane nodes: only the admin plane
        migrates): refuse a store at any other schema version than this code's."""
        db = Database.open(path, power_safe=power_safe)
        try:
            version = migrate(db, now or datetime.now(UTC)) if migrations else _expect_latest(db, path)
        except BaseException:
            db.close()
            raise
        logger.info("store %s open at schema version %d", path, version)
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
        return list(self._db.connection.iterdump())

    @property
    def path(self) -> str:
        """The database file, or ``""`` for an in-memory store."""
        row = self._db.connection.execute("PRAGMA database_list").fetchone()
        return str(row[2] or "")

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
