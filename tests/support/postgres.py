"""A throwaway PostgreSQL cluster on loopback for the tests: Debian's binaries, no system service.

``Cluster.start()`` makes a temporary directory, runs ``initdb`` there (as ``nobody`` when the
tests run as root: PostgreSQL refuses to run as root), and starts ``postgres`` on 127.0.0.1 on a
free port with its socket in that directory. Host connections authenticate with SCRAM and a
generated password (so that a wrong password is refused, as on a real server); each test gets a
database of its own (``create_database``). ``stop``/``start``/``restart`` fault the server under
a running gateway; ``close`` stops it and removes everything.

Absent binaries skip the PostgreSQL tests with the reason, except in CI, where they fail
(``scripts/install-test-deps`` installs Debian's ``postgresql``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.support.wait import wait_until

USER = "gateway"
_UNPRIVILEGED = "nobody"


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb`` and ``postgres``."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (
            p / "bin"
            for p in root.glob("*")
            if (p / "bin" / "initdb").is_file() and (p / "bin" / "postgres").is_file()
        ),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def require_binaries() -> Path:
    """The binaries, or a skip (a failure in CI) saying how to get them."""
    found = binaries()
    if found is None:
        reason = "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: run scripts/install-test-deps"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    root: Path
    port: int
    password: str = field(repr=False)
    fsync: bool = False
    _process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls, *, fsync: bool = False) -> Cluster:
        bin_dir = require_binaries()
        root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        cluster = cls(bin_dir, root, _free_port(), secrets.token_urlsafe(16), fsync)
        try:
            cluster._init()
            cluster.start()
        except BaseException:
            cluster.close()
            raise
        return cluster

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{USER}:{secret}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *argv: str | Path) -> list[str]:
        command = [str(a) for a in argv]
        if os.geteuid() == 0:
            return ["runuser", "-u", _UNPRIVILEGED, "--", *command]
        return command

    def _init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_UNPRIVILEGED)
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o700)
        subprocess.run(
            self._as_owner(
                self.bin / "initdb", "-D", self.data, "-U", USER, "--pwfile", pwfile,
                "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
            ),
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        """Start the server (again) on the same port and data, and wait until it accepts."""
        settings = [
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "shared_buffers=32MB",
            "-c", "max_connections=200",
            "-c", "listen_addresses=127.0.0.1",
        ]  # fmt: skip
        log = (self.root / "postgres.log").open("ab")
        self._process = subprocess.Popen(
            self._as_owner(self.bin / "postgres", "-D", self.data, "-k", self.root, "-p", str(self.port), *settings),
            stdout=log, stderr=log, cwd=self.root,
        )  # fmt: skip
        log.close()
        if not wait_until(self._ready, 30):
            raise RuntimeError(
                f"PostgreSQL did not start: {(self.root / 'postgres.log').read_text()[-2000:]}"
            )

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {(self.root / 'postgres.log').read_text()[-2000:]}")
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, a clean shutdown) or ``immediate``
        (as if the server crashed: recovery from the WAL at the next start)."""
        if self._process is None:
            return
        subprocess.run(
            self._as_owner(self.bin / "pg_ctl", "stop", "-D", self.data, "-m", mode, "-w"),
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip
        self._process.wait(timeout=30)
        self._process = None

    def restart(self, *, mode: str = "fast") -> None:
        self.stop(mode=mode)
        self.start()

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=5)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
