"""Posture on macOS: client certificates in keychains (``agent.macos_security``), plus PEM paths.

As Cloudflare documents for macOS, a rule's certificate is looked for in the System keychain
(``/Library/Keychains/System.keychain``), always; with ``"user"`` in ``locations.trust_stores``
also in the login keychain of the user running the agent (``~/Library/Keychains/login.keychain-db``).
Listed ``paths`` are read as on Linux.

Each certificate of ``security find-certificate`` is a candidate, named ``keychain:PATH SHA1``.
Its private key is in the keychain when ``security find-identity`` lists its SHA-1. The key
itself is needed only for a proof of possession (and for ``check_private_key``): the keychain's
identities are exported once per round (``security export ... -f pkcs12``) with a random
one-time password into a fresh 0700 directory, read, and deleted at once. When macOS refuses the
export (the key's access control does not allow ``security``, or the System keychain as another
user than root), or the export holds no key for this certificate (``cryptography`` reads one key
per PKCS#12: with several identities only that first key is had), the candidate says so: with
``check_private_key`` it passes on the keychain's word and is reported without a proof, which the
server stores as not verified -- never as a verified pass.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from agent.locations import Candidate, Inventory, KeyUnavailable, Locator, Problem, same_public_key
from agent.macos_security import LOGIN_KEYCHAIN, SYSTEM_KEYCHAIN, Keychain, KeychainCertificate, SecurityError
from agent.runner import Runner
from agent.store_key import StoreKey
from policies.posture import Locations, TrustStore

logger = logging.getLogger(__name__)


class MacLocator:
    """Finds candidates on macOS; what it read is kept for the life of the object (one round)."""

    platform = "mac"

    def __init__(self, runner: Runner, *, home: Path | None = None, pem: Locator | None = None) -> None:
        self._runner = runner
        self._home = home or Path.home()
        self._pem = pem or Locator(home=self._home)
        self._read: dict[str, Inventory] = {}

    def keychains(self, locations: Locations) -> list[str]:
        found = [SYSTEM_KEYCHAIN]
        if TrustStore.USER in locations.trust_stores:
            found.append(str(self._home / LOGIN_KEYCHAIN.removeprefix("~/")))
        return found

    def find_for(self, locations: Locations) -> Inventory:
        pem = self._pem.pem(locations.paths)
        candidates, problems = list(pem.candidates), list(pem.problems)
        for path in self.keychains(locations):
            if path not in self._read:
                self._read[path] = read_keychain(Keychain(path, self._runner))
            candidates += self._read[path].candidates
            problems += self._read[path].problems
        return Inventory(tuple(candidates), tuple(problems))

    def quiet(self, problem: Problem, locations: Locations) -> bool:
        return False  # every keychain read is one the rule asks for (the System keychain always)


def read_keychain(keychain: Keychain) -> Inventory:
    source = f"keychain:{keychain.path}"
    try:
        certificates = keychain.certificates()
    except SecurityError as e:
        return Inventory(problems=(Problem(source, str(e)),))
    if not certificates:
        return Inventory(problems=(Problem(source, "the keychain holds no certificate"),))
    problems: list[Problem] = []
    try:
        with_key = {identity.sha1 for identity in keychain.identities()}
        identity_problem = ""
    except SecurityError as e:
        with_key, identity_problem = set(), str(e)
        problems.append(Problem(source, f"cannot tell which certificates have their private key: {e}"))
    exported = _Export(keychain)
    candidates = tuple(
        Candidate(
            f"{source} {item.sha1}",
            item.certificate,
            _key_lookup(keychain, item, item.sha1 in with_key, identity_problem, exported),
            key_in_store=item.sha1 in with_key,
        )
        for item in certificates
    )
    return Inventory(candidates, tuple(problems))


class _Export:
    """The keychain's identities, exported at most once."""

    def __init__(self, keychain: Keychain) -> None:
        self._keychain = keychain
        self._done: tuple[PrivateKeyTypes | None, str] | None = None

    def key(self) -> tuple[PrivateKeyTypes | None, str]:
        if self._done is None:
            self._done = _export_key(self._keychain)
        return self._done


def _key_lookup(
    keychain: Keychain, item: KeychainCertificate, has_key: bool, identity_problem: str, exported: _Export
) -> Callable[[], PrivateKeyTypes | StoreKey]:
    def lookup() -> PrivateKeyTypes | StoreKey:
        if not has_key:
            if identity_problem:
                raise KeyUnavailable(identity_problem)
            raise KeyUnavailable(f"{keychain.label} holds no private key for it (no identity {item.sha1})")
        key, problem = exported.key()
        if key is None:
            raise KeyUnavailable(problem)
        if not same_public_key(item.certificate, key):
            raise KeyUnavailable(
                f"its private key is in {keychain.label}, but the export gave another identity's key "
                "(several identities in one keychain: the agent can read the first only)"
            )
        return key

    return lookup


def _export_key(keychain: Keychain) -> tuple[PrivateKeyTypes | None, str]:
    """The key of the keychain's exported identities, or (None, why not)."""
    password = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:  # 0700
        bundle = Path(scratch) / "identities.p12"
        try:
            keychain.export_identities(str(bundle), password)
            data = bundle.read_bytes()
        except SecurityError as e:
            return (
                None,
                f"its private key is in {keychain.label} but cannot be used by the agent (not exportable): {e}",
            )
        except OSError as e:
            return None, f"cannot read the identities exported from {keychain.label}: {e.strerror or e}"
        finally:
            bundle.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = pkcs12.load_pkcs12(data, password.encode())
        except ValueError:
            return None, f"security exported the identities of {keychain.label} in a form that cannot be read"
    if loaded.key is None:
        return None, f"security exported no private key from {keychain.label}"
    return loaded.key, ""
