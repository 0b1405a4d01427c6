r"""The agent's state file: who this device is and how to reach its server, kept 0600.

Default: the platform's usual place (``agent.state_path``): ``~/.config/gateway-agent/state.json``
on Linux (``$XDG_CONFIG_HOME`` is honoured), ``~/Library/Application Support/gateway-agent`` on
macOS (``/Library/Application Support/gateway-agent`` for root), ``%LOCALAPPDATA%\gateway-agent``
on Windows (``%PROGRAMDATA%\gateway-agent`` for LocalSystem). The file holds the device secret,
so it is written atomically with mode 0600 in a 0700 directory, and a file that others may read
is refused rather than used. On Windows modes mean nothing: the agent relies on the folder's
access control list (docs/agent.md says what it does and does not do there).

It also holds the trust-store part of the agent (issue 5): ``trust_stores``, which stores the
CA sync uses (``TrustStoresConfig``), and ``trust_installed``, every root certificate this agent
installed itself (store, fingerprint, NSS nickname or file path). Only those are ever removed.
Both are optional: a state file written before them reads as "every store on, nothing installed".
Changes to ``trust_installed`` go through ``update_trust_installed``, which holds an exclusive
lock (``<state>.lock``) and re-reads the file, so that ``sync-ca`` beside a running ``run`` loses
no record.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.state_path import default_state_path as default_state_path

logger = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_STATE_BYTES = 64 * 1024
WINDOWS = os.name == "nt"
NOFOLLOW = getattr(
    os, "O_NOFOLLOW", 0
)  # Windows has none (and no symlinks a user may plant there by default)


@dataclass(frozen=True)
class TrustStoresConfig:
    """Which trust stores the CA sync keeps in step (``"trust_stores"`` in the state file)."""

    system: bool = True  # /usr/local/share/ca-certificates (+ update-ca-certificates), or RHEL's anchors
    nss: bool = True  # the default NSS databases: ~/.pki/nssdb and /etc/pki/nssdb
    nss_databases: tuple[str, ...] = ()  # more NSS database directories (absolute, ``~`` expanded)
    user: bool = False  # the user's own root store: Windows Cert:\\CurrentUser\\Root (asks the user)


@dataclass(frozen=True)
class InstalledCertificate:
    """One root certificate this agent put into one store (``"trust_installed"``)."""

    store: str  # "system:/usr/local/share/ca-certificates" or "nss:/home/ann/.pki/nssdb" (real paths)
    fingerprint: str  # SHA-256, upper-case colon hex
    name: str  # the file written (system) or the NSS nickname


@dataclass(frozen=True)
class AgentState:
    server: str
    fingerprint: str  # pinned SHA-256 of the server's certificate; "" for http on loopback
    account_id: str
    device_id: str
    device_secret: str
    name: str
    email: str = ""
    serial_number: str = ""  # what the device enrolled with; the server fills ${serial_number} with it
    hostname: str = ""  # likewise for ${hostname}
    trust_stores: TrustStoresConfig = field(default_factory=TrustStoresConfig)
    trust_installed: tuple[InstalledCertificate, ...] = ()

    def __repr__(self) -> str:  # never the secret
        return f"AgentState(server={self.server!r}, device_id={self.device_id!r}, account_id={self.account_id!r})"


def save_state(path: Path, state: AgentState) -> None:
    """Write atomically: a 0600 temporary file beside ``path``, then rename over it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the mode is ignored on Windows
    data = json.dumps(state_to_json(state), indent=2).encode() + b"\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0), 0o600
        )
        try:
            if not WINDOWS:
                os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise AgentError(f"cannot write the state file {path}: {e.strerror or e}") from None
    logger.info("saved device %s to %s", state.device_id, path)


