"""The change journal (proxy/store/changes.py, migration 11) on both backends: every write of a
device, its results, addresses or tunnel, of an account's posture rules, or of what a node
loads, is in the journal of another connection; nothing else is; a reader that cannot tell (its
first look, pruned rows, too many rows) is told everything."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from proxy.store import Account, Changes, Device, PostureResult, Store, StoredPostureRule
from proxy.store.changes import EVERYTHING, MAX_ROWS, NOTHING
from proxy.store.migrations import JOURNAL_KEEP, MIGRATIONS, migrate
from proxy.store.revisions import _DATA_PLANE
from proxy.store.store import open_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A, B = "a" * 32, "b" * 32


def _device(device_id: str, account_id: str = A) -> Device:
    return Device(
        id=device_id, account_id=account_id, secret_sha256=b"\0" * 32, name="n", os="linux",
        os_version="", serial_number="", hostname="h", email="", ip="", created_at=T0,
        updated_at=T0, last_seen=T0,
    )  # fmt: skip


def _result(device_id: str, rule_id: str = "r1") -> PostureResult:
    return PostureResult(
        device_id, rule_id, False, False, "no certificate", "", None, T0, T0 + timedelta(hours=1)
    )


@pytest.fixture
def reader(store: Store) -> Iterator[Store]:
    """A second connection to the store, as a worker or a node has, that has looked once."""
    other = Store.open(store.path, migrations=False)
    assert other.changes.take() == EVERYTHING  # its first look cannot tell what it missed
    yield other
    other.close()


def test_each_kind_of_change_is_named(store: Store, reader: Store) -> None:
    assert reader.changes.take() == NOTHING
    store.accounts.add(Account(A, "acme", T0))
    assert reader.changes.take() == Changes(plane=True)
    store.devices.add(_device("d1"))
    store.devices.add(_device("d2"))
    assert reader.changes.take() == Changes(devices=frozenset({"d1", "d2"}))
    with store.transaction():  # what a group commit writes for two devices
        store.posture_results.save([_result("d1"), _result("d1", "r2"), _result("d2")])
        store.devices.seen_many([("d1", "10.0.0.7", T0 + timedelta(minutes=1))])
    assert reader.changes.take() == Changes(devices=frozenset({"d1", "d2"}))
    store.posture_results.save([_result("d2")])  # an upsert that replaces a result
    assert reader.changes.take() == Changes(devices=frozenset({"d2"}))
    store.device_addresses.register("d2", A, ["10.0.0.9/32"], T0)
    assert reader.changes.take() == Changes(addresses=True)
    store.posture_rules.save(StoredPostureRule(A, "r1", {"name": "cert"}, T0, T0))
    assert reader.changes.take() == Changes(rule_accounts=frozenset({A}))
    store.posture_results.delete_for_rule("r1")
    store.posture_rules.delete(A, "r1")
    assert reader.changes.take() == Changes(devices=frozenset({"d1", "d2"}), rule_accounts=frozenset({A}))
    store.devices.delete("d1")  # its results and addresses go with it
    assert reader.changes.take() == Changes(devices=frozenset({"d1"}))
    assert reader.changes.take() == NOTHING  # read once


def test_what_a_node_does_not_cache_is_not_a_change(store: Store, reader: Store) -> None:
    store.accounts.add(Account(A, "acme", T0))
    reader.changes.take()
    store.nodes.register("node-1", "node one", T0)
    store.nodes.heartbeat("node-1", T0 + timedelta(seconds=10))
    store.posture_logs.add([])
    assert reader.changes.take() == NOTHING


def test_deleting_an_account_names_its_devices(store: Store, reader: Store) -> None:
    store.accounts.add(Account(A, "acme", T0))
    store.accounts.add(Account(B, "other", T0))
    for device_id, account_id in (("d1", A), ("d2", A), ("d3", B)):
        store.devices.add(_device(device_id, account_id))
    store.posture_rules.save(StoredPostureRule(A, "r1", {"name": "cert"}, T0, T0))
    reader.changes.take()
    store.accounts.delete(A)  # cascades: devices, rules, configuration
    changes = reader.changes.take()
    assert changes.devices == {"d1", "d2"} and changes.rule_accounts == {A} and changes.plane
    assert not changes.everything


def test_a_reader_whose_last_row_was_pruned_is_told_everything(store: Store, reader: Store) -> None:
    store.accounts.add(Account(A, "acme", T0))
    store.devices.add(_device("d1"))
    assert reader.changes.take().devices == {"d1"}
    with store.transaction():  # the journal pruned past the reader's last row
        store._db.connection.execute("DELETE FROM store_changes")
    store.devices.add(_device("d2"))
    assert reader.changes.take() == EVERYTHING
    store.devices.add(_device("d3"))
    assert reader.changes.take() == Changes(devices=frozenset({"d3"}))  # exact again


def test_more_rows_than_a_reader_takes_at_once_are_everything(store: Store, reader: Store) -> None:
    store.accounts.add(Account(A, "acme", T0))
    reader.changes.take()
    with store.transaction():
        for i in range(MAX_ROWS + 1):
            store.devices.add(_device(f"d{i}"))
    assert reader.changes.take() == EVERYTHING
    store.devices.delete("d0")
    assert reader.changes.take() == Changes(devices=frozenset({"d0"}))


def test_the_journal_keeps_its_last_rows(store: Store) -> None:
    written = JOURNAL_KEEP + 2_500
    with store.transaction():
        store._db.connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO store_changes (kind, key) SELECT 'plane', '' FROM n",
            (written,),
        )
    count, newest = store._db.connection.execute("SELECT count(*), max(seq) FROM store_changes").fetchone()
    assert JOURNAL_KEEP <= count <= JOURNAL_KEEP + 1_000 and newest >= written


def test_every_table_a_node_caches_from_has_journal_triggers(store: Store) -> None:
    """A table added to what a node fingerprints (``Revisions.data_plane``) without a trigger
    would change unseen: the journal would never say ``plane``."""
    fingerprinted = {t for query in _DATA_PLANE for t in re.findall(r"\bFROM (\w+)", query)}
    device_tables = {
        "devices",
        "posture_results",
        "wireguard_tunnels",
        "device_addresses",
        "device_posture_rules",
    }
    if store._db.dialect == "postgresql":
        rows = store._db.connection.execute(
            "SELECT event_object_table, event_manipulation FROM information_schema.triggers"
            " WHERE trigger_name LIKE '%_journal'"
        ).fetchall()
    else:
        rows = store._db.connection.execute(
            "SELECT tbl_name, upper(substr(sql, instr(sql, 'AFTER ') + 6, 6)) FROM sqlite_master"
            " WHERE type = 'trigger' AND name LIKE '%_journal'"
        ).fetchall()
    events: dict[str, set[str]] = {}
    for table, event in rows:
        events.setdefault(table, set()).add(event)
    for table in fingerprinted | device_tables:
        assert events.get(table) == {"INSERT", "UPDATE", "DELETE"}, table


def test_a_store_made_before_the_journal_is_journaled_once_migrated(store_url: str) -> None:
    """Version 10 → 11 on a store with devices: the triggers take over the existing tables."""
    db = open_database(store_url)
    try:
        assert migrate(db, T0, MIGRATIONS[:10]) == 10
        admin = Store(db)
        admin.accounts.add(Account(A, "acme", T0))
        admin.devices.add(_device("d1"))
        assert migrate(db, T0) == MIGRATIONS[-1].version
        reader = Store.open(store_url, migrations=False)
        try:
            reader.changes.take()
            admin.devices.seen_many([("d1", "10.0.0.7", T0 + timedelta(minutes=1))])
            assert reader.changes.take() == Changes(devices=frozenset({"d1"}))
        finally:
            reader.close()
    finally:
        db.close()
