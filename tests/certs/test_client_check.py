"""certs/client_check.py: every pass and every rejection reason, templates, PEM candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.client_check import (
    Candidate,
    CheckResult,
    ClientCertRequirements,
    check_certificate,
    common_name,
    fill_template,
    load_candidates,
    pair_key,
)
from certs.errors import CertError, InvalidCertificate
from certs.keys import PrivateKey
from tests.support.pki import Issued, issue_leaf, make_ca

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH

Issuer = tuple[x509.Certificate, PrivateKey]


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


CA_FROM, CA_UNTIL = datetime(2025, 1, 1, tzinfo=UTC), datetime(2035, 1, 1, tzinfo=UTC)
"""The signing CAs' validity (they carry no key usage: the checks must not depend on one)."""


def _issuer(issued: Issued) -> Issuer:
    return issued.certificate, issued.key


def make_device(
    issuer: Issuer,
    key: PrivateKey,
    *,
    cn: str | None = "laptop-7.corp",
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    ekus: tuple[x509.ObjectIdentifier, ...] = (CLIENT_AUTH,),
    not_before: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2027, 1, 1, tzinfo=UTC),
) -> x509.Certificate:
    """A device certificate from the shared leaf factory, valid through 2026 (``NOW`` is mid-year)."""
    return issue_leaf(
        Issued(*issuer), cn, key=key, dns_names=dns_names, ip_addresses=ip_addresses, emails=emails,
        ekus=ekus, not_before=not_before, not_after=not_after,
    ).certificate  # fmt: skip


