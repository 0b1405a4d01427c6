"""The macOS System keychain as a trust store for the CA sync, changed only through ``security``
(``agent.macos_security.Keychain``).

- listed with ``security find-certificate -a -p -Z /Library/Keychains/System.keychain`` (SHA-256
  computed from each PEM) and ``security trust-settings-export -d`` (the admin trust settings, by
  SHA-1); a root counts as installed when it is in the keychain *and* the admin trust settings
  trust it as a root -- what Safari, Chrome, curl and every program using the system's trust see;
- installed with ``security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain
  FILE`` (the PEM in a fresh 0700 directory, ``gateway-<fp16>.pem``); recorded by its SHA-1;
- removed with ``security remove-trusted-cert -d FILE`` then ``security delete-certificate -Z
  SHA1 /Library/Keychains/System.keychain``, only for a root this agent recorded and only while
  the keychain still holds that very certificate.

The report to the server names it ``system`` (macOS's system store, as the Linux one is).
Both changes need root (macOS may also ask an administrator to confirm a trust change); without
it ``security`` refuses, and the report names the store and what to do. A root already in the
keychain without root trust was put there by someone else: it is left as it is.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from agent.macos_security import SYSTEM_KEYCHAIN, Keychain, SecurityError
from agent.runner import Runner
from agent.state import InstalledCertificate
from agent.trust_store import Entry, RootCertificate, StoreError, Unusable, describe_uid, fp16

logger = logging.getLogger(__name__)

STORE_PREFIX = "keychain:"
NEEDS_ROOT = "changing the System keychain's trust needs root: run `sudo gateway agent sync-ca`, or leave it out with --no-system"


class KeychainStore:
    optional = False
    reported_as = "system"  # the server's name for the platform's system store

    def __init__(self, runner: Runner, path: str = SYSTEM_KEYCHAIN) -> None:
        self.keychain = Keychain(path, runner, label=f"the keychain {path}")
        self.key = self.name = f"{STORE_PREFIX}{path}"

    def __repr__(self) -> str:
        return f"KeychainStore({self.keychain.path!r})"

    def problem(self) -> Unusable | None:
        return None  # whether this user may change it only ``security`` can say

    def inventory(self) -> list[Entry]:
        try:
            certificates = self.keychain.certificates()
            with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:
                trust = self.keychain.trust_settings(str(Path(scratch) / "trust.plist"))
        except SecurityError as e:
            raise StoreError(str(e)) from None
        return [Entry(_colon(item.sha256), item.sha1, trust.get(item.sha1, False)) for item in certificates]

    def owned_name(self, fingerprint: str) -> str:
        return ""  # roots are named by their own SHA-1: no name can hold another certificate

    def install(self, root: RootCertificate) -> str:
        assert root.certificate is not None
        with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:  # 0700
            pem = Path(scratch) / f"gateway-{fp16(root.fingerprint).lower()}.pem"
            pem.write_bytes(root.pem())
            try:
                self.keychain.add_trusted_root(str(pem))
            except SecurityError as e:
                raise StoreError(_explain(e)) from None
        return hashlib.sha1(root.certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        return "", (
            f"already in {self.keychain.path} without trust as a root (put there by someone else): left as is"
        )

    def remove(self, record: InstalledCertificate) -> None:
        try:
            held = next((c for c in self.keychain.certificates() if c.sha1 == record.name), None)
            if held is None:
                return
            with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:
                pem = Path(scratch) / f"gateway-{fp16(record.fingerprint).lower()}.pem"
                pem.write_bytes(held.certificate.public_bytes(serialization.Encoding.PEM))
                try:
                    self.keychain.remove_trust(str(pem))
                except SecurityError as e:
                    if e.denied:
                        raise
                    logger.info("%s: no admin trust setting to remove for %s: %s", self.name, record.name, e)
            self.keychain.delete(record.name)
        except SecurityError as e:
            raise StoreError(_explain(e)) from None

    def finish(self, *, changed: bool, removed: bool) -> str:
        return ""

    def notes(self) -> list[str]:
        return []


def _explain(error: SecurityError) -> str:
    if error.denied:
        return f"{error} (not permitted for {describe_uid()}: {NEEDS_ROOT})"
    return str(error)


def _colon(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2))
