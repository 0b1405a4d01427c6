"""One macOS keychain, reached through Apple's ``security`` tool (the interface of the keychain
store kind: posture reads it, the CA sync changes it).

What is run, and how its output is read:

- ``security find-certificate -a -p -Z KEYCHAIN``: every certificate, each as its hash lines
  (``SHA-256 hash: HEX`` on current macOS, ``SHA-1 hash: HEX``) then its PEM block. The agent
  reads the PEM and computes the hashes itself; a hash line that disagrees with the PEM under it,
  or a PEM that does not parse, makes the whole output unreadable (``SecurityError``), never a
  silently shorter list.
- ``security find-identity KEYCHAIN`` (no ``-v``: expired identities too -- whether a certificate
  is valid is the posture check's call): the certificates whose private key is in the keychain,
  one line each, ``  1) <SHA-1 HEX> "<label>"`` with `` (CSSMERR_...)`` after an invalid one.
- ``security export -k KEYCHAIN -t identities -f pkcs12 -P PASSWORD -o FILE``: the identities as
  PKCS#12 for the proof of possession (``security`` signs nothing itself). macOS lets it only
  when the key's access control allows ``security`` to export it; otherwise it fails, and the
  agent says the key cannot be used.
- ``security trust-settings-export -d FILE``: the admin trust settings as a property list whose
  ``trustList`` is keyed by the SHA-1 of each certificate ("No Trust Settings were found" means
  none).
- ``security add-trusted-cert -d -r trustRoot -k KEYCHAIN FILE`` installs a root as trusted;
  ``security remove-trusted-cert -d FILE`` then ``security delete-certificate -Z SHA1 KEYCHAIN``
  removes it. Both need root (the System keychain and admin trust settings).
"""

from __future__ import annotations

import hashlib
import logging
import plistlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.runner import Command, Completed, Runner, ToolFailed, ToolMissing

logger = logging.getLogger(__name__)

SECURITY = "/usr/bin/security"
SYSTEM_KEYCHAIN = "/Library/Keychains/System.keychain"
LOGIN_KEYCHAIN = "~/Library/Keychains/login.keychain-db"
NO_TRUST_SETTINGS = "No Trust Settings were found"

_HASH_LINE = re.compile(r"^SHA-(1|256) hash:\s*([0-9A-Fa-f]+)\s*$")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.DOTALL)
_IDENTITY = re.compile(r'^\s*\d+\)\s+([0-9A-Fa-f]{40})\s+"(.*)"(?:\s+\(([^()]*)\))?\s*$')


