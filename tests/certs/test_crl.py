"""certs/crl.py: the empty CRL leaves point to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certs.authority import CertificateAuthority, KeyType
from certs.crl import empty_crl
from certs.errors import CertError
from tests.support.clock import FakeClock

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cas() -> dict[KeyType, CertificateAuthority]:
    return {
        key_type: CertificateAuthority.generate(
            common_name="CRL Root",
            organization="Example Org",
            country="US",
            key_type=key_type,
            clock=FakeClock(START),
        )
        for key_type in (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
    }


@pytest.mark.parametrize(
    ("key_type", "hash_class"),
    [
        (KeyType.EC_P256, hashes.SHA256),
        (KeyType.EC_P384, hashes.SHA384),
        (KeyType.RSA_2048, hashes.SHA256),
    ],
)
def test_empty_crl_is_signed_current_and_empty(
    cas: dict[KeyType, CertificateAuthority],
    clock: FakeClock,
    key_type: KeyType,
    hash_class: type,
) -> None:
    ca = cas[key_type]
    crl = x509.load_der_x509_crl(empty_crl(ca, clock=clock))
    assert crl.is_signature_valid(ca.private_key.public_key())
    assert isinstance(crl.signature_hash_algorithm, hash_class)
    assert crl.issuer == ca.certificate.subject
    assert len(crl) == 0
    assert crl.last_update_utc == clock.now - timedelta(hours=1)
    assert crl.next_update_utc == clock.now + timedelta(days=7)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == int(clock.now.timestamp() * 1_000_000)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.subject_key_identifier


def test_crl_signature_fails_with_another_key(
    cas: dict[KeyType, CertificateAuthority], clock: FakeClock
) -> None:
    crl = x509.load_der_x509_crl(empty_crl(cas[KeyType.EC_P256], clock=clock))
    assert not crl.is_signature_valid(cas[KeyType.EC_P384].private_key.public_key())


def test_crl_numbers_increase_with_time(cas: dict[KeyType, CertificateAuthority], clock: FakeClock) -> None:
    numbers = []
    for _ in range(3):
        crl = x509.load_der_x509_crl(empty_crl(cas[KeyType.EC_P256], clock=clock))
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        clock.advance(timedelta(milliseconds=1))
    assert numbers == sorted(set(numbers))


def test_crl_validity_is_configurable_and_capped_at_the_ca(clock: FakeClock) -> None:
    ca = CertificateAuthority.generate(common_name="Short", organization="O", validity_days=3, clock=clock)
    one_day = x509.load_der_x509_crl(empty_crl(ca, clock=clock, validity=timedelta(days=1)))
    assert one_day.next_update_utc == clock.now + timedelta(days=1)
    capped = x509.load_der_x509_crl(empty_crl(ca, clock=clock))
    assert capped.next_update_utc == ca.not_after


def test_expired_ca_signs_no_crl(clock: FakeClock) -> None:
    ca = CertificateAuthority.generate(common_name="Short", organization="O", validity_days=1, clock=clock)
    clock.advance(timedelta(days=1))
    with pytest.raises(CertError, match=r"expired on 2026-01-02T00:00:00Z: it signs nothing"):
        empty_crl(ca, clock=clock)


def test_crl_validity_must_be_positive(cas: dict[KeyType, CertificateAuthority]) -> None:
    with pytest.raises(CertError, match=r"CRL validity must be positive"):
        empty_crl(cas[KeyType.EC_P256], validity=timedelta(0))


@pytest.mark.parametrize(("days", "clean"), [(7, True), (30, False)])
def test_crl_passes_pkilint_br_profile(
    cas: dict[KeyType, CertificateAuthority], days: int, clean: bool
) -> None:
    """pkilint's CRL lint (BR profile) is clean for our 7-day CRL; a 30-day one proves it looks."""
    from pkilint import loader, pkix
    from pkilint.cabf import cabf_crl
    from pkilint.pkix import crl as pkix_crl
    from pkilint.pkix import extension, name

    crl_type = pkix_crl.CertificateRevocationListType.CRL
    validator = pkix_crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            pkix_crl.create_issuer_validator_container([]),
            pkix_crl.create_validity_validator_container(
                [cabf_crl.create_validity_period_validator(crl_type)]
            ),
            pkix_crl.create_extensions_validator_container([]),
            cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type),
        ],
    )
    der = empty_crl(cas[KeyType.EC_P256], validity=timedelta(days=days))
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    findings = [fd.finding.code for r in validator.validate(document.root) for fd in r.finding_descriptions]
    assert (findings == []) is clean, findings
