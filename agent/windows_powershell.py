"""One Windows certificate store (``LocalMachine\\My``, ``CurrentUser\\Root``, ...), reached through
Windows PowerShell and .NET (the interface of the Windows store kind: posture reads ``My``, the
CA sync changes ``Root``).

Every script runs as ``powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass
-EncodedCommand BASE64`` (UTF-16LE, so that no quoting can go wrong); a dry run shows the script
itself. Each script stops at the first error and writes it as one line,
``gateway-agent-error: MESSAGE``, on stderr with exit status 1, so the agent reports the cause
and not PowerShell's error record. Output is JSON the agent designed:

- listing: ``Get-ChildItem Cert:\\LOCATION\\STORE`` as ``[{"Thumbprint", "HasPrivateKey",
  "FriendlyName", "RawData"}]`` (RawData: base64 DER; ``ConvertTo-Json -InputObject @(...)``,
  so one certificate is still an array). The agent computes the SHA-1 of RawData and refuses an
  output whose thumbprint disagrees, or that is not that JSON: the store is then reported as
  unreadable, never as empty. Names are read from the DER, so a console code page that mangles
  a non-ASCII FriendlyName changes nothing but that label.
- signing: the certificate's private key is used in place through .NET
  (``GetRSAPrivateKey``: RSA-PSS-SHA256; ``GetECDsaPrivateKey``: ECDSA, SHA-256 for P-256 and
  SHA-384 for P-384, returned as IEEE P1363 r||s and re-encoded as DER here), so a key marked
  not exportable still proves possession. ``{"format", "signature"}``.
- changes: ``X509Store.Add`` / ``X509Store.Remove`` on the Root store with the certificate's
  base64 in the script (no temporary file; what a dry run prints is exactly what would run).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.runner import Command, Completed, Runner, ToolFailed, ToolMissing

logger = logging.getLogger(__name__)

POWERSHELL = "powershell.exe"
ERROR_PREFIX = "gateway-agent-error: "
LOCATIONS = ("LocalMachine", "CurrentUser")
X509 = "System.Security.Cryptography.X509Certificates"
_ACCESS_DENIED = (
    "access is denied",
    "0x80070005",
    "unauthorizedaccess",
    "requested registry access is not allowed",
)

_WRAP = """$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = [System.Text.Encoding]::UTF8
try {
%s
} catch {
  [Console]::Error.WriteLine('gateway-agent-error: ' + ($_.Exception.Message -replace '\\s+', ' '))
  exit 1
}"""

_LIST = """  $items = @(Get-ChildItem -LiteralPath 'Cert:\\%s' | ForEach-Object {
    [pscustomobject]@{ Thumbprint = $_.Thumbprint; HasPrivateKey = $_.HasPrivateKey;
                       FriendlyName = $_.FriendlyName; RawData = [Convert]::ToBase64String($_.RawData) } })
  ConvertTo-Json -InputObject $items -Compress"""

_SIGN = """  $c = Get-Item -LiteralPath 'Cert:\\%s\\%s'
  if (-not $c.HasPrivateKey) { throw 'the store holds no private key for this certificate' }
  $m = [Convert]::FromBase64String('%s')
  $k = [%s.RSACertificateExtensions]::GetRSAPrivateKey($c)
  if ($k) {
    $s = $k.SignData($m, [System.Security.Cryptography.HashAlgorithmName]::SHA256,
                     [System.Security.Cryptography.RSASignaturePadding]::Pss)
    $f = 'rsa-pss'
  } else {
    $k = [%s.ECDsaCertificateExtensions]::GetECDsaPrivateKey($c)
    if (-not $k) { throw 'the private key is neither RSA nor ECDSA, or cannot be opened' }
    if ($k.KeySize -gt 256) { $h = [System.Security.Cryptography.HashAlgorithmName]::SHA384 }
    else { $h = [System.Security.Cryptography.HashAlgorithmName]::SHA256 }
    $s = $k.SignData($m, $h)
    $f = 'ecdsa-p1363'
  }
  ConvertTo-Json -InputObject ([pscustomobject]@{ format = $f; signature = [Convert]::ToBase64String($s) }) -Compress"""

_ADD = """  $c = New-Object %s.X509Certificate2 (,[Convert]::FromBase64String('%s'))
  $s = New-Object %s.X509Store ('%s', '%s')
  $s.Open('ReadWrite')
  $s.Add($c)
  $s.Close()"""

_REMOVE = """  $s = New-Object %s.X509Store ('%s', '%s')
  $s.Open('ReadWrite')
  $found = $s.Certificates.Find('FindByThumbprint', '%s', $false)
  foreach ($c in $found) { $s.Remove($c) }
  $s.Close()"""


class PowerShellError(Exception):
    """PowerShell failed, is missing, or printed what the agent cannot read; ``denied`` when
    Windows refused access (not elevated)."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


@dataclass(frozen=True)
class StoreCertificate:
    thumbprint: str  # SHA-1, upper-case hex
    has_private_key: bool
    friendly_name: str
    certificate: x509.Certificate


