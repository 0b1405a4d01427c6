"""TLS for the admin API (SPEC §7 "Exposure"): the certificate it serves and the ``ssl`` context.

``--admin-tls auto``: on first start the gateway makes a self-signed certificate
(``certs.server_cert``) for the names it is reached by and keeps it in the data directory:
``admin-tls.crt`` (public: ``curl --cacert DATA_DIR/admin-tls.crt ...``) and ``admin-tls.key``
(PKCS#8 encrypted with a password derived from the master key, 0600). Later starts load the same
pair, so the fingerprint enrolled agents pinned stays valid; a name it does not cover is warned
about, never fixed by making a new certificate (that would break every pin).

``--admin-tls FILE [--admin-tls-key FILE]``: the user's certificate chain and key, checked with
``cryptography`` first so that each problem is one clear ConfigError, then loaded by ``ssl``.
"""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from certs.authority import parse_certificates
from certs.clock import Clock, format_time, utcnow
from certs.errors import CertError
from certs.sealing import KeySealer
from certs.server_cert import ServerCertificate, load_private_key
from proxy.config import Config, ConfigError, write_private

logger = logging.getLogger(__name__)

CERT_FILE = "admin-tls.crt"
KEY_FILE = "admin-tls.key"
KEY_PASSWORD_PURPOSE = b"admin-tls-key-password"
EXPIRY_WARNING = timedelta(days=30)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class AdminTls:
    """What the admin site serves: the certificate, where its public file is, the context."""

    server: ServerCertificate
    certificate_file: Path
    context: ssl.SSLContext

    @property
    def fingerprint(self) -> str:
        return self.server.fingerprint


def load_admin_tls(config: Config, sealer: KeySealer, *, clock: Clock = utcnow) -> AdminTls | None:
    """The admin API's TLS, or None for plain HTTP (no ``--admin-tls``). ConfigError on a file
    that cannot be used."""
    if config.admin_tls_auto:
        tls = _auto(config, sealer)
    elif config.admin_tls_cert is not None:
        tls = _from_files(config.admin_tls_cert, config.admin_tls_key)
    else:
        return None
    _warn_about(tls.server, config, clock)
    logger.info(
        "admin API serves TLS with %s (SHA-256 %s, valid until %s, names %s)",
        tls.certificate_file,
        tls.fingerprint,
        format_time(tls.server.not_after),
        ", ".join(tls.server.names) or "none",
    )
    return tls


def reached_by(config: Config) -> tuple[str, ...]:
    """The host names and addresses clients use for the admin API: the listen host (on every
    interface: the machine's host name and the loopback names) and the ``--public-url`` host."""
    listen = config.admin_listen
    hosts = [socket.gethostname(), *LOOPBACK_NAMES] if listen.is_wildcard else [listen.host]
    public_host = urllib.parse.urlsplit(config.public_url or "").hostname
    if public_host:
        hosts.append(public_host)
    return tuple(dict.fromkeys(hosts))


def names_for(config: Config) -> tuple[str, ...]:
    """The names a certificate the gateway makes for itself holds: every host it is reached
    by, plus localhost and 127.0.0.1 (the CLI on the machine itself)."""
    return tuple(dict.fromkeys([*reached_by(config), "localhost", "127.0.0.1"]))


def key_password(sealer: KeySealer) -> bytes:
    """The password of ``admin-tls.key``: derived from the master key (HKDF), ASCII."""
    return base64.urlsafe_b64encode(sealer.derive(purpose=KEY_PASSWORD_PURPOSE)).rstrip(b"=")


# -- --admin-tls auto ----------------------------------------------------------------------------


