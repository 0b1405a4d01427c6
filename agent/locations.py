"""Where client certificates are read from: PEM files and NSS databases (Linux).

**PEM paths** (``input.locations.paths``). As Cloudflare documents for Linux, the rule lists the
absolute path(s) of the certificate *and* of its private key: one file holding both, or two files
(``/etc/pki/client.pem`` and ``/etc/pki/client.key``), both listed. Every listed file is read
through ``certs.client_check`` (``load_candidates``, then ``pair_key`` for files holding only
keys): each certificate is a candidate, its private key whichever key in the listed files has
the same public key. Nothing outside the listed paths is read (no guessed ``.key`` neighbours).
A key protected by a passphrase cannot be used; that is reported, and the certificates of its
file are still candidates.

**NSS databases**: the rule model says which (``Locations.nss_databases()``: the system one,
``/etc/pki/nssdb``, always, as Cloudflare's Linux client; the user's ``~/.pki/nssdb`` when
``trust_stores`` lists ``user``). Certificates are listed with ``certutil -L -d sql:DIR`` and
exported with ``certutil -L -n NICK -a``; one with its private key in the database shows the
``u`` trust flag (what ``certutil -K`` would list under the same nickname). The key itself is
exported only when a signature or a key check needs it: ``pk12util -o`` to a PKCS#12 file in a
fresh 0700 directory, protected by a random one-time password kept in a 0600 file (never on a
command line), read with ``cryptography`` and deleted at once. Only databases with an empty
password can be read.

A missing file, database or tool, and an empty database, is a ``Problem`` (a reason to show),
never an exception.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from agent.store_key import KeyUnavailable as KeyUnavailable
from agent.store_key import StoreKey
from certs.client_check import MAX_PEM_FILE_BYTES, load_candidates, pair_key
from certs.errors import InvalidCertificate
from certs.keys import PrivateKey
from policies.posture import Locations, TrustStore

logger = logging.getLogger(__name__)

SYSTEM_NSSDB = Path("/etc/pki/nssdb")
USER_NSSDB = Path("~/.pki/nssdb")
TOOL_TIMEOUT = 30.0
NO_DATABASE = "no NSS database here"
EMPTY_DATABASE = "the NSS database holds no certificate"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_TRUST = re.compile(r"^(?P<nick>.*?\S)\s+(?P<trust>[A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Candidate:
    """One certificate found at one place, with a way to get its private key."""

    source: str  # "/etc/pki/client.pem", "/etc/pki/chain.pem #2", "nss:/etc/pki/nssdb/corp device"
    certificate: x509.Certificate
    _key: Callable[[], PrivateKeyTypes | StoreKey] = field(repr=False, compare=False)
    key_in_store: bool = False  # the platform's store says it holds the private key (macOS, Windows)

    def private_key(self) -> PrivateKeyTypes | StoreKey:
        """The matching private key (or a key the store signs with), or ``KeyUnavailable``
        saying why there is none."""
        return self._key()


@dataclass(frozen=True)
class Problem:
    """A listed location that yielded nothing usable, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class Inventory:
    candidates: tuple[Candidate, ...] = ()
    problems: tuple[Problem, ...] = ()


class NssTools:
    """Runs NSS ``certutil`` and ``pk12util`` (Debian: libnss3-tools) without a terminal."""

    def __init__(
        self, certutil: str = "certutil", pk12util: str = "pk12util", timeout: float = TOOL_TIMEOUT
    ) -> None:
        self.certutil = certutil
        self.pk12util = pk12util
        self.timeout = timeout

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        logger.debug("running %s", " ".join(argv))
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout, check=False
        )


