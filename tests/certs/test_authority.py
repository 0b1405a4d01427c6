"""certs/authority.py: CA generation, upload validation and export."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certs.authority import (
    MAX_PEM_BYTES,
    CertificateAuthority,
    KeyType,
    is_self_signed,
    parse_certificates,
    validate_ca_certificate,
)
from certs.errors import InvalidCertificate
from tests.support.clock import FakeClock

CertificateFactory = Callable[..., x509.Certificate]
Generated = Callable[[KeyType], CertificateAuthority]

SIGNING_ONLY_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _pem(*items: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)


def _key_pem(
    key: CertificateIssuerPrivateKeyTypes,
    encryption: serialization.KeySerializationEncryption | None = None,
    private_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, encryption or serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def generated() -> Generated:
    """One CA per key type for the whole module, made at a fixed time (RSA-4096 is slow)."""
    cache: dict[KeyType, CertificateAuthority] = {}
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def get(key_type: KeyType) -> CertificateAuthority:
        if key_type not in cache:
            cache[key_type] = CertificateAuthority.generate(
                common_name="Gateway Root",
                organization="Example Org",
                country="US",
                key_type=key_type,
                clock=FakeClock(start),
            )
        return cache[key_type]

    return get


# -- generation -------------------------------------------------------------------------------

KEY_SHAPES: list[tuple[KeyType, type, int | str, type]] = [
    (KeyType.EC_P256, ec.EllipticCurvePrivateKey, "secp256r1", hashes.SHA256),
    (KeyType.EC_P384, ec.EllipticCurvePrivateKey, "secp384r1", hashes.SHA384),
    (KeyType.RSA_2048, rsa.RSAPrivateKey, 2048, hashes.SHA256),
    (KeyType.RSA_3072, rsa.RSAPrivateKey, 3072, hashes.SHA256),
    (KeyType.RSA_4096, rsa.RSAPrivateKey, 4096, hashes.SHA256),
]


@pytest.mark.parametrize(("key_type", "key_class", "size_or_curve", "hash_class"), KEY_SHAPES)
def test_generate_makes_the_requested_key_and_hash(
    generated: Generated, key_type: KeyType, key_class: type, size_or_curve: Any, hash_class: type
) -> None:
    ca = generated(key_type)
    assert isinstance(ca.private_key, key_class)
    if isinstance(ca.private_key, ec.EllipticCurvePrivateKey):
        assert ca.private_key.curve.name == size_or_curve
    else:
        assert ca.private_key.key_size == size_or_curve
    assert isinstance(ca.certificate.signature_hash_algorithm, hash_class)
    assert ca.key_type is key_type
    assert ca.certificate.public_key() == ca.private_key.public_key()
    assert is_self_signed(ca.certificate)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_generated_ca_has_the_root_profile(generated: Generated, key_type: KeyType) -> None:
    cert = generated(key_type).certificate
    assert cert.version is x509.Version.v3
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COUNTRY_NAME: "US",
        NameOID.ORGANIZATION_NAME: "Example Org",
        NameOID.COMMON_NAME: "Gateway Root",
    }
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (True,) * 3
    assert not ku.value.key_encipherment
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert aki.key_identifier == ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64


def test_generate_validity_starts_an_hour_early(clock: FakeClock) -> None:
    ca = CertificateAuthority.generate(common_name="R", organization="O", validity_days=30, clock=clock)
    assert ca.not_before == clock.now - timedelta(hours=1)
    assert ca.not_after == clock.now + timedelta(days=30)
    assert ca.not_before.tzinfo is not None


def test_generate_defaults_to_ec_p256_five_years_without_country(clock: FakeClock) -> None:
    ca = CertificateAuthority.generate(common_name="R", organization="O", clock=clock)
    assert ca.key_type is KeyType.EC_P256
    assert ca.not_after - clock.now == timedelta(days=1825)
    assert not ca.certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)


def test_generate_makes_distinct_serials_and_keys(clock: FakeClock) -> None:
    a = CertificateAuthority.generate(common_name="R", organization="O", clock=clock)
    b = CertificateAuthority.generate(common_name="R", organization="O", clock=clock)
    assert a.certificate.serial_number != b.certificate.serial_number
    assert a.private_key.public_key() != b.private_key.public_key()
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("days", [1, 10950])
def test_generate_accepts_validity_bounds(days: int, clock: FakeClock) -> None:
    ca = CertificateAuthority.generate(common_name="R", organization="O", validity_days=days, clock=clock)
    assert ca.not_after - clock.now == timedelta(days=days)


@pytest.mark.parametrize("days", [0, -1, 10951, 100_000])
def test_generate_refuses_validity_out_of_range(days: int) -> None:
    with pytest.raises(InvalidCertificate, match=rf"between 1 and 10950, got {days}"):
        CertificateAuthority.generate(common_name="R", organization="O", validity_days=days)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"country": "USA"}, r"country must be a two-letter ISO 3166 code such as 'US', got 'USA'"),
        ({"country": "1X"}, r"two-letter ISO 3166 code"),
        ({"common_name": ""}, r"common name must be 1 to 64 characters, got 0"),
        ({"common_name": "x" * 65}, r"common name must be 1 to 64 characters, got 65"),
        ({"organization": " "}, r"organization must be 1 to 64 characters, got 0"),
    ],
)
def test_generate_refuses_unusable_subject(kwargs: dict[str, str], match: str) -> None:
    args = {"common_name": "R", "organization": "O", **kwargs}
    with pytest.raises(InvalidCertificate, match=match):
        CertificateAuthority.generate(**args)  # type: ignore[arg-type]


def test_generate_upper_cases_country() -> None:
    ca = CertificateAuthority.generate(common_name="R", organization="O", country="de")
    [country] = ca.certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    assert country.value == "DE"


# -- export and identity ----------------------------------------------------------------------


def test_fingerprint_is_sha256_colon_hex(generated: Generated) -> None:
    ca = generated(KeyType.EC_P256)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", ca.fingerprint)
    assert ca.fingerprint.replace(":", "").lower() == hashlib.sha256(ca.certificate_der()).hexdigest()


def test_exports_round_trip(generated: Generated) -> None:
    ca = generated(KeyType.EC_P256)
    assert ca.certificate_pem().startswith("-----BEGIN CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificate(ca.certificate_pem().encode()) == ca.certificate
    assert x509.load_der_x509_certificate(ca.certificate_der()) == ca.certificate
    key_pem = ca.private_key_pem()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == ca.private_key.public_key()
    again = CertificateAuthority.from_pem(ca.certificate_pem(), key_pem)
    assert again == ca and again.fingerprint == ca.fingerprint
    assert ca.chain_pem() == ca.certificate_pem()


def test_repr_never_shows_the_private_key(generated: Generated) -> None:
    ca = generated(KeyType.EC_P256)
    assert "private_key" not in repr(ca)
    assert ca.private_key_pem().decode().splitlines()[1] not in repr(ca)


def test_constructor_refuses_a_key_of_another_certificate(generated: Generated, clock: FakeClock) -> None:
    ca = generated(KeyType.EC_P256)
    other = CertificateAuthority.generate(common_name="R", organization="O", clock=clock)
    with pytest.raises(InvalidCertificate, match=r"^private key does not match the certificate$"):
        CertificateAuthority(certificate=ca.certificate, private_key=other.private_key)


# -- upload: accepted -------------------------------------------------------------------------


def test_from_pem_accepts_str_and_bytes(make_certificate: CertificateFactory) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = make_certificate(key=key)
    from_bytes = CertificateAuthority.from_pem(_pem(cert), _key_pem(key))
    from_str = CertificateAuthority.from_pem(_pem(cert).decode(), _key_pem(key).decode())
    assert from_bytes.certificate == from_str.certificate == cert
    assert from_bytes.chain == ()
    assert from_bytes.key_type is KeyType.EC_P384


def test_from_pem_accepts_legacy_key_formats_and_a_key_after_the_certificate(
    make_certificate: CertificateFactory, rsa2048_key: rsa.RSAPrivateKey
) -> None:
    cert = make_certificate(key=rsa2048_key)
    pkcs1 = _key_pem(rsa2048_key, private_format=serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    CertificateAuthority.from_pem(_pem(cert), pkcs1)
    CertificateAuthority.from_pem(_pem(cert), _pem(cert) + _key_pem(rsa2048_key))


def test_from_pem_keeps_the_chain_of_an_intermediate(
    intermediate_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    assert intermediate_ca.chain == (root_ca.certificate,)
    assert not is_self_signed(intermediate_ca.certificate)
    assert intermediate_ca.chain_pem() == intermediate_ca.certificate_pem() + root_ca.certificate_pem()


def test_from_pem_accepts_key_usage_without_digital_signature(
    make_certificate: CertificateFactory,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ku = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    CertificateAuthority.from_pem(_pem(make_certificate(key=key, key_usage=ku)), _key_pem(key))


# -- upload: refused --------------------------------------------------------------------------


def _upload_cases(
    make: CertificateFactory, rsa_key: rsa.RSAPrivateKey
) -> dict[str, tuple[bytes, bytes, str]]:
    """name -> (certificate PEM, key PEM, message regex)."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    good = make(key=ec_key)
    good_key = _key_pem(ec_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    rsa1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p521 = ec.generate_private_key(ec.SECP521R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    past = datetime(2020, 1, 1, tzinfo=UTC)
    future = datetime.now(UTC) + timedelta(days=30)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    return {
        "not a CA": (
            _pem(make(key=ec_key, ca=False, key_usage=None)),
            good_key,
            r"^certificate is not a CA: basicConstraints CA=false$",
        ),
        "no basicConstraints": (
            _pem(make(key=ec_key, ca=None)),
            good_key,
            r"^certificate is not a CA: basicConstraints extension missing$",
        ),
        "basicConstraints not critical": (
            _pem(make(key=ec_key, bc_critical=False)),
            good_key,
            r"basicConstraints must be marked critical",
        ),
        "no keyCertSign": (
            _pem(make(key=ec_key, key_usage=SIGNING_ONLY_KU)),
            good_key,
            r"^certificate is not a CA: keyUsage lacks keyCertSign$",
        ),
        "no keyUsage": (
            _pem(make(key=ec_key, key_usage=None)),
            good_key,
            r"keyUsage extension missing \(keyCertSign required\)",
        ),
        "mismatched key": (
            _pem(good),
            _key_pem(other_key),
            r"^private key does not match the certificate$",
        ),
        "expired": (
            _pem(make(key=ec_key, not_before=past - timedelta(days=10), not_after=past)),
            good_key,
            r"^certificate expired on 2020-01-01T00:00:00Z$",
        ),
        "not yet valid": (
            _pem(make(key=ec_key, not_before=future.replace(microsecond=0))),
            good_key,
            rf"^certificate is not yet valid: valid from {future:%Y-%m-%dT%H:%M:%S}Z$",
        ),
        "RSA-1024": (
            _pem(make(key=rsa1024)),
            _key_pem(rsa1024),
            r"^RSA key of 1024 bits is too weak: at least 2048 required",
        ),
        "P-521": (
            _pem(make(key=p521)),
            _key_pem(p521),
            r"^EC P-521 key \(secp521r1\) is not supported: use an EC P-256 or P-384 key",
        ),
        "Ed25519": (
            _pem(make(key=ed)),
            _key_pem(ed),
            r"^Ed25519 keys are not supported: use an EC P-256 or P-384 key, or RSA",
        ),
        "certificate over 64 KiB": (
            _pem(good) + b"#" * MAX_PEM_BYTES,
            good_key,
            rf"^certificate PEM is {len(_pem(good)) + MAX_PEM_BYTES} bytes: "
            r"at most 65536 \(64 KiB\) accepted$",
        ),
        "key over 64 KiB": (
            _pem(good),
            good_key + b"\n" * MAX_PEM_BYTES,
            r"^private key PEM is \d+ bytes: at most 65536 \(64 KiB\) accepted$",
        ),
        "garbage certificate": (
            b"hello, I am not a certificate",
            good_key,
            r"^no certificate found: expected PEM text with a '-----BEGIN CERTIFICATE-----' block$",
        ),
        "corrupt certificate block": (
            b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
            good_key,
            r"^could not parse the certificate PEM: a CERTIFICATE block is not valid",
        ),
        "certificate block that is not X.509": (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            good_key,
            r"^could not parse the certificate PEM",
        ),
        "encrypted PKCS#8 key": (
            _pem(good),
            _key_pem(ec_key, encrypted),
            r"^private key is encrypted: upload it without a passphrase",
        ),
        "encrypted traditional key": (
            _pem(make(key=rsa_key)),
            _key_pem(rsa_key, encrypted, serialization.PrivateFormat.TraditionalOpenSSL),
            r"^private key is encrypted",
        ),
        "garbage key": (
            _pem(good),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            r"^could not parse the private key PEM: expected an unencrypted PKCS#8",
        ),
        "no key": (_pem(good), b"", r"^no private key found"),
        "swapped fields": (good_key, _pem(good), r"were the certificate and the key swapped\?"),
        "certificate given as key": (
            _pem(good),
            _pem(good),
            r"the private key PEM holds a certificate",
        ),
    }


UPLOAD_REFUSALS = [
    "not a CA",
    "no basicConstraints",
    "basicConstraints not critical",
    "no keyCertSign",
    "no keyUsage",
    "mismatched key",
    "expired",
    "not yet valid",
    "RSA-1024",
    "P-521",
    "Ed25519",
    "certificate over 64 KiB",
    "key over 64 KiB",
    "garbage certificate",
    "corrupt certificate block",
    "certificate block that is not X.509",
    "encrypted PKCS#8 key",
    "encrypted traditional key",
    "garbage key",
    "no key",
    "swapped fields",
    "certificate given as key",
]


@pytest.fixture(scope="module")
def upload_cases(
    make_certificate: CertificateFactory, rsa2048_key: rsa.RSAPrivateKey
) -> dict[str, tuple[bytes, bytes, str]]:
    return _upload_cases(make_certificate, rsa2048_key)


def test_every_refusal_case_is_run(upload_cases: dict[str, tuple[bytes, bytes, str]]) -> None:
    assert sorted(upload_cases) == sorted(UPLOAD_REFUSALS)


@pytest.mark.parametrize("case", UPLOAD_REFUSALS)
def test_from_pem_refuses(case: str, upload_cases: dict[str, tuple[bytes, bytes, str]]) -> None:
    certificate_pem, private_key_pem, match = upload_cases[case]
    with pytest.raises(InvalidCertificate, match=match) as caught:
        CertificateAuthority.from_pem(certificate_pem, private_key_pem)
    # Messages are shown to users and logged: never any of the key's PEM body.
    body_lines = [
        line
        for line in private_key_pem.decode(errors="replace").splitlines()
        if line and not line.startswith("-----") and len(line) > 8
    ]
    assert not any(line in str(caught.value) for line in body_lines)


def test_refusals_are_logged_without_key_material(
    upload_cases: dict[str, tuple[bytes, bytes, str]], caplog: pytest.LogCaptureFixture
) -> None:
    certificate_pem, private_key_pem, _ = upload_cases["mismatched key"]
    with (
        caplog.at_level("INFO", logger="certs.authority"),
        pytest.raises(InvalidCertificate, match="private key does not match the certificate"),
    ):
        CertificateAuthority.from_pem(certificate_pem, private_key_pem)
    assert "refused uploaded CA: private key does not match the certificate" in caplog.text
    assert private_key_pem.decode().splitlines()[1] not in caplog.text


def test_from_pem_uses_the_injected_clock(make_certificate: CertificateFactory, clock: FakeClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(key=key, not_before=clock.now, not_after=clock.now + timedelta(days=2))
    CertificateAuthority.from_pem(_pem(cert), _key_pem(key), clock=clock)
    clock.advance(timedelta(days=2))
    with pytest.raises(InvalidCertificate, match=r"^certificate expired on 2026-01-03T00:00:00Z$"):
        CertificateAuthority.from_pem(_pem(cert), _key_pem(key), clock=clock)


# -- upload: chains ---------------------------------------------------------------------------


def test_from_pem_refuses_a_chain_out_of_order(
    intermediate_ca: CertificateAuthority,
    root_ca: CertificateAuthority,
    make_certificate: CertificateFactory,
) -> None:
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    other_root = make_certificate(key=other_root_key, common_name="Other Root")
    with pytest.raises(
        InvalidCertificate,
        match=r"^certificate 2 of the chain \(CN=Other Root\) did not issue certificate 1 "
        r"\(CN=Gateway Test Intermediate\): list the CA first, then each issuer in order$",
    ):
        CertificateAuthority.from_pem(
            _pem(intermediate_ca.certificate, other_root), intermediate_ca.private_key_pem()
        )


def test_from_pem_refuses_certificates_after_a_root(
    root_ca: CertificateAuthority, foreign_ca: CertificateAuthority
) -> None:
    with pytest.raises(InvalidCertificate, match=r"self-signed root, so nothing may follow it"):
        CertificateAuthority.from_pem(
            _pem(root_ca.certificate, foreign_ca.certificate), root_ca.private_key_pem()
        )


def test_from_pem_refuses_an_expired_issuer_in_the_chain(
    make_certificate: CertificateFactory,
) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    root = make_certificate(
        key=root_key,
        common_name="Old Root",
        not_before=now - timedelta(days=90),
        not_after=now - timedelta(days=1),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = make_certificate(key=key, common_name="Sub", issuer=(root, root_key))
    with pytest.raises(InvalidCertificate, match=r"^certificate 2 of the chain \(CN=Old Root\) expired on "):
        CertificateAuthority.from_pem(_pem(intermediate, root), _key_pem(key))


def test_from_pem_accepts_an_intermediate_without_its_root(
    intermediate_ca: CertificateAuthority,
) -> None:
    alone = CertificateAuthority.from_pem(
        intermediate_ca.certificate_pem(), intermediate_ca.private_key_pem()
    )
    assert alone.chain == ()


# -- key-less validation (mTLS signing CAs) and parsing ---------------------------------------


def test_validate_ca_certificate_without_key(
    root_ca: CertificateAuthority, make_certificate: CertificateFactory
) -> None:
    validate_ca_certificate(root_ca.certificate, now=datetime.now(UTC))
    leafish = make_certificate(key=ec.generate_private_key(ec.SECP256R1()), ca=False)
    with pytest.raises(InvalidCertificate, match=r"^certificate is not a CA: basicConstraints CA=false$"):
        validate_ca_certificate(leafish, now=datetime.now(UTC))
    with pytest.raises(InvalidCertificate, match=r"^certificate expired on "):
        validate_ca_certificate(root_ca.certificate, now=root_ca.not_after)
    with pytest.raises(InvalidCertificate, match=r"^device CA is not a CA"):
        validate_ca_certificate(leafish, now=datetime.now(UTC), label="device CA")


def test_validate_ca_certificate_refuses_naive_now(root_ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        validate_ca_certificate(root_ca.certificate, now=datetime(2026, 1, 1))


def test_parse_certificates_keeps_order_and_skips_other_blocks(
    root_ca: CertificateAuthority, foreign_ca: CertificateAuthority
) -> None:
    text = _pem(root_ca.certificate) + b"\nsome words\n" + _pem(foreign_ca.certificate)
    assert parse_certificates(text) == [root_ca.certificate, foreign_ca.certificate]
    assert parse_certificates(text.decode()) == [root_ca.certificate, foreign_ca.certificate]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"", r"^no certificate found"),
        (b"\x00\xff" * 10, r"^no certificate found"),
        ("ünïcode", r"^no certificate found"),
        (b"-----BEGIN CERTIFICATE-----\nAAA=\n", r"^could not parse the certificate PEM"),
        (b"x" * (MAX_PEM_BYTES + 1), r"^certificate PEM is 65537 bytes: at most 65536"),
    ],
)
def test_parse_certificates_refuses(text: bytes | str, match: str) -> None:
    with pytest.raises(InvalidCertificate, match=match):
        parse_certificates(text)


# -- pkilint: the generated root passes the CA/B Forum ROOT-CA lint ---------------------------

# The only findings the ROOT-CA profile may report for our roots: the user picks the validity
# (SPEC §3: "no pkilint finding beyond the validity length the user chose").
VALIDITY_CODES = {
    "cabf.serverauth.root_validity_period_too_short",  # < 8 years (our default is 5)
    "cabf.serverauth.root_validity_period_too_long",  # > 25 years
}


@pytest.mark.parametrize(
    ("key_type", "days", "expected"),
    [
        (KeyType.EC_P256, 1825, {"cabf.serverauth.root_validity_period_too_short"}),
        (KeyType.EC_P256, 3000, set()),
        (KeyType.EC_P256, 10950, {"cabf.serverauth.root_validity_period_too_long"}),
        (KeyType.EC_P384, 3000, set()),
        (KeyType.RSA_2048, 3000, set()),
        (KeyType.RSA_2048, 1825, {"cabf.serverauth.root_validity_period_too_short"}),
    ],
)
def test_generated_root_passes_pkilint_root_ca(
    key_type: KeyType, days: int, expected: set[str], lint: Callable[..., list[tuple[str, str]]]
) -> None:
    ca = CertificateAuthority.generate(
        common_name="Gateway Root",
        organization="Example Org",
        country="US",
        validity_days=days,
        key_type=key_type,
    )
    findings = lint(ca.certificate_pem(), "ROOT_CA")
    assert {code for _, code in findings} == expected
    assert expected <= VALIDITY_CODES


def test_rsa_4096_root_passes_pkilint(
    generated: Generated, lint: Callable[..., list[tuple[str, str]]]
) -> None:
    findings = lint(generated(KeyType.RSA_4096).certificate_pem(), "ROOT_CA")
    assert {code for _, code in findings} == {"cabf.serverauth.root_validity_period_too_short"}
