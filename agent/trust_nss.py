"""An NSS database as a trust store (``~/.pki/nssdb`` for Chromium, ``/etc/pki/nssdb``, configured
ones), changed only through NSS ``certutil`` (Debian: libnss3-tools).

- listed with ``certutil -L -d sql:DIR`` and each nickname exported with ``certutil -L -n NICK -a``,
  so that a root is recognised by its SHA-256 fingerprint whatever its nickname; a root counts as
  installed when its SSL trust flags hold ``C`` (a CA trusted to issue server certificates);
- installed with ``certutil -A -n "Gateway <fp16>" -t "C,," -i FILE -d sql:DIR`` from a PEM file in
  a fresh 0700 temporary directory; one operation at a time (each is one SQLite transaction);
- removed with ``certutil -D -n "Gateway <fp16>" -d sql:DIR``, only for a nickname this agent
  recorded and only while it still holds the recorded certificate.

``certutil -A`` of a certificate that is already in the database under another nickname keeps
that nickname and *overwrites its trust flags*; so a root that is present under any other name is
never added again (a root added by hand is never touched), and one present under our own
nickname without ``C`` gets its trust back with ``certutil -M``.

Only databases with an empty password can be changed: ``-A`` and ``-M`` get ``-f`` with an empty
password file, so that certutil never prompts. On a database with a password ``certutil -A``
adds the certificate, then fails to set its trust; the agent takes that certificate back
(``certutil -D``, which needs no password) and reports why.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agent.locations import NssTools, parse_certutil_listing
from agent.state import InstalledCertificate
from agent.trust_store import (
    Entry,
    RootCertificate,
    StoreError,
    Unusable,
    der_fingerprints,
    describe_uid,
    last_line_of,
    nickname_for,
)

logger = logging.getLogger(__name__)

NO_DATABASE = "no NSS database here"
TRUST = "C,,"


class NssStore:
    def __init__(self, directory: Path, *, tools: NssTools, optional: bool = False) -> None:
        self.directory = directory
        self.key = self.name = f"nss:{directory}"
        self.optional = optional
        self._tools = tools
        self._not_created = ""  # why ``create`` could not make the database

    def create(self) -> None:
        """Make an empty database (no password) when there is none: only inside a ``--root``
        sandbox, where the agent provides what a real system would have."""
        try:
            if self.directory.exists() and (not self.directory.is_dir() or any(self.directory.iterdir())):
                return  # a database, or something else the user put there: left as it is
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._not_created = f"cannot create {self.directory}: {(e.strerror or str(e)).lower()}"
            return
        try:
            self._certutil("-N", "-d", self._sql, "--empty-password")
        except StoreError as e:
            self._not_created = f"cannot create an NSS database here: {e}"
            return
        logger.info("%s: created an empty NSS database in the sandbox", self.name)

    def __repr__(self) -> str:
        return f"NssStore({str(self.directory)!r})"

    @property
    def _sql(self) -> str:
        return f"sql:{self.directory}"

    def problem(self) -> Unusable | None:
        if self._not_created:
            return Unusable(self._not_created)
        directory, database = self.directory, self.directory / "cert9.db"
        try:
            if not directory.is_dir():
                return (
                    Unusable(NO_DATABASE, missing=True)
                    if not directory.exists()
                    else Unusable("not a directory")
                )
            present = database.is_file()
        except PermissionError:
            return Unusable(f"cannot look into {directory}: permission denied for {describe_uid()}")
        if not present:
            if (directory / "cert8.db").is_file():
                return Unusable("an old DBM database (cert8.db): convert it with `certutil --upgrade-merge`")
            return Unusable("no cert9.db: not an NSS sql database", missing=not any(directory.iterdir()))
        if not (os.access(directory, os.R_OK | os.X_OK) and os.access(database, os.R_OK)):
            return Unusable(f"cannot read {database}: permission denied for {describe_uid()}")
        for path in (directory, database, directory / "key4.db"):
            if path.exists() and not os.access(path, os.W_OK):
                return Unusable(
                    f"{path} is not writable by {describe_uid()} (permission denied): run the agent as its owner, "
                    "or leave this database out",
                    readable=True,
                )
        return None

    def inventory(self) -> list[Entry]:
        entries = []
        for nickname, trust in parse_certutil_listing(self._certutil("-L", "-d", self._sql)):
            exported = self._certutil("-L", "-d", self._sql, "-n", nickname, "-a")
            ssl_trust = trust.split(",")[0]
            for fingerprint in der_fingerprints(exported.encode()):
                entries.append(Entry(fingerprint, nickname, "C" in ssl_trust))
        return entries

    def owned_name(self, fingerprint: str) -> str:
        return nickname_for(fingerprint)

    def install(self, root: RootCertificate) -> str:
        nickname = nickname_for(root.fingerprint)
        with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:  # 0700
            pem, empty = Path(scratch) / "ca.pem", Path(scratch) / "password"
            pem.write_bytes(root.pem())
            empty.write_bytes(b"")  # never a prompt: a database with a password fails instead
            try:
                self._certutil(
                    "-A", "-n", nickname, "-t", TRUST, "-i", str(pem), "-d", self._sql, "-f", str(empty)
                )
            except StoreError as e:
                # certutil adds the certificate before it sets its trust, and the trust needs the
                # database's password: take back a certificate left without trust
                self._take_back(nickname)
                raise StoreError(_password_hint(str(e))) from None
        return nickname

    def _take_back(self, nickname: str) -> None:
        try:
            if any(
                name == nickname for name, _ in parse_certutil_listing(self._certutil("-L", "-d", self._sql))
            ):
                self._certutil("-D", "-n", nickname, "-d", self._sql)
                logger.info("%s: took back %r after a failed install", self.name, nickname)
        except StoreError as e:
            logger.warning("%s: cannot take back %r: %s", self.name, nickname, e)

    def reinstall(self, root: RootCertificate, entries: Sequence[Entry]) -> tuple[str, str]:
        nickname = nickname_for(root.fingerprint)
        if any(entry.name == nickname for entry in entries):
            with tempfile.TemporaryDirectory(prefix="gateway-agent-") as scratch:
                empty = Path(scratch) / "password"
                empty.write_bytes(b"")
                try:  # our own entry: trust it again
                    self._certutil("-M", "-n", nickname, "-t", TRUST, "-d", self._sql, "-f", str(empty))
                except StoreError as e:
                    raise StoreError(_password_hint(str(e))) from None
            return nickname, ""
        names = ", ".join(repr(e.name) for e in entries)
        return "", f"already in the database as {names} without trust for TLS servers (C): left as is"

    def remove(self, record: InstalledCertificate) -> None:
        self._certutil("-D", "-n", record.name, "-d", self._sql)

    def finish(self, *, changed: bool, removed: bool) -> str:
        return ""

    def notes(self) -> list[str]:
        return []

    def _certutil(self, *arguments: str) -> str:
        argv = [self._tools.certutil, *arguments]
        try:
            done = self._tools.run(argv)
        except FileNotFoundError:
            raise StoreError(f"{argv[0]} is not installed (Debian: apt install libnss3-tools)") from None
        except subprocess.TimeoutExpired:
            raise StoreError(f"certutil did not finish within {self._tools.timeout:g} s") from None
        except OSError as e:
            raise StoreError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        if done.returncode != 0:
            detail = last_line_of(done.stderr, f"exit status {done.returncode}")
            if "READ_ONLY" in detail or "ermission denied" in detail:
                detail += f" (not writable by {describe_uid()})"
            raise StoreError(f"certutil {arguments[0]} failed: {detail}")
        return done.stdout.decode(errors="replace")


def _password_hint(message: str) -> str:
    if "BAD_PASSWORD" in message or "authenticate" in message or "password file contains no data" in message:
        return (
            "the NSS database is protected by a password: the agent changes only databases with an empty one"
        )
    return message
