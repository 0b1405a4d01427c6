"""The agent's state file: who this device is and how to reach its server, kept 0600.

Default ``~/.config/gateway-agent/state.json`` (``$XDG_CONFIG_HOME`` is honoured). The file holds
the device secret, so it is written atomically with mode 0600 in a 0700 directory, and a file
that others may read is refused rather than used.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from proxy.agent.errors import AgentError

logger = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_STATE_BYTES = 64 * 1024


def default_state_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gateway-agent" / "state.json"


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

    def __repr__(self) -> str:  # never the secret
        return f"AgentState(server={self.server!r}, device_id={self.device_id!r}, account_id={self.account_id!r})"


def save_state(path: Path, state: AgentState) -> None:
    """Write atomically: a 0600 temporary file beside ``path``, then rename over it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"version": STATE_VERSION, **asdict(state)}, indent=2).encode() + b"\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AgentError(f"no state file at {path}: enroll first with `gateway agent enroll --token T`") from None
    except OSError as e:
        raise AgentError(f"cannot read the state file {path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AgentError(f"the state file {path} is not a regular file")
        if info.st_mode & 0o077:
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
        raise AgentError(f"the state file {path} is not a version {STATE_VERSION} agent state file: enroll again")
    values: dict[str, str] = {}
    optional = ("email", "fingerprint", "serial_number", "hostname")
    for key in ("server", "device_id", "device_secret", "account_id", "name", *optional):
        value = fields.get(key, "" if key in optional else None)
        if not isinstance(value, str) or (not value and key not in optional):
            raise AgentError(f"the state file {path} lacks {key!r}: enroll again")
        values[key] = value
    return AgentState(
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
