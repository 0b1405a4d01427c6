"""proxy/admin_tls.py and the admin-exposure rules of proxy/config.py (SPEC §7 "Exposure"):
the certificate the gateway makes for itself and keeps, a certificate the user brings, and the
real aiohttp site serving TLS that stdlib ``ssl`` verifies with the certificate file as its CA."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.sealing import KeySealer
from certs.server_cert import ServerCertificate
from proxy.admin_tls import CERT_FILE, KEY_FILE, AdminTls, key_password, load_admin_tls, names_for
from proxy.api import create_app
from proxy.config import Config, ConfigError, HostPort
from tests.support.server import Gateway

HOSTNAME = socket.gethostname()


def _config(tmp_path: Path, listen: str = "127.0.0.1:8081", **kwargs: object) -> Config:
    return Config(data_dir=tmp_path, admin_listen=HostPort.parse(listen, option="--admin-listen"), **kwargs)  # type: ignore[arg-type]


def _plain_key(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- configuration refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "[::]:8081", "10.1.2.3:8081", "gw.example.com:8081"])
def test_off_loopback_without_tls_is_refused_and_says_how(tmp_path: Path, listen: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"off loopback the admin API needs TLS: add --admin-tls auto .* or --admin-tls FILE",
    ):
        _config(tmp_path, listen)


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "[::]:8081", "10.1.2.3:8081", "127.0.0.1:8081"])
def test_with_tls_any_address_is_allowed(tmp_path: Path, listen: str) -> None:
    assert _config(tmp_path, listen, admin_tls_auto=True).admin_tls


def test_plain_http_on_loopback_stays_the_default(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    assert not config.admin_tls
    assert config.public_base_url == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"admin_tls_cert": Path("missing.pem")}, r"^--admin-tls: no such file: missing.pem$"),
        ({"admin_tls_key": Path("key.pem")}, r"^--admin-tls-key needs --admin-tls FILE"),
        (
            {"admin_tls_auto": True, "admin_tls_key": Path("key.pem")},
            r"^--admin-tls-key needs --admin-tls FILE",
        ),
        (
            {"admin_tls_auto": True, "admin_tls_cert": Path("c.pem")},
            r"^--admin-tls: give either auto or a certificate file",
        ),
    ],
)
def test_tls_option_refusals(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"^--admin-tls-key: no such file: .*nokey.pem$"):
        Config(data_dir=tmp_path, admin_tls_cert=tmp_path / "c.pem", admin_tls_key=tmp_path / "nokey.pem")


@pytest.mark.parametrize(
    ("listen", "public_url", "expected"),
    [
        ("127.0.0.1:8081", None, "https://127.0.0.1:8081"),
        ("[::1]:8443", None, "https://[::1]:8443"),
        ("0.0.0.0:8081", None, f"https://{HOSTNAME}:8081"),
        ("0.0.0.0:8081", "https://gw.example.com:8443/", "https://gw.example.com:8443"),
    ],
)
def test_public_base_url_defaults_to_the_https_admin_url(
    tmp_path: Path, listen: str, public_url: str | None, expected: str
) -> None:
    assert _config(tmp_path, listen, admin_tls_auto=True, public_url=public_url).public_base_url == expected


# -- --admin-tls auto ---------------------------------------------------------------------------


def test_auto_makes_a_certificate_for_the_admin_names_and_keeps_it_private(
    tmp_path: Path, sealer: KeySealer
) -> None:
    config = _config(tmp_path, "0.0.0.0:8081", admin_tls_auto=True, public_url="https://gw.example.com:8081")
    tls = load_admin_tls(config, sealer)
    assert tls is not None
    assert set(tls.server.names) == {HOSTNAME.lower(), "localhost", "127.0.0.1", "::1", "gw.example.com"}
    assert names_for(config)[0] == HOSTNAME
    cert_file, key_file = tmp_path / CERT_FILE, tmp_path / KEY_FILE
    assert tls.certificate_file == cert_file
    for path in (cert_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert loaded == tls.server.certificate
    key_pem = key_file.read_bytes()
    assert key_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError, match="Password was not given but private key is encrypted"):
        serialization.load_pem_private_key(key_pem, password=None)
    key = serialization.load_pem_private_key(key_pem, password=key_password(sealer))
    assert key.public_key() == loaded.public_key()
    assert _plain_key(tls.server.private_key) not in key_pem


def test_auto_on_a_specific_address_names_it_and_localhost(tmp_path: Path, sealer: KeySealer) -> None:
    tls = load_admin_tls(_config(tmp_path, "10.1.2.3:8081", admin_tls_auto=True), sealer)
    assert tls is not None and tls.server.names == ("localhost", "10.1.2.3", "127.0.0.1")
    assert tls.server.certificate.subject.rfc4514_string() == "CN=10.1.2.3"


def test_the_key_password_comes_from_the_master_key(sealer: KeySealer) -> None:
    assert key_password(sealer) == key_password(sealer)
    assert key_password(sealer) != key_password(KeySealer(KeySealer.generate_master_key()))
    assert key_password(sealer).isascii()


def test_auto_keeps_the_same_certificate_across_restarts(tmp_path: Path) -> None:
    master_key = KeySealer.generate_master_key()  # a restart reads the same one from master.key
    config = _config(tmp_path, "0.0.0.0:8081", admin_tls_auto=True)
    first = load_admin_tls(config, KeySealer(master_key))
    second = load_admin_tls(config, KeySealer(master_key))
    assert first is not None and second is not None
    assert second.fingerprint == first.fingerprint
    assert (tmp_path / CERT_FILE).read_bytes() == first.server.certificate_pem()


def test_auto_warns_about_a_host_it_does_not_cover_and_keeps_the_certificate(
    tmp_path: Path, sealer: KeySealer, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_admin_tls(_config(tmp_path, "127.0.0.1:8081", admin_tls_auto=True), sealer)
    caplog.set_level(logging.WARNING, logger="proxy.admin_tls")
    moved = _config(tmp_path, "10.9.8.7:8081", admin_tls_auto=True, public_url="https://new.example.com:8081")
    again = load_admin_tls(moved, sealer)
    assert first is not None and again is not None and again.fingerprint == first.fingerprint
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "does not cover 10.9.8.7, new.example.com" in warning
    assert f"delete {tmp_path / CERT_FILE} and {tmp_path / KEY_FILE}" in warning


def test_auto_covers_its_names_without_a_warning(
    tmp_path: Path, sealer: KeySealer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.admin_tls")
    load_admin_tls(_config(tmp_path, "0.0.0.0:8081", admin_tls_auto=True), sealer)
    assert [r.getMessage() for r in caplog.records] == []


def test_auto_with_another_master_key_is_refused(tmp_path: Path, sealer: KeySealer) -> None:
    config = _config(tmp_path, admin_tls_auto=True)
    load_admin_tls(config, sealer)
    with pytest.raises(ConfigError, match=r"wrong password \(was it made with another master key\? delete "):
        load_admin_tls(config, KeySealer(KeySealer.generate_master_key()))


def test_auto_with_half_the_pair_is_refused(tmp_path: Path, sealer: KeySealer) -> None:
    config = _config(tmp_path, admin_tls_auto=True)
    load_admin_tls(config, sealer)
    (tmp_path / CERT_FILE).unlink()
    with pytest.raises(ConfigError, match=rf"admin-tls.key exists but {tmp_path / CERT_FILE} does not"):
        load_admin_tls(config, sealer)


def test_no_tls_option_means_no_tls(tmp_path: Path, sealer: KeySealer) -> None:
    assert load_admin_tls(Config(data_dir=tmp_path), sealer) is None
    assert not (tmp_path / CERT_FILE).exists()


# -- --admin-tls FILE ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brought() -> ServerCertificate:
    return ServerCertificate.generate(["gw.example.com", "127.0.0.1"])


def test_a_brought_certificate_with_its_key_in_the_same_file(
    tmp_path: Path, sealer: KeySealer, brought: ServerCertificate
) -> None:
    both = tmp_path / "admin.pem"
    both.write_bytes(brought.certificate_pem() + _plain_key(brought.private_key))
    tls = load_admin_tls(_config(tmp_path, "0.0.0.0:8443", admin_tls_cert=both), sealer)
    assert tls is not None and tls.fingerprint == brought.fingerprint and tls.certificate_file == both


def test_a_brought_certificate_with_a_separate_key(
    tmp_path: Path, sealer: KeySealer, brought: ServerCertificate
) -> None:
    cert, key = tmp_path / "admin.crt", tmp_path / "admin.key"
    cert.write_bytes(brought.certificate_pem())
    key.write_bytes(_plain_key(brought.private_key))
    tls = load_admin_tls(_config(tmp_path, admin_tls_cert=cert, admin_tls_key=key), sealer)
    assert tls is not None and tls.fingerprint == brought.fingerprint


def _refusal(tmp_path: Path, sealer: KeySealer, cert: bytes, key: bytes | None) -> str:
    cert_path = tmp_path / "admin.crt"
    cert_path.write_bytes(cert)
    key_path = None
    if key is not None:
        key_path = tmp_path / "admin.key"
        key_path.write_bytes(key)
    with pytest.raises(ConfigError) as refused:
        load_admin_tls(_config(tmp_path, admin_tls_cert=cert_path, admin_tls_key=key_path), sealer)
    message = str(refused.value)
    assert "\n" not in message
    body_lines = [line for pem in (cert, key or b"") for line in pem.splitlines() if b"-----" not in line]
    assert not any(line.decode(errors="replace") in message for line in body_lines if line)
    return message


def test_brought_certificate_refusals_are_one_line_each(
    tmp_path: Path, sealer: KeySealer, brought: ServerCertificate
) -> None:
    cert = brought.certificate_pem()
    key = _plain_key(brought.private_key)
    other_key = _plain_key(ec.generate_private_key(ec.SECP256R1()))
    crt, keyfile = tmp_path / "admin.crt", tmp_path / "admin.key"
    assert _refusal(tmp_path, sealer, key, None) == (
        f"--admin-tls {crt}: no certificate found: the certificate PEM holds a private key "
        "(were the certificate and the key swapped?)"
    )
    assert _refusal(tmp_path, sealer, cert, None) == (
        f"--admin-tls {crt}: no private key found: expected a '-----BEGIN PRIVATE KEY-----' block "
        "(put the key in the same file or give --admin-tls-key FILE)"
    )
    assert _refusal(tmp_path, sealer, cert, other_key) == (
        f"--admin-tls-key {keyfile}: the private key does not match the certificate"
    )
    assert _refusal(tmp_path, sealer, cert, brought.private_key_pem(password=b"pw")) == (
        f"--admin-tls-key {keyfile}: the private key is encrypted (has a passphrase): give it without one"
    )
    assert _refusal(tmp_path, sealer, b"garbage", key).startswith(f"--admin-tls {crt}: no certificate found")


def test_a_brought_certificate_that_misses_a_host_is_warned_about(
    tmp_path: Path, sealer: KeySealer, brought: ServerCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    both = tmp_path / "admin.pem"
    both.write_bytes(brought.certificate_pem() + _plain_key(brought.private_key))
    caplog.set_level(logging.WARNING, logger="proxy.admin_tls")
    load_admin_tls(_config(tmp_path, "10.0.0.5:8443", admin_tls_cert=both), sealer)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "does not cover 10.0.0.5" in warning and "use a certificate that names them" in warning


# -- the real aiohttp site ----------------------------------------------------------------------


@pytest.fixture
async def tls_site(
    tmp_path: Path, sealer: KeySealer, gateway: Gateway
) -> AsyncIterator[tuple[int, AdminTls]]:
    """The admin app on a loopback port with ``--admin-tls auto``, as runtime.start serves it."""
    port = _free_port()
    config = _config(tmp_path / "data", f"127.0.0.1:{port}", admin_tls_auto=True)
    config.data_dir.mkdir()
    tls = load_admin_tls(config, sealer)
    assert tls is not None
    runner = web.AppRunner(create_app(gateway.api()), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.context)
    await site.start()
    yield port, tls
    await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _https_get(port: int, path: str, *, cafile: Path, host: str = "127.0.0.1") -> str:
    """One request over a verifying stdlib TLS client that trusts ``cafile`` only: "TLSv1.3 HTTP/1.1 200 ..."."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            version = tls.version()
    return f"{version} {answer.decode(errors='replace')}"


