import ipaddress
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy import certs, connection, exceptions, tls
from mitmproxy.addons import tlsconfig
from mitmproxy.proxy import context
from mitmproxy.test import taddons
from OpenSSL import SSL, crypto

from addons import inspection
from addons.inspection import HotTlsConfig, NoCertificateInUse, leaf_names
from certs.authority import CertificateAuthority
from certs.issuer import LeafIssuer


@pytest.fixture(scope="module")
def authorities() -> tuple[CertificateAuthority, CertificateAuthority]:
    return (
        CertificateAuthority.generate(common_name="Old Root", organization="Gateway Tests"),
        CertificateAuthority.generate(common_name="New Root", organization="Gateway Tests"),
    )


def _context(tctx: taddons.context, sni: str | None = "origin.test") -> context.Context:
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    client.sni = sni
    ctx = context.Context(client, tctx.options)
    ctx.server.address = ("origin.test", 443)
    return ctx


def _handshake(
    tls_config: HotTlsConfig, ctx: context.Context, trusted: list[CertificateAuthority]
) -> x509.Certificate:
    """A real TLS handshake between the proxy side mitmproxy builds and a stdlib ssl client."""
    data = tls.TlsData(ctx.client, context=ctx)
    tls_config.tls_start_client(data)
    server: SSL.Connection = data.ssl_conn
    client_ctx = ssl.create_default_context()
    client_ctx.load_verify_locations(cadata="".join(a.certificate_pem() for a in trusted))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(incoming, outgoing, server_hostname=ctx.client.sni)
    for _ in range(10):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        if pending := outgoing.read():
            server.bio_write(pending)
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            incoming.write(server.bio_read(65536))
        except SSL.WantReadError:
            pass
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _public(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_handshake_signs_with_in_use_ca_and_swaps_without_restart(tmp_path, authorities) -> None:
    old, new = authorities
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        hot.use_issuer(LeafIssuer(old))
        first = _handshake(hot, _context(tctx), [old])
        assert first.issuer == old.certificate.subject
        assert _public(first) != _public(old.private_key)  # a leaf key of its own

        hot.use_issuer(LeafIssuer(new))
        second = _handshake(hot, _context(tctx), [new])
        assert second.issuer == new.certificate.subject
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(hot, _context(tctx), [old])  # nothing of the old CA is served after the swap


def test_leaf_carries_sni_and_stays_within_lifetime(tmp_path, authorities) -> None:
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        hot.use_issuer(LeafIssuer(authorities[0], lifetime=timedelta(days=10)))
        leaf = _handshake(hot, _context(tctx, sni="www.example.com"), [authorities[0]])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["www.example.com"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=10, hours=1)


def test_no_certificate_in_use_fails_closed(tmp_path) -> None:
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        with pytest.raises(NoCertificateInUse, match="turn one on"):
            hot.get_cert(_context(tctx))


def test_mitmproxy_certs_option_is_refused(tmp_path) -> None:
    hot = HotTlsConfig()
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    with taddons.context(hot) as tctx:
        with pytest.raises(exceptions.OptionsError, match="upload a CA through the admin API"):
            tctx.configure(hot, certs=[str(pem)])


def test_confdir_gets_no_mitmproxy_ca(tmp_path, authorities) -> None:
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        hot.running()
    assert not list(tmp_path.glob("mitmproxy-ca*"))


@pytest.mark.parametrize(
    ("sni", "server", "expected"),
    [
        ("Origin.Test", ("origin.test", 443), ["origin.test"]),
        ("www.example.com", ("127.0.0.1", 443), ["www.example.com"]),  # a lab-mapped address stays out
        (None, ("10.1.2.3", 443), ["127.0.0.1", "10.1.2.3"]),
        ("WWW.Example.com.", ("origin.test", 443), ["www.example.com"]),  # trailing dot, case
        ("2001:DB8::0001", ("origin.test", 443), ["2001:db8::1"]),  # an IPv6 SNI, canonical
        (None, ("0:0:0:0:0:0:0:1", 443), ["127.0.0.1", "::1"]),
        ("host-1.example.test9", ("origin.test", 443), ["host-1.example.test9"]),  # digit, not an IP
    ],
)
def test_leaf_names(sni, server, expected) -> None:
    with taddons.context() as tctx:
        ctx = _context(tctx, sni=sni)
        ctx.server.address = server
        assert leaf_names(ctx, use_upstream=True) == expected


def _upstream(common_name: str, *names: x509.GeneralName) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_leaf_names_carry_the_upstream_names_read_once_per_certificate() -> None:
    origin = _upstream(
        "Origin.Test",
        x509.DNSName("www.origin.test"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.UniformResourceIdentifier("https://origin.test/"),  # not a name a leaf carries
    )
    again = x509.load_der_x509_certificate(origin.public_bytes(serialization.Encoding.DER))
    other = _upstream("not a host name", x509.DNSName("other.test"))
    hits = inspection._upstream_names.cache_info().hits
    with taddons.context() as tctx:
        for certificate, expected in (
            (origin, ["origin.test", "www.origin.test", "10.0.0.1"]),
            (again, ["origin.test", "www.origin.test", "10.0.0.1"]),  # another object, the same certificate
            (other, ["other.test", "origin.test"]),
        ):
            ctx = _context(tctx)
            ctx.server.certificate_list = [certs.Cert(certificate)]
            assert leaf_names(ctx, use_upstream=True) == expected
            assert leaf_names(ctx, use_upstream=False) == ["origin.test"]
    assert inspection._upstream_names.cache_info().hits == hits + 1


class _Emudhra:
    """Declares mitmproxy 12.3's option, which 12.2 lacks, so the refusal can be exercised."""

    def load(self, loader) -> None:
        loader.add_option("emudhra", bool, False, "sign with the leaked eMudhra key")


def test_leaked_key_signing_options_are_refused(tmp_path) -> None:
    hot = HotTlsConfig()
    declares = _Emudhra()
    with taddons.context(declares, hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        with pytest.raises(exceptions.OptionsError, match="publicly leaked third-party key"):
            tctx.configure(hot, emudhra=True)
        assert tctx.options.emudhra is False  # rolled back


def test_each_account_signs_with_its_own_ca_and_swaps_alone(tmp_path, authorities) -> None:
    hq, branch = authorities
    swapped = CertificateAuthority.generate(common_name="Branch Next", organization="Gateway Tests")
    accounts = {5001: "hq", 5002: "branch", 5003: None, 5004: "gone"}
    hot = HotTlsConfig(account_of=lambda client: accounts[client.peername[1]])
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        hot.use_issuer(LeafIssuer(hq))
        hot.use_account_issuer("hq", hot.issuer)
        hot.use_account_issuer("branch", LeafIssuer(branch))

        def issuer_seen(port: int) -> x509.Name:
            ctx = _context(tctx)
            ctx.client.peername = ("127.0.0.1", port)
            return _handshake(hot, ctx, [hq, branch, swapped]).issuer

        assert issuer_seen(5001) == hq.certificate.subject
        assert issuer_seen(5002) == branch.certificate.subject
        assert issuer_seen(5003) == hq.certificate.subject  # no known device: the default
        with pytest.raises(NoCertificateInUse, match="account gone of this client's device is not loaded"):
            issuer_seen(5004)
        hot.use_account_issuer("branch", LeafIssuer(swapped))  # a swap in one account only
        assert issuer_seen(5002) == swapped.certificate.subject
        assert issuer_seen(5001) == hq.certificate.subject
        hot.use_account_issuer("branch", None)
        with pytest.raises(NoCertificateInUse):
            issuer_seen(5002)


# -- per-handshake work ---------------------------------------------------------------------


def test_leaf_and_key_reach_openssl_converted_once_per_leaf(tmp_path, authorities, monkeypatch) -> None:
    """pyOpenSSL converts a cryptography certificate or key at every call (~100 µs each with
    OpenSSL 3): a leaf served again, and the issuer's one leaf key, are converted only once."""
    converted: list[str] = []
    to_x509 = crypto.X509.from_cryptography.__func__  # type: ignore[attr-defined]
    to_pkey = crypto.PKey.from_cryptography_key.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        crypto.X509,
        "from_cryptography",
        classmethod(lambda cls, c: converted.append("cert") or to_x509(cls, c)),
    )
    monkeypatch.setattr(
        crypto.PKey,
        "from_cryptography_key",
        classmethod(lambda cls, k: converted.append("key") or to_pkey(cls, k)),
    )
    old, new = authorities
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path))
        hot.use_issuer(LeafIssuer(old))
        for _ in range(3):
            assert _handshake(hot, _context(tctx), [old]).issuer == old.certificate.subject
        assert converted == ["cert", "key"]
        _handshake(hot, _context(tctx, sni="other.test"), [old])
        assert converted == ["cert", "key", "cert"]  # a new leaf; the same leaf key
        # A swap takes effect at the next handshake: the new issuer's leaf and key are converted.
        hot.use_issuer(LeafIssuer(new))
        assert _handshake(hot, _context(tctx), [new]).issuer == new.certificate.subject
        assert converted == ["cert", "key", "cert", "cert", "key"]


