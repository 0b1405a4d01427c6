"""The store: file mode and durability settings (SQLite), and on both backends (``conftest.py``):
migrations, transactions, constraints, durability."""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from certs.lifecycle import BindingStatus
from proxy.store import Account, CertificateKind, CertificateRecord, Store, StoreError, TrustStoreEntry
from proxy.store.database import INTEGRITY_ERRORS, to_db
from proxy.store.devices import insert_rows
from proxy.store.migrations import MIGRATIONS, Migration, migrate
from proxy.store.store import open_database
from tests.support.clock import START, FakeClock

ACCOUNT = Account(id="0123456789abcdef0123456789abcdef", name="Lab", created_at=START)


def _certificate(cert_id: str, **changes: object) -> CertificateRecord:
    record = CertificateRecord(
        id=cert_id, account_id=ACCOUNT.id, kind=CertificateKind.GATEWAY_MANAGED, name="ca",
        certificate_pem="PEM", chain_pem="", sealed_private_key=b"sealed", fingerprint="AA:BB",
        issuer_org="Lab", issuer_raw="O=Lab", serial="1", signature_algorithm="SHA256WithECDSA",
        binding_status=BindingStatus.INACTIVE, in_use=False, auto_generated=False,
        created_at=START, updated_at=START, uploaded_on=START, expires_on=START + timedelta(days=9),
    )  # fmt: skip
    return replace(record, **changes)  # type: ignore[arg-type]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_file_is_created_0600_with_its_wal(db_path: Path) -> None:
    store = Store.open(db_path)
    store.accounts.add(ACCOUNT)
    assert _mode(db_path) == 0o600
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists() and _mode(wal) == 0o600
    store.close()


def test_existing_file_with_open_mode_is_restricted(db_path: Path) -> None:
    db_path.touch(mode=0o644)
    db_path.chmod(0o644)
    Store.open(db_path).close()
    assert _mode(db_path) == 0o600


def test_pragmas_wal_full_sync_foreign_keys(db_path: Path) -> None:
    store = Store.open(db_path)
    conn = store._db.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.close()


def test_a_store_that_is_not_power_safe_syncs_normally(db_path: Path) -> None:
    telemetry = Store.open(db_path, power_safe=False)
    try:
        conn = telemetry._db.connection
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        telemetry.close()


def test_insert_rows_writes_every_row_in_multi_row_statements() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rows: list[tuple[object, ...]] = [(i, f"v{i}") for i in range(1200)]
    insert_rows(conn, "INSERT INTO t (a, b) VALUES", rows)
    insert_rows(conn, "INSERT INTO t (a, b) VALUES", [])
    assert conn.execute("SELECT count(*), min(a), max(a), max(b) FROM t").fetchone() == (
        1200,
        0,
        1199,
        "v999",
    )
    inserts = [sql for sql in statements if sql.startswith("INSERT")]
    assert len(inserts) == 3  # 495 rows of 2 parameters per statement


def test_migrations_are_recorded_and_idempotent(store_url: str, clock: FakeClock) -> None:
    Store.open(store_url).close()
    Store.open(store_url).close()
    store = Store.open(store_url)
    rows = store._db.connection.execute("SELECT version FROM schema_version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    assert store.schema_version == MIGRATIONS[-1].version
    assert migrate(store._db, clock()) == MIGRATIONS[-1].version
    store.close()


def test_a_new_migration_applies_once(store_url: str, clock: FakeClock) -> None:
    Store.open(store_url).close()
    db = open_database(store_url)
    extra = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "test", ("CREATE TABLE t (x INTEGER)",)))
    assert migrate(db, clock(), extra) == extra[-1].version
    assert migrate(db, clock(), extra) == extra[-1].version
    db.close()


