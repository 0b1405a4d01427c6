"""The device lab for the posture tests: a real NSS database (NSS `certutil -N` and
`pk12util -i`), the real `gateway agent` and admin CLI commands as processes, the proof of
possession built from the documented wire contract (docs/architecture.md "Device posture"), and
readers for what the agent prints. Certificates come from ``tests.support.pki``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.support.pki import Issued, Key

from . import tools
from .gateway_process import GatewayProcess, child_env

PROOF_PREFIX = b"gateway-posture-proof-v1\n"


# --- a real NSS database ----------------------------------------------------------------------


def make_nssdb(directory: Path) -> Path:
    """`certutil -N -d sql:DIR --empty-password`: the agent reads only empty-password databases."""
    directory.mkdir(parents=True, exist_ok=True)
    tools.run(
        [tools.require("certutil"), "-N", "-d", f"sql:{directory}", "--empty-password"],
        env=child_env(),
        check=True,
    )
    assert (directory / "cert9.db").exists(), sorted(p.name for p in directory.iterdir())
    return directory


def import_into_nssdb(directory: Path, issued: Issued, nickname: str) -> None:
    """Certificate and key through a PKCS#12 bundle and `pk12util -i` (the password goes in a
    file, not on the command line); the bundle is deleted afterwards."""
    bundle = directory.parent / f"{nickname}.p12"
    password_file = directory.parent / f"{nickname}.p12.pw"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            nickname.encode(),
            issued.key,
            issued.certificate,
            None,
            serialization.BestAvailableEncryption(b"e2e-import"),
        )
    )
    password_file.write_text("e2e-import\n")
    try:
        tools.run(
            [tools.require("pk12util"), "-i", str(bundle), "-d", f"sql:{directory}",
             "-w", str(password_file), "-K", ""],
            env=child_env(),
            check=True,
        )  # fmt: skip
    finally:
        bundle.unlink(missing_ok=True)
        password_file.unlink(missing_ok=True)


def delete_from_nssdb(directory: Path, nickname: str, *, missing_ok: bool = False) -> None:
    """`certutil -F` removes the certificate and its private key."""
    if missing_ok and nickname not in nss_nicknames(directory):
        return
    tools.run(
        [tools.require("certutil"), "-F", "-d", f"sql:{directory}", "-n", nickname],
        env=child_env(),
        check=True,
    )


def nss_nicknames(directory: Path) -> str:
    listed = tools.run(
        [tools.require("certutil"), "-L", "-d", f"sql:{directory}"], env=child_env(), check=True
    )
    return listed.stdout.decode(errors="replace")


# --- the agent and the admin CLI as processes --------------------------------------------------


@dataclass
class Agent:
    """`gateway agent ...` with its own state file and home (the user NSS database is
    `$HOME/.pki/nssdb`, as docs/agent.md says)."""

    state: Path
    home: Path

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        env = child_env({"HOME": str(self.home)})
        env.pop("XDG_CONFIG_HOME", None)
        return tools.run(
            [tools.venv_program("gateway"), "agent", *args, "--state", str(self.state)],
            env=env,
            timeout=timeout,
        )

    def saved(self) -> dict[str, Any]:
        data = json.loads(self.state.read_text())
        assert isinstance(data, dict), data
        return data

    @property
    def device_id(self) -> str:
        return str(self.saved()["device_id"])

    @property
    def device_secret(self) -> str:
        return str(self.saved()["device_secret"])

    @property
    def proxy_user(self) -> str:
        return f"{self.device_id}:{self.device_secret}"

    def basic_auth(self, secret: str | None = None) -> str:
        raw = f"{self.device_id}:{self.device_secret if secret is None else secret}"
        return "Basic " + base64.b64encode(raw.encode()).decode()


def admin_cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`gateway <args> --server ADMIN` with the gateway's admin token in the environment."""
    assert gw.token
    return tools.run(
        [tools.venv_program("gateway"), *args, "--server", gw.admin_url],
        env=child_env({"GATEWAY_ADMIN_TOKEN": gw.token}),
    )


def table_rows(table: str, columns: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """A table the agent prints (header line, then one line per rule; stops at the first blank
    line): the cells under `columns` by the first column's value. The last column runs to the
    end of the line."""
    lines = table.splitlines()
    header, body = lines[0], []
    for line in lines[1:]:
        if not line.strip():
            break
        body.append(line)
    starts = [header.index(title) for title in columns]
    rows = {}
    for line in body:
        cells = [
            line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, start in enumerate(starts)
        ]
        rows[line[: starts[0]].strip()] = tuple(cells)
    return rows


# --- the proof of possession, from the documented contract -------------------------------------


def proof_message(nonce: bytes, device_id: str, rule_id: str) -> bytes:
    """docs/architecture.md: b"gateway-posture-proof-v1\\n" + nonce + b"\\n" + device id + b"\\n"
    + rule id."""
    return PROOF_PREFIX + nonce + b"\n" + device_id.encode() + b"\n" + rule_id.encode()


def sign(key: Key, message: bytes) -> str:
    """ECDSA-SHA256 (DER), base64, as the agent sends it for an EC key (the lab's keys are EC)."""
    assert isinstance(key, ec.EllipticCurvePrivateKey), type(key)
    return base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()


def passing_claim(
    issued: Issued, nonce_b64: str, device_id: str, rule_id: str, *, key: Any = None
) -> dict[str, Any]:
    """A result claiming a pass with `issued`'s certificate, signed over the nonce (with `key`
    instead of the certificate's own key when given)."""
    nonce = base64.b64decode(nonce_b64)
    return {
        "rule_id": rule_id,
        "success": True,
        "nonce": nonce_b64,
        "certificate": issued.cert_pem(),
        "signature": sign(key or issued.key, proof_message(nonce, device_id, rule_id)),
    }


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
