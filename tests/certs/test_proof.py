"""certs/proof.py: the message format, sign/verify round trips, tampering, wrong keys, refusals."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from certs.errors import CertError
from certs.proof import PROOF_FAILED, proof_message, sign_proof, verify_proof

NONCE = bytes(range(32))
DEVICE = "5a2c7d1e-9f00-4b6e-8c1d-2f3a4b5c6d7e"
RULE = "f0e1d2c3-b4a5-4968-8776-655443322110"


def certificate_for(key: PrivateKeyTypes) -> x509.Certificate:
    """A device certificate holding ``key``'s public key, signed by a throwaway EC CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "laptop-7.corp")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corp Device CA")]))
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )


KEY_MAKERS: dict[str, Callable[[], CertificateIssuerPrivateKeyTypes]] = {
    "EC P-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EC P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "RSA 2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "RSA 3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
}


@pytest.fixture(scope="module")
def keys() -> dict[str, CertificateIssuerPrivateKeyTypes]:
    return {name: make() for name, make in KEY_MAKERS.items()}


@pytest.fixture(scope="module")
def certs(keys: dict[str, CertificateIssuerPrivateKeyTypes]) -> dict[str, x509.Certificate]:
    return {name: certificate_for(key) for name, key in keys.items()}


def _message(**changes: object) -> bytes:
    parts: dict[str, object] = {"nonce": NONCE, "device_id": DEVICE, "rule_id": RULE, **changes}
    return proof_message(**parts)  # type: ignore[arg-type]


# --- the message ----------------------------------------------------------------------------


def test_message_format_is_the_contract() -> None:
    assert proof_message(nonce=b"N" * 16, device_id="dev-1", rule_id="rule-9") == (
        b"gateway-posture-proof-v1\n" + b"N" * 16 + b"\ndev-1\nrule-9"
    )


@pytest.mark.parametrize("length", [16, 17, 32, 64])
def test_nonce_lengths_accepted(length: int) -> None:
    assert _message(nonce=os.urandom(length)).startswith(b"gateway-posture-proof-v1\n")


@pytest.mark.parametrize("length", [0, 1, 15, 65, 1024])
def test_nonce_lengths_refused(length: int) -> None:
    with pytest.raises(CertError, match=f"nonce must be 16 to 64 bytes, got {length}"):
        _message(nonce=b"\x00" * length)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device_id": ""}, "device id must not be empty"),
        ({"device_id": "  "}, "device id must not be empty"),
        ({"rule_id": ""}, "rule id must not be empty"),
        ({"device_id": "a\nb"}, "device id must not contain a line break"),
        ({"rule_id": "r\r"}, "rule id must not contain a line break"),
        ({"rule_id": "r" * 257}, "rule id is 257 characters: at most 256"),
    ],
)
def test_bad_ids_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(CertError, match=message):
        _message(**changes)


@given(
    st.tuples(
        st.binary(min_size=16, max_size=64),
        st.text(
            st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=20
        ),
        st.text(
            st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=20
        ),
    ).filter(lambda t: t[1].strip() != "" and t[2].strip() != ""),
    st.tuples(
        st.binary(min_size=16, max_size=64),
        st.text(
            st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=20
        ),
        st.text(
            st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=20
        ),
    ).filter(lambda t: t[1].strip() != "" and t[2].strip() != ""),
)
def test_different_parts_never_make_the_same_message(
    a: tuple[bytes, str, str], b: tuple[bytes, str, str]
) -> None:
    """Nonces may hold newline bytes; the ids cannot, so the message splits one way only."""
    message_a = proof_message(nonce=a[0], device_id=a[1], rule_id=a[2])
    message_b = proof_message(nonce=b[0], device_id=b[1], rule_id=b[2])
    assert (message_a == message_b) == (a == b)


