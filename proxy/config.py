"""Configuration of one gateway process, and the files it keeps in its data directory."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import certifi

from certs.sealing import KeySealer

if TYPE_CHECKING:
    from proxy.services.wireguard import WireGuardSettings

logger = logging.getLogger(__name__)

MASTER_KEY_ENV = "GATEWAY_MASTER_KEY"
ADMIN_TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"
MAX_WORKERS = 256


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says what would be accepted."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, value: str, *, option: str) -> HostPort:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{option}: expected HOST:PORT, got {value!r}")
        host = host.removeprefix("[").removesuffix("]")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{option}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{option}: port {port} is outside 0-65535")
        return cls(host, port)

    @property
    def is_wildcard(self) -> bool:
        """Every interface (``0.0.0.0`` or ``::``): clients reach it by the machine's names."""
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    database: str = ""  # --database: a SQLite path/URL or a postgresql:// URL; "": data_dir/gateway.db
    proxy_listen: HostPort = HostPort("127.0.0.1", 8080)
    modes: tuple[str, ...] = ()  # --mode specs; none: one regular mode at proxy_listen
    wireguard: WireGuardSettings | None = None  # device tunnels (proxy/wireguard.py); None: off
    admin_listen: HostPort = HostPort("127.0.0.1", 8081)
    upstream_ca: Path | None = None
    hosts_file: Path | None = None
    hosts_only: bool = False  # --hosts-only: refuse every name hosts_file does not list
    policy_paths: tuple[Path, ...] = ()
    require_device: bool = False
    default_account: str | None = None  # --default-account: traffic from no known device (default: the first)
    leaf_lifetime: timedelta = timedelta(days=47)
    leaf_cache_size: int = 10_000
    public_url: str | None = None
    log_level: str = "info"
    admin_tls_auto: bool = False  # --admin-tls auto: a self-signed certificate kept in data_dir
    admin_tls_cert: Path | None = None  # --admin-tls FILE: certificate chain (and key)
    admin_tls_key: Path | None = None  # --admin-tls-key FILE
    node_timeout: timedelta = timedelta(seconds=30)  # --node-timeout: a silent node leaves "live"
    workers: int = 1  # --workers: proxy processes sharing the listeners (proxy/workers.py)

    def __post_init__(self) -> None:
        self._check_admin_tls()
        if not timedelta(days=1) <= self.leaf_lifetime <= timedelta(days=398):
            raise ConfigError("--leaf-lifetime-days must be between 1 and 398")
        if not timedelta(seconds=1) <= self.node_timeout <= timedelta(hours=1):
            raise ConfigError("--node-timeout must be between 1 and 3600 seconds")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(
                f"--workers must be between 1 and {MAX_WORKERS} (got {self.workers}); "
                "1 runs the proxy in the admin process, as before"
            )
        if self.leaf_cache_size < 1:
            raise ConfigError("--leaf-cache-size must be at least 1")
        for option, path in (("--upstream-ca", self.upstream_ca), ("--hosts", self.hosts_file)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{option}: no such file: {path}")
        if self.hosts_only and self.hosts_file is None:
            raise ConfigError("--hosts-only needs --hosts FILE (the only names the gateway will answer)")
        for path in self.policy_paths:
            if not path.exists():
                raise ConfigError(f"--policies: no such file or directory: {path}")

    def _check_admin_tls(self) -> None:
        if self.admin_tls_auto and self.admin_tls_cert is not None:
            raise ConfigError("--admin-tls: give either auto or a certificate file, not both")
        if self.admin_tls_key is not None and self.admin_tls_cert is None:
            raise ConfigError(
                "--admin-tls-key needs --admin-tls FILE (with --admin-tls auto the gateway keeps its own key)"
            )
        for option, path in (("--admin-tls", self.admin_tls_cert), ("--admin-tls-key", self.admin_tls_key)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{option}: no such file: {path}")
        if not self.admin_listen.is_loopback and not self.admin_tls:
            raise ConfigError(
                f"--admin-listen {self.admin_listen}: off loopback the admin API needs TLS: add "
                "--admin-tls auto (a self-signed certificate the gateway makes and keeps) "
                "or --admin-tls FILE (your certificate and key)"
            )

    @property
    def mode_specs(self) -> tuple[str, ...]:
        """mitmproxy mode specs to serve (``proxy/modes.py``): ``--mode``, else ``regular@--proxy-listen``."""
        return self.modes or (f"regular@{self.proxy_listen}",)

    @property
    def admin_tls(self) -> bool:
        return self.admin_tls_auto or self.admin_tls_cert is not None

    @property
    def admin_url(self) -> str:
        """The admin API's URL as clients reach it: https with TLS; the machine's host name when
        it listens on every interface."""
        scheme = "https" if self.admin_tls else "http"
        if self.admin_listen.is_wildcard:
            return HostPort(socket.gethostname(), self.admin_listen.port).url(scheme)
        return self.admin_listen.url(scheme)

    @property
    def public_base_url(self) -> str:
        """The admin server as clients reach it: the base of the CA and CRL links in leaves (AIA,
        CRL DP) and the URL in enrollment tokens."""
        return (self.public_url or self.admin_url).rstrip("/")

    @property
    def database_path(self) -> Path:
        return self.data_dir / "gateway.db"

    @property
    def store_location(self) -> str:
        """Where the store lives: ``--database``, else the SQLite file in the data directory."""
        return self.database or str(self.database_path)

    @property
    def mitmproxy_dir(self) -> Path:
        return self.data_dir / "mitmproxy"


def prepare_data_dir(path: Path) -> None:
    """Create the data directory, readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def load_master_key(data_dir: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> KeySealer:
    """The key that encrypts private keys at rest: ``GATEWAY_MASTER_KEY`` (base64 of 32 bytes),
    else ``DATA_DIR/master.key``, created 0600 on first start."""
    encoded = environ.get(MASTER_KEY_ENV)
    if encoded:
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{MASTER_KEY_ENV} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(f"{MASTER_KEY_ENV} must decode to 32 bytes, got {len(key)}")
        return KeySealer(key)
    path = data_dir / "master.key"
    if not path.exists():
        key = KeySealer.generate_master_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        logger.info("created master key %s (keep it: without it the stored CA keys cannot be read)", path)
        return KeySealer(key)
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{path} is not a base64 master key") from None
    if len(key) != 32:
        raise ConfigError(f"{path} must hold 32 bytes (base64), got {len(key)}")
    return KeySealer(key)


def upstream_trust_bundle(
    data_dir: Path, extra_ca: Path | None, *, name: str = "upstream-trust.pem"
) -> Path | None:
    """mitmproxy's ``ssl_verify_upstream_trusted_ca`` replaces the public roots, so an extra lab
    CA is appended to certifi's bundle in a file of our own (``name``: one per process when
    several share the data directory). None: public roots only."""
    if extra_ca is None:
        return None
    extra = extra_ca.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in extra:
        raise ConfigError(f"--upstream-ca {extra_ca}: no PEM certificate in the file")
    bundle = data_dir / name
    write_private(bundle, Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + extra)
    return bundle


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