def test_trust_reports_survive_the_migration_that_names_the_windows_user_store(
    store_url: str, clock: FakeClock
) -> None:
    db = open_database(store_url)
    assert migrate(db, clock(), MIGRATIONS[:9]) == 9
    fingerprint = ":".join(["AB"] * 32)
    with db.transaction() as conn:
        conn.execute("INSERT INTO accounts VALUES (?, ?, ?)", (ACCOUNT.id, ACCOUNT.name, to_db(START)))
        conn.execute(
            "INSERT INTO devices VALUES (?, ?, ?, 'pc', 'windows', '11', 'S1', 'pc', 'a@b.c', '', ?, ?, ?)",
            ("d1", ACCOUNT.id, b"s" * 32, to_db(START), to_db(START), to_db(START)),
        )
        conn.execute("INSERT INTO device_trust_reports VALUES ('d1', ?)", (to_db(START),))
        conn.execute("INSERT INTO device_trust_stores VALUES ('d1', 'system', 0, '')")
        conn.execute("INSERT INTO device_trust_stores VALUES ('d1', 'nss:/home/a/.pki/nssdb', 1, 'x')")
        conn.execute("INSERT INTO device_trust_installed VALUES ('d1', 'system', ?)", (fingerprint,))
    assert migrate(db, clock()) == MIGRATIONS[-1].version
    db.close()
    store = Store.open(store_url)
    try:
        report = store.trust_reports.for_device("d1")
        assert report is not None
        assert [(s.store, s.installed, s.error) for s in report.stores] == [
            ("system", (fingerprint,), ""),
            ("nss:/home/a/.pki/nssdb", (), "x"),
        ]
        user = TrustStoreEntry("windows:CurrentUser\\Root", (fingerprint,), "")
        store.trust_reports.replace("d1", [user], START)  # the new name is taken
        report = store.trust_reports.for_device("d1")
        assert report is not None and [s.store for s in report.stores] == ["windows:CurrentUser\\Root"]
        for bad in ("windows:LocalMachine\\Root", "keychain:/Library/Keychains/System.keychain"):
            with pytest.raises(INTEGRITY_ERRORS):  # the platforms' system stores are "system"
                store.trust_reports.replace("d1", [TrustStoreEntry(bad, (), "")], START)
    finally:
        store.close()


def test_newer_schema_is_refused(store_url: str, clock: FakeClock) -> None:
    Store.open(store_url).close()
    db = open_database(store_url)
    db.connection.execute("INSERT INTO schema_version VALUES (999, 'future', 'x')")
    db.close()
    with pytest.raises(
        StoreError,
        match=f"database schema is version 999, this gateway knows up to {MIGRATIONS[-1].version}: upgrade the gateway",
    ):
        Store.open(store_url)


def test_reopen_keeps_data(store_url: str, clock: FakeClock) -> None:
    store = Store.open(store_url)
    store.accounts.add(ACCOUNT)
    store.certificates.add(_certificate("c1"))
    store.configurations.save(ACCOUNT.id, {"tls_decrypt": {"enabled": False}}, clock())
    store.close()
    store = Store.open(store_url)
    assert store.accounts.list() == [ACCOUNT]
    assert store.certificates.get("c1") == _certificate("c1")
    configuration = store.configurations.get(ACCOUNT.id)
    assert configuration is not None and configuration.settings == {"tls_decrypt": {"enabled": False}}
    store.close()


def test_failed_transaction_saves_nothing(store: Store) -> None:
    store.accounts.add(ACCOUNT)
    with pytest.raises(INTEGRITY_ERRORS), store.transaction():
        store.certificates.add(_certificate("c1"))
        store.certificates.add(_certificate("c1"))  # duplicate id
    assert store.certificates.list(ACCOUNT.id) == []


def test_nested_failure_rolls_back_only_the_inner_part(store: Store) -> None:
    store.accounts.add(ACCOUNT)
    with store.transaction():
        store.certificates.add(_certificate("c1"))
        with pytest.raises(ValueError, match="inner"), store.transaction():
            store.certificates.add(_certificate("c2"))
            raise ValueError("inner")
    assert [c.id for c in store.certificates.list(ACCOUNT.id)] == ["c1"]


def test_after_commit_runs_after_the_outer_commit_only(store: Store) -> None:
    calls: list[str] = []
    with store.transaction():
        store.after_commit(lambda: calls.append("outer"))
        assert calls == []
    assert calls == ["outer"]
    with pytest.raises(RuntimeError, match="rolled back"), store.transaction():
        store.after_commit(lambda: calls.append("rolled back"))
        raise RuntimeError("rolled back")
    assert calls == ["outer"]


