"""The device's NSS database (Debian: libnss3-tools): made empty-password, as the agent reads
it; the client certificate in and out (``pk12util -i``, ``certutil -F``); a trusted root for the
browser (``certutil -A -t C,,``)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.demo.children import ChildError, run

logger = logging.getLogger(__name__)

TOOLS_HINT = "install NSS's tools (Debian/Ubuntu: apt install libnss3-tools)"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ChildError(f"{name} is not installed: {TOOLS_HINT}")
    return found


@dataclass(frozen=True)
class NssDatabase:
    directory: Path
    env: Mapping[str, str]

    @property
    def spec(self) -> str:
        return f"sql:{self.directory}"

    def create(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        run([tool("certutil"), "-N", "-d", self.spec, "--empty-password"], env=self.env)

    def trust_root(self, pem: Path, nickname: str) -> None:
        run(
            [tool("certutil"), "-A", "-d", self.spec, "-t", "C,,", "-n", nickname, "-i", str(pem)],
            env=self.env,
        )

    def import_pkcs12(self, bundle: Path, password_file: Path) -> None:
        run(
            [tool("pk12util"), "-i", str(bundle), "-d", self.spec, "-w", str(password_file), "-K", ""],
            env=self.env,
        )

    def nicknames(self) -> str:
        return run([tool("certutil"), "-L", "-d", self.spec], env=self.env).stdout

    def has(self, nickname: str) -> bool:
        return any(line.startswith(nickname + " ") for line in self.nicknames().splitlines())

    def delete(self, nickname: str) -> bool:
        """The certificate and its key; False when it was not there."""
        if not self.has(nickname):
            return False
        run([tool("certutil"), "-F", "-d", self.spec, "-n", nickname], env=self.env)
        return True
