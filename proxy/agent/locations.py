"""Where client certificates are read from: PEM files and NSS databases (Linux).

**PEM paths** (``input.locations.paths``). As Cloudflare documents for Linux, the rule lists the
absolute path(s) of the certificate *and* of its private key: one file holding both, or two files
(``/etc/pki/client.pem`` and ``/etc/pki/client.key``), both listed. Every listed file is read;
each certificate in it is a candidate, and its private key is whichever unencrypted key in any
listed file has the same public key. Nothing outside the listed paths is read (no guessed
``.key`` neighbours). A key protected by a passphrase cannot be used; that is reported.

**NSS databases** (``input.locations.trust_stores``): ``"system"`` is ``/etc/pki/nssdb``,
``"user"`` is ``~/.pki/nssdb``; an absolute directory (optionally written ``sql:DIR``) names any
other. With no trust store listed, the system database is read. Certificates are listed with
``certutil -L -d sql:DIR`` and exported with ``certutil -L -n NICK -a``; a certificate with a
private key in the database shows the ``u`` trust flag. The key itself is exported only when a
signature or a key check needs it: ``pk12util -o`` to a PKCS#12 file in a fresh 0700 directory,
protected by a random one-time password kept in a 0600 file (never on a command line), read
with ``cryptography`` and deleted at once. Only databases with an empty password can be read.

A missing file, database or tool is a ``Problem`` (a reason to show), never an exception.
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

logger = logging.getLogger(__name__)

SYSTEM_NSSDB = Path("/etc/pki/nssdb")
USER_NSSDB = Path("~/.pki/nssdb")
MAX_PEM_BYTES = 1024 * 1024
TOOL_TIMEOUT = 30.0

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_LABELS = {b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"}
_TRUST = re.compile(r"^(?P<nick>.*?\S)\s+(?P<trust>[A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*$")


class KeyUnavailable(Exception):
    """The candidate's private key cannot be had; the message is the reason to show."""


@dataclass(frozen=True)
class Candidate:
    """One certificate found at one place, with a way to get its private key."""

    source: str  # "/etc/pki/client.pem", "/etc/pki/chain.pem #2", "nss:/etc/pki/nssdb/corp device"
    certificate: x509.Certificate
    _key: Callable[[], PrivateKeyTypes] = field(repr=False, compare=False)

    def private_key(self) -> PrivateKeyTypes:
        """The matching private key, or ``KeyUnavailable`` saying why there is none."""
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


@dataclass(frozen=True)
class _PemFile:
    certificates: tuple[x509.Certificate, ...] = ()
    keys: tuple[PrivateKeyTypes, ...] = ()
    encrypted_keys: int = 0
    problem: str | None = None


class NssTools:
    """Runs NSS ``certutil`` and ``pk12util`` (Debian: libnss3-tools) without a terminal."""

    def __init__(self, certutil: str = "certutil", pk12util: str = "pk12util", timeout: float = TOOL_TIMEOUT) -> None:
        self.certutil = certutil
        self.pk12util = pk12util
        self.timeout = timeout

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        logger.debug("running %s", " ".join(argv))
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout, check=False
        )


class Locator:
    """Finds candidates; what it read is kept for the life of the object (one check round)."""

    def __init__(self, *, nss: NssTools | None = None, home: Path | None = None) -> None:
        self._nss = nss or NssTools()
        self._home = home
        self._pem: dict[Path, _PemFile] = {}
        self._nssdb: dict[Path, Inventory] = {}

    def find(self, paths: Iterable[str], trust_stores: Iterable[str]) -> Inventory:
        candidates: list[Candidate] = []
        problems: list[Problem] = []
        found = self._pem_candidates(list(paths))
        candidates += found.candidates
        problems += found.problems
        stores = list(trust_stores) or ["system"]
        for store in dict.fromkeys(stores):
            directory = self.nss_directory(store)
            if isinstance(directory, Problem):
                problems.append(directory)
                continue
            inventory = self._nssdb.get(directory)
            if inventory is None:
                inventory = self._nssdb[directory] = _read_nssdb(directory, self._nss)
            candidates += inventory.candidates
            problems += inventory.problems
        return Inventory(tuple(candidates), tuple(problems))

    def nss_directory(self, store: str) -> Path | Problem:
        name = store.strip()
        if name.lower() == "system":
            return SYSTEM_NSSDB
        if name.lower() == "user":
            return self._expand(USER_NSSDB)
        name = name.removeprefix("sql:")
        path = self._expand(Path(name))
        if not path.is_absolute():
            return Problem(f"nss:{store}", 'not a trust store this agent knows: use "system", "user" or an absolute NSS directory')
        return path

    def _expand(self, path: Path) -> Path:
        if self._home is not None and path.parts[:1] == ("~",):
            return self._home.joinpath(*path.parts[1:])
        return path.expanduser()

    def _pem_candidates(self, paths: list[str]) -> Inventory:
        files: list[tuple[str, _PemFile]] = []
        problems: list[Problem] = []
        for text in dict.fromkeys(paths):
            path = self._expand(Path(text))
            if not path.is_absolute():
                problems.append(Problem(text, "not an absolute path: location paths must be absolute"))
                continue
            pem = self._pem.get(path)
            if pem is None:
                pem = self._pem[path] = _read_pem(path)
            if pem.problem:
                problems.append(Problem(text, pem.problem))
            files.append((text, pem))
        keys = [key for _, pem in files for key in pem.keys]
        encrypted = [text for text, pem in files if pem.encrypted_keys]
        candidates: list[Candidate] = []
        for text, pem in files:
            many = len(pem.certificates) > 1
            for index, cert in enumerate(pem.certificates, start=1):
                source = f"{text} #{index}" if many else text
                candidates.append(Candidate(source, cert, _pem_key_lookup(cert, keys, encrypted)))
        return Inventory(tuple(candidates), tuple(problems))


