"""certs/issuer.py: leaf contents, names, cache and renewal, real handshakes, verification, lint."""

from __future__ import annotations

import ipaddress
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.authority import BACKDATE, CertificateAuthority, KeyType
from certs.errors import CertError
from certs.issuer import DV_POLICY_OID, Leaf, LeafIssuer, normalize_names, renewal_margin
from tests.support.clock import FakeClock

Handshake = Callable[[Leaf, str, str], dict[str, Any]]
Lint = Callable[[str, str], list[tuple[str, str]]]

AIA = "http://gateway.example.com/ca.crt"
CRL = "http://gateway.example.com/ca.crl"


@pytest.fixture(scope="module")
def fixed_cas() -> dict[KeyType, CertificateAuthority]:
    """CAs made at 2026-01-01 (the ``clock`` fixture's start), valid five years."""
    start = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    return {
        key_type: CertificateAuthority.generate(
            common_name=f"Root {key_type.value}",
            organization="Example Org",
            country="US",
            key_type=key_type,
            clock=start,
        )
        for key_type in (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
    }


@pytest.fixture
def ca(fixed_cas: dict[KeyType, CertificateAuthority]) -> CertificateAuthority:
    return fixed_cas[KeyType.EC_P256]


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


# -- leaf contents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ca_key", "hash_class"),
    [
        (KeyType.EC_P256, hashes.SHA256),
        (KeyType.EC_P384, hashes.SHA384),
        (KeyType.RSA_2048, hashes.SHA256),
    ],
)
def test_leaf_has_the_cabf_dv_profile(
    fixed_cas: dict[KeyType, CertificateAuthority],
    clock: FakeClock,
    ca_key: KeyType,
    hash_class: type,
) -> None:
    ca = fixed_cas[ca_key]
    issuer = LeafIssuer(ca, aia_url=AIA, crl_url=CRL, clock=clock)
    cert = issuer.leaf_for(["www.example.com", "203.0.113.7", "2001:db8::1"]).certificate

    assert cert.version is x509.Version.v3
    assert cert.subject == x509.Name([])
    assert cert.issuer == ca.certificate.subject
    assert isinstance(cert.signature_hash_algorithm, hash_class)
    cert.verify_directly_issued_by(ca.certificate)

    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [
        x509.DNSName("www.example.com"),
        x509.IPAddress(ipaddress.ip_address("203.0.113.7")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False and bc.value.path_length is None
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not (ku.value.key_encipherment or ku.value.key_cert_sign or ku.value.crl_sign)
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = _ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    assert aki.key_identifier == ca_ski
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectKeyIdentifier)
    policies = _ext(cert, x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [DV_POLICY_OID]
    [access] = _ext(cert, x509.AuthorityInformationAccess).value
    assert access.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert access.access_location == x509.UniformResourceIdentifier(AIA)
    [point] = _ext(cert, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(CRL)]
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64
    assert cert.not_valid_before_utc == clock.now - timedelta(hours=1)
    assert cert.not_valid_after_utc == clock.now - BACKDATE + timedelta(days=47)


def test_a_clock_in_another_zone_gives_the_same_validity(ca: CertificateAuthority, clock: FakeClock) -> None:
    plus_two = timezone(timedelta(hours=2))
    elsewhere = LeafIssuer(ca, clock=lambda: clock.now.astimezone(plus_two)).leaf_for(["a.example.com"])
    here = LeafIssuer(ca, clock=clock).leaf_for(["a.example.com"])
    assert elsewhere.certificate.not_valid_before_utc == here.certificate.not_valid_before_utc
    assert elsewhere.certificate.not_valid_after_utc == here.certificate.not_valid_after_utc


def test_a_naive_clock_is_refused(ca: CertificateAuthority, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        LeafIssuer(ca, clock=lambda: clock.now.replace(tzinfo=None)).leaf_for(["a.example.com"])


def test_leaf_without_urls_has_no_aia_or_crl_distribution_point(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    cert = LeafIssuer(ca, clock=clock).leaf_for(["www.example.com"]).certificate
    for kind in (x509.AuthorityInformationAccess, x509.CRLDistributionPoints):
        with pytest.raises(x509.ExtensionNotFound):
            _ext(cert, kind)


@pytest.mark.parametrize(
    ("leaf_key_type", "key_class", "key_encipherment"),
    [
        (KeyType.EC_P256, ec.EllipticCurvePrivateKey, False),
        (KeyType.EC_P384, ec.EllipticCurvePrivateKey, False),
        (KeyType.RSA_2048, rsa.RSAPrivateKey, True),
    ],
)
def test_leaf_key_type_and_key_encipherment_only_for_rsa(
    ca: CertificateAuthority,
    clock: FakeClock,
    leaf_key_type: KeyType,
    key_class: type,
    key_encipherment: bool,
) -> None:
    leaf = LeafIssuer(ca, leaf_key_type=leaf_key_type, clock=clock).leaf_for(["a.example.com"])
    assert isinstance(leaf.private_key, key_class)
    assert KeyType.of(leaf.private_key) is leaf_key_type
    assert leaf.certificate.public_key() == leaf.private_key.public_key()
    ku = _ext(leaf.certificate, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment is key_encipherment


def test_leaf_key_is_made_once_per_issuer_and_is_not_the_ca_key(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    issuer = LeafIssuer(ca, clock=clock)
    first, second = issuer.leaf_for(["a.example.com"]), issuer.leaf_for(["b.example.com"])
    assert first.private_key is second.private_key
    assert first.private_key.public_key() != ca.private_key.public_key()
    assert first.certificate.public_key() != ca.certificate.public_key()
    assert first.certificate.serial_number != second.certificate.serial_number
    other = LeafIssuer(ca, clock=clock).leaf_for(["a.example.com"])
    assert other.private_key.public_key() != first.private_key.public_key()
    assert "private_key" not in repr(first)


def test_lifetime_is_configurable(ca: CertificateAuthority, clock: FakeClock) -> None:
    cert = LeafIssuer(ca, lifetime=timedelta(days=200), clock=clock).leaf_for(["x.example.com"])
    assert cert.not_after == clock.now - BACKDATE + timedelta(days=200)


def test_validity_never_passes_the_ca_not_after(clock: FakeClock) -> None:
    short = CertificateAuthority.generate(
        common_name="Short", organization="O", validity_days=10, clock=clock
    )
    leaf = LeafIssuer(short, clock=clock).leaf_for(["x.example.com"])
    assert leaf.not_after == short.not_after == clock.now + timedelta(days=10)
    assert leaf.not_before == clock.now - timedelta(hours=1) == short.not_before


def test_expired_ca_signs_nothing(clock: FakeClock) -> None:
    short = CertificateAuthority.generate(common_name="Short", organization="O", validity_days=1, clock=clock)
    issuer = LeafIssuer(short, clock=clock)
    issuer.leaf_for(["x.example.com"])
    clock.advance(timedelta(days=1))
    with pytest.raises(CertError, match=r"expired on 2026-01-02T00:00:00Z: it signs nothing"):
        issuer.leaf_for(["x.example.com"])  # cached, but still refused
    with pytest.raises(CertError, match=r"it signs nothing"):
        issuer.leaf_for(["new.example.com"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lifetime": timedelta(0)}, r"leaf lifetime must be positive"),
        ({"cache_size": -1}, r"leaf cache size must be 0 or more, got -1"),
        ({"aia_url": "ftp://x/ca.crt"}, r"AIA caIssuers URL must be an http:// or https:// URL"),
        ({"crl_url": "/ca.crl"}, r"CRL URL must be an http:// or https:// URL, got '/ca.crl'"),
    ],
)
def test_issuer_refuses_bad_settings(ca: CertificateAuthority, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(CertError, match=match):
        LeafIssuer(ca, **kwargs)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["www.example.com"], ("www.example.com",)),
        (["WWW.Example.COM."], ("www.example.com",)),
        (["bücher.example"], ("xn--bcher-kva.example",)),
        (["*.example.com", "example.com"], ("*.example.com", "example.com")),
        (["a.example.com", "b.example.com", "A.example.com"], ("a.example.com", "b.example.com")),
        (["192.0.2.1", "192.0.2.1"], ("192.0.2.1",)),
        (["2001:DB8:0::1", "[2001:db8::1]"], ("2001:db8::1",)),
        (["under_score.example.com"], ("under_score.example.com",)),
        (["X" * 63 + ".Example.com"], ("x" * 63 + ".example.com",)),
        (["a." * 125 + "com"], ("a." * 125 + "com",)),  # 253 characters: the longest allowed
        (["x.example.com", "bad name", "y.example.com"], ("x.example.com", "y.example.com")),
    ],
)
def test_names_are_normalized_and_deduplicated_in_order(names: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_names(names) == expected


@pytest.mark.parametrize(
    ("names", "match"),
    [
        ([], r"^a leaf needs at least one host name$"),
        ("www.example.com", r"not a single string"),
        ([""], r"invalid host name '': must be 1 to 253 characters"),
        (["bad name.example.com"], r"invalid host name 'bad name.example.com': each label"),
        (["a..example.com"], r"each label must be 1 to 63"),
        (["x" * 64 + ".example.com"], r"each label must be 1 to 63"),
        (["a." * 127 + "com"], r"must be 1 to 253 characters"),
        (["*.com"], r"each label"),
        (["www.*.example.com"], r"each label"),
    ],
)
def test_bad_primary_name_is_refused(names: Any, match: str) -> None:
    with pytest.raises(CertError, match=match):
        normalize_names(names)


def test_idna_name_reaches_the_certificate(ca: CertificateAuthority, clock: FakeClock) -> None:
    cert = LeafIssuer(ca, clock=clock).leaf_for(["bücher.example", "10.0.0.1"]).certificate
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]


# -- cache, eviction, renewal -----------------------------------------------------------------


def test_cache_returns_the_same_leaf_and_counts(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, cache_size=100, clock=clock)
    first = issuer.leaf_for(["a.example.com"])
    assert issuer.leaf_for(["a.example.com"]) is first
    assert issuer.leaf_for(("a.example.com",)) is first  # any sequence, same key
    assert issuer.leaf_for(["a.example.com", "b.example.com"]) is not first  # names are the key
    info = issuer.cache_info()
    assert (info.hits, info.misses, info.size, info.maxsize) == (2, 2, 2, 100)


def test_cache_evicts_least_recently_used(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, cache_size=2, clock=clock)
    a = issuer.leaf_for(["a.example.com"])
    b = issuer.leaf_for(["b.example.com"])
    assert issuer.leaf_for(["a.example.com"]) is a  # a is now the most recent
    issuer.leaf_for(["c.example.com"])  # evicts b
    assert issuer.cache_info().size == 2
    assert issuer.leaf_for(["a.example.com"]) is a
    assert issuer.leaf_for(["b.example.com"]) is not b
    assert issuer.cache_info().misses == 4


def test_cache_size_zero_disables_caching(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, cache_size=0, clock=clock)
    assert issuer.leaf_for(["a.example.com"]) is not issuer.leaf_for(["a.example.com"])
    assert issuer.cache_info().size == 0


def test_cache_clear(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, clock=clock)
    first = issuer.leaf_for(["a.example.com"])
    issuer.cache_clear()
    assert issuer.leaf_for(["a.example.com"]) is not first


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [
        (timedelta(days=47), timedelta(days=11, hours=18)),  # a quarter
        (timedelta(days=200), timedelta(days=50)),
        (timedelta(days=2), timedelta(days=1)),  # at least a day...
        (timedelta(hours=1), timedelta(minutes=30)),  # ...but never more than half
    ],
)
def test_renewal_margin(lifetime: timedelta, margin: timedelta) -> None:
    assert renewal_margin(lifetime) == margin


def test_cached_leaf_is_renewed_near_expiry(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, clock=clock)
    first = issuer.leaf_for(["a.example.com"])
    renew_at = first.not_after - renewal_margin(timedelta(days=47))
    clock.set(renew_at - timedelta(seconds=1))
    assert issuer.leaf_for(["a.example.com"]) is first
    clock.set(renew_at)
    renewed = issuer.leaf_for(["a.example.com"])
    assert renewed is not first
    assert renewed.certificate.serial_number != first.certificate.serial_number
    assert renewed.not_after == renew_at - BACKDATE + timedelta(days=47)
    assert issuer.leaf_for(["a.example.com"]) is renewed
    assert issuer.cache_info().size == 1


def test_leaf_cut_short_by_the_ca_is_kept_until_the_ca_expires(clock: FakeClock) -> None:
    short = CertificateAuthority.generate(common_name="Short", organization="O", validity_days=3, clock=clock)
    issuer = LeafIssuer(short, clock=clock)
    first = issuer.leaf_for(["a.example.com"])
    clock.advance(timedelta(days=3) - timedelta(seconds=1))
    assert issuer.leaf_for(["a.example.com"]) is first  # a new one could not last longer


def test_clock_set_back_reissues(ca: CertificateAuthority, clock: FakeClock) -> None:
    issuer = LeafIssuer(ca, clock=clock)
    clock.advance(timedelta(days=1))
    first = issuer.leaf_for(["a.example.com"])
    clock.advance(timedelta(hours=-2))  # before first.not_before: it would not be valid yet
    again = issuer.leaf_for(["a.example.com"])
    assert again is not first and again.not_before <= clock.now


def test_concurrent_callers_all_get_valid_leaves(ca: CertificateAuthority) -> None:
    issuer = LeafIssuer(ca, cache_size=50)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(100):
                leaf = issuer.leaf_for([f"h{(i + offset) % 80}.example.com"])
                assert leaf.certificate.public_key() == leaf.private_key.public_key()
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = issuer.cache_info()
    assert info.hits + info.misses == 400 and info.size <= 50


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
def test_issuing_is_fast(ca: CertificateAuthority) -> None:
    """Loose guard (real figures: bench or the report): new hosts well under 1 ms each."""
    issuer = LeafIssuer(ca, aia_url=AIA, crl_url=CRL)
    start = time.perf_counter()
    for i in range(200):
        issuer.leaf_for([f"n{i}.example.com"])
    assert (time.perf_counter() - start) / 200 < 0.005


# -- chain sent after the leaf ----------------------------------------------------------------


def test_root_ca_sends_no_chain(ca: CertificateAuthority, clock: FakeClock) -> None:
    assert LeafIssuer(ca, clock=clock).leaf_for(["a.example.com"]).chain == ()


def test_intermediate_ca_sends_itself_but_not_the_root(
    intermediate_ca: CertificateAuthority,
) -> None:
    leaf = LeafIssuer(intermediate_ca).leaf_for(["a.example.com"])
    assert leaf.chain == (intermediate_ca.certificate,)
    assert leaf.chain_pem() == leaf.certificate_pem() + intermediate_ca.certificate_pem()


# -- verification: cryptography's webpki verifier and real TLS handshakes ---------------------


def _verify(
    root: CertificateAuthority,
    leaf: Leaf,
    name: x509.DNSName | x509.IPAddress,
    at: datetime | None = None,
) -> None:
    builder = PolicyBuilder().store(Store([root.certificate]))
    if at is not None:
        builder = builder.time(at)
    builder.build_server_verifier(name).verify(leaf.certificate, list(leaf.chain))


@pytest.mark.parametrize("ca_key", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_leaf_passes_the_webpki_verifier(
    fixed_cas: dict[KeyType, CertificateAuthority], clock: FakeClock, ca_key: KeyType
) -> None:
    root = fixed_cas[ca_key]
    leaf = LeafIssuer(root, aia_url=AIA, crl_url=CRL, clock=clock).leaf_for(["www.example.com", "192.0.2.10"])
    at = clock.now + timedelta(days=1)
    _verify(root, leaf, x509.DNSName("www.example.com"), at)
    _verify(root, leaf, x509.IPAddress(ipaddress.ip_address("192.0.2.10")), at)
    with pytest.raises(VerificationError, match="no matching subjectAltName"):
        _verify(root, leaf, x509.DNSName("other.example.com"), at)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        _verify(root, leaf, x509.DNSName("www.example.com"), clock.now + timedelta(days=48))


def test_intermediate_leaf_passes_the_webpki_verifier(
    intermediate_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    leaf = LeafIssuer(intermediate_ca).leaf_for(["www.example.com"])
    _verify(root_ca, leaf, x509.DNSName("www.example.com"))


def test_handshake_succeeds_for_the_right_names(root_ca: CertificateAuthority, handshake: Handshake) -> None:
    leaf = LeafIssuer(root_ca).leaf_for(["www.example.com", "127.0.0.1"])
    peer = handshake(leaf, root_ca.certificate_pem(), "www.example.com")
    assert ("DNS", "www.example.com") in peer["subjectAltName"]
    handshake(leaf, root_ca.certificate_pem(), "127.0.0.1")


def test_handshake_through_an_intermediate(
    intermediate_ca: CertificateAuthority, root_ca: CertificateAuthority, handshake: Handshake
) -> None:
    leaf = LeafIssuer(intermediate_ca).leaf_for(["www.example.com"])
    handshake(leaf, root_ca.certificate_pem(), "www.example.com")


def test_handshake_fails_for_a_wrong_host(root_ca: CertificateAuthority, handshake: Handshake) -> None:
    leaf = LeafIssuer(root_ca).leaf_for(["www.example.com"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(leaf, root_ca.certificate_pem(), "evil.example.com")


def test_handshake_fails_for_an_expired_leaf(handshake: Handshake) -> None:
    past = FakeClock(datetime.now(UTC) - timedelta(days=100))
    old_root = CertificateAuthority.generate(
        common_name="Old Root", organization="O", validity_days=365, clock=past
    )
    leaf = LeafIssuer(old_root, clock=past).leaf_for(["www.example.com"])
    assert leaf.not_after < datetime.now(UTC)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(leaf, old_root.certificate_pem(), "www.example.com")


def test_handshake_fails_for_a_foreign_ca(
    root_ca: CertificateAuthority, foreign_ca: CertificateAuthority, handshake: Handshake
) -> None:
    leaf = LeafIssuer(root_ca).leaf_for(["www.example.com"])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(leaf, foreign_ca.certificate_pem(), "www.example.com")


# -- pkilint: CA/B Forum DV final certificate lint --------------------------------------------


@pytest.mark.parametrize("ca_key", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_leaf_passes_pkilint_dv_final_certificate(
    fixed_cas: dict[KeyType, CertificateAuthority],
    clock: FakeClock,
    lint: Lint,
    ca_key: KeyType,
) -> None:
    issuer = LeafIssuer(fixed_cas[ca_key], aia_url=AIA, crl_url=CRL, clock=clock)
    leaf = issuer.leaf_for(["www.example.com", "example.com", "93.184.215.14"])
    assert lint(leaf.certificate_pem(), "DV_FINAL_CERTIFICATE") == []


def test_rsa_leaf_key_lint_only_notes_both_rsa_key_usages(
    ca: CertificateAuthority, clock: FakeClock, lint: Lint
) -> None:
    """keyEncipherment is kept for RSA leaves (TLS 1.2 RSA key exchange needs it); the BRs only
    discourage asserting it together with digitalSignature."""
    issuer = LeafIssuer(ca, aia_url=AIA, crl_url=CRL, leaf_key_type=KeyType.RSA_2048, clock=clock)
    findings = lint(issuer.leaf_for(["www.example.com"]).certificate_pem(), "DV_FINAL_CERTIFICATE")
    assert findings == [
        ("WARNING", "cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present")
    ]
