"""The system trust store (what OpenSSL, curl, Python and most programs trust), detected:

==========  ========================================  ==========================================
flavour     anchors (the agent writes here)           rebuilt with, into
==========  ========================================  ==========================================
Debian      ``/usr/local/share/ca-certificates/``     ``update-ca-certificates`` ->
            ``gateway-<fp16>.crt`` (PEM, 0644)        ``/etc/ssl/certs/ca-certificates.crt``
RHEL        ``/etc/pki/ca-trust/source/anchors/``     ``update-ca-trust`` ->
            ``gateway-<fp16>.crt``                    ``/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem``
==========  ========================================  ==========================================

The flavour is the first whose anchors directory exists (under ``--root``), else the first whose
tool is installed. A file is written atomically: a temporary ``.gateway-<fp16>.crt.<pid>.tmp``
beside it (not picked up by the tools: wrong name), fsync, rename. A removal is an unlink, and
Debian's tool then runs with ``--fresh`` (without it the hashed symlink of a removed file stays).
The tool runs only when something changed, or when an anchor is missing from the bundle.

A root counts as installed when it is in the rebuilt bundle -- the tool's output, what programs
read -- or, when the tool cannot run here, when it is in the anchors directory.

**Under --root DIR** nothing outside DIR is touched. Debian's ``update-ca-certificates`` is a
shell script whose undocumented options (``--help`` shows only ``--verbose`` and ``--fresh``)
``--certsconf``, ``--certsdir``, ``--localcertsdir``, ``--etccertsdir`` and ``--hooksdir`` move
every path it uses; the agent runs it with all of them under DIR (``DIR/etc/ca-certificates.conf``
if it exists, else ``/dev/null``, which makes the run ``--fresh``; a hooks directory under DIR,
so that the real hooks, such as Java's keystore update, do not run), and the bundle is
``DIR/etc/ssl/certs/ca-certificates.crt``. When the installed script lacks these options (read
from its text), and always for RHEL's ``update-ca-trust`` (it has no such options), the refresh is
skipped under ``--root`` with a note, and only the anchors directory counts.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.state import InstalledCertificate
from agent.transport import fingerprint_of
from agent.trust_store import (
    Entry,
    RootCertificate,
    StoreError,
    StoreOptions,
    Unusable,
    der_fingerprints,
    describe_uid,
    file_name_for,
    last_line_of,
)

logger = logging.getLogger(__name__)

TOOL_TIMEOUT = 300.0
MAX_ANCHOR_BYTES = 1024 * 1024
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
ROOT_OPTIONS = (b"--certsconf", b"--certsdir", b"--localcertsdir", b"--etccertsdir", b"--hooksdir")


@dataclass(frozen=True)
class Flavor:
    name: str
    anchors: Path
    bundle: Path
    tool: str
    suffix: str  # the file names the tool picks up ("" for any)


DEBIAN = Flavor(
    "debian", Path("/usr/local/share/ca-certificates"), Path("/etc/ssl/certs/ca-certificates.crt"),
    "update-ca-certificates", ".crt",
)  # fmt: skip
RHEL = Flavor(
    "rhel", Path("/etc/pki/ca-trust/source/anchors"), Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
    "update-ca-trust", "",
)  # fmt: skip
FLAVORS = (DEBIAN, RHEL)

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    logger.debug("running %s", " ".join(argv))
    return subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT, check=False
    )


def detect_system_store(
    options: StoreOptions, *, which: Callable[[str], str | None], runner: Runner = _run
) -> SystemStore:
    for flavor in FLAVORS:
        if options.place(flavor.anchors).is_dir():
            return SystemStore(flavor, options, which(flavor.tool), runner=runner)
    for flavor in FLAVORS:
        tool = which(flavor.tool)
        if tool:
            return SystemStore(flavor, options, tool, runner=runner)
    return SystemStore(DEBIAN, options, None, runner=runner, found=False)


def supports_root_options(tool: str) -> bool:
    """Whether this ``update-ca-certificates`` (a shell script) takes the path options."""
    try:
        with open(tool, "rb") as f:
            text = f.read(256 * 1024)
    except OSError:
        return False
    return all(option in text for option in ROOT_OPTIONS)


class SystemStore:
    name = "system"
    optional = False

    def __init__(
        self,
        flavor: Flavor,
        options: StoreOptions,
        tool: str | None,
        *,
        runner: Runner = _run,
        found: bool = True,
    ) -> None:
        self.flavor = flavor
        self.options = options
        self.tool = tool
        self.found = found
        self.anchors = options.place(flavor.anchors)
        self.bundle = options.place(flavor.bundle)
        self.key = f"system:{self.anchors}"
        self._runner = runner
        self._stale = False
        self._notes: list[str] = []
        self._not_created = ""  # why ``create`` could not make the anchors directory
        self.refreshable, why = self._refresh_plan()
        if why:
            self._notes.append(why)

    def __repr__(self) -> str:
        return f"SystemStore({self.flavor.name}, {str(self.anchors)!r})"

    def create(self) -> None:
        """Make the anchors directory when there is none: only inside a ``--root`` sandbox, where
        the agent provides what the flavour's package would have made."""
        if not self.found or self.options.root is None:
            return
        try:
            self.anchors.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            self._not_created = f"cannot create {self.anchors}: {_reason(e)}"

    def _refresh_plan(self) -> tuple[bool, str]:
        if self.tool is None:
            return False, ""
        if self.options.root is None:
            return True, ""
        if self.flavor is DEBIAN and supports_root_options(self.tool):
            return True, ""
        return False, (
            f"{self.flavor.tool} was not run: it cannot be pointed at --root {self.options.root}; "
            f"installed means present in {self.anchors}"
        )

    # --- TrustStore ---

    def problem(self) -> Unusable | None:
        if self._not_created:
            return Unusable(self._not_created)
        if not self.found:
            return Unusable(
                "no system trust store found: neither /usr/local/share/ca-certificates (update-ca-certificates) "
                "nor /etc/pki/ca-trust/source/anchors (update-ca-trust)",
                missing=True,
            )
        try:
            is_dir = self.anchors.is_dir()
        except PermissionError:
            return Unusable(f"cannot look at {self.anchors}: permission denied for {describe_uid()}")
        if not is_dir:
            return Unusable(
                f"{self.anchors} does not exist (is {self.flavor.tool}'s package installed?)", missing=True
            )
        if not os.access(self.anchors, os.R_OK | os.X_OK):
            return Unusable(f"cannot read {self.anchors}: permission denied for {describe_uid()}")
        if not os.access(self.anchors, os.W_OK):
            return Unusable(
                f"{self.anchors} is not writable by {describe_uid()} (permission denied): the system store needs "
                "root; leave it out with --no-system",
                readable=True,
            )
        return None

    def inventory(self) -> list[Entry]:
        anchors = self._anchor_fingerprints()
        if not self.refreshable:
            return [Entry(fp, path, True) for fp, path in anchors]
        bundled = set(self._bundle_fingerprints())
        entries = [Entry(fp, path, fp in bundled) for fp, path in anchors]
        in_anchors = {fp for fp, _ in anchors}
        entries += [Entry(fp, str(self.bundle), True) for fp in bundled - in_anchors]
        return entries

    def owned_name(self, fingerprint: str) -> str:
        return str(self.anchors / file_name_for(fingerprint))

    def install(self, root: RootCertificate) -> str:
        target = Path(self.owned_name(root.fingerprint))
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.fchmod(fd, 0o644)  # every program reads the system store
                os.write(fd, root.pem())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except OSError as e:
            temporary.unlink(missing_ok=True)
            raise StoreError(f"cannot write {target}: {_reason(e)}") from None
        return str(target)

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        self._stale = True  # in the anchors, not in the bundle: rebuild it (nothing of anyone's is changed)
        return "", ""

    def remove(self, record: InstalledCertificate) -> None:
        path = Path(record.name)
        if path.parent != self.anchors:
            raise StoreError(f"the recorded file {path} is not in {self.anchors}: left as is")
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"cannot remove {path}: {_reason(e)}") from None

    def finish(self, *, changed: bool, removed: bool) -> str:
        if not (changed or self._stale):
            return ""
        if self.tool is None:
            return (
                f"{self.flavor.tool} is not installed: the files in {self.anchors} are not in the system bundle "
                f"{self.bundle} until it runs"
            )
        if not self.refreshable:
            return ""
        argv = self._command(fresh=removed)
        try:
            done = self._runner(argv)
        except subprocess.TimeoutExpired:
            return f"{self.flavor.tool} did not finish within {TOOL_TIMEOUT:g} s"
        except OSError as e:
            return f"cannot run {self.tool}: {e.strerror or e}"
        if done.returncode != 0:
            return f"{self.flavor.tool} failed: {last_line_of(done.stderr or done.stdout, f'exit status {done.returncode}')}"
        logger.info("%s: %s", self.flavor.tool, last_line_of(done.stdout, "done"))
        return ""

    def notes(self) -> list[str]:
        return list(self._notes)

    # --- helpers ---

    def _command(self, *, fresh: bool) -> list[str]:
        assert self.tool is not None
        argv = [self.tool]
        root = self.options.root
        if self.flavor is DEBIAN and root is not None:
            place = self.options.place
            certs = place(Path("/etc/ssl/certs"))
            certs.mkdir(mode=0o755, parents=True, exist_ok=True)  # the script cds there first
            conf = place(Path("/etc/ca-certificates.conf"))
            argv += [
                "--certsconf", str(conf) if conf.is_file() else os.devnull,
                "--certsdir", str(place(Path("/usr/share/ca-certificates"))),
                "--localcertsdir", str(self.anchors),
                "--etccertsdir", str(certs),
                "--hooksdir", str(place(Path("/etc/ca-certificates/update.d"))),
            ]  # fmt: skip
        if self.flavor is DEBIAN and fresh:
            argv.append("--fresh")
        return argv

    def _anchor_fingerprints(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for directory, subdirectories, files in os.walk(self.anchors):
            subdirectories.sort()
            for name in sorted(files):
                if name.startswith(".") or not name.endswith(self.flavor.suffix):
                    continue
                path = Path(directory) / name
                try:
                    with path.open("rb") as f:
                        data = f.read(MAX_ANCHOR_BYTES)
                except OSError as e:
                    logger.info("system store: cannot read %s: %s", path, _reason(e))
                    continue
                fingerprints = der_fingerprints(data)
                if not fingerprints and self.flavor is RHEL:  # p11-kit reads DER anchors too
                    try:
                        cert = x509.load_der_x509_certificate(data)
                        fingerprints = [fingerprint_of(cert.public_bytes(serialization.Encoding.DER))]
                    except ValueError:
                        pass
                found += [(fp, str(path)) for fp in fingerprints]
        return found

    def _bundle_fingerprints(self) -> list[str]:
        try:
            with self.bundle.open("rb") as f:
                data = f.read(MAX_BUNDLE_BYTES)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot read the system bundle {self.bundle}: {_reason(e)}") from None
        return der_fingerprints(data)


def _reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return f"permission denied for {describe_uid()}"
    return (error.strerror or str(error)).lower()
