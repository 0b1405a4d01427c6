"""The options several commands take, each declared once: its name, type, default and help.

A command adds the ones it takes (``DATABASE.add(parser)``); only what really differs between
commands is given there: a default (``gateway node`` has no ``--data-dir`` default: it must be
told where the gateway's store is) and a ``note`` appended to the help. The admin API's
connection options live in ``proxy/cli/client.py`` (``add_admin_options``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

type Parser = argparse.ArgumentParser | argparse._ArgumentGroup

UNSET: Any = object()  # "the option's own default" (None is a default of its own)


@dataclass(frozen=True)
class Option:
    """One command-line option as every command that takes it declares it."""

    flag: str
    help: str
    default: Any = None
    default_text: str = ""  # how the help names the default ("": none is named)
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    action: str | None = None  # "append", "store_true"
    choices: Sequence[str] | None = None

    def add(self, parser: Parser, *, default: Any = UNSET, default_text: str = "", note: str = "") -> None:
        """Declare it on ``parser``; ``default`` (with ``default_text`` for the help) only where
        a command's default differs, ``note`` for what only that command does with it."""
        value = self.default if default is UNSET else default
        named = default_text or (self.default_text if default is UNSET else "")
        text = self.help + (f"; {note}" if note else "") + (f" (default: {named})" if named else "")
        settings = {
            "metavar": self.metavar,
            "type": self.type,
            "action": self.action,
            "choices": self.choices,
        }
        given: dict[str, Any] = {name: setting for name, setting in settings.items() if setting is not None}
        parser.add_argument(self.flag, default=value, help=text, **given)


DATA_DIR = Option(
    "--data-dir",
    "the gateway's data directory: its store (gateway.db), master key, request log and state",
    default="var", default_text="./var", metavar="DIR",
)  # fmt: skip
DATABASE = Option(
    "--database",
    "the store: a SQLite file path or sqlite:///PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
    "to share it between nodes (a password may also come from PGPASSWORD or ~/.pgpass); every "
    "process of a gateway gives the same one",
    default_text="DATA_DIR/gateway.db", metavar="URL",
)  # fmt: skip
PROXY_LISTEN = Option(
    "--proxy-listen", "explicit proxy, the same as --mode regular@HOST:PORT",
    default_text="127.0.0.1:8080 when no --mode", metavar="HOST:PORT",
)  # fmt: skip
MODE = Option(
    "--mode",
    "a proxy mode, mitmproxy's syntax (repeatable): regular@HOST:PORT (explicit proxy), "
    "transparent@HOST:PORT (Linux: connections redirected by firewall rules), "
    "wireguard[:CONF]@HOST:PORT; a spec without HOST listens on 127.0.0.1 (docs/modes.md)",
    default=[], metavar="SPEC", action="append",
)  # fmt: skip
UPSTREAM_CA = Option(
    "--upstream-ca", "extra CA (PEM) trusted for upstream servers, besides the public roots", metavar="FILE"
)
HOSTS = Option(
    "--hosts", "hosts file resolving upstream names for labs ('*.suffix' wildcards allowed)", metavar="FILE"
)
HOSTS_ONLY = Option(
    "--hosts-only",
    "answer only the names of --hosts (and their addresses); refuse every other name with a 502 "
    "page, before any DNS lookup or connection, so a lab's browser noise never leaves the lab",
    default=False, action="store_true",
)  # fmt: skip
POLICIES = Option(
    "--policies",
    "YAML policy file or directory (repeatable): Gateway rules and Access, read-only through the "
    "API; every process of a gateway gives the same files",
    default=[], metavar="PATH", action="append",
)  # fmt: skip
REQUIRE_DEVICE = Option(
    "--require-device",
    "answer 407 to clients that do not send an enrolled device's id and secret as proxy credentials",
    default=False, action="store_true",
)  # fmt: skip
DEFAULT_ACCOUNT = Option(
    "--default-account",
    "the account (id, unique id prefix, or name) whose CA and policies serve traffic from no "
    "known device; it cannot be deleted",
    default_text="the first account", metavar="ACCOUNT",
)  # fmt: skip
LEAF_LIFETIME_DAYS = Option(
    "--leaf-lifetime-days", "lifetime of issued leaves", default=47, default_text="47", metavar="N", type=int
)
LEAF_CACHE_SIZE = Option(
    "--leaf-cache-size", "leaves kept in memory", default=10_000, default_text="10000", metavar="N", type=int
)
PUBLIC_URL = Option(
    "--public-url", "base URL clients use for the CA and CRL links in leaves",
    default_text="the admin API's URL", metavar="URL",
)  # fmt: skip
NODE_TIMEOUT = Option(
    "--node-timeout",
    "a node (gateway node, a worker) that stops heartbeating leaves the live nodes after this "
    "long, and no certificate waits for it; every process of a gateway gives the same value",
    default=30.0, default_text="30", metavar="SECONDS", type=float,
)  # fmt: skip
LOG_LEVEL = Option(
    "--log-level",
    "log level",
    default="info",
    default_text="info",
    choices=("debug", "info", "warning", "error"),
)
JSON = Option("--json", "print the API's JSON result instead of a table", default=False, action="store_true")

# The data plane's settings, as gateway run and gateway node both take them.
DATA_PLANE = (
    UPSTREAM_CA,
    HOSTS,
    HOSTS_ONLY,
    POLICIES,
    REQUIRE_DEVICE,
    DEFAULT_ACCOUNT,
    LEAF_LIFETIME_DAYS,
    LEAF_CACHE_SIZE,
)