def _read_pem(path: Path) -> _PemFile:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        return _PemFile(problem="no such file")
    except IsADirectoryError:
        return _PemFile(problem="a directory, not a PEM file")
    except OSError as e:
        return _PemFile(problem=f"cannot read: {(e.strerror or str(e)).lower()}")
    if len(data) > MAX_PEM_BYTES:
        return _PemFile(problem=f"larger than {MAX_PEM_BYTES // 1024} KiB: not a certificate or key file")
    certificates: list[x509.Certificate] = []
    keys: list[PrivateKeyTypes] = []
    encrypted = 0
    damaged: list[str] = []
    for match in _PEM_BLOCK.finditer(data):
        label, block = match.group(1), match.group(0)
        if label == b"CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                damaged.append("a damaged certificate")
        elif label == b"ENCRYPTED PRIVATE KEY" or (label in _KEY_LABELS and b"ENCRYPTED" in block[:200]):
            encrypted += 1
        elif label in _KEY_LABELS:
            try:
                keys.append(serialization.load_pem_private_key(block, password=None))
            except TypeError:  # legacy PEM encryption the header check missed
                encrypted += 1
            except (ValueError, UnsupportedAlgorithm):
                damaged.append("a damaged private key")
    problem = None
    if damaged:
        problem = "holds " + " and ".join(dict.fromkeys(damaged))
    elif not certificates and not keys and not encrypted:
        problem = "no PEM certificate or private key in it"
    elif encrypted and not keys and not certificates:
        problem = "its private key is encrypted with a passphrase: the agent can use only unencrypted keys"
    return _PemFile(tuple(certificates), tuple(keys), encrypted, problem)


def _pem_key_lookup(
    cert: x509.Certificate, keys: Sequence[PrivateKeyTypes], encrypted_in: Sequence[str]
) -> Callable[[], PrivateKeyTypes]:
    def lookup() -> PrivateKeyTypes:
        for key in keys:
            if same_public_key(cert, key):
                return key
        if encrypted_in:
            raise KeyUnavailable(
                f"no usable private key: the key in {', '.join(encrypted_in)} is encrypted with a passphrase"
            )
        if keys:
            raise KeyUnavailable("no private key in the listed paths matches this certificate")
        raise KeyUnavailable("no private key in the listed paths (list the key file too, or put the key in the same file)")

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
        return Inventory(problems=(Problem(source, "no NSS database here"),))
    if not (directory / "cert9.db").is_file():
        reason = "no cert9.db: not an NSS sql database"
        if (directory / "cert8.db").is_file():
            reason += " (an old DBM database: convert it with `certutil --upgrade-merge`)"
        return Inventory(problems=(Problem(source, reason),))
    listing = _tool(tools, [tools.certutil, "-L", "-d", f"sql:{directory}"], source)
    if isinstance(listing, Problem):
        return Inventory(problems=(listing,))
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    for nickname, trust in parse_certutil_listing(listing):
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
            candidates.append(Candidate(name, cert, _nss_key_lookup(directory, nickname, cert, has_key, tools)))
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


def export_nss_key(directory: Path, nickname: str, cert: x509.Certificate, tools: NssTools) -> PrivateKeyTypes:
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
