"""proxy/store/devices.py on both backends: nonces redeemed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.store import Account, Device, Nonce, Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _device(store: Store) -> str:
    store.accounts.add(Account("a" * 32, "acme", T0))
    store.devices.add(
        Device(
            id="d1", account_id="a" * 32, secret_sha256=b"\0" * 32, name="n", os="linux",
            os_version="", serial_number="", hostname="h", email="", ip="", created_at=T0,
            updated_at=T0, last_seen=T0,
        )
    )  # fmt: skip
    return "d1"


def test_nonces_are_claimed_once_across_calls_and_within_one(store: Store) -> None:
    device_id = _device(store)

    def nonce(raw: bytes) -> Nonce:
        return Nonce(raw, device_id, T0, T0 + timedelta(minutes=2), used_at=T0)

    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    with store.transaction():
        assert store.nonces.claim_many([nonce(a), nonce(b), nonce(a)]) == {a, b}
    with store.transaction():  # a replay beside a fresh one, then again in the same transaction
        assert store.nonces.claim_many([nonce(b), nonce(c)]) == {c}
        assert store.nonces.claim_many([nonce(c)]) == set()
    assert store.nonces.claim_many([]) == set()
    assert store.nonces.claim(nonce(a)) is False
