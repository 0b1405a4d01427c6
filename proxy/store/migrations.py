"""Versioned schema migrations, applied in order, each in its own transaction.

Add a migration by appending to ``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from proxy.store.database import Database, StoreError, to_db

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """``statements`` run on both backends (PostgreSQL reads them translated, ``dialect``);
    ``sqlite`` and ``postgresql`` run as written, after them, on that backend only."""

    version: int
    description: str
    statements: tuple[str, ...]
    sqlite: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()

    def native(self, dialect: str) -> tuple[str, ...]:
        return self.postgresql if dialect == "postgresql" else self.sqlite


_V1 = (
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        account_id TEXT REFERENCES accounts(id) ON DELETE CASCADE,  -- NULL: every account
        token_sha256 BLOB NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
        origin TEXT NOT NULL CHECK (origin IN ('env', 'generated')),
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('gateway_managed', 'custom', 'mtls')),
        name TEXT NOT NULL,
        certificate_pem TEXT NOT NULL,
        chain_pem TEXT NOT NULL,
        sealed_private_key BLOB,
        fingerprint TEXT NOT NULL,
        issuer_org TEXT NOT NULL,
        issuer_raw TEXT NOT NULL,
        serial TEXT NOT NULL,
        signature_algorithm TEXT NOT NULL,
        binding_status TEXT CHECK (binding_status IN
            ('inactive', 'pending_deployment', 'available', 'pending_deletion')),
        in_use INTEGER NOT NULL CHECK (in_use IN (0, 1)),
        auto_generated INTEGER NOT NULL CHECK (auto_generated IN (0, 1)),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        uploaded_on TEXT NOT NULL,
        expires_on TEXT NOT NULL,
        CHECK ((kind = 'mtls') = (sealed_private_key IS NULL)),
        CHECK (kind != 'mtls' OR binding_status IS NULL),
        CHECK (kind != 'gateway_managed' OR binding_status IS NOT NULL),
        CHECK (in_use = 0 OR binding_status = 'available')
    )""",
    "CREATE INDEX certificates_by_account ON certificates(account_id, created_at)",
    "CREATE UNIQUE INDEX one_in_use_per_account ON certificates(account_id) WHERE in_use = 1",
    """CREATE TABLE ca_generations (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX ca_generations_by_account ON ca_generations(account_id, at)",
    """CREATE TABLE gateway_configuration (
        account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        settings TEXT NOT NULL CHECK (json_valid(settings) AND json_type(settings) = 'object'),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        started_at TEXT NOT NULL,
        last_heartbeat TEXT NOT NULL
    )""",
    """CREATE TABLE node_loaded_cas (
        node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        certificate_id TEXT NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL,
        loaded_at TEXT NOT NULL,
        PRIMARY KEY (node_id, certificate_id)
    )""",
    "CREATE INDEX node_loaded_cas_by_certificate ON node_loaded_cas(certificate_id)",
)

# Gateway rules, Access policies and Access applications saved through the API. Each body is the
# object's API JSON without the columns beside it (id, precedence, policies, timestamps). An
# application's policies are rows of access_application_policies, in list order; a policy id
# there may name a policy from the policy files (not in the store), so it has no foreign key:
# the policy service checks references.
_V2 = (
    """CREATE TABLE gateway_rules (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        precedence INTEGER NOT NULL CHECK (precedence >= 0),
        body TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object'),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id)
    )""",
    "CREATE INDEX gateway_rules_by_precedence ON gateway_rules(account_id, precedence)",
    """CREATE TABLE access_policies (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        body TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object'),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id)
    )""",
    """CREATE TABLE access_applications (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        body TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object'),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id)
    )""",
    """CREATE TABLE access_application_policies (
        account_id TEXT NOT NULL,
        application_id TEXT NOT NULL,
        position INTEGER NOT NULL CHECK (position >= 0),
        policy_id TEXT NOT NULL,
        precedence INTEGER CHECK (precedence IS NULL OR precedence >= 0),  -- NULL: list position
        PRIMARY KEY (account_id, application_id, position),
        FOREIGN KEY (account_id, application_id)
            REFERENCES access_applications(account_id, id) ON DELETE CASCADE
    )""",
    """CREATE INDEX access_application_policies_by_policy
        ON access_application_policies(account_id, policy_id)""",
)

# Device posture: rules (body as API JSON; ``certificate_id`` mirrors input.certificate_id so that
# an mTLS certificate a rule uses is not deleted), enrollment tokens and device secrets (SHA-256
# hashes only), server nonces for proof of possession (single use), the latest result of each
# rule on each device, and the posture log of every result (and every refused report).
_V3 = (
    """CREATE TABLE device_posture_rules (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        certificate_id TEXT,
        body TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object'),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id)
    )""",
    """CREATE INDEX device_posture_rules_by_certificate
        ON device_posture_rules(account_id, certificate_id)""",
    """CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        secret_sha256 BLOB NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
        email TEXT NOT NULL,  -- '': the enrolling device names its user
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        device_id TEXT,
        CHECK ((used_at IS NULL) = (device_id IS NULL))
    )""",
    """CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
        name TEXT NOT NULL,
        os TEXT NOT NULL,
        os_version TEXT NOT NULL,
        serial_number TEXT NOT NULL,
        hostname TEXT NOT NULL,
        email TEXT NOT NULL,
        ip TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_seen TEXT NOT NULL
    )""",
    "CREATE INDEX devices_by_account ON devices(account_id, created_at)",
    "CREATE INDEX devices_by_email ON devices(account_id, email)",
    """CREATE TABLE posture_nonces (
        nonce BLOB PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX posture_nonces_by_expiry ON posture_nonces(expires_at)",
    "CREATE INDEX posture_nonces_by_device ON posture_nonces(device_id)",
    """CREATE TABLE posture_results (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        rule_id TEXT NOT NULL,
        success INTEGER NOT NULL CHECK (success IN (0, 1)),
        verified INTEGER NOT NULL CHECK (verified IN (0, 1)),
        reason TEXT NOT NULL,
        certificate_fingerprint TEXT NOT NULL,
        certificate_cn TEXT,
        at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        CHECK (success = 0 OR verified = 1),
        PRIMARY KEY (device_id, rule_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX posture_results_by_rule ON posture_results(rule_id)",
    """CREATE TABLE posture_logs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,  -- no foreign key: the log outlives a deleted device
        rule_id TEXT NOT NULL,    -- '': about the device, not one rule (a refused secret)
        rule_name TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'refused')),
        verified INTEGER NOT NULL CHECK (verified IN (0, 1)),
        reason TEXT NOT NULL,
        certificate_fingerprint TEXT NOT NULL,
        certificate_cn TEXT,
        at TEXT NOT NULL,
        expires_at TEXT
    )""",
    "CREATE INDEX posture_logs_by_device ON posture_logs(account_id, device_id, seq)",
    "CREATE INDEX posture_logs_by_rule ON posture_logs(account_id, rule_id, seq)",
    "CREATE INDEX posture_logs_by_account ON posture_logs(account_id, seq)",
)

# CA installation by the agent (issue 5): each device's latest trust store report, replaced whole
# by the next one. One row per report (when), one per store in it (in report order, with the
# store's error), one per fingerprint installed in a store (SHA-256, upper-case colon hex).
# Deleting the device deletes its report; fingerprints have no foreign key: a report may name a
# certificate the server no longer has (one the agent installed and could not remove yet).
_V4 = (
    """CREATE TABLE device_trust_reports (
        device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        reported_at TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE device_trust_stores (
        device_id TEXT NOT NULL REFERENCES device_trust_reports(device_id) ON DELETE CASCADE,
        store TEXT NOT NULL CHECK (store = 'system' OR store GLOB 'nss:/?*'),
        position INTEGER NOT NULL CHECK (position >= 0),
        error TEXT NOT NULL,
        PRIMARY KEY (device_id, store),
        UNIQUE (device_id, position)
    ) WITHOUT ROWID""",
    """CREATE TABLE device_trust_installed (
        device_id TEXT NOT NULL,
        store TEXT NOT NULL,
        fingerprint TEXT NOT NULL CHECK (length(fingerprint) = 95),
        PRIMARY KEY (device_id, store, fingerprint),
        FOREIGN KEY (device_id, store)
            REFERENCES device_trust_stores(device_id, store) ON DELETE CASCADE
    ) WITHOUT ROWID""",
)

# Admin API tokens get a name, so that `gateway token list` tells apart the tokens it made.
_V5 = ("ALTER TABLE api_tokens ADD COLUMN name TEXT NOT NULL DEFAULT ''",)

# Device addresses for transparent mode (issue 16): the addresses an agent registered (replaced
# by each report, with when first and last seen) and the networks an admin bound to a device.
# A network is canonical CIDR text ("10.0.0.5/32", "2001:db8::/64").
_V6 = (
    """CREATE TABLE device_addresses (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        network TEXT NOT NULL CHECK (network GLOB '*/*'),
        source TEXT NOT NULL CHECK (source IN ('agent', 'admin')),
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (device_id, source, network)
    ) WITHOUT ROWID""",
    "CREATE INDEX device_addresses_by_account ON device_addresses(account_id, network)",
)

# Each device's WireGuard tunnel (issue 16): its own UDP port and address, the gateway's and the
# device's key pairs (private keys sealed under the master key, bound to the device id).
_V7 = (
    """CREATE TABLE wireguard_tunnels (
        device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        port INTEGER NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),
        address TEXT NOT NULL UNIQUE,
        server_public_key TEXT NOT NULL CHECK (length(server_public_key) = 44),
        client_public_key TEXT NOT NULL UNIQUE CHECK (length(client_public_key) = 44),
        sealed_server_key BLOB NOT NULL,
        sealed_client_key BLOB NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID""",
)

# Gateway lists (issue 13): one row per list (``revision`` bumps at every save, so a reader can
# tell a list changed without reading its items) and one per item, unique per list, in order.
_V8 = (
    """CREATE TABLE gateway_lists (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('DOMAIN', 'HOST', 'URL', 'IP', 'EMAIL', 'SERIAL')),
        revision INTEGER NOT NULL CHECK (revision >= 1),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id)
    )""",
    """CREATE TABLE gateway_list_items (
        account_id TEXT NOT NULL,
        list_id TEXT NOT NULL,
        position INTEGER NOT NULL CHECK (position >= 0),
        value TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (account_id, list_id, value),
        FOREIGN KEY (account_id, list_id) REFERENCES gateway_lists(account_id, id) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX gateway_list_items_by_position ON gateway_list_items(account_id, list_id, position)",
)

