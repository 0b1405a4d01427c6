"""Lab name resolution for upstream connections: a hosts file, with ``*.suffix`` wildcards.

Labs and tests give origins names (``origin.test``, ``www.example.com``) that must reach a
server on loopback without editing ``/etc/hosts``. The file uses the hosts format
(``IP name [name...]``, ``#`` comments); a name ``*.lab.test`` matches every name below it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostsMap:
    exact: dict[str, str] = field(default_factory=dict)
    suffixes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, *, source: str = "hosts") -> HostsMap:
        exact: dict[str, str] = {}
        suffixes: list[tuple[str, str]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            address, *names = line.split()
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{source}:{number}: {address!r} is not an IP address") from None
            if not names:
                raise ValueError(f"{source}:{number}: no host name after {address}")
            for name in names:
                name = name.lower().rstrip(".")
                if name.startswith("*."):
                    suffixes.append((name[1:], address))
                else:
                    exact[name] = address
        # Longest suffix first, so that *.a.b.test wins over *.b.test.
        suffixes.sort(key=lambda item: len(item[0]), reverse=True)
        return cls(exact, tuple(suffixes))

    def resolve(self, host: str) -> str | None:
        host = host.lower().rstrip(".")
        if host in self.exact:
            return self.exact[host]
        for suffix, address in self.suffixes:
            if host.endswith(suffix):
                return address
        return None


class LabHosts:
    """Option ``gateway_hosts``: rewrite upstream addresses by a hosts file before connecting."""

    def __init__(self) -> None:
        self.hosts = HostsMap()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gateway_hosts",
            str,
            "",
            "Hosts file (IP name [name...], '*.suffix' wildcards) resolving upstream names, for labs.",
        )

    def configure(self, updated: set[str]) -> None:
        if "gateway_hosts" not in updated:
            return
        path = ctx.options.gateway_hosts
        if not path:
            self.hosts = HostsMap()
            return
        try:
            self.hosts = HostsMap.parse(Path(path).read_text(), source=path)
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"cannot use hosts file {path}: {e}") from e
        logger.info(
            "lab hosts: %d names, %d wildcards from %s", len(self.hosts.exact), len(self.hosts.suffixes), path
        )

    def server_connect(self, data: ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        host, port = data.server.address
        address = self.hosts.resolve(str(host))
        if address is not None:
            data.server.address = (address, port)