class Locator:
    """Finds candidates; what it read is kept for the life of the object (one check round).

    ``system_nssdb`` and ``home`` stand in for ``/etc/pki/nssdb`` and ``~`` (tests, labs).
    """

    def __init__(
        self, *, nss: NssTools | None = None, home: Path | None = None, system_nssdb: Path | None = None
    ) -> None:
        self._nss = nss or NssTools()
        self._home = home
        self._system = system_nssdb or SYSTEM_NSSDB
        self._pem: dict[Path, bytes | Problem] = {}
        self._nssdb: dict[Path, Inventory] = {}

    platform = "linux"

    def find_for(self, locations: Locations) -> Inventory:
        """The candidates of a rule's locations on Linux: its PEM paths and NSS databases."""
        return self.find(locations.paths, locations.nss_databases())

    def quiet(self, problem: Problem, locations: Locations) -> bool:
        """A missing or empty system NSS database is not news when the rule did not ask for it
        by name (it is read on every rule, as Cloudflare's Linux client does, and most machines
        have none)."""
        if TrustStore.SYSTEM in locations.trust_stores or not (locations.paths or locations.trust_stores):
            return False
        return problem.reason in (NO_DATABASE, EMPTY_DATABASE) and (
            problem.source == f"nss:{self.nss_directory('system')}"
        )

    def pem(self, paths: Iterable[str]) -> Inventory:
        """Candidates from PEM files alone (every platform reads listed paths)."""
        return self._pem_candidates(list(dict.fromkeys(paths)))

    def find(self, paths: Iterable[str], nss_databases: Iterable[str]) -> Inventory:
        """Candidates from the PEM ``paths`` and the NSS databases (directories; ``~`` expanded;
        ``/etc/pki/nssdb`` is the system one)."""
        found = self._pem_candidates(list(dict.fromkeys(paths)))
        candidates, problems = list(found.candidates), list(found.problems)
        for name in dict.fromkeys(nss_databases):
            directory = self.nss_directory(name)
            if isinstance(directory, Problem):
                problems.append(directory)
                continue
            inventory = self._nssdb.get(directory)
            if inventory is None:
                inventory = self._nssdb[directory] = _read_nssdb(directory, self._nss)
            candidates += inventory.candidates
            problems += inventory.problems
        return Inventory(tuple(candidates), tuple(problems))

    def nss_directory(self, name: str) -> Path | Problem:
        text = name.strip().removeprefix("sql:")
        if text.lower() == "system" or Path(text) == SYSTEM_NSSDB:
            return self._system
        if text.lower() == "user":
            return self._expand(USER_NSSDB)
        path = self._expand(Path(text))
        if not path.is_absolute():
            return Problem(
                f"nss:{name}", 'not an NSS database: use "system", "user" or an absolute directory'
            )
        return path

    def _expand(self, path: Path) -> Path:
        if self._home is not None and path.parts[:1] == ("~",):
            return self._home.joinpath(*path.parts[1:])
        return path.expanduser()

    def _read(self, path: Path) -> bytes | Problem:
        if path not in self._pem:
            self._pem[path] = _read_file(path)
        return self._pem[path]

    def _pem_candidates(self, paths: list[str]) -> Inventory:
        """Every listed file through ``certs.client_check``: ``load_candidates`` for the
        certificates (with a key in the same file), ``pair_key`` for files holding only keys."""
        problems: list[Problem] = []
        found: list[tuple[str, x509.Certificate, PrivateKey | None]] = []
        key_files: list[tuple[str, bytes]] = []
        key_trouble: list[str] = []  # why a key could not be used (encrypted, unsupported)
        for text in paths:
            path = self._expand(Path(text))
            if not path.is_absolute():
                problems.append(Problem(text, "not an absolute path: location paths must be absolute"))
                continue
            data = self._read(path)
            if isinstance(data, Problem):
                problems.append(Problem(text, data.reason))
                continue
            try:
                pairs = load_candidates(data)
            except InvalidCertificate as e:  # an encrypted or unsupported key, a damaged block
                problems.append(Problem(text, str(e)))
                key_trouble.append(f"{text}: {e}")
                pairs = [(cert, None) for cert in _certificates_only(data)]
            if pairs:
                many = len(pairs) > 1
                found += [
                    (f"{text} #{i}" if many else text, cert, key)
                    for i, (cert, key) in enumerate(pairs, start=1)
                ]
            elif not any(t.startswith(f"{text}: ") for t in key_trouble):
                key_files.append((text, data))
        for text, data in key_files:
            try:
                paired = pair_key([(cert, key) for _, cert, key in found], data)
            except InvalidCertificate as e:
                no_key = str(e).startswith("no private key found")
                problems.append(
                    Problem(text, "no PEM certificate or private key in it" if no_key else str(e))
                )
                if not no_key:
                    key_trouble.append(f"{text}: {e}")
                continue
            found = [(source, cert, key) for (source, _, _), (cert, key) in zip(found, paired, strict=True)]
        candidates = tuple(Candidate(source, cert, _pem_key(key, key_trouble)) for source, cert, key in found)
        return Inventory(candidates, tuple(problems))


def _read_file(path: Path) -> bytes | Problem:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_FILE_BYTES + 1)
    except FileNotFoundError:
        return Problem(str(path), "no such file")
    except IsADirectoryError:
        return Problem(str(path), "a directory, not a PEM file")
    except OSError as e:
        return Problem(str(path), f"cannot read: {(e.strerror or str(e)).lower()}")
    if len(data) > MAX_PEM_FILE_BYTES:
        return Problem(
            str(path), f"larger than {MAX_PEM_FILE_BYTES // (1024 * 1024)} MiB: not a certificate or key file"
        )
    return data


def _certificates_only(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _pem_key(key: PrivateKey | None, trouble: Sequence[str]) -> Callable[[], PrivateKeyTypes]:
    def lookup() -> PrivateKeyTypes:
        if key is not None:
            return key
        if trouble:
            raise KeyUnavailable(f"no usable private key: {'; '.join(trouble)}")
        raise KeyUnavailable(
            "no private key for this certificate in the listed paths (list the key file too, or put the key in the certificate's file)"
        )

    return lookup


def same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki))
    except (ValueError, UnsupportedAlgorithm):
        return False


# --- NSS ------------------------------------------------------------------------------------------