# CA rotations (issue 12): one row per rotation (what was asked, where it is; ``revision`` bumps
# at every change, so that two drivers on one store never both act on the same step) and one per
# step it took, in order. At most one open rotation per account. Certificate ids have no foreign
# key: a rotation's record outlives the certificates it names.
_V9 = (
    """CREATE TABLE ca_rotations (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'auto')),
        state TEXT NOT NULL CHECK (state IN
            ('running', 'paused', 'held', 'completed', 'cancelled', 'failed')),
        step TEXT NOT NULL CHECK (step IN ('deploy', 'install', 'grace', 'retire', 'done')),
        new_certificate_id TEXT NOT NULL,
        old_certificate_id TEXT,
        coverage INTEGER NOT NULL CHECK (coverage BETWEEN 0 AND 100),
        deadline TEXT NOT NULL,
        grace_seconds INTEGER NOT NULL CHECK (grace_seconds >= 0),
        on_deadline TEXT NOT NULL CHECK (on_deadline IN ('hold', 'proceed')),
        message TEXT NOT NULL,
        revision INTEGER NOT NULL CHECK (revision >= 1),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        switched_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX ca_rotations_by_account ON ca_rotations(account_id, created_at)",
    "CREATE UNIQUE INDEX one_open_rotation_per_account ON ca_rotations(account_id)"
    " WHERE state IN ('running', 'paused', 'held')",
    """CREATE TABLE ca_rotation_steps (
        rotation_id TEXT NOT NULL REFERENCES ca_rotations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq >= 1),
        at TEXT NOT NULL,
        step TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (rotation_id, seq)
    ) WITHOUT ROWID""",
)

# The Windows user's Root store gets a name in trust reports (`windows:CurrentUser\Root`, the
# agent's `--user`): the agent installs roots there, and a report must say so. The platforms'
# system stores (Linux's, the macOS System keychain, Windows' LocalMachine\Root) stay `system`.
# SQLite cannot change a CHECK in place: the stores table is made again under a new name and
# renamed, its installed fingerprints copied aside and back (dropping the stores table with
# them in place would cascade to them).
_V10 = (
    """CREATE TABLE device_trust_installed_copy (
        device_id TEXT NOT NULL,
        store TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (device_id, store, fingerprint)
    ) WITHOUT ROWID""",
    "INSERT INTO device_trust_installed_copy SELECT device_id, store, fingerprint FROM device_trust_installed",
    "DROP TABLE device_trust_installed",
    """CREATE TABLE device_trust_stores_v10 (
        device_id TEXT NOT NULL REFERENCES device_trust_reports(device_id) ON DELETE CASCADE,
        store TEXT NOT NULL CHECK (
            store = 'system' OR store GLOB 'nss:/?*' OR store = 'windows:CurrentUser\\Root'
        ),
        position INTEGER NOT NULL CHECK (position >= 0),
        error TEXT NOT NULL,
        PRIMARY KEY (device_id, store),
        UNIQUE (device_id, position)
    ) WITHOUT ROWID""",
    "INSERT INTO device_trust_stores_v10 SELECT device_id, store, position, error FROM device_trust_stores",
    "DROP TABLE device_trust_stores",
    "ALTER TABLE device_trust_stores_v10 RENAME TO device_trust_stores",
    _V4[2],  # device_trust_installed, as version 4 made it
    "INSERT INTO device_trust_installed SELECT device_id, store, fingerprint FROM device_trust_installed_copy",
    "DROP TABLE device_trust_installed_copy",
)

# The change journal (issue 11): which devices, whose posture rules, and whether anything a
# data-plane node loads changed, one row per change, written by triggers in the transaction that
# made it, so that no code path can change a row without saying so. A node that follows the
# store reads the rows after the last it read and forgets only those devices (``changes``).
# Writers run one at a time on both backends (BEGIN IMMEDIATE; PostgreSQL's writer lock), so
# ``seq`` grows in commit order. The journal keeps its last 10,000 rows: a reader that fell
# further behind finds its last row gone and forgets everything. Trigger and function names end
# in ``_journal``.
_JOURNALED_KEYS = (  # table, kind, the column whose value is the key
    ("devices", "device", "id"),
    ("posture_results", "device", "device_id"),
    ("wireguard_tunnels", "device", "device_id"),
    ("device_addresses", "address", "device_id"),
    ("device_posture_rules", "rules", "account_id"),
)
_JOURNALED_PLANE = (  # what Revisions.data_plane fingerprints, and the rows its parents stand for
    "accounts",
    "certificates",
    "gateway_configuration",
    "gateway_rules",
    "access_policies",
    "access_applications",
    "access_application_policies",
    "gateway_lists",
    "gateway_list_items",
)
JOURNAL_KEEP = 10_000
_EVENTS = (("insert", "INSERT", "new"), ("update", "UPDATE", "new"), ("delete", "DELETE", "old"))
_V11 = (
    """CREATE TABLE store_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('device', 'address', 'rules', 'plane')),
        key TEXT NOT NULL
    )""",
)
_V11_SQLITE = (
    *(
        f"""CREATE TRIGGER {table}_{event}_journal AFTER {verb} ON {table} BEGIN
            INSERT INTO store_changes (kind, key) VALUES ('{kind}', {row}.{column});
        END"""
        for table, kind, column in _JOURNALED_KEYS
        for event, verb, row in _EVENTS
    ),
    *(
        f"""CREATE TRIGGER {table}_{event}_journal AFTER {verb} ON {table} BEGIN
            INSERT INTO store_changes (kind, key) VALUES ('plane', '');
        END"""
        for table in _JOURNALED_PLANE
        for event, verb, _ in _EVENTS
    ),
    f"""CREATE TRIGGER store_changes_pruned_journal AFTER INSERT ON store_changes
        WHEN new.seq % 1000 = 0 BEGIN
            DELETE FROM store_changes WHERE seq <= new.seq - {JOURNAL_KEEP};
        END""",
)
# PostgreSQL: one trigger per statement (transition tables: a group commit's COPY of many
# results writes one row per device, not one per result); a plane statement writes one row.
_V11_POSTGRESQL = (
    """CREATE FUNCTION store_changes_of_rows_journal() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        EXECUTE format(
            'INSERT INTO store_changes (kind, key) SELECT DISTINCT %L, %I FROM changed_rows',
            TG_ARGV[0], TG_ARGV[1]
        );
        RETURN NULL;
    END $f$""",
    """CREATE FUNCTION store_changes_of_plane_journal() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO store_changes (kind, key) VALUES ('plane', '');
        RETURN NULL;
    END $f$""",
    f"""CREATE FUNCTION store_changes_pruned_journal() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        DELETE FROM store_changes WHERE seq <= NEW.seq - {JOURNAL_KEEP};
        RETURN NULL;
    END $f$""",
    *(
        f"""CREATE TRIGGER {table}_{event}_journal AFTER {verb} ON {table}
            REFERENCING {row.upper()} TABLE AS changed_rows FOR EACH STATEMENT
            EXECUTE FUNCTION store_changes_of_rows_journal('{kind}', '{column}')"""
        for table, kind, column in _JOURNALED_KEYS
        for event, verb, row in _EVENTS
    ),
    *(
        f"""CREATE TRIGGER {table}_journal AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION store_changes_of_plane_journal()"""
        for table in _JOURNALED_PLANE
    ),
    """CREATE TRIGGER store_changes_pruned_journal AFTER INSERT ON store_changes
        FOR EACH ROW WHEN (NEW.seq % 1000 = 0) EXECUTE FUNCTION store_changes_pruned_journal()""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, tokens, certificates, configuration, nodes", _V1),
    Migration(2, "gateway rules, Access policies and applications", _V2),
    Migration(3, "device posture: rules, enrollment, devices, nonces, results, logs", _V3),
    Migration(4, "device trust stores: the agent's report of installed root CAs", _V4),
    Migration(5, "API token names", _V5),
    Migration(6, "device addresses: registered by agents, bound by admins (transparent mode)", _V6),
    Migration(7, "WireGuard tunnels: a port, an address and key pairs per device", _V7),
    Migration(8, "Gateway lists and their items", _V8),
    Migration(9, "CA rotations and their steps", _V9),
    Migration(10, "device trust stores: the Windows user's Root store has a name", _V10),
    Migration(
        11, "the change journal: what changed, for the nodes that follow", _V11, _V11_SQLITE, _V11_POSTGRESQL
    ),
)


