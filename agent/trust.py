"""Keep this device's trust stores in step with the gateway's root CAs (``gateway agent sync-ca``,
and each CA sync of ``gateway agent run``).

One sync:

1. ``GET /agent/root_certificates``: every certificate of the account that is ``available`` or
   ``pending_deployment`` (the one in use included). Each is checked before anything is done
   with it (``verify_root``): its PEM holds exactly one certificate, the SHA-256 fingerprint of
   that certificate equals the one listed, and it is a CA (basicConstraints CA=true, keyUsage
   with keyCertSign). One that fails is never installed; the reason is shown.
2. For each enabled store (``trust_system.SystemStore``, ``trust_nss.NssStore``):
   - a store that is missing, unreadable or not writable is reported with the reason and left
     alone (never fatal);
   - each accepted certificate not yet trusted by the store is installed, one at a time, and
     recorded in the state file (``trust_installed``: store, fingerprint, nickname or file) only
     after the tool or the rename succeeded. A certificate already in the store under another
     name (put there by someone else) is left as it is and not recorded;
   - each certificate *this agent recorded* in this store whose fingerprint the server no longer
     lists is removed (only if the recorded nickname or file still holds that very certificate),
     then its record is dropped. Nothing else is ever removed: roots added by hand, or by the
     distribution, stay;
   - a failure stops nothing: what was installed before stays, the error is reported;
   - the store's own refresh step runs when something changed (``update-ca-certificates``).
3. Every store is listed again (``certutil -L``, the files and the system bundle) and the
   fingerprints actually present (of those the server listed or the agent recorded) are sent in
   ``POST /agent/trust_stores`` -- a full report each time.

Records are changed under an exclusive lock on the state file (``state.state_lock``) held for the
whole sync, so a ``sync-ca`` beside a running ``run`` neither loses records nor races certutil.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.errors import AgentError
from agent.locations import NssTools
from agent.runner import Command
from agent.state import (
    InstalledCertificate,
    state_lock,
    update_state,
    update_trust_installed,
)
from agent.token import normalize_fingerprint
from agent.transport import Transport, fingerprint_of
from agent.trust_nss import NssStore
from agent.trust_store import (
    SYSTEM_NSSDB,
    USER_NSSDB,
    Entry,
    RootCertificate,
    StoreError,
    StoreOptions,
    TrustStore,
    Unusable,
    fp16,
)
from agent.trust_system import SystemStore, detect_system_store

if TYPE_CHECKING:
    from agent.host import Host

logger = logging.getLogger(__name__)

ROOTS_PATH = "/agent/root_certificates"
STORES_PATH = "/agent/trust_stores"
MAX_ERROR_CHARS = 1000  # the server's limits (proxy/services/device_trust.py)
MAX_STORE_CHARS = 4096
NO_NSS_ON_WINDOWS = "NSS databases are not kept on Windows (certutil.exe there is Microsoft's, not NSS's)"
WINDOWS_USER_STORE = "windows:CurrentUser\\Root"  # as the server names it (proxy/services/device_trust.py)
DRY_RUN_SYSTEM = (
    "not covered by --dry-run (it writes files and runs update-ca-certificates itself): "
    "try the sync in a sandbox with --root DIR"
)


# --- what the server lists ------------------------------------------------------------------------


def verify_root(listed_fingerprint: str, pem: object) -> tuple[x509.Certificate | None, str]:
    """``(certificate, "")`` when it may be installed, else ``(None, reason)``."""
    try:
        expected = normalize_fingerprint(listed_fingerprint)
    except AgentError:
        expected = ""
    if not expected:
        return None, f"the listed fingerprint {listed_fingerprint!r} is not a SHA-256 fingerprint"
    if not isinstance(pem, str) or not pem.strip():
        return None, "no PEM certificate listed"
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as e:
        return None, f"the PEM does not parse as a certificate ({e})"
    if len(certificates) != 1:
        return None, f"the PEM holds {len(certificates)} certificates, not one"
    cert = certificates[0]
    seen = fingerprint_of(cert.public_bytes(serialization.Encoding.DER))
    if seen != expected:
        return None, f"its SHA-256 fingerprint is {seen}, not the listed {expected}"
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None, "not a CA: no basicConstraints extension"
    except (ValueError, x509.DuplicateExtension) as e:
        return None, f"a malformed extension: {e}"
    if not basic.ca:
        return None, "not a CA: basicConstraints CA=false"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None, "not a CA: no keyUsage extension (keyCertSign required)"
    if not usage.key_cert_sign:
        return None, "not a CA: keyUsage lacks keyCertSign"
    return cert, ""


def parse_root_certificates(answer: object) -> list[RootCertificate]:
    """The server's list, each entry checked; the same fingerprint listed twice counts once."""
    if isinstance(answer, dict) and isinstance(answer.get("certificates"), list):
        answer = answer["certificates"]
    if not isinstance(answer, list):
        raise AgentError(f"the server's answer to GET {ROOTS_PATH} is not a list of certificates")
    roots: list[RootCertificate] = []
    seen: set[str] = set()
    for index, item in enumerate(answer, start=1):
        if not isinstance(item, dict):
            raise AgentError(
                f"the server's answer to GET {ROOTS_PATH} holds something that is not a certificate (#{index})"
            )
        listed = str(item.get("fingerprint") or "")
        try:
            fingerprint = normalize_fingerprint(listed) or listed
        except AgentError:
            fingerprint = listed
        if fingerprint and fingerprint in seen:
            continue
        seen.add(fingerprint)
        certificate, refused = verify_root(listed, item.get("certificate"))
        roots.append(
            RootCertificate(
                id=str(item.get("id") or f"#{index}"),
                fingerprint=fingerprint,
                binding_status=str(item.get("binding_status") or ""),
                in_use=item.get("in_use") is True,
                certificate=certificate,
                refused=refused,
            )
        )
        if refused:
            logger.warning("root certificate %s will not be installed: %s", item.get("id"), refused)
    return roots