@dataclass(frozen=True)
class Pki:
    """Signing CAs and device keys shared by the tables (keys are slow to make)."""

    ca: Issuer
    rsa_ca: Issuer
    other: Issuer
    impostor: Issuer  # same name as ``ca``, another key
    root: Issuer
    intermediate: Issuer  # issued by ``root``
    device_key: ec.EllipticCurvePrivateKey
    rsa_device_key: rsa.RSAPrivateKey
    stray_key: ec.EllipticCurvePrivateKey
    stray_rsa_key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key, rsa_ca_key, other_key, impostor_key, root_key, inter_key = (
        _ec(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        _ec(),
        _ec(),
        _ec(),
        _ec(),
    )
    root = _issuer(
        make_ca("Corp Root CA", key=root_key, key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL)
    )
    return Pki(
        ca=_issuer(
            make_ca("Corp Device CA", key=ca_key, key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL)
        ),
        rsa_ca=_issuer(
            make_ca(
                "Corp RSA Device CA", key=rsa_ca_key, key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL
            )
        ),
        other=_issuer(
            make_ca("Other CA", key=other_key, key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL)
        ),
        impostor=_issuer(
            make_ca(
                "Corp Device CA", key=impostor_key, key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL
            )
        ),
        root=root,
        intermediate=_issuer(
            make_ca(
                "Corp Intermediate CA",
                key=inter_key,
                issuer=Issued(*root),
                key_usage=False,
                not_before=CA_FROM,
                not_after=CA_UNTIL,
            )
        ),
        device_key=_ec(),
        rsa_device_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        stray_key=_ec(),
        stray_rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@dataclass(frozen=True)
class Case:
    """``cert(pki)`` checked against ``signing(pki)`` with ``req`` options and ``key(pki)``."""

    cert: Callable[[Pki], x509.Certificate]
    signing: Callable[[Pki], Sequence[x509.Certificate]] = lambda p: [p.ca[0]]
    cn: str | None = None
    sans: tuple[str, ...] = ()
    eku: tuple[str, ...] = ()
    check_private_key: bool = False
    key: Callable[[Pki], PrivateKey | None] = lambda p: None


def _dev(**kwargs: object) -> Callable[[Pki], x509.Certificate]:
    return lambda p: make_device(p.ca, p.device_key, **kwargs)  # type: ignore[arg-type]


PASSES: dict[str, Case] = {
    "no conditions": Case(_dev()),
    "RSA device key, RSA CA": Case(
        lambda p: make_device(p.rsa_ca, p.rsa_device_key),
        signing=lambda p: [p.rsa_ca[0]],
    ),
    "EC device key, RSA CA": Case(
        lambda p: make_device(p.rsa_ca, p.device_key), signing=lambda p: [p.rsa_ca[0]]
    ),
    "RSA device key, EC CA": Case(lambda p: make_device(p.ca, p.rsa_device_key)),
    "CN exact": Case(_dev(), cn="laptop-7.corp"),
    "CN case-insensitive": Case(_dev(cn="LAPTOP-7.Corp"), cn="laptop-7.CORP"),
    "SAN DNS": Case(_dev(dns_names=("laptop-7.corp",)), sans=("laptop-7.corp",)),
    "SAN DNS case-insensitive": Case(_dev(dns_names=("Laptop-7.CORP",)), sans=("laptop-7.corp",)),
    "SAN email": Case(_dev(emails=("ann@corp.example",)), sans=("Ann@corp.example",)),
    "SAN IP": Case(_dev(ip_addresses=("2001:db8::7",)), sans=("2001:DB8:0::7",)),
    "every listed SAN": Case(
        _dev(dns_names=("a.corp", "b.corp"), emails=("ann@corp.example",)),
        sans=("b.corp", "a.corp"),
    ),
    "EKU clientAuth": Case(_dev(), eku=("clientAuth",)),
    "both EKUs": Case(_dev(ekus=(SERVER_AUTH, EMAIL, CLIENT_AUTH)), eku=("clientAuth", "emailProtection")),
    "EC key present": Case(_dev(), check_private_key=True, key=lambda p: p.device_key),
    "RSA key present": Case(
        lambda p: make_device(p.ca, p.rsa_device_key),
        check_private_key=True,
        key=lambda p: p.rsa_device_key,
    ),
    "key not asked for": Case(_dev(), check_private_key=False, key=lambda p: None),
    "second of several signing certificates": Case(
        _dev(), signing=lambda p: [p.other[0], p.rsa_ca[0], p.ca[0]]
    ),
    "renewed CA with the same name, both uploaded": Case(_dev(), signing=lambda p: [p.impostor[0], p.ca[0]]),
    "issued by the intermediate the rule names": Case(
        lambda p: make_device(p.intermediate, p.device_key),
        signing=lambda p: [p.intermediate[0]],
    ),
    "valid from exactly now": Case(_dev(not_before=NOW)),
    "everything": Case(
        _dev(dns_names=("SN-42.corp",), ekus=(CLIENT_AUTH, EMAIL)),
        cn="laptop-7.corp",
        sans=("sn-42.corp",),
        eku=("clientAuth", "emailProtection"),
        check_private_key=True,
        key=lambda p: p.device_key,
    ),
}

REJECTIONS: dict[str, tuple[Case, str]] = {
    "another CA": (
        Case(lambda p: make_device(p.other, p.device_key)),
        "issued by CN=Other CA, not by the signing certificate CN=Corp Device CA",
    ),
    "none of several signing certificates": (
        Case(
            lambda p: make_device(p.other, p.device_key),
            signing=lambda p: [p.ca[0], p.rsa_ca[0]],
        ),
        (
            "issued by CN=Other CA, not by any of the signing certificates "
            "(CN=Corp Device CA; CN=Corp RSA Device CA)"
        ),
    ),
    "chain: issued by an intermediate, the rule names the root": (
        Case(lambda p: make_device(p.intermediate, p.device_key), signing=lambda p: [p.root[0]]),
        "issued by CN=Corp Intermediate CA, not by the signing certificate CN=Corp Root CA",
    ),
    "same issuer name, another key": (
        Case(lambda p: make_device(p.impostor, p.device_key)),
        (
            "names CN=Corp Device CA as its issuer, but its signature does not verify with that "
            "signing certificate's key"
        ),
    ),
    "the signing certificate itself": (
        Case(lambda p: p.ca[0]),
        "is the signing certificate CN=Corp Device CA itself, not a device certificate it issued",
    ),
    "a certificate with the signing certificate's key": (
        Case(lambda p: make_device(p.ca, p.ca[1], cn="Corp Device CA")),
        "is the signing certificate CN=Corp Device CA itself",
    ),
    "an intermediate CA certificate checked against its root": (
        Case(lambda p: p.intermediate[0], signing=lambda p: [p.root[0]]),
        ("is a CA certificate (CN=Corp Intermediate CA, basicConstraints CA=true), not a device certificate"),
    ),
    "expired": (
        Case(
            _dev(
                not_after=datetime(2026, 1, 1, tzinfo=UTC),
                not_before=datetime(2025, 1, 1, tzinfo=UTC),
            )
        ),
        "expired on 2026-01-01T00:00:00Z",
    ),
    "expires exactly now": (Case(_dev(not_after=NOW)), "expired on 2026-06-01T00:00:00Z"),
    "not yet valid": (
        Case(_dev(not_before=NOW + timedelta(seconds=1))),
        "not yet valid: valid from 2026-06-01T00:00:01Z",
    ),
    "wrong CN": (
        Case(_dev(cn="laptop-1.corp"), cn="laptop-7.corp"),
        "CN 'laptop-1.corp' does not match 'laptop-7.corp'",
    ),
    "CN is a prefix": (
        Case(_dev(cn="laptop-7.corp.evil"), cn="laptop-7.corp"),
        "CN 'laptop-7.corp.evil' does not match 'laptop-7.corp'",
    ),
    "no CN": (
        Case(_dev(cn=None), cn="laptop-7.corp"),
        "no CN in the subject 'empty subject' (expected 'laptop-7.corp')",
    ),
    "no SAN extension": (
        Case(_dev(), sans=("laptop-7.corp",)),
        "no subjectAltName extension (expected 'laptop-7.corp')",
    ),
    "missing SAN": (
        Case(
            _dev(dns_names=("laptop-1.corp",), ip_addresses=("10.0.0.7",)),
            sans=("laptop-7.corp",),
        ),
        "SAN 'laptop-7.corp' not in the certificate (it has DNS:laptop-1.corp, IP:10.0.0.7)",
    ),
    "one of two SANs missing": (
        Case(_dev(dns_names=("a.corp",)), sans=("a.corp", "b.corp")),
        "SAN 'b.corp' not in the certificate (it has DNS:a.corp)",
    ),
    "SAN is in the CN only": (
        Case(_dev(dns_names=("other.corp",)), sans=("laptop-7.corp",)),
        "SAN 'laptop-7.corp' not in the certificate",
    ),
    "no EKU extension": (
        Case(_dev(ekus=()), eku=("clientAuth",)),
        "missing extended key usage clientAuth (the certificate has no extendedKeyUsage extension)",
    ),
    "missing EKU": (
        Case(_dev(ekus=(SERVER_AUTH,)), eku=("clientAuth",)),
        "missing extended key usage clientAuth (it has serverAuth)",
    ),
    "one of two EKUs missing": (
        Case(_dev(ekus=(CLIENT_AUTH,)), eku=("clientAuth", "emailProtection")),
        "missing extended key usage emailProtection (it has clientAuth)",
    ),
    "anyExtendedKeyUsage does not count": (
        Case(_dev(ekus=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)), eku=("clientAuth",)),
        "missing extended key usage clientAuth (it has anyExtendedKeyUsage)",
    ),
    "key missing": (Case(_dev(), check_private_key=True), "private key not found"),
    "EC key mismatch": (
        Case(_dev(), check_private_key=True, key=lambda p: p.stray_key),
        "private key does not match the certificate",
    ),
    "RSA key mismatch": (
        Case(
            lambda p: make_device(p.ca, p.rsa_device_key),
            check_private_key=True,
            key=lambda p: p.stray_rsa_key,
        ),
        "private key does not match the certificate",
    ),
    "RSA key for an EC certificate": (
        Case(_dev(), check_private_key=True, key=lambda p: p.rsa_device_key),
        "private key does not match the certificate",
    ),
}


def _requirements(case: Case, pki: Pki) -> ClientCertRequirements:
    return ClientCertRequirements(
        signing_certificates=tuple(case.signing(pki)),
        cn=case.cn,
        subject_alternative_names=case.sans,
        extended_key_usage=case.eku,
        check_private_key=case.check_private_key,
    )


@pytest.mark.parametrize("case", PASSES.values(), ids=PASSES.keys())
def test_certificate_passes(case: Case, pki: Pki) -> None:
    result = check_certificate(case.cert(pki), _requirements(case, pki), now=NOW, private_key=case.key(pki))
    assert result.ok, result.reason
    assert result.reason.startswith("issued by CN=")
    assert result.signing_certificate is not None
    case.cert(pki).verify_directly_issued_by(result.signing_certificate)


@pytest.mark.parametrize(("case", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_certificate_rejected_with_reason(case: Case, reason: str, pki: Pki) -> None:
    result = check_certificate(case.cert(pki), _requirements(case, pki), now=NOW, private_key=case.key(pki))
    assert not result.ok
    assert reason in result.reason


def test_issuer_problem_is_the_only_reason(pki: Pki) -> None:
    """A certificate of another CA is not worth more words: its CN and EKU do not matter."""
    cert = make_device(pki.other, pki.device_key, cn="x", ekus=())
    req = ClientCertRequirements(
        (pki.ca[0],), cn="laptop-7.corp", extended_key_usage=("clientAuth",), check_private_key=True
    )
    result = check_certificate(cert, req, now=NOW)
    assert result == CheckResult(
        False, "issued by CN=Other CA, not by the signing certificate CN=Corp Device CA"
    )


def test_every_failed_condition_is_listed(pki: Pki) -> None:
    cert = make_device(
        pki.ca,
        pki.device_key,
        cn="laptop-1.corp",
        ekus=(SERVER_AUTH,),
        not_after=datetime(2026, 2, 1, tzinfo=UTC),
    )
    req = ClientCertRequirements(
        (pki.ca[0],),
        cn="laptop-7.corp",
        subject_alternative_names=("laptop-7.corp",),
        extended_key_usage=("clientAuth",),
        check_private_key=True,
    )
    result = check_certificate(cert, req, now=NOW)
    assert not result.ok
    assert result.reason.split("; ") == [
        "expired on 2026-02-01T00:00:00Z",
        "CN 'laptop-1.corp' does not match 'laptop-7.corp'",
        "no subjectAltName extension (expected 'laptop-7.corp')",
        "missing extended key usage clientAuth (it has serverAuth)",
        "private key not found",
    ]
    assert result.signing_certificate == pki.ca[0]


def test_naive_now_is_a_programming_error(pki: Pki) -> None:
    req = ClientCertRequirements((pki.ca[0],))
    with pytest.raises(ValueError, match="timezone-aware"):
        check_certificate(make_device(pki.ca, pki.device_key), req, now=datetime(2026, 6, 1))


def test_common_name(pki: Pki) -> None:
    assert common_name(make_device(pki.ca, pki.device_key, cn="laptop-7.corp")) == "laptop-7.corp"
    assert common_name(make_device(pki.ca, pki.device_key, cn=None)) is None


# --- requirements and templates -------------------------------------------------------------


def test_requirements_refuse_unknown_extended_key_usage(pki: Pki) -> None:
    with pytest.raises(
        InvalidCertificate,
        match="unknown extended key usage 'serverAuth': use clientAuth or emailProtection",
    ):
        ClientCertRequirements((pki.ca[0],), extended_key_usage=("serverAuth",))


def test_requirements_need_a_signing_certificate() -> None:
    with pytest.raises(CertError, match="no signing certificate"):
        ClientCertRequirements(())


def test_requirements_refuse_an_empty_san() -> None:
    with pytest.raises(CertError, match="must not be empty"):
        ClientCertRequirements(
            (make_ca("X", key_usage=False, not_before=CA_FROM, not_after=CA_UNTIL).certificate,),
            subject_alternative_names=(" ",),
        )


def test_requirements_keep_lists_as_tuples(pki: Pki) -> None:
    req = ClientCertRequirements(
        [pki.ca[0]],  # type: ignore[arg-type]
        subject_alternative_names=["a.corp"],  # type: ignore[arg-type]
        extended_key_usage=["clientAuth"],  # type: ignore[arg-type]
    )
    assert req.signing_certificates == (pki.ca[0],)
    assert req.subject_alternative_names == ("a.corp",)
    assert req.extended_key_usage == ("clientAuth",)
    hash(req)


@pytest.mark.parametrize(
    ("template", "filled"),
    [
        ("${hostname}.corp", "laptop-7.corp"),
        ("${serial_number}_mycompany", "SN-42_mycompany"),
        ("${hostname}.com.${serial_number}", "laptop-7.com.SN-42"),
        ("plain.corp", "plain.corp"),
        ("$hostname.corp", "$hostname.corp"),
        ("cost-$5", "cost-$5"),
    ],
)
def test_fill_template(template: str, filled: str) -> None:
    assert fill_template(template, hostname="laptop-7", serial_number="SN-42") == filled


def test_filled_values_are_not_templates_again() -> None:
    assert fill_template("${hostname}", hostname="${serial_number}", serial_number="x") == "${serial_number}"


@pytest.mark.parametrize(
    ("template", "hostname", "serial", "message"),
    [
        (
            "${user}.corp",
            "h",
            "s",
            r"unknown variable \$\{user\} in '\$\{user\}.corp': only \$\{hostname\} and \$\{serial_number\}",
        ),
        ("${HOSTNAME}", "h", "s", r"unknown variable \$\{HOSTNAME\}"),
        ("${}", "h", "s", r"unknown variable \$\{\}"),
        ("${hostname.corp", "h", "s", r"unterminated variable in '\$\{hostname.corp'"),
        (
            "${serial_number}.corp",
            "h",
            "",
            r"uses \$\{serial_number\}, but the device reported no serial number",
        ),
        (
            "${hostname}.corp",
            " ",
            "s",
            r"uses \$\{hostname\}, but the device reported no host name",
        ),
    ],
)
def test_fill_template_refuses(template: str, hostname: str, serial: str, message: str) -> None:
    with pytest.raises(InvalidCertificate, match=message):
        fill_template(template, hostname=hostname, serial_number=serial)


def test_requirements_from_templates(pki: Pki) -> None:
    req = ClientCertRequirements.from_templates(
        [pki.ca[0]],
        hostname="laptop-7",
        serial_number="SN-42",
        cn="${hostname}.corp",
        subject_alternative_names=["${serial_number}.corp"],
        extended_key_usage=["clientAuth"],
        check_private_key=True,
    )
    assert req == ClientCertRequirements(
        (pki.ca[0],),
        cn="laptop-7.corp",
        subject_alternative_names=("SN-42.corp",),
        extended_key_usage=("clientAuth",),
        check_private_key=True,
    )
    cert = make_device(pki.ca, pki.device_key, cn="LAPTOP-7.corp", dns_names=("sn-42.corp",))
    assert check_certificate(cert, req, now=NOW, private_key=pki.device_key).ok
    assert (
        ClientCertRequirements.from_templates([pki.ca[0]], hostname="h", serial_number="s", cn="").cn is None
    )


# --- PEM candidates -------------------------------------------------------------------------


def _public(candidates: Sequence[Candidate]) -> list[tuple[x509.Certificate, bytes | None]]:
    """Candidates with each key as its public key bytes (private key objects never compare)."""
    return [(cert, None if key is None else _spki(key)) for cert, key in candidates]


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(
    key: PrivateKey | ed25519.Ed25519PrivateKey,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    password: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL  # PKCS#1 for RSA, SEC1 for EC


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.PKCS8, TRADITIONAL], ids=["pkcs8", "traditional"]
)
@pytest.mark.parametrize("key_first", [False, True], ids=["cert-then-key", "key-then-cert"])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_certificate_and_key_in_one_file(
    pki: Pki, fmt: serialization.PrivateFormat, key_first: bool, kind: str
) -> None:
    key: PrivateKey = pki.device_key if kind == "ec" else pki.rsa_device_key
    cert = make_device(pki.ca, key)
    parts = [_pem(cert), _key_pem(key, fmt)]
    ((found, found_key),) = load_candidates(b"".join(reversed(parts) if key_first else parts))
    assert found == cert and found_key is not None
    req = ClientCertRequirements((pki.ca[0],), check_private_key=True)
    assert check_certificate(found, req, now=NOW, private_key=found_key).ok


def test_keys_pair_with_their_certificates(pki: Pki) -> None:
    a = make_device(pki.ca, pki.device_key, cn="a")
    b = make_device(pki.ca, pki.rsa_device_key, cn="b")
    c = make_device(pki.ca, _ec(), cn="c")
    pem = _pem(a) + _key_pem(pki.rsa_device_key) + _pem(b) + _pem(c) + _key_pem(pki.device_key)
    assert _public(load_candidates(pem)) == _public([(a, pki.device_key), (b, pki.rsa_device_key), (c, None)])


def test_certificate_and_key_in_two_files(pki: Pki) -> None:
    cert = make_device(pki.ca, pki.device_key)
    candidates = load_candidates(_pem(cert) + _pem(pki.ca[0]))
    assert candidates == [(cert, None), (pki.ca[0], None)]
    assert _public(pair_key(candidates, _key_pem(pki.device_key))) == _public(
        [(cert, pki.device_key), (pki.ca[0], None)]
    )
    assert _public(pair_key([cert], _key_pem(pki.device_key, TRADITIONAL))) == _public(
        [(cert, pki.device_key)]
    )
    assert load_candidates(_key_pem(pki.device_key)) == []


def test_pair_key_keeps_a_key_already_found(pki: Pki) -> None:
    cert = make_device(pki.ca, pki.device_key)
    assert _public(pair_key([(cert, pki.device_key)], _key_pem(pki.stray_key))) == _public(
        [(cert, pki.device_key)]
    )
    assert pair_key([cert], _key_pem(pki.stray_key)) == [(cert, None)]


def test_other_pem_blocks_are_skipped(pki: Pki) -> None:
    cert = make_device(pki.ca, pki.device_key)
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    text = b"subject=CN = laptop-7.corp\n" + params + _pem(cert) + _key_pem(pki.device_key, TRADITIONAL)
    assert _public(load_candidates(text)) == _public([(cert, pki.device_key)])
    assert load_candidates(b"") == []


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.PKCS8, TRADITIONAL], ids=["pkcs8", "traditional"]
)
def test_encrypted_keys_are_refused(pki: Pki, fmt: serialization.PrivateFormat) -> None:
    cert = make_device(pki.ca, pki.device_key)
    encrypted = _key_pem(pki.device_key, fmt, password=b"secret")
    with pytest.raises(
        InvalidCertificate,
        match="private key is encrypted: the agent cannot read keys protected by a passphrase",
    ):
        load_candidates(_pem(cert) + encrypted)
    with pytest.raises(InvalidCertificate, match="private key is encrypted"):
        pair_key([cert], encrypted)