def _read_nssdb(directory: Path, tools: NssTools) -> Inventory:
    source = f"nss:{directory}"
    if not directory.is_dir():
        return Inventory(problems=(Problem(source, NO_DATABASE),))
    if not (directory / "cert9.db").is_file():
        reason = "no cert9.db: not an NSS sql database"
        if (directory / "cert8.db").is_file():
            reason += " (an old DBM database: convert it with `certutil --upgrade-merge`)"
        return Inventory(problems=(Problem(source, reason),))
    listing = _tool(tools, [tools.certutil, "-L", "-d", f"sql:{directory}"], source)
    if isinstance(listing, Problem):
        return Inventory(problems=(listing,))
    entries = parse_certutil_listing(listing)
    if not entries:
        return Inventory(problems=(Problem(source, EMPTY_DATABASE),))
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    for nickname, trust in entries:
        label = f"{source}/{nickname}"
        exported = _tool(tools, [tools.certutil, "-L", "-d", f"sql:{directory}", "-n", nickname, "-a"], label)
        if isinstance(exported, Problem):
            problems.append(exported)
            continue
        certificates = []
        for match in _PEM_BLOCK.finditer(exported.encode()):
            try:
                certificates.append(x509.load_pem_x509_certificate(match.group(0)))
            except ValueError:
                problems.append(Problem(label, "certutil exported a damaged certificate"))
        has_key = "u" in trust
        for index, cert in enumerate(certificates, start=1):
            name = f"{label} #{index}" if len(certificates) > 1 else label
            candidates.append(
                Candidate(name, cert, _nss_key_lookup(directory, nickname, cert, has_key, tools))
            )
    return Inventory(tuple(candidates), tuple(problems))


def parse_certutil_listing(text: str) -> list[tuple[str, str]]:
    """``(nickname, trust flags)`` of each line of ``certutil -L`` after its two header lines."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("Certificate Nickname") or "SSL,S/MIME" in line:
            continue
        match = _TRUST.match(line)
        if match:
            entries.append((match.group("nick"), match.group("trust")))
    return entries


def _nss_key_lookup(
    directory: Path, nickname: str, cert: x509.Certificate, has_key: bool, tools: NssTools
) -> Callable[[], PrivateKeyTypes]:
    cache: list[PrivateKeyTypes] = []

    def lookup() -> PrivateKeyTypes:
        if cache:
            return cache[0]
        if not has_key:
            raise KeyUnavailable(f"the NSS database {directory} holds no private key for {nickname!r}")
        key = export_nss_key(directory, nickname, cert, tools)
        cache.append(key)
        return key

    return lookup


def export_nss_key(
    directory: Path, nickname: str, cert: x509.Certificate, tools: NssTools
) -> PrivateKeyTypes:
    """Export ``nickname`` with ``pk12util`` into a private temporary directory and read its key."""
    label = f"nss:{directory}/{nickname}"
    password = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:  # 0700
        password_file = Path(scratch) / "p12.pw"
        empty_file = Path(scratch) / "db.pw"
        bundle = Path(scratch) / "key.p12"
        for path, content in ((password_file, password), (empty_file, "")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        argv = [tools.pk12util, "-o", str(bundle), "-n", nickname, "-d", f"sql:{directory}",
                "-w", str(password_file), "-k", str(empty_file)]  # fmt: skip
        done = _tool(tools, argv, label)
        if isinstance(done, Problem):
            if "authenticate" in done.reason or "PASSWORD" in done.reason:
                raise KeyUnavailable(
                    f"the NSS database {directory} is protected by a password: the agent reads only databases with an empty one"
                )
            raise KeyUnavailable(f"cannot export the private key of {nickname!r}: {done.reason}")
        try:
            data = bundle.read_bytes()
        finally:
            bundle.unlink(missing_ok=True)
    with warnings.catch_warnings():  # NSS writes BER, which cryptography reads with a warning
        warnings.simplefilter("ignore")
        try:
            loaded = pkcs12.load_pkcs12(data, password.encode())
        except ValueError:
            raise KeyUnavailable(f"pk12util exported {nickname!r} in a form that cannot be read") from None
    if loaded.key is None:
        raise KeyUnavailable(f"the NSS database {directory} holds no private key for {nickname!r}")
    if not same_public_key(cert, loaded.key):
        raise KeyUnavailable(f"the private key exported for {nickname!r} does not match this certificate")
    return loaded.key


def _tool(tools: NssTools, argv: list[str], source: str) -> str | Problem:
    try:
        done = tools.run(argv)
    except FileNotFoundError:
        return Problem(source, f"{argv[0]} is not installed (Debian: apt install libnss3-tools)")
    except subprocess.TimeoutExpired:
        return Problem(source, f"{Path(argv[0]).name} did not finish within {tools.timeout:g} s")
    except OSError as e:
        return Problem(source, f"cannot run {argv[0]}: {e.strerror or e}")
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        return Problem(source, f"{Path(argv[0]).name} failed: {detail}")
    return done.stdout.decode(errors="replace")