# --- sign and verify ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEY_MAKERS)
def test_round_trip(
    kind: str, keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    message = _message()
    verify_proof(certs[kind], message, sign_proof(keys[kind], message))  # no exception


@pytest.mark.parametrize("kind", KEY_MAKERS)
@pytest.mark.parametrize(
    "tampered",
    [
        {"nonce": bytes(range(1, 33))},
        {"nonce": NONCE + b"\x00"},
        {"device_id": "5a2c7d1e-9f00-4b6e-8c1d-2f3a4b5c6d7f"},
        {"rule_id": "another-rule"},
    ],
    ids=["other nonce", "longer nonce", "other device", "other rule"],
)
def test_tampered_message_fails(
    kind: str,
    tampered: dict[str, object],
    keys: dict[str, CertificateIssuerPrivateKeyTypes],
    certs: dict[str, x509.Certificate],
) -> None:
    signature = sign_proof(keys[kind], _message())
    with pytest.raises(CertError) as info:
        verify_proof(certs[kind], _message(**tampered), signature)
    assert str(info.value) == PROOF_FAILED
    assert str(info.value) == (
        "proof of possession failed: signature does not verify with the certificate's key"
    )


@pytest.mark.parametrize("kind", KEY_MAKERS)
def test_tampered_signature_fails(
    kind: str, keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    signature = bytearray(sign_proof(keys[kind], _message()))
    signature[len(signature) // 2] ^= 0x01
    with pytest.raises(CertError, match="^proof of possession failed"):
        verify_proof(certs[kind], _message(), bytes(signature))


@pytest.mark.parametrize(
    ("signer", "holder"),
    [
        ("EC P-256", "EC P-384"),
        ("EC P-384", "EC P-256"),
        ("RSA 2048", "RSA 3072"),
        ("EC P-256", "RSA 2048"),
        ("RSA 2048", "EC P-256"),
    ],
)
def test_wrong_key_fails(
    signer: str,
    holder: str,
    keys: dict[str, CertificateIssuerPrivateKeyTypes],
    certs: dict[str, x509.Certificate],
) -> None:
    """A signature made with another key proves nothing for the certificate presented."""
    with pytest.raises(CertError, match="^proof of possession failed"):
        verify_proof(certs[holder], _message(), sign_proof(keys[signer], _message()))


def test_same_curve_other_key_fails(certs: dict[str, x509.Certificate]) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CertError, match="^proof of possession failed"):
        verify_proof(certs["EC P-256"], _message(), sign_proof(other, _message()))


@pytest.mark.parametrize("signature", [b"", b"\x30\x00", b"x" * 1025], ids=["empty", "junk", "huge"])
def test_malformed_signatures_fail(signature: bytes, certs: dict[str, x509.Certificate]) -> None:
    for cert in certs.values():
        with pytest.raises(CertError, match="^proof of possession failed"):
            verify_proof(cert, _message(), signature)


# --- the algorithms, as documented ----------------------------------------------------------


def test_p256_signs_ecdsa_sha256(
    keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    public = certs["EC P-256"].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sign_proof(keys["EC P-256"], _message()), _message(), ec.ECDSA(hashes.SHA256()))


def test_p384_signs_ecdsa_sha384(
    keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    public = certs["EC P-384"].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = sign_proof(keys["EC P-384"], _message())
    public.verify(signature, _message(), ec.ECDSA(hashes.SHA384()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, _message(), ec.ECDSA(hashes.SHA256()))


def test_rsa_signs_pss_sha256_with_digest_length_salt(
    keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    public = certs["RSA 2048"].public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signature = sign_proof(keys["RSA 2048"], _message())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    public.verify(signature, _message(), pss, hashes.SHA256())


def test_rsa_pkcs1v15_signature_is_refused(
    keys: dict[str, CertificateIssuerPrivateKeyTypes], certs: dict[str, x509.Certificate]
) -> None:
    key = keys["RSA 2048"]
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(_message(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(CertError, match="^proof of possession failed"):
        verify_proof(certs["RSA 2048"], _message(), signature)


# --- keys that cannot prove ------------------------------------------------------------------

UNSUPPORTED = {
    "Ed25519": (ed25519.Ed25519PrivateKey.generate, "Ed25519 keys"),
    "EC P-521": (lambda: ec.generate_private_key(ec.SECP521R1()), "EC P-521 key"),
    "RSA 1024": (
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "RSA key of 1024 bits is too weak",
    ),
}


@pytest.mark.parametrize(("make", "message"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_keys_cannot_sign(make: object, message: str) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(CertError, match=message):
        sign_proof(key, _message())


@pytest.mark.parametrize(("make", "message"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_certificate_keys_cannot_verify(make: object, message: str) -> None:
    cert = certificate_for(make())  # type: ignore[operator]
    with pytest.raises(CertError, match=f"cannot verify a proof of possession: .*{message}"):
        verify_proof(cert, _message(), b"\x00" * 64)


def test_an_id_that_is_not_unicode_text_is_refused() -> None:
    with pytest.raises(CertError, match="rule id is not valid Unicode text"):
        proof_message(nonce=b"\0" * 16, device_id="device", rule_id="\ud800")
