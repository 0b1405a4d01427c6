"""certs/template.py: leaves from the DER template are the builder's leaves, byte for byte.

The reference is an ``x509.CertificateBuilder`` chain with typed extensions, written here
independently of certs/issuer.py: the profile of SPEC §3 as the issuer built it before the
template. For the same serial, validity and names the to-be-signed bytes must be identical (the
signature differs: ECDSA is randomised), and the signature must verify with the CA key.
"""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certs.authority import CertificateAuthority, KeyType
from certs.errors import CertError
from certs.issuer import DV_POLICY_OID, LeafIssuer
from certs.keys import PrivateKey, PublicKey, signature_hash
from certs.template import LeafTemplate
from tests.support.clock import FakeClock

AIA = "http://gateway.example.com/ca.crt"
CRL = "http://gateway.example.com/ca.crl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Names that exercise every length form (short, 0x81, 0x82) and both name kinds.
NAME_SETS: list[tuple[str, ...]] = [
    ("www.example.com",),
    ("203.0.113.7",),
    ("2001:db8::1",),
    ("xn--bcher-kva.example", "*.example.com", "192.0.2.10", "::1"),
    ("a" * 63 + ".example.com",),  # SAN just past 0x7f bytes
    tuple(f"host{i}.{'b' * 40}.example.org" for i in range(12)),  # SAN past 0xff bytes
    tuple(f"h{i}.example.net" for i in range(400)),  # SAN of ~6 kB: two length bytes
]


@pytest.fixture(scope="module")
def cas() -> dict[KeyType, CertificateAuthority]:
    start = FakeClock(T0)
    return {
        key_type: CertificateAuthority.generate(
            common_name=f"Template {key_type.value}",
            organization="Example Org",
            key_type=key_type,
            clock=start,
        )
        for key_type in (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
    }


def reference_builder(
    ca: CertificateAuthority,
    leaf_public_key: PublicKey,
    *,
    rsa_leaf: bool,
    aia_url: str | None,
    crl_url: str | None,
) -> x509.CertificateBuilder:
    """SPEC §3's leaf profile with typed extensions, in the issuer's order (SAN added last)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_leaf,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ca.subject_key_identifier, None, None), critical=False)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY_OID, None)]), critical=False
        )
    )
    if aia_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia_url)
                    )
                ]
            ),
            critical=False,
        )
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)]
            ),
            critical=False,
        )
    return builder


def reference_leaf(
    builder: x509.CertificateBuilder,
    ca_key: PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    names: tuple[str, ...],
) -> x509.Certificate:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return (
        builder.serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(entries), critical=True)
        .sign(ca_key, signature_hash(ca_key))
    )


def _verify(leaf: x509.Certificate, ca: CertificateAuthority) -> None:
    leaf.verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize("ca_key", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
@pytest.mark.parametrize("leaf_key", [KeyType.EC_P256, KeyType.RSA_2048])
@pytest.mark.parametrize(("aia", "crl"), [(AIA, CRL), (None, None), (AIA, None), (None, CRL)])
def test_issuer_leaf_is_the_reference_leaf_byte_for_byte(
    cas: dict[KeyType, CertificateAuthority],
    ca_key: KeyType,
    leaf_key: KeyType,
    aia: str | None,
    crl: str | None,
) -> None:
    ca = cas[ca_key]
    clock = FakeClock(T0 + timedelta(days=3, microseconds=123_456))
    issuer = LeafIssuer(ca, aia_url=aia, crl_url=crl, leaf_key_type=leaf_key, clock=clock, cache_size=0)
    leaf_public_key = issuer.leaf_for(["probe.example"]).private_key.public_key()
    builder = reference_builder(
        ca, leaf_public_key, rsa_leaf=leaf_key is KeyType.RSA_2048, aia_url=aia, crl_url=crl
    )
    for names in NAME_SETS[:6]:
        leaf = issuer.leaf_for(list(names)).certificate
        expected = reference_leaf(
            builder,
            ca.private_key,
            leaf.serial_number,
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            names,
        )
        assert leaf.tbs_certificate_bytes == expected.tbs_certificate_bytes
        assert leaf.signature_algorithm_oid == expected.signature_algorithm_oid
        _verify(leaf, ca)
        clock.advance(timedelta(minutes=7, seconds=13))


def test_template_matches_the_builder_for_random_serials_dates_and_names(
    cas: dict[KeyType, CertificateAuthority],
) -> None:
    """Dates from 1950 to 2100 (UTCTime / GeneralizedTime), with microseconds; serials of every
    size (high bit set or not); name lists of every length form."""
    ca = cas[KeyType.EC_P256]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = reference_builder(ca, leaf_key.public_key(), rsa_leaf=False, aia_url=AIA, crl_url=CRL)
    template = LeafTemplate.from_builder(builder, ca.private_key, hashes.SHA256())
    rng = random.Random(11)
    boundaries = [
        datetime(1950, 1, 1, tzinfo=UTC),
        datetime(2049, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2050, 1, 1, tzinfo=UTC),
    ]
    for i in range(60):
        if i < len(boundaries):
            not_before = boundaries[i]
        else:
            not_before = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(
                seconds=rng.randrange(150 * 365 * 86400), microseconds=rng.randrange(1_000_000)
            )
        not_after = not_before + timedelta(days=rng.randrange(1, 400), seconds=rng.randrange(86400))
        serial = rng.choice([1, 127, 128, 255, 256, 2**63, 2**158 + 1, rng.getrandbits(159) | 1])
        names = NAME_SETS[i % len(NAME_SETS)]
        expected = reference_leaf(builder, ca.private_key, serial, not_before, not_after, names)
        assert template.tbs(serial, not_before, not_after, names) == expected.tbs_certificate_bytes, (
            serial,
            not_before,
            names[:2],
        )
    leaf = template.sign(2**100, T0, T0 + timedelta(days=47), NAME_SETS[3])
    _verify(leaf, ca)
    assert leaf.serial_number == 2**100
    assert leaf.not_valid_before_utc == T0


def test_template_is_refused_for_a_builder_it_cannot_reproduce(
    cas: dict[KeyType, CertificateAuthority],
) -> None:
    """A builder the template cannot complete (here one that already holds a subjectAltName) is
    refused at load time with a CertError, so the issuer falls back to the builder."""
    ca = cas[KeyType.EC_P256]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("fixed.example")]), critical=False)
    )
    with pytest.raises(CertError, match="leaf template"):
        LeafTemplate.from_builder(builder, ca.private_key, hashes.SHA256())


def test_issuer_falls_back_to_the_builder_when_the_template_is_refused(
    cas: dict[KeyType, CertificateAuthority],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: object, **kwargs: object) -> LeafTemplate:
        raise CertError("leaf template: refused for the test")

    monkeypatch.setattr(LeafTemplate, "from_builder", refuse)
    ca = cas[KeyType.EC_P256]
    issuer = LeafIssuer(ca, aia_url=AIA, crl_url=CRL, clock=FakeClock(T0 + timedelta(days=1)))
    leaf = issuer.leaf_for(["fallback.example.com"]).certificate
    _verify(leaf, ca)
    assert "slower x509 builder" in caplog.text
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fallback.example.com"]
