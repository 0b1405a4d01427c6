"""Where the demo keeps everything: one directory, and four loopback ports from one base.

Nothing the demo makes lives outside the directory: the gateway's data directory, the lab PKI,
the hosts file, the policies, the device's home (its NSS database and agent state), the
browser's profile, the children's logs and their temporary files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = ".gateway-demo"  # a directory holding it is a demo's, and may be wiped
DEFAULT_DIR = Path("demo")
DEFAULT_PORT_BASE = 18080
LOOPBACK = "127.0.0.1"


class LayoutError(Exception):
    """The directory or a port cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Ports:
    """``base`` and the three after it: gateway proxy, admin API, origins, the device's local proxy."""

    base: int

    def __post_init__(self) -> None:
        if not 1024 <= self.base <= 65535 - 3:
            raise LayoutError(f"--port-base {self.base}: expected 1024-65532 (four ports from it)")

    @property
    def proxy(self) -> int:
        return self.base

    @property
    def admin(self) -> int:
        return self.base + 1

    @property
    def origins(self) -> int:
        return self.base + 2

    @property
    def local_proxy(self) -> int:
        return self.base + 3

    def named(self) -> dict[str, int]:
        return {
            "gateway proxy": self.proxy,
            "admin API": self.admin,
            "demo origins": self.origins,
            "local proxy": self.local_proxy,
        }

    def check_free(self) -> None:
        """Every port free on loopback, or one line naming the first busy one."""
        for what, port in self.named().items():
            with socket.socket() as probe:
                probe.setsockopt(
                    socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
                )  # as servers bind: TIME_WAIT is free
                try:
                    probe.bind((LOOPBACK, port))
                except OSError as e:
                    reason = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
                    raise LayoutError(
                        f"port {port} ({what}) on {LOOPBACK} is {reason}: choose another --port-base"
                    ) from None


@dataclass(frozen=True)
class Layout:
    """Paths inside the demo directory."""

    root: Path

    @property
    def gateway_dir(self) -> Path:
        return self.root / "gateway"

    @property
    def lab_dir(self) -> Path:
        return self.root / "lab"

    @property
    def lab_ca(self) -> Path:
        return self.lab_dir / "lab-ca.pem"

    @property
    def hosts(self) -> Path:
        return self.lab_dir / "hosts"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"

    @property
    def gateway_ca(self) -> Path:
        return self.root / "gateway-ca.pem"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin-token"

    @property
    def device_dir(self) -> Path:
        return self.root / "device"

    @property
    def home(self) -> Path:
        """The device user's home: the agent's and the browser's ``~/.pki/nssdb``."""
        return self.device_dir / "home"

    @property
    def nssdb(self) -> Path:
        return self.home / ".pki" / "nssdb"

    @property
    def agent_state(self) -> Path:
        return self.device_dir / "agent-state.json"

    @property
    def client_p12(self) -> Path:
        return self.device_dir / "client.p12"

    @property
    def client_p12_password(self) -> Path:
        return self.device_dir / "client.p12.pw"

    @property
    def browser_profile(self) -> Path:
        return self.root / "browser"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def state_file(self) -> Path:
        return self.root / "demo.json"

    def prepare(self) -> bool:
        """A clean directory: made (True), or an empty one or a former demo's, emptied (False).
        Anything else is refused, so a wrong ``--dir`` never loses someone's files."""
        made = not self.root.exists()
        if not made:
            if not self.root.is_dir():
                raise LayoutError(f"--dir {self.root}: not a directory")
            if any(self.root.iterdir()) and not (self.root / MARKER).exists():
                raise LayoutError(
                    f"--dir {self.root}: not empty and not a demo directory: give an empty or new directory"
                )
            self.empty()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / MARKER).write_text("made by `gateway demo`; removed when it stops\n")
        for directory in (self.lab_dir, self.policies_dir, self.device_dir, self.home, self.logs, self.tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return made

    def empty(self) -> None:
        """Remove everything inside the directory."""
        for child in self.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def remove(self, *, made: bool) -> None:
        """What :meth:`prepare` made: the directory itself when it made it, else its contents."""
        if made:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.root.exists():
            self.empty()


@dataclass(frozen=True)
class LabOptions:
    layout: Layout
    ports: Ports
    keep: bool = False  # leave the directory when stopping (logs, databases)
    program: str = "gateway"  # how the trainer runs the gateway command, for the banner


@dataclass(frozen=True)
class DemoState:
    """What ``gateway demo posture pass|fail`` needs from a running lab (``DIR/demo.json``)."""

    nickname: str
    ports: int
    pids: tuple[int, ...] = ()

    def save(self, layout: Layout) -> None:
        layout.state_file.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, layout: Layout) -> DemoState:
        try:
            data = json.loads(layout.state_file.read_text())
            return cls(str(data["nickname"]), int(data["ports"]), tuple(int(p) for p in data.get("pids", ())))
        except FileNotFoundError:
            raise LayoutError(
                f"{layout.root}: no demo lab runs here (no {layout.state_file.name}): start `gateway demo` "
                "first, or give its --dir"
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise LayoutError(f"{layout.state_file}: unreadable ({e})") from None