def _auto(config: Config, sealer: KeySealer) -> AdminTls:
    cert_path = config.data_dir / CERT_FILE
    key_path = config.data_dir / KEY_FILE
    password = key_password(sealer)
    present = [p for p in (cert_path, key_path) if p.exists()]
    if not present:
        server = _generate(config)
        write_private(key_path, server.private_key_pem(password=password))
        write_private(cert_path, server.certificate_pem())
        logger.info("made the admin API's TLS certificate %s (key %s, encrypted)", cert_path, key_path)
    elif len(present) == 1:
        missing = key_path if present[0] == cert_path else cert_path
        raise ConfigError(
            f"--admin-tls auto: {present[0]} exists but {missing} does not; put it back, or delete "
            f"{present[0]} to make a new certificate (enrolled agents then need a new token)"
        )
    else:
        try:
            server = ServerCertificate.from_pem(
                cert_path.read_bytes(), key_path.read_bytes(), password=password
            )
        except CertError as e:
            raise ConfigError(
                f"--admin-tls auto: {key_path}: {e} (was it made with another master key? delete "
                f"{cert_path} and {key_path} to make a new certificate; enrolled agents then need a new token)"
            ) from None
    return AdminTls(server, cert_path, _context(cert_path, key_path, password=password))


def _generate(config: Config) -> ServerCertificate:
    try:
        return ServerCertificate.generate(names_for(config))
    except CertError as e:
        raise ConfigError(
            f"--admin-tls auto: cannot make a certificate for {config.admin_listen}: {e}"
        ) from None


# -- --admin-tls FILE [--admin-tls-key FILE] -----------------------------------------------------


def _from_files(cert_path: Path, key_path: Path | None) -> AdminTls:
    cert_option = f"--admin-tls {cert_path}"
    key_option = f"--admin-tls-key {key_path}" if key_path is not None else cert_option
    cert_pem = _read(cert_path, "--admin-tls")
    key_pem = _read(key_path, "--admin-tls-key") if key_path is not None else cert_pem
    try:
        parse_certificates(cert_pem)
    except CertError as e:
        raise ConfigError(f"{cert_option}: {e}") from None
    try:
        load_private_key(key_pem)
    except CertError as e:
        hint = " (put the key in the same file or give --admin-tls-key FILE)" if key_path is None else ""
        raise ConfigError(f"{key_option}: {e}{hint}") from None
    try:
        server = ServerCertificate.from_pem(cert_pem, key_pem)
    except CertError as e:
        raise ConfigError(f"{key_option}: {e}") from None
    return AdminTls(server, cert_path, _context(cert_path, key_path))


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot read it: {e.strerror}") from None


# -- both ----------------------------------------------------------------------------------------


def _context(cert_path: Path, key_path: Path | None, *, password: bytes | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving the chain in ``cert_path``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path, password=password)
    except ssl.SSLError as e:
        raise ConfigError(f"--admin-tls {cert_path}: TLS cannot use it: {e.reason or e}") from None
    return context


def _warn_about(server: ServerCertificate, config: Config, clock: Clock) -> None:
    """A name clients use that the certificate lacks, an expiry near or past, plain HTTP in
    enrollment tokens: each is logged, none stops the gateway."""
    uncovered = [host for host in reached_by(config) if not server.covers(host)]
    if uncovered:
        fix = (
            f"delete {config.data_dir / CERT_FILE} and {config.data_dir / KEY_FILE} to make a new one "
            "(enrolled agents then need a new token)"
            if config.admin_tls_auto
            else "use a certificate that names them"
        )
        logger.warning(
            "the admin API's TLS certificate does not cover %s (it names %s): clients that "
            "verify host names will refuse it there; %s",
            ", ".join(uncovered),
            ", ".join(server.names) or "nothing",
            fix,
        )
    now = clock()
    if server.not_after <= now:
        logger.error("the admin API's TLS certificate expired on %s", format_time(server.not_after))
    elif server.not_after - now <= EXPIRY_WARNING:
        logger.warning("the admin API's TLS certificate expires on %s", format_time(server.not_after))
    if config.public_url and urllib.parse.urlsplit(config.public_url).scheme == "http":
        logger.warning(
            "--public-url %s is plain HTTP: enrollment tokens name it, and agents off loopback refuse "
            "plain HTTP (use the https URL of the admin API)",
            config.public_url,
        )
