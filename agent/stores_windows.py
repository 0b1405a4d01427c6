"""Posture on Windows: client certificates in the personal certificate stores, plus PEM paths.

As Cloudflare documents for Windows, ``locations.trust_stores`` names the stores: ``"system"``
is the local machine's personal store (``Cert:\\LocalMachine\\My``), ``"user"`` the personal
store of the user running the agent (``Cert:\\CurrentUser\\My``). As on Linux the machine store
is read always, the user's when listed. Listed ``paths`` are read as on Linux.

Each certificate is a candidate named ``cert:LOCATION\\My\\THUMBPRINT``. ``HasPrivateKey`` says
whether the store holds its private key; the key is never exported: it signs in place
(:class:`WindowsStoreKey`, through ``agent.windows_powershell``), which works for keys marked not
exportable too. A key that cannot be used (its ACL does not let this user open it, a smart card
that is not inserted) is said so plainly; the result is then reported without a proof, and the
server stores it as not verified -- never as a verified pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from agent.locations import Candidate, Inventory, KeyUnavailable, Locator, Problem
from agent.runner import Runner
from agent.store_key import StoreKey
from agent.windows_powershell import CertStore, PowerShellError, StoreCertificate
from policies.posture import Locations, TrustStore

logger = logging.getLogger(__name__)

PERSONAL = "My"
STORE_LOCATIONS = {TrustStore.SYSTEM: "LocalMachine", TrustStore.USER: "CurrentUser"}


class WindowsStoreKey(StoreKey):
    def __init__(self, store: CertStore, thumbprint: str) -> None:
        self._store, self._thumbprint = store, thumbprint
        self.where = f"in Cert:\\{store.path}\\{thumbprint}"

    def sign(self, message: bytes) -> bytes:
        try:
            return self._store.sign(self._thumbprint, message)
        except PowerShellError as e:
            raise KeyUnavailable(
                f"its private key is in Cert:\\{self._store.path} but Windows does not let the agent use it: {e}"
            ) from None


class WindowsLocator:
    """Finds candidates on Windows; what it read is kept for the life of the object (one round)."""

    platform = "windows"

    def __init__(self, runner: Runner, *, home: Path | None = None, pem: Locator | None = None) -> None:
        self._runner = runner
        self._pem = pem or Locator(home=home)
        self._read: dict[str, Inventory] = {}

    def stores(self, locations: Locations) -> list[CertStore]:
        wanted = (TrustStore.SYSTEM, *locations.trust_stores)
        return [CertStore(STORE_LOCATIONS[s], PERSONAL, self._runner) for s in TrustStore if s in wanted]

    def find_for(self, locations: Locations) -> Inventory:
        pem = self._pem.pem(locations.paths)
        candidates, problems = list(pem.candidates), list(pem.problems)
        for store in self.stores(locations):
            if store.path not in self._read:
                self._read[store.path] = read_store(store)
            candidates += self._read[store.path].candidates
            problems += self._read[store.path].problems
        return Inventory(tuple(candidates), tuple(problems))

    def quiet(self, problem: Problem, locations: Locations) -> bool:
        return False


def read_store(store: CertStore) -> Inventory:
    source = f"cert:{store.path}"
    try:
        certificates = store.certificates()
    except PowerShellError as e:
        return Inventory(problems=(Problem(source, str(e)),))
    if not certificates:
        return Inventory(problems=(Problem(source, "the store holds no certificate"),))
    return Inventory(
        tuple(
            Candidate(
                f"{source}\\{item.thumbprint}",
                item.certificate,
                _key_lookup(store, item),
                key_in_store=item.has_private_key,
            )
            for item in certificates
        )
    )


def _key_lookup(store: CertStore, item: StoreCertificate) -> Callable[[], PrivateKeyTypes | StoreKey]:
    def lookup() -> PrivateKeyTypes | StoreKey:
        if not item.has_private_key:
            raise KeyUnavailable(f"Cert:\\{store.path} holds no private key for it (HasPrivateKey is false)")
        return WindowsStoreKey(store, item.thumbprint)

    return lookup