def load_state(path: Path) -> AgentState:
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise AgentError(
            f"no state file at {path}: enroll first with `gateway agent enroll --token T`"
        ) from None
    except OSError as e:
        raise AgentError(f"cannot read the state file {path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AgentError(f"the state file {path} is not a regular file")
        if info.st_mode & 0o077 and not WINDOWS:  # Windows: the folder's ACL decides (docs/agent.md)
            raise AgentError(
                f"the state file {path} holds the device secret but others may read it "
                f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`"
            )
        data = os.read(fd, MAX_STATE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        raise AgentError(f"the state file {path} is too large to be an agent state file")
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> AgentState:
    try:
        fields = json.loads(data)
    except ValueError:
        raise AgentError(f"the state file {path} is not JSON: enroll again") from None
    if not isinstance(fields, dict) or fields.get("version") != STATE_VERSION:
        raise AgentError(
            f"the state file {path} is not a version {STATE_VERSION} agent state file: enroll again"
        )
    values: dict[str, str] = {}
    optional = ("email", "fingerprint", "serial_number", "hostname")
    for key in ("server", "device_id", "device_secret", "account_id", "name", *optional):
        value = fields.get(key, "" if key in optional else None)
        if not isinstance(value, str) or (not value and key not in optional):
            raise AgentError(f"the state file {path} lacks {key!r}: enroll again")
        values[key] = value
    return AgentState(
        trust_stores=_parse_trust_stores(path, fields.get("trust_stores")),
        trust_installed=_parse_installed(path, fields.get("trust_installed")),
        server=str(values["server"]),
        fingerprint=str(values["fingerprint"]),
        account_id=str(values["account_id"]),
        device_id=str(values["device_id"]),
        device_secret=str(values["device_secret"]),
        name=str(values["name"]),
        email=str(values["email"]),
        serial_number=str(values["serial_number"]),
        hostname=str(values["hostname"]),
    )


def _parse_trust_stores(path: Path, value: object) -> TrustStoresConfig:
    if value is None:
        return TrustStoresConfig()
    bad = AgentError(
        f'the state file {path} has a bad "trust_stores": expected {{"system": true|false, "nss": true|false, '
        '"nss_databases": ["/absolute/dir", ...], "user": true|false}'
    )
    if not isinstance(value, dict) or set(value) - {"system", "nss", "nss_databases", "user"}:
        raise bad
    system, nss, databases = value.get("system", True), value.get("nss", True), value.get("nss_databases", [])
    user = value.get("user", False)
    if not all(isinstance(flag, bool) for flag in (system, nss, user)) or not isinstance(databases, list):
        raise bad
    if not all(isinstance(d, str) and d.strip() for d in databases):
        raise bad
    return TrustStoresConfig(
        system=system, nss=nss, nss_databases=tuple(d.strip() for d in databases), user=user
    )


def _parse_installed(path: Path, value: object) -> tuple[InstalledCertificate, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise AgentError(f'the state file {path} has a bad "trust_installed": expected a list')
    records = []
    for item in value:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) and item[key] for key in ("store", "fingerprint", "name")
        ):
            raise AgentError(
                f'the state file {path} has a bad "trust_installed" entry: expected {{"store", "fingerprint", "name"}}'
            )
        records.append(InstalledCertificate(item["store"], item["fingerprint"], item["name"]))
    return tuple(records)


@contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<state>.lock`` (0600, beside the state file) for as long as held."""
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError as e:
        raise AgentError(f"cannot open the lock file {lock}: {e.strerror or e}") from None
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int) -> None:
    """Block until this process holds the exclusive lock on ``fd`` (``flock``; on Windows
    ``msvcrt.locking`` of the first byte, retried until it is free)."""
    if WINDOWS:  # pragma: no cover -- not run on Linux
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined,unused-ignore]
                return
            except OSError:
                continue  # LK_LOCK gives up after ten seconds: keep waiting, as flock does
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def update_state(path: Path, change: Callable[[AgentState], AgentState]) -> AgentState:
    """Re-read the state file, apply ``change`` and save the result (if it differs); the saved state.

    Call it inside ``state_lock(path)``: then no other agent process changes the file between the
    read and the write (the trust sync records each certificate it installs or removes this way)."""
    state = load_state(path)
    updated = change(state)
    if updated != state:
        save_state(path, updated)
    return updated


def update_trust_installed(
    path: Path, change: Callable[[tuple[InstalledCertificate, ...]], tuple[InstalledCertificate, ...]]
) -> AgentState:
    """``update_state`` for the records of installed certificates only."""
    return update_state(path, lambda state: replace(state, trust_installed=change(state.trust_installed)))


def state_to_json(state: AgentState) -> dict[str, Any]:
    fields = asdict(state)
    if not state.trust_stores.user:  # written only when on (Windows), so other files stay as they were
        del fields["trust_stores"]["user"]
    return {"version": STATE_VERSION, **fields}