def fetch_root_certificates(transport: Transport) -> list[RootCertificate]:
    return parse_root_certificates(transport.get(ROOTS_PATH))


# --- stores ---------------------------------------------------------------------------------------


@dataclass
class StoreReport:
    store: str
    installed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: bool = False  # an optional store that does not exist here
    optional: bool = False
    planned: list[str] = field(default_factory=list)  # a dry run: the commands that would run
    reported_as: str = ""  # the server's name for it, when not ``store`` (see ``wire_store``)

    @property
    def error(self) -> str:
        text = "; ".join(self.errors)
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."

    @property
    def trouble(self) -> bool:
        return bool(self.errors) and not (self.missing and self.optional)

    @property
    def wire_store(self) -> str:
        """The name sent to the server: the platform's system store (the macOS System keychain,
        the Windows machine Root store) is ``system`` there, as on Linux."""
        return self.reported_as or self.store

    @property
    def reportable(self) -> bool:
        """A name the server takes: ``system``, ``windows:CurrentUser\\Root`` (the Windows user's
        Root store), or ``nss:`` and an absolute path without control characters (a
        misconfigured relative directory is shown here, not sent)."""
        if self.wire_store in ("system", WINDOWS_USER_STORE):
            return True
        path = self.store.removeprefix("nss:")
        return (self.store.startswith("nss:/") and len(self.store) <= MAX_STORE_CHARS
                and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in path))  # fmt: skip

    def wire(self) -> dict[str, Any]:
        return {"store": self.wire_store, "installed": list(self.installed), "error": self.error}

    def to_json(self) -> dict[str, Any]:
        return {**self.wire(), "added": self.added, "removed": self.removed, "notes": self.notes,
                "missing": self.missing, **({"planned": self.planned} if self.planned else {})}  # fmt: skip


@dataclass
class SyncReport:
    certificates: list[RootCertificate]
    stores: list[StoreReport]
    server: dict[str, Any] | None = None  # the answer to POST /agent/trust_stores

    @property
    def refused(self) -> list[RootCertificate]:
        return [c for c in self.certificates if not c.accepted]

    @property
    def trouble(self) -> bool:
        return bool(self.refused) or any(s.trouble for s in self.stores)

    def to_json(self) -> dict[str, Any]:
        return {
            "certificates": [
                {
                    "id": c.id,
                    "fingerprint": c.fingerprint,
                    "binding_status": c.binding_status,
                    "in_use": c.in_use,
                    "accepted": c.accepted,
                    "reason": c.refused,
                }
                for c in self.certificates
            ],
            "stores": [s.to_json() for s in self.stores],
            "server": self.server,
        }


