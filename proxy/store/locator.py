"""Where the store lives: ``--database`` parsed once, with a message naming what is accepted.

A path or ``sqlite:///PATH`` (also ``sqlite://relative/path``) is the embedded SQLite store;
``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (or ``postgres://``, with libpq's
``?key=value`` parameters) is a PostgreSQL database.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from proxy.store.database import MEMORY, StoreError

logger = logging.getLogger(__name__)

ACCEPTED = "a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_PASSWORD = re.compile(r"(//[^/@:]*:)[^@/]*@")
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class Location:
    backend: Backend
    target: str  # SQLite: the file (or ":memory:"); PostgreSQL: the URL, password included

    @property
    def display(self) -> str:
        """For messages and logs: the URL without its password."""
        return self.target if self.backend is Backend.SQLITE else redact(self.target)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the authority and in ``password=``)."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without the password of its authority, and that password (decoded), for handing
    the URL to a child process on its command line and the password through ``PGPASSWORD``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def locate(value: str | Path) -> Location:
    """``value`` as a store location; :class:`StoreError` naming what is accepted otherwise."""
    text = str(value)
    if isinstance(value, Path) or text == MEMORY:
        return Location(Backend.SQLITE, text)
    if not text.strip():
        raise StoreError(f"--database: empty: give {ACCEPTED}")
    scheme = _SCHEME.match(text)
    if scheme is None or len(scheme.group(1)) == 1:  # a path (C:\... is a path too)
        return Location(Backend.SQLITE, text)
    name = scheme.group(1).lower()
    if name == "sqlite":
        path = text[len("sqlite:") :]
        if not path.startswith("//") or not path[2:]:
            raise StoreError(
                f"--database {text!r}: a SQLite URL is sqlite:///PATH (the file's path after //)"
            )
        return Location(Backend.SQLITE, path[2:])
    if name in ("postgresql", "postgres"):
        return Location(Backend.POSTGRESQL, _checked_postgres(text))
    raise StoreError(f"--database: unsupported scheme {name!r}: give {ACCEPTED}")


def _checked_postgres(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict  # only for PostgreSQL URLs

    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
        conninfo_to_dict(url)
    except Exception as e:  # noqa: BLE001 -- psycopg's ProgrammingError or urllib's ValueError
        raise StoreError(f"--database {shown}: not a valid PostgreSQL URL ({_first_line(e)})") from None
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise StoreError(f"--database {shown}: no host: give postgresql://USER@HOST:PORT/DATABASE")
    if not parts.path.strip("/") and "dbname=" not in (parts.query or ""):
        raise StoreError(f"--database {shown}: no database name: give postgresql://USER@HOST:PORT/DATABASE")
    return url


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
