"""certs/sealing.py: AES-256-GCM sealing of private keys at rest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from certs.errors import CertError
from certs.sealing import KeySealer

SECRET = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
CONTEXT = b"gateway-certificate:3f2a9c"


@pytest.fixture
def sealer() -> KeySealer:
    return KeySealer(KeySealer.generate_master_key())


def test_seal_round_trips(sealer: KeySealer) -> None:
    assert sealer.unseal(sealer.seal(SECRET, context=CONTEXT), context=CONTEXT) == SECRET
    assert sealer.unseal(sealer.seal(b"", context=b""), context=b"") == b""


def test_sealed_format_is_version_nonce_ciphertext_tag(sealer: KeySealer) -> None:
    blob = sealer.seal(SECRET, context=CONTEXT)
    assert blob.startswith(b"v1")
    assert len(blob) == 2 + 12 + len(SECRET) + 16
    assert SECRET not in blob and b"PRIVATE KEY" not in blob


def test_every_seal_uses_a_fresh_nonce(sealer: KeySealer) -> None:
    blobs = {sealer.seal(SECRET, context=CONTEXT) for _ in range(20)}
    assert len(blobs) == 20
    assert len({b[2:14] for b in blobs}) == 20


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: _flip(b, 5), id="nonce"),
        pytest.param(lambda b: _flip(b, 20), id="ciphertext"),
        pytest.param(lambda b: _flip(b, len(b) - 1), id="tag"),
        pytest.param(lambda b: b[:-1], id="truncated-tag"),
    ],
)
def test_unseal_refuses_tampered_data(sealer: KeySealer, tamper: Callable[[bytes], bytes]) -> None:
    blob = sealer.seal(SECRET, context=CONTEXT)
    with pytest.raises(
        CertError, match=r"^could not decrypt private key: wrong master key or corrupted data$"
    ):
        sealer.unseal(tamper(blob), context=CONTEXT)


def test_unseal_refuses_a_wrong_master_key(sealer: KeySealer) -> None:
    blob = sealer.seal(SECRET, context=CONTEXT)
    other = KeySealer(KeySealer.generate_master_key())
    with pytest.raises(CertError, match=r"wrong master key or corrupted data"):
        other.unseal(blob, context=CONTEXT)


def test_unseal_refuses_a_wrong_context(sealer: KeySealer) -> None:
    blob = sealer.seal(SECRET, context=CONTEXT)
    with pytest.raises(CertError, match=r"wrong master key or corrupted data"):
        sealer.unseal(blob, context=b"gateway-certificate:other")


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", r"unknown sealed format \(expected version v1\)"),
        (b"v2" + bytes(40), r"unknown sealed format"),
        (b"v1" + bytes(20), r"sealed data is truncated"),
    ],
)
def test_unseal_refuses_malformed_blobs(sealer: KeySealer, blob: bytes, match: str) -> None:
    with pytest.raises(CertError, match=match):
        sealer.unseal(blob, context=CONTEXT)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_master_key_must_be_32_bytes(size: int) -> None:
    message = rf"^master key must be exactly 32 bytes \(AES-256\), got {size} bytes$"
    with pytest.raises(CertError, match=message):
        KeySealer(bytes(size))


def test_master_key_must_be_bytes() -> None:
    with pytest.raises(CertError, match=r"master key must be exactly 32 bytes \(AES-256\), got str$"):
        KeySealer("x" * 32)  # type: ignore[arg-type]


def test_generated_master_keys_are_random_32_bytes() -> None:
    keys = {KeySealer.generate_master_key() for _ in range(10)}
    assert len(keys) == 10 and all(len(k) == 32 for k in keys)


def test_repr_hides_the_master_key() -> None:
    key = KeySealer.generate_master_key()
    assert repr(KeySealer(key)) == "KeySealer(<master key hidden>)"
    assert key.hex() not in repr(KeySealer(key))


def test_messages_never_contain_the_plaintext(sealer: KeySealer) -> None:
    blob = sealer.seal(SECRET, context=CONTEXT)
    with pytest.raises(CertError, match="wrong master key or corrupted data") as caught:
        KeySealer(KeySealer.generate_master_key()).unseal(blob, context=CONTEXT)
    assert SECRET.decode() not in str(caught.value) and b"MIGH" not in str(caught.value).encode()


def test_derive_is_stable_per_master_key_and_purpose() -> None:
    master = KeySealer.generate_master_key()
    one, again = KeySealer(master), KeySealer(master)
    assert one.derive(purpose=b"admin-tls") == again.derive(purpose=b"admin-tls")
    assert len(one.derive(purpose=b"admin-tls")) == 32
    assert one.derive(purpose=b"admin-tls") != one.derive(purpose=b"other")
    assert KeySealer(KeySealer.generate_master_key()).derive(purpose=b"admin-tls") != one.derive(
        purpose=b"admin-tls"
    )
    assert master not in one.derive(purpose=b"admin-tls", length=64)


def test_derive_needs_a_purpose(sealer: KeySealer) -> None:
    with pytest.raises(CertError, match="needs a purpose"):
        sealer.derive(purpose=b"")