async def test_the_site_serves_tls_that_ssl_verifies_with_the_certificate_file(
    tls_site: tuple[int, AdminTls],
) -> None:
    port, tls = tls_site
    answer = await asyncio.to_thread(_https_get, port, "/healthz", cafile=tls.certificate_file)
    assert answer.split()[1:3] == ["HTTP/1.1", "200"], answer[:200]
    answer = await asyncio.to_thread(
        _https_get, port, "/healthz", cafile=tls.certificate_file, host="localhost"
    )
    assert " 200 " in answer


async def test_the_site_refuses_tls_below_1_2_and_plain_http(tls_site: tuple[int, AdminTls]) -> None:
    port, tls = tls_site
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.protocol == ssl.PROTOCOL_TLS_SERVER

    def plain_http() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                return raw.recv(100)
            except ConnectionResetError:
                return b""

    assert not (await asyncio.to_thread(plain_http)).startswith(b"HTTP/1.1 200")


async def test_a_client_with_another_anchor_or_host_is_refused(
    tls_site: tuple[int, AdminTls], tmp_path: Path
) -> None:
    port, tls = tls_site
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await asyncio.to_thread(
            _https_get, port, "/healthz", cafile=tls.certificate_file, host="elsewhere.example"
        )
    foreign = tmp_path / "foreign.crt"
    foreign.write_bytes(ServerCertificate.generate(["127.0.0.1"]).certificate_pem())
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(_https_get, port, "/healthz", cafile=foreign)