def test_client_connection_is_set_up_as_stock_tlsconfig_does(tmp_path, authorities) -> None:
    """Same context options, cipher list, ALPN data and certificate as stock TlsConfig, which
    our tls_start_client replaces only to skip the per-handshake conversions."""
    hot = HotTlsConfig()
    with taddons.context(hot) as tctx:
        tctx.configure(hot, confdir=str(tmp_path), ciphers_client="ECDHE-ECDSA-AES128-GCM-SHA256")
        hot.use_issuer(LeafIssuer(authorities[0]))
        mine, theirs = _context(tctx), _context(tctx)
        ours = tls.TlsData(mine.client, context=mine)
        hot.tls_start_client(ours)
        stock = tls.TlsData(theirs.client, context=theirs)
        tlsconfig.TlsConfig.tls_start_client(hot, stock)
        assert ours.ssl_conn is not None and stock.ssl_conn is not None
        assert ours.ssl_conn.get_context() is stock.ssl_conn.get_context()  # mitmproxy's cached one
        assert ours.ssl_conn.get_cipher_list() == stock.ssl_conn.get_cipher_list()
        assert ours.ssl_conn.get_app_data() == stock.ssl_conn.get_app_data()
        assert (
            ours.ssl_conn.get_certificate().to_cryptography()
            == stock.ssl_conn.get_certificate().to_cryptography()
        )
