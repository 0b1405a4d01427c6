"""What the trust stores share: the names the agent gives the roots it installs, a checked root
certificate, one store's interface (``TrustStore``) with its entries and errors, and which stores
to keep (``StoreOptions``).

``trust`` runs a sync over stores; ``trust_system`` (the system store) and ``trust_nss`` (NSS
databases) are the stores. All three import this module and none imports another's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.state import InstalledCertificate, TrustStoresConfig

logger = logging.getLogger(__name__)

NICKNAME_PREFIX = "Gateway "
FILE_PREFIX = "gateway-"
_PEM_BODY = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.DOTALL)


def fp16(fingerprint: str) -> str:
    """The first 16 hex digits of a fingerprint (upper case): NSS nicknames and file names."""
    return fingerprint.replace(":", "").upper()[:16]


def nickname_for(fingerprint: str) -> str:
    return f"{NICKNAME_PREFIX}{fp16(fingerprint)}"


def file_name_for(fingerprint: str) -> str:
    return f"{FILE_PREFIX}{fp16(fingerprint).lower()}.crt"


def der_fingerprints(pem: bytes) -> list[str]:
    """SHA-256 fingerprints (upper-case colon hex) of the PEM certificates in ``pem``."""
    found = []
    for match in _PEM_BODY.finditer(pem):
        try:
            der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        digest = hashlib.sha256(der).hexdigest().upper()
        found.append(":".join(digest[i : i + 2] for i in range(0, 64, 2)))
    return found


# --- the roots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootCertificate:
    """One entry of ``GET /agent/root_certificates``, checked. ``refused`` says why it will not be
    installed ("" when it will)."""

    id: str
    fingerprint: str  # as listed, normalized to upper-case colon hex when it is one
    binding_status: str = ""
    in_use: bool = False
    certificate: x509.Certificate | None = field(default=None, repr=False, compare=False)
    refused: str = ""

    @property
    def accepted(self) -> bool:
        return not self.refused and self.certificate is not None

    def pem(self) -> bytes:
        """The certificate re-encoded from its DER (never the server's text as it came)."""
        assert self.certificate is not None
        return self.certificate.public_bytes(serialization.Encoding.PEM)


# --- a store --------------------------------------------------------------------------------------


class StoreError(Exception):
    """One operation on one store failed; the message is the reason to report."""


@dataclass(frozen=True)
class Entry:
    """A certificate found in a store: under which name, and whether the store trusts it for TLS."""

    fingerprint: str
    name: str  # NSS nickname, or file path
    trusted: bool


@dataclass(frozen=True)
class Unusable:
    """Why a store cannot be changed; ``readable`` when it can still be listed (for the report)."""

    reason: str
    readable: bool = False
    missing: bool = False  # the store does not exist here (normal for the default NSS databases)


class TrustStore(Protocol):
    key: str  # the ledger key: "system:/usr/local/share/ca-certificates", "nss:/home/ann/.pki/nssdb"
    name: str  # the name reported to the server: "system", "nss:/home/ann/.pki/nssdb"
    optional: bool  # missing is normal (the default NSS databases): not counted as trouble

    def problem(self) -> Unusable | None: ...

    def inventory(self) -> list[Entry]: ...

    def install(self, root: RootCertificate) -> str:
        """Put ``root`` in the store as trusted; the nickname or path to record."""
        ...

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        """``root`` is in the store (``entries``) but not trusted: fix what is ours (the name to
        record, or "" for nothing to record) or say why not: ``(name, "")`` or ``("", reason)``."""
        ...

    def owned_name(self, fingerprint: str) -> str:
        """The nickname or path this agent uses for ``fingerprint``."""
        ...

    def remove(self, record: InstalledCertificate) -> None: ...

    def finish(self, *, changed: bool, removed: bool) -> str:
        """After the changes (the system store rebuilds its bundle); a problem, or ""."""
        ...

    def notes(self) -> list[str]:
        """Things to tell the user that are not errors (a refresh skipped under --root)."""
        ...


# --- which stores ---------------------------------------------------------------------------------

SYSTEM_NSSDB = Path("/etc/pki/nssdb")
USER_NSSDB = Path(".pki/nssdb")  # under the home directory


@dataclass(frozen=True)
class StoreOptions:
    """The stores to keep in step. ``root`` prefixes every path (``--root DIR``); ``home`` stands
    for the user's home directory (default ``Path.home()``)."""

    system: bool = True
    nss: bool = True
    nss_databases: tuple[str, ...] = ()
    root: Path | None = None
    home: Path | None = None
    user: bool = False  # Windows: the user's Root store too

    @classmethod
    def from_config(cls, config: TrustStoresConfig, **overrides: Any) -> StoreOptions:
        values: dict[str, Any] = {
            "system": config.system,
            "nss": config.nss,
            "nss_databases": config.nss_databases,
            "user": config.user,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def config(self) -> TrustStoresConfig:
        return TrustStoresConfig(
            system=self.system, nss=self.nss, nss_databases=self.nss_databases, user=self.user
        )

    def enabled(self) -> bool:
        return self.system or self.nss or bool(self.nss_databases) or self.user

    def place(self, path: Path) -> Path:
        """``path`` (absolute) under ``root``."""
        if self.root is None:
            return path
        return self.root.joinpath(*path.parts[1:])

    def home_directory(self) -> Path:
        return self.home if self.home is not None else Path.home()


# --- for messages ---------------------------------------------------------------------------------


def describe_uid() -> str:
    return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"


def last_line_of(output: bytes, fallback: str) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else fallback