# --- the record of what this agent installed ------------------------------------------------------


class Ledger:
    """``trust_installed`` of the state file: read once under the lock, each change saved at once."""

    def __init__(self, state_path: Path | None, records: Sequence[InstalledCertificate] = ()) -> None:
        self.path = state_path  # None: kept in memory only (tests)
        self._records = tuple(records)

    @contextmanager
    def locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with state_lock(self.path):
            self._records = update_trust_installed(self.path, lambda records: records).trust_installed
            yield

    def records(self, store_key: str | None = None) -> list[InstalledCertificate]:
        return [r for r in self._records if store_key is None or r.store == store_key]

    def _change(
        self, change: Callable[[tuple[InstalledCertificate, ...]], tuple[InstalledCertificate, ...]]
    ) -> None:
        if self.path is None:
            self._records = change(self._records)
        else:
            self._records = update_trust_installed(self.path, change).trust_installed

    def add(self, record: InstalledCertificate) -> None:
        def change(records: tuple[InstalledCertificate, ...]) -> tuple[InstalledCertificate, ...]:
            kept = tuple(r for r in records if (r.store, r.fingerprint) != (record.store, record.fingerprint))
            return (*kept, record)

        self._change(change)

    def drop(self, record: InstalledCertificate) -> None:
        self._change(lambda records: tuple(r for r in records if r != record))


# --- one sync -------------------------------------------------------------------------------------


def sync_store(store: TrustStore, roots: Sequence[RootCertificate], ledger: Ledger) -> StoreReport:
    """Install, remove, refresh and list one store; every failure goes into the report."""
    report = StoreReport(store.name, optional=store.optional, reported_as=getattr(store, "reported_as", ""))
    listed = [r.fingerprint for r in roots if r.fingerprint]
    problem = store.problem()
    if problem is not None:
        report.errors.append(problem.reason)
        report.missing = problem.missing
        if problem.readable:
            _list_installed(store, listed, ledger, report)
        return report
    try:
        entries = store.inventory()
    except StoreError as e:
        report.errors.append(str(e))
        return report
    by_fingerprint: dict[str, list[Entry]] = {}
    by_name: dict[str, set[str]] = {}
    for entry in entries:
        by_fingerprint.setdefault(entry.fingerprint, []).append(entry)
        by_name.setdefault(entry.name, set()).add(entry.fingerprint)
    changed = removed = attempted = False  # attempted: a store operation ran (it may have failed)

    for root in roots:
        if not root.accepted:
            continue
        found = by_fingerprint.get(root.fingerprint, [])
        if any(e.trusted for e in found):
            continue
        if found:
            attempted = True
            try:
                fixed_as, why = store.reinstall(root, found)
            except StoreError as e:
                fixed_as, why = "", str(e)
            if why:
                report.errors.append(f"{fp16(root.fingerprint)}: {why}")
                continue
            if fixed_as:
                ledger.add(InstalledCertificate(store.key, root.fingerprint, fixed_as))
                report.added.append(root.fingerprint)
            changed = True
            continue
        name = store.owned_name(root.fingerprint)
        if by_name.get(name, set()) - {root.fingerprint}:
            report.errors.append(
                f"{fp16(root.fingerprint)}: {name} already holds another certificate: left as is"
            )
            continue
        attempted = True
        try:
            installed_as = store.install(root)
        except StoreError as e:
            report.errors.append(f"cannot install {fp16(root.fingerprint)}: {e}")
            continue
        ledger.add(InstalledCertificate(store.key, root.fingerprint, installed_as))
        report.added.append(root.fingerprint)
        changed = True
        logger.info("%s: installed %s as %s", store.name, root.fingerprint, installed_as)

    wanted = set(listed)
    for record in ledger.records(store.key):
        if record.fingerprint in wanted:
            continue
        holds = by_name.get(record.name, set())
        if record.fingerprint not in holds:
            ledger.drop(record)  # gone already, or someone put another certificate there: not ours now
            if holds:
                report.notes.append(
                    f"{record.name} now holds another certificate: left as is, no longer recorded"
                )
            continue
        attempted = True
        try:
            store.remove(record)
        except StoreError as e:
            report.errors.append(f"cannot remove {fp16(record.fingerprint)}: {e}")
            continue
        ledger.drop(record)
        report.removed.append(record.fingerprint)
        changed = removed = True
        logger.info("%s: removed %s (%s)", store.name, record.fingerprint, record.name)

    trouble = store.finish(changed=changed, removed=removed)
    if trouble:
        report.errors.append(trouble)
    report.notes += store.notes()
    # what the report says is what a listing shows: a fresh one after any change (or attempt)
    _list_installed(store, listed, ledger, report, None if attempted or changed else entries)
    return report


