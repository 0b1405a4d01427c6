"""A Windows Root store as a trust store for the CA sync: the machine's (``Cert:\\LocalMachine\\Root``,
what every user and service trusts; needs an elevated agent) or the user's
(``Cert:\\CurrentUser\\Root``), changed only through PowerShell (``agent.windows_powershell``).

- listed by the agent's listing script; a root in a Root store is trusted (that is what the store
  means), so "installed" is "listed";
- installed with ``X509Store.Add`` and removed with ``X509Store.Remove`` by thumbprint, only for a
  root this agent recorded and only while the store still holds that very certificate.

Windows asks the user to confirm a root added to or removed from ``CurrentUser\\Root`` (a dialog
the agent cannot answer; without a desktop it fails). A machine store the agent may not write (not
elevated: "Access is denied") is reported with what to do; the other stores go on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.runner import Runner
from agent.state import InstalledCertificate
from agent.transport import fingerprint_of
from agent.trust_store import Entry, RootCertificate, StoreError, Unusable
from agent.windows_powershell import CertStore, PowerShellError

logger = logging.getLogger(__name__)

STORE_PREFIX = "windows:"
ROOT = "Root"
NOT_ELEVATED = {
    "LocalMachine": "the machine's Root store needs an elevated agent: run it as Administrator (or as a "
    "service under LocalSystem), or leave the machine store out with --no-system",
    "CurrentUser": "Windows refused this user's Root store: run the agent as that user, or leave it out "
    "with --no-user",
}


class WindowsRootStore:
    optional = False

    def __init__(self, location: str, runner: Runner) -> None:
        self.store = CertStore(location, ROOT, runner)
        self.key = self.name = f"{STORE_PREFIX}{self.store.path}"
        # the machine's Root store is the server's "system" store; the user's is reported by its
        # own name (windows:CurrentUser\Root)
        self.reported_as = "system" if location == "LocalMachine" else ""

    def __repr__(self) -> str:
        return f"WindowsRootStore({self.store.path!r})"

    def problem(self) -> Unusable | None:
        return None  # whether this user may change it only Windows can say

    def inventory(self) -> list[Entry]:
        try:
            listed = self.store.certificates()
        except PowerShellError as e:
            raise StoreError(str(e)) from None
        return [Entry(_fingerprint(item.certificate), item.thumbprint, True) for item in listed]

    def owned_name(self, fingerprint: str) -> str:
        return ""  # roots are named by their own thumbprint: no name can hold another certificate

    def install(self, root: RootCertificate) -> str:
        assert root.certificate is not None
        try:
            self.store.add(root.certificate.public_bytes(serialization.Encoding.DER))
        except PowerShellError as e:
            raise StoreError(self._explain(e)) from None
        return _thumbprint(root)

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        return "", "already in the store"  # not reached: a root in a Root store is trusted

    def remove(self, record: InstalledCertificate) -> None:
        try:
            self.store.remove(record.name)
        except PowerShellError as e:
            raise StoreError(self._explain(e)) from None

    def finish(self, *, changed: bool, removed: bool) -> str:
        return ""

    def notes(self) -> list[str]:
        if self.store.location == "CurrentUser":
            return ["Windows asks the user to confirm each root added to or removed from CurrentUser\\Root"]
        return []

    def _explain(self, error: PowerShellError) -> str:
        if error.denied:
            return f"{error} ({NOT_ELEVATED[self.store.location]})"
        return str(error)


def _fingerprint(certificate: x509.Certificate) -> str:
    return fingerprint_of(certificate.public_bytes(serialization.Encoding.DER))


def _thumbprint(root: RootCertificate) -> str:
    assert root.certificate is not None
    return hashlib.sha1(root.certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
