"""certs/issuer.py: a leaf is, byte for byte, what a plain typed-extension builder makes.

The issuer builds leaves its fast way (extensions encoded once at load time, one builder made
with all its fields at once). The reference here is a fluent ``x509.CertificateBuilder`` chain
with typed extensions, written independently of certs/issuer.py: SPEC §3's profile as the issuer
built it before. For the same serial, validity and names the to-be-signed bytes must be identical
(the signature differs: ECDSA is randomised), and the signature must verify with the CA key.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certs.authority import CertificateAuthority, KeyType
from certs.issuer import DV_POLICY_OID, LeafIssuer
from certs.keys import PrivateKey, PublicKey, signature_hash
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
    for names in NAME_SETS:
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


def test_leaf_across_2050_is_the_reference_leaf() -> None:
    """Validity from 2049 into 2050: UTCTime then GeneralizedTime, as the builder's setters do."""
    start = FakeClock(datetime(2049, 12, 1, 12, 30, 15, 654_321, tzinfo=UTC))
    ca = CertificateAuthority.generate(
        common_name="Template 2050", organization="Example Org", validity_days=400, clock=start
    )
    issuer = LeafIssuer(ca, aia_url=AIA, crl_url=CRL, clock=start)
    leaf = issuer.leaf_for(["www.example.com"]).certificate
    assert leaf.not_valid_after_utc.year == 2050
    builder = reference_builder(
        ca,
        leaf.public_key(),
        rsa_leaf=False,
        aia_url=AIA,
        crl_url=CRL,  # type: ignore[arg-type]
    )
    expected = reference_leaf(
        builder,
        ca.private_key,
        leaf.serial_number,
        leaf.not_valid_before_utc,
        leaf.not_valid_after_utc,
        ("www.example.com",),
    )
    assert leaf.tbs_certificate_bytes == expected.tbs_certificate_bytes
    _verify(leaf, ca)