def _list_installed(
    store: TrustStore,
    listed: Sequence[str],
    ledger: Ledger,
    report: StoreReport,
    entries: Sequence[Entry] | None = None,
) -> None:
    """What the store holds: of the fingerprints listed or recorded, those it trusts. ``entries``
    is a listing made during this sync with nothing done to the store since; else it is listed again."""
    try:
        trusted = {e.fingerprint for e in (store.inventory() if entries is None else entries) if e.trusted}
    except StoreError as e:
        report.errors.append(f"cannot list the store after the sync: {e}")
        return
    interesting = list(dict.fromkeys([*listed, *(r.fingerprint for r in ledger.records(store.key))]))
    report.installed = [fp for fp in interesting if fp in trusted]


class TrustSync:
    """Fetch the list, sync every store, report. ``stores`` builds the stores afresh each time (a
    database that appeared since the last sync is picked up).

    ``planned`` makes it a dry run: the stores were built with runners that keep the commands
    that would change something instead of running them (``agent.runner.DryRunner``,
    :class:`DryNssTools`) into that list; each store's share goes into its report, the ledger
    must be an in-memory copy, and nothing is reported to the server."""

    def __init__(
        self,
        transport: Transport,
        ledger: Ledger,
        stores: Callable[[], list[TrustStore]],
        *,
        planned: list[Command] | None = None,
    ) -> None:
        self.transport = transport
        self.ledger = ledger
        self.stores = stores
        self.planned = planned

    def run(self) -> SyncReport:
        roots = fetch_root_certificates(self.transport)  # nothing changes when this fails
        reports = []
        with self.ledger.locked():
            for store in self.stores():
                before = len(self.planned) if self.planned is not None else 0
                report = sync_store(store, roots, self.ledger)
                if self.planned is not None:
                    report.planned = [command.shown() for command in self.planned[before:]]
                reports.append(report)
        result = SyncReport(roots, reports)
        if self.planned is not None:
            return result
        answer = self.transport.post(STORES_PATH, {"stores": [r.wire() for r in reports if r.reportable]})
        result.server = answer if isinstance(answer, dict) else {"answer": answer}
        return result


class DryNssTools(NssTools):
    """NSS tools for a dry run: ``certutil`` commands that change a database (``-A``, ``-D``,
    ``-M``, ``-N``) are kept in ``planned``, answered with success, and not run."""

    CHANGES = frozenset({"-A", "-D", "-M", "-N"})

    def __init__(self, planned: list[Command]) -> None:
        super().__init__()
        self.planned = planned

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        if len(argv) > 1 and argv[1] in self.CHANGES:
            self.planned.append(Command(tuple(argv), changes=True))
            return subprocess.CompletedProcess(list(argv), 0, b"", b"")
        return super().run(argv)


# --- which stores ---------------------------------------------------------------------------------