def test_at_most_one_certificate_in_use_per_account(store: Store, clock: FakeClock) -> None:
    store.accounts.add(ACCOUNT)
    for cert_id in ("c1", "c2"):
        store.certificates.add(_certificate(cert_id, binding_status=BindingStatus.AVAILABLE))
    store.certificates.set_in_use(ACCOUNT.id, "c1", clock())
    store.certificates.set_in_use(ACCOUNT.id, "c2", clock())
    assert {c.id: c.in_use for c in store.certificates.list(ACCOUNT.id)} == {
        "c1": False,
        "c2": True,
    }
    with pytest.raises(INTEGRITY_ERRORS):
        store._db.connection.execute("UPDATE certificates SET in_use = 1")


def test_schema_checks_refuse_inconsistent_rows(store: Store) -> None:
    store.accounts.add(ACCOUNT)
    with pytest.raises(INTEGRITY_ERRORS):  # in use but not available
        store.certificates.add(_certificate("c1", in_use=True))
    with pytest.raises(INTEGRITY_ERRORS):  # an mTLS upload without key has no status
        store.certificates.add(_certificate("c2", kind=CertificateKind.MTLS, sealed_private_key=None))
    with pytest.raises(INTEGRITY_ERRORS):  # account ids are 32 hex characters
        store.accounts.add(Account(id="not-hex", name="x", created_at=START))


def test_deleting_a_certificate_forgets_nodes_loading_it(store: Store, clock: FakeClock) -> None:
    store.accounts.add(ACCOUNT)
    store.certificates.add(_certificate("c1"))
    store.nodes.heartbeat("n1", clock())
    store.nodes.replace_loaded("n1", ACCOUNT.id, {"c1": "AA:BB", "gone": "CC"}, clock())
    assert [(r.node_id, r.certificate_id) for r in store.nodes.loaded(ACCOUNT.id)] == [("n1", "c1")]
    store.certificates.delete("c1")
    assert store.nodes.loaded(ACCOUNT.id) == []


def test_a_heartbeat_reads_every_account_in_one_query_each(store: Store, clock: FakeClock) -> None:
    other = Account(id="b" * 32, name="Other", created_at=START)
    store.accounts.add(ACCOUNT)
    store.accounts.add(other)
    store.certificates.add(_certificate("c1", binding_status=BindingStatus.AVAILABLE))
    store.certificates.add(_certificate("c2", account_id=other.id))  # inactive
    store.certificates.add(
        _certificate("c3", account_id=other.id, binding_status=BindingStatus.PENDING_DEPLOYMENT)
    )
    found = store.certificates.with_status({BindingStatus.PENDING_DEPLOYMENT, BindingStatus.AVAILABLE})
    assert [(c.id, c.account_id) for c in found] == [("c1", ACCOUNT.id), ("c3", other.id)]
    assert store.certificates.with_status(()) == []
    store.nodes.heartbeat("n1", clock())
    store.nodes.replace_loaded("n1", ACCOUNT.id, {"c1": "AA"}, clock())
    store.nodes.replace_loaded("n1", other.id, {"c3": "BB"}, clock())
    assert store.nodes.loaded_by("n1") == {ACCOUNT.id: {"c1": "AA"}, other.id: {"c3": "BB"}}
    assert store.nodes.loaded_by("n2") == {}


def test_generations_are_kept_after_the_certificate_goes(store: Store, clock: FakeClock) -> None:
    store.accounts.add(ACCOUNT)
    store.certificates.record_generation(ACCOUNT.id, clock())
    assert store.certificates.generations_since(ACCOUNT.id, clock() - timedelta(hours=24)) == [clock()]
    assert store.certificates.generations_since(ACCOUNT.id, clock()) == []


def test_times_round_trip_as_aware_utc(store: Store) -> None:
    store.accounts.add(ACCOUNT)
    stored = store.accounts.get(ACCOUNT.id)
    assert stored is not None and stored.created_at == START and stored.created_at.tzinfo is not None


def test_acknowledged_write_survives_sigkill(store_url: str) -> None:
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal\n"
        "from proxy.store import Store\n"
        "from tests.proxy.store.test_store import ACCOUNT\n"
        f"store = Store.open({store_url!r})\n"
        "store.accounts.add(ACCOUNT)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, check=False)
    assert done.returncode == -signal.SIGKILL
    store = Store.open(store_url)
    assert store.accounts.list() == [ACCOUNT]
    store.close()