class SecurityError(Exception):
    """``security`` failed, is missing, or printed what the agent cannot read; the message
    names the keychain and says why."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied  # not permitted (not root, no user interaction possible)


@dataclass(frozen=True)
class KeychainCertificate:
    sha1: str  # upper-case hex, as ``security`` prints and takes it (``-Z``)
    sha256: str
    certificate: x509.Certificate


@dataclass(frozen=True)
class Identity:
    sha1: str
    label: str
    status: str = ""  # "CSSMERR_TP_CERT_EXPIRED" and the like; "" for a valid one


def parse_find_certificate(text: str) -> list[KeychainCertificate]:
    """The certificates of ``find-certificate -a -p -Z`` output (module docstring)."""
    found: list[KeychainCertificate] = []
    claimed: dict[str, str] = {}
    position = 0
    for match in _PEM.finditer(text):
        for line in text[position : match.start()].splitlines():
            hashed = _HASH_LINE.match(line.strip())
            if hashed:
                claimed[hashed.group(1)] = hashed.group(2).upper()
            elif line.strip():
                raise ValueError(f"unexpected line {line.strip()[:80]!r}")
        position = match.end()
        try:
            cert = x509.load_pem_x509_certificate(match.group(0).encode())
        except ValueError as e:
            raise ValueError(f"a certificate that does not parse ({e})") from None
        der = cert.public_bytes(serialization.Encoding.DER)
        sha1, sha256 = hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()
        if claimed.get("1", sha1) != sha1 or claimed.get("256", sha256) != sha256:
            raise ValueError(f"the hash printed for certificate {sha1} is not the certificate's")
        claimed = {}
        found.append(KeychainCertificate(sha1, sha256, cert))
    rest = text[position:]
    if "-----BEGIN" in rest:
        raise ValueError("a certificate without its END line")
    if any(not _HASH_LINE.match(line.strip()) for line in rest.splitlines() if line.strip()):
        raise ValueError("text after the last certificate that is not a certificate")
    return found


def parse_find_identity(text: str) -> list[Identity]:
    """The identities of ``find-identity`` output, once each (it lists valid ones twice)."""
    found: dict[str, Identity] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("Policy:") or stripped.endswith("identities found"):
            continue
        if stripped in ("Matching identities", "Valid identities only"):
            continue
        match = _IDENTITY.match(line)
        if not match:
            raise ValueError(f"unexpected line {stripped[:80]!r}")
        sha1 = match.group(1).upper()
        found.setdefault(sha1, Identity(sha1, match.group(2), match.group(3) or ""))
    return list(found.values())


def parse_trust_settings(data: bytes) -> dict[str, bool]:
    """SHA-1 → trusted as a root, from ``trust-settings-export`` (a property list). An entry with
    no constraints trusts the certificate as a root; otherwise one constraint must have the
    result ``trustRoot`` (1, the default) and none ``deny`` (3)."""
    try:
        plist = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError) as e:
        raise ValueError(f"the trust settings are not a property list ({e})") from None
    entries = plist.get("trustList") if isinstance(plist, dict) else None
    if not isinstance(entries, dict):
        raise ValueError("the trust settings hold no trustList")
    trusted = {}
    for sha1, entry in entries.items():
        settings = entry.get("trustSettings", []) if isinstance(entry, dict) else None
        if not isinstance(settings, list):
            raise ValueError(f"the trust settings of {sha1} are not a list")
        results = [s.get("kSecTrustSettingsResult", 1) if isinstance(s, dict) else 1 for s in settings]
        trusted[str(sha1).upper()] = not results or (1 in results and 3 not in results)
    return trusted


class Keychain:
    """One keychain file through ``security``."""

    def __init__(self, path: str, runner: Runner, *, label: str = "") -> None:
        self.path = path
        self.label = label or f"the keychain {path}"
        self._runner = runner

    def certificates(self) -> list[KeychainCertificate]:
        done = self._run("find-certificate", "-a", "-p", "-Z", self.path)
        try:
            return parse_find_certificate(done.text())
        except ValueError as e:
            raise SecurityError(
                f"cannot read `security find-certificate` output for {self.label}: {e}"
            ) from None

    def identities(self) -> list[Identity]:
        done = self._run("find-identity", self.path)
        try:
            return parse_find_identity(done.text())
        except ValueError as e:
            raise SecurityError(
                f"cannot read `security find-identity` output for {self.label}: {e}"
            ) from None

    def export_identities(self, output: str, password: str) -> None:
        """Export every identity as PKCS#12 to ``output`` (a file in a private directory)."""
        self._run("export", "-k", self.path, "-t", "identities", "-f", "pkcs12", "-P", password, "-o", output,
                  shown=f"{SECURITY} export -k {self.path} -t identities -f pkcs12 -P ******** -o {output}")  # fmt: skip

    def trust_settings(self, output: str) -> dict[str, bool]:
        """The admin trust settings (SHA-1 → trusted as a root), exported to ``output``."""
        try:
            self._run("trust-settings-export", "-d", output)
        except SecurityError as e:
            if NO_TRUST_SETTINGS in str(e):
                return {}
            raise
        try:
            with open(output, "rb") as f:
                return parse_trust_settings(f.read())
        except OSError as e:
            raise SecurityError(f"cannot read the exported trust settings: {e.strerror or e}") from None
        except ValueError as e:
            raise SecurityError(f"cannot read the admin trust settings: {e}") from None

    def add_trusted_root(self, pem_file: str) -> None:
        self._run("add-trusted-cert", "-d", "-r", "trustRoot", "-k", self.path, pem_file, changes=True)

    def remove_trust(self, pem_file: str) -> None:
        self._run("remove-trusted-cert", "-d", pem_file, changes=True)

    def delete(self, sha1: str) -> None:
        self._run("delete-certificate", "-Z", sha1, self.path, changes=True)

    def _run(self, *arguments: str, changes: bool = False, shown: str = "") -> Completed:
        command = Command((SECURITY, *arguments), display=shown, changes=changes)
        try:
            done = self._runner.run(command)
        except ToolMissing:
            raise SecurityError(
                f"{SECURITY} is not on this system: {self.label} can be read only on macOS"
            ) from None
        except ToolFailed as e:
            raise SecurityError(f"{self.label}: {e}") from None
        if done.returncode != 0:
            detail = done.last_error_line()
            raise SecurityError(
                f"security {arguments[0]} failed for {self.label}: {detail}", denied=_denied(detail)
            )
        return done


def _denied(detail: str) -> bool:
    lowered = detail.lower()
    return any(
        words in lowered
        for words in ("permission denied", "not permitted", "authorization was denied", "no user interaction",
                      "write permissions", "unix[")
    )  # fmt: skip
