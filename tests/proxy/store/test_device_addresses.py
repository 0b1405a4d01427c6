"""proxy/store/device_addresses.py: registered addresses replaced per report, admin bindings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.store import Account, Device, Store
from proxy.store.device_addresses import AddressSource

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _store_with_device(store: Store) -> tuple[Store, str, str]:
    account_id = "a" * 32
    store.accounts.add(Account(account_id, "acme", T0))
    device = Device(
        id="d1", account_id=account_id, secret_sha256=b"\0" * 32, name="n", os="linux", os_version="",
        serial_number="", hostname="h", email="", ip="", created_at=T0, updated_at=T0, last_seen=T0,
    )  # fmt: skip
    store.devices.add(device)
    return store, account_id, device.id


def test_a_report_replaces_the_agents_addresses_and_keeps_first_seen(store: Store) -> None:
    store, account_id, device_id = _store_with_device(store)
    store.device_addresses.register(device_id, account_id, ["10.0.0.5/32", "10.0.0.6/32"], T0)
    later = T0 + timedelta(minutes=5)
    store.device_addresses.register(device_id, account_id, ["10.0.0.5/32"], later)
    (row,) = store.device_addresses.of_device(device_id)
    assert (row.network, row.source, row.first_seen, row.last_seen) == (
        "10.0.0.5/32",
        AddressSource.AGENT,
        T0,
        later,
    )
    store.device_addresses.register(device_id, account_id, [], later)
    assert store.device_addresses.of_device(device_id) == []


def test_bindings_survive_reports_and_go_with_the_device(store: Store) -> None:
    store, account_id, device_id = _store_with_device(store)
    store.device_addresses.bind(device_id, account_id, "192.0.2.0/24", T0)
    store.device_addresses.register(device_id, account_id, [], T0)
    assert [a.network for a in store.device_addresses.all()] == ["192.0.2.0/24"]
    assert store.device_addresses.unbind(device_id, "192.0.2.0/24")
    assert not store.device_addresses.unbind(device_id, "192.0.2.0/24")
    store.device_addresses.bind(device_id, account_id, "192.0.2.0/24", T0)
    store.devices.delete(device_id)
    assert store.device_addresses.all() == []