def _ensure_version_table(db: Database) -> None:
    db.connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at TEXT NOT NULL
        )"""
    )


def current_version(db: Database) -> int:
    _ensure_version_table(db)
    return _version(db)


def _version(db: Database) -> int:
    row = db.connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _check_known(version: int, latest: int) -> None:
    if version > latest:
        raise StoreError(
            f"database schema is version {version}, this gateway knows up to {latest}: "
            "upgrade the gateway (or point it at the database of its own version)"
        )


def migrate(db: Database, now: datetime, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply every migration newer than the database; return the resulting version.

    Several processes may start at once on one database: on PostgreSQL one holds the migration
    lock while the others wait; on both backends each migration re-reads the version inside its
    write transaction, so a migration another process applied meanwhile is skipped."""
    latest = migrations[-1].version if migrations else 0
    with db.migration_lock():
        _ensure_version_table(db)
        version = _version(db)
        _check_known(version, latest)
        for migration in migrations:
            if migration.version <= version:
                continue
            with db.transaction() as conn:
                version = _version(db)
                _check_known(version, latest)
                if migration.version <= version:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                for statement in migration.native(db.dialect):
                    db.execute_native(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, to_db(now)),
                )
            logger.info("store migrated to version %d: %s", migration.version, migration.description)
            version = migration.version
    return version