def test_unsupported_keys_are_refused(pki: Pki) -> None:
    with pytest.raises(InvalidCertificate, match="Ed25519 private keys are not supported"):
        load_candidates(_key_pem(ed25519.Ed25519PrivateKey.generate()))


def test_unreadable_blocks_are_refused(pki: Pki) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(InvalidCertificate, match=r"PEM block 2 \(CERTIFICATE\) is not a valid X.509"):
        load_candidates(_pem(pki.ca[0]) + broken)
    garbage_key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(InvalidCertificate, match="PEM block 1 is not a readable private key") as info:
        load_candidates(garbage_key)
    assert "AAAA" not in str(info.value)


def test_pair_key_needs_a_key(pki: Pki) -> None:
    with pytest.raises(InvalidCertificate, match="no private key found"):
        pair_key([pki.ca[0]], _pem(pki.ca[0]))


def test_huge_files_are_refused() -> None:
    with pytest.raises(InvalidCertificate, match="at most 4194304"):
        load_candidates(b"x" * (4 * 1024 * 1024 + 1))


def test_unterminated_blocks_do_not_hide_the_next(pki: Pki) -> None:
    cert = make_device(pki.ca, pki.device_key)
    text = b"-----BEGIN CERTIFICATE-----\ntruncated\n" + _pem(cert)
    assert load_candidates(text) == [(cert, None)]
    assert load_candidates(text.decode()) == [(cert, None)]


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
def test_many_unterminated_blocks_are_read_in_linear_time() -> None:
    import time

    text = b"-----BEGIN CERTIFICATE-----\n" * 140_000  # just under 4 MiB
    started = time.perf_counter()
    assert load_candidates(text) == []
    assert time.perf_counter() - started < 2.0
