"""curl through the proxy, with what `--write-out` reports split from the body."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from . import tools
from .gateway_process import child_env
from .pki import load_pems

_MARK = "\n--e2e-write-out--\n"


@dataclass(frozen=True)
class CurlResult:
    returncode: int
    body: str
    status: int
    http_version: str
    certs: list[x509.Certificate]  # as presented to curl: leaf first
    stderr: str
    connect_status: int = 0  # the proxy's answer to CONNECT (0: no CONNECT was answered)


def via_proxy(
    proxy_port: int, url: str, *, cacert: Path, args: tuple[str, ...] = (), timeout: float = 30
) -> CurlResult:
    curl = tools.require("curl")
    argv = [
        curl, "-sS", "--max-time", str(int(timeout) - 5),
        "-x", f"http://127.0.0.1:{proxy_port}",
        "--cacert", str(cacert),
        "-w", _MARK + "%{http_code} %{http_version} %{http_connect}\n%{certs}",
        *args, url,
    ]  # fmt: skip
    result = tools.run(argv, timeout=timeout, env=child_env())
    out = result.stdout.decode(errors="replace")
    body, _, written = out.partition(_MARK)
    first, _, certs = written.partition("\n")
    code, version, connect = (first.split(" ") + ["", "", ""])[:3]
    return CurlResult(
        returncode=result.returncode,
        body=body,
        status=int(code or 0),
        http_version=version.strip(),
        certs=load_pems(certs) if "BEGIN CERTIFICATE" in certs else [],
        stderr=result.stderr.decode(errors="replace"),
        connect_status=int(connect or 0),
    )