def script_command(body: str, *, changes: bool = False) -> Command:
    script = _WRAP % body
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    argv = (
        POWERSHELL,
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
        encoded,
    )
    shown = (
        f"{POWERSHELL} -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand <this script>:\n"
    )
    return Command(
        argv, display=shown + "\n".join("    " + line for line in script.splitlines()), changes=changes
    )


def run_script(runner: Runner, body: str) -> Completed:
    """Run a read-only script; ``PowerShellError`` when PowerShell is missing or the script fails."""
    try:
        done = runner.run(script_command(body))
    except (ToolMissing, ToolFailed) as e:
        raise PowerShellError(str(e)) from None
    if done.returncode != 0:
        raise PowerShellError(f"PowerShell failed: {_error(done)}")
    return done


def decode_script(command: Command) -> str:
    """The script an encoded command carries (for dry runs and for tests)."""
    return base64.b64decode(command.argv[-1]).decode("utf-16-le")


def parse_listing(output: bytes) -> list[StoreCertificate]:
    """The certificates of a listing script's output (module docstring); ValueError saying why not."""
    text = output.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not text:
        return []  # PowerShell prints nothing for an empty pipeline in some versions
    try:
        value: Any = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    items = value if isinstance(value, list) else [value]
    found = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"item {index} is not an object")
        thumbprint, has_key, raw = item.get("Thumbprint"), item.get("HasPrivateKey"), item.get("RawData")
        if not isinstance(thumbprint, str) or not isinstance(has_key, bool) or not isinstance(raw, str):
            raise ValueError(f"item {index} lacks Thumbprint, HasPrivateKey or RawData")
        try:
            der = base64.b64decode(raw, validate=True)
            cert = x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"item {index} ({thumbprint}): RawData is not a certificate ({e})") from None
        sha1 = hashlib.sha1(der).hexdigest().upper()  # Windows names certificates by it
        if thumbprint.upper() != sha1:
            raise ValueError(f"item {index}: thumbprint {thumbprint} is not the certificate's ({sha1})")
        name = item.get("FriendlyName")
        found.append(StoreCertificate(sha1, has_key, name if isinstance(name, str) else "", cert))
    return found


def parse_signature(output: bytes) -> bytes:
    """The signature of a signing script's output, as ``certs.proof`` verifies it."""
    text = output.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    try:
        value = json.loads(text)
        kind, signature = value["format"], base64.b64decode(value["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise ValueError(f"not a signature ({e})") from None
    if kind == "rsa-pss":
        return signature
    if kind == "ecdsa-p1363" and signature and len(signature) % 2 == 0:
        half = len(signature) // 2
        r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        return encode_dss_signature(r, s)
    raise ValueError(f"a signature of unknown format {kind!r}")


class CertStore:
    """``Cert:\\LOCATION\\NAME`` through PowerShell."""

    def __init__(self, location: str, name: str, runner: Runner) -> None:
        if location not in LOCATIONS:
            raise ValueError(f"unknown store location {location!r}")
        self.location, self.name = location, name
        self.path = f"{location}\\{name}"
        self._runner = runner

    def certificates(self) -> list[StoreCertificate]:
        done = self._run(script_command(_LIST % self.path))
        try:
            return parse_listing(done.stdout)
        except ValueError as e:
            raise PowerShellError(f"cannot read the listing of {self.path} from PowerShell: {e}") from None

    def sign(self, thumbprint: str, message: bytes) -> bytes:
        body = _SIGN % (self.path, _thumbprint(thumbprint), base64.b64encode(message).decode(), X509, X509)
        done = self._run(script_command(body))
        try:
            return parse_signature(done.stdout)
        except ValueError as e:
            raise PowerShellError(
                f"cannot read the signature PowerShell made with {self.path}\\{thumbprint}: {e}"
            ) from None

    def add(self, der: bytes) -> None:
        body = _ADD % (X509, base64.b64encode(der).decode(), X509, self.name, self.location)
        self._run(script_command(body, changes=True))

    def remove(self, thumbprint: str) -> None:
        self._run(
            script_command(_REMOVE % (X509, self.name, self.location, _thumbprint(thumbprint)), changes=True)
        )

    def _run(self, command: Command) -> Completed:
        try:
            done = self._runner.run(command)
        except ToolMissing:
            raise PowerShellError(
                f"{POWERSHELL} is not on this system: Cert:\\{self.path} can be reached only on Windows"
            ) from None
        except ToolFailed as e:
            raise PowerShellError(f"Cert:\\{self.path}: {e}") from None
        if done.returncode != 0:
            detail = _error(done)
            denied = any(words in detail.lower() for words in _ACCESS_DENIED)
            raise PowerShellError(f"PowerShell failed on Cert:\\{self.path}: {detail}", denied=denied)
        return done


def _thumbprint(value: str) -> str:
    if len(value) != 40 or any(c not in "0123456789ABCDEFabcdef" for c in value):
        raise PowerShellError(f"not a certificate thumbprint: {value!r}")
    return value.upper()


def _error(done: Completed) -> str:
    for line in done.stderr.decode("utf-8", errors="replace").splitlines():
        if line.startswith(ERROR_PREFIX):
            return line.removeprefix(ERROR_PREFIX).strip() or f"exit status {done.returncode}"
    return done.last_error_line()