@dataclass
class BrokenStore:
    """A configured store that cannot even be named (a relative directory): reported, never used."""

    key: str
    name: str
    reason: str
    optional: bool = False

    def problem(self) -> Unusable | None:
        return Unusable(self.reason)

    def inventory(self) -> list[Entry]:
        return []

    def install(self, root: RootCertificate) -> str:
        raise StoreError(self.reason)

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        return "", self.reason

    def owned_name(self, fingerprint: str) -> str:
        return ""

    def remove(self, record: InstalledCertificate) -> None:
        raise StoreError(self.reason)

    def finish(self, *, changed: bool, removed: bool) -> str:
        return ""

    def notes(self) -> list[str]:
        return []


def build_stores(
    options: StoreOptions,
    *,
    nss_tools: NssTools | None = None,
    which: Callable[[str], str | None] | None = None,
    host: Host | None = None,
    dry_run: bool = False,
) -> list[TrustStore]:
    """The enabled stores, in report order: system (on macOS the System keychain, on Windows the
    machine's Root store, then the user's with ``options.user``), the user's NSS database, the
    system one (Linux only), then the configured ones (the same directory once). ``dry_run``: the
    Linux system store, which writes files itself, is shown as not covered."""
    tools = nss_tools or NssTools()
    system = host.system if host is not None else "linux"
    stores: list[TrustStore] = []
    if system == "mac" and host is not None:
        from agent.trust_macos import KeychainStore  # the platforms' stores: imported where they are used

        if options.system:
            stores.append(KeychainStore(host.runner))
    elif system == "windows" and host is not None:
        from agent.trust_windows import WindowsRootStore

        stores += [WindowsRootStore(location, host.runner) for location, wanted in
                   (("LocalMachine", options.system), ("CurrentUser", options.user)) if wanted]  # fmt: skip
    elif options.system and dry_run:
        stores.append(BrokenStore("system", "system", DRY_RUN_SYSTEM))
    elif options.system:
        stores.append(detect_system_store(options, which=which or find_tool))
    databases: list[tuple[Path, bool]] = []
    if options.nss and system == "linux":
        databases += [
            (options.place(options.home_directory() / USER_NSSDB), True),
            (options.place(SYSTEM_NSSDB), True),
        ]
    for text in options.nss_databases:
        raw = text.strip().removeprefix("sql:")
        path = Path(raw)
        if path.parts[:1] == ("~",):
            path = options.home_directory().joinpath(*path.parts[1:])
        if system == "windows":  # certutil there is Microsoft's, not NSS's
            stores.append(BrokenStore(f"nss:{raw}", f"nss:{raw}", NO_NSS_ON_WINDOWS))
            continue
        if not path.is_absolute():
            stores.append(
                BrokenStore(
                    f"nss:{raw}",
                    f"nss:{raw}",
                    "not an absolute directory: configure NSS databases by absolute path",
                )
            )
            continue
        databases.append((options.place(path), False))
    seen: dict[Path, int] = {}
    for directory, optional in databases:
        resolved = Path(os.path.normpath(directory))
        if resolved in seen:
            if not optional:  # configured explicitly: a missing one counts
                existing = stores[seen[resolved]]
                assert isinstance(existing, NssStore)
                existing.optional = False
            continue
        seen[resolved] = len(stores)
        stores.append(NssStore(resolved, tools=tools, optional=optional))
    if options.root is not None:
        _furnish(stores, Path(os.path.normpath(options.place(options.home_directory() / USER_NSSDB))))
    return stores


def _furnish(stores: Sequence[TrustStore], user_nssdb: Path) -> None:
    """Under ``--root``: make what an empty sandbox lacks and a desktop has, so that ``--root
    EMPTY_DIR`` works: the system store's anchors folder and the user's NSS database (Chromium
    makes one at its first start). The system NSS database and configured ones are not made: a
    missing one is what the report should say, as on a real machine."""
    for store in stores:
        if isinstance(store, SystemStore) or (isinstance(store, NssStore) and store.directory == user_nssdb):
            store.create()


SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """``name`` on ``PATH`` or in the sbin directories (not on an unprivileged user's PATH)."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *SBIN]))


def save_store_options(state_path: Path, options: StoreOptions) -> None:
    """Remember ``options`` (not ``root``) as the state file's ``trust_stores``."""
    from dataclasses import replace

    with state_lock(state_path):
        update_state(state_path, lambda state: replace(state, trust_stores=options.config()))
