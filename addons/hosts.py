"""Lab name resolution for upstream connections: a hosts file, with ``*.suffix`` wildcards.

Labs and tests give origins names (``origin.test``, ``www.example.com``) that must reach a
server on loopback without editing ``/etc/hosts``. The file uses the hosts format
(``IP name [name...]``, ``#`` comments); a name ``*.lab.test`` matches every name below it.

With ``gateway_hosts_only`` the lab stays in the lab: a name the file does not list is refused
before any DNS lookup or upstream connection (a CONNECT or plain-HTTP request gets a 502 page,
any other connection an error), so a lab machine's browser noise never leaves it. Addresses the
file maps names to stay reachable as IP literals (transparent clients arrive with those).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from addons.pages import BlockPage, PageFacts, render

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

    def addresses(self) -> frozenset[str]:
        """Every address the file maps a name to."""
        return frozenset(self.exact.values()) | frozenset(address for _, address in self.suffixes)


NOT_IN_LAB = "not a lab name"


class LabHosts:
    """Option ``gateway_hosts``: rewrite upstream addresses by a hosts file before connecting;
    ``gateway_hosts_only``: refuse every other name."""

    def __init__(self) -> None:
        self.hosts = HostsMap()
        self.only = False
        self._lab_addresses: frozenset[str] = frozenset()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "gateway_hosts",
            str,
            "",
            "Hosts file (IP name [name...], '*.suffix' wildcards) resolving upstream names, for labs.",
        )
        loader.add_option(
            "gateway_hosts_only",
            bool,
            False,
            "Refuse every upstream name the gateway_hosts file does not list, before any DNS lookup.",
        )

    def configure(self, updated: set[str]) -> None:
        if "gateway_hosts" in updated:
            self.hosts = self._read(ctx.options.gateway_hosts)
            self._lab_addresses = self.hosts.addresses()
        if updated & {"gateway_hosts", "gateway_hosts_only"}:
            self.only = bool(ctx.options.gateway_hosts_only)
            if self.only and not ctx.options.gateway_hosts:
                raise exceptions.OptionsError("gateway_hosts_only needs a gateway_hosts file (--hosts)")
            if self.only:
                logger.info("lab hosts only: every other name is refused, never resolved")

    @staticmethod
    def _read(path: str) -> HostsMap:
        if not path:
            return HostsMap()
        try:
            hosts = HostsMap.parse(Path(path).read_text(), source=path)
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"cannot use hosts file {path}: {e}") from e
        logger.info("lab hosts: %d names, %d wildcards from %s", len(hosts.exact), len(hosts.suffixes), path)
        return hosts

    def in_lab(self, host: str) -> bool:
        """A name the file lists, or an address it maps one to."""
        return self.hosts.resolve(host) is not None or host.lower().strip("[]") in self._lab_addresses

    # -- proxy requests: refused with a page, before the CONNECT opens anything ----------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._refuse_request(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.method != "CONNECT" and not flow.client_conn.tls:  # plain-HTTP proxy requests
            self._refuse_request(flow)

    def _refuse_request(self, flow: http.HTTPFlow) -> None:
        host = flow.request.host
        if not self.only or flow.response is not None or self.in_lab(host):
            return
        logger.info("lab hosts only: %s:%d from client %s refused (not in the hosts file)",
                    host, flow.request.port, _peer(flow.client_conn.peername))  # fmt: skip
        facts = PageFacts(
            "Not a lab name",
            f"This lab gateway answers only the names in its hosts file; {host} is not one of them, "
            "so it was not resolved or contacted.",
            host,
        )
        flow.response = render(flow, 502, facts, BlockPage(header_text="Outside the lab"))

    # -- every connection: the names of the file, or refused -------------------------------------------
    def server_connect(self, data: ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        host, port = data.server.address
        address = self.hosts.resolve(str(host))
        if address is not None:
            data.server.address = (address, port)
        elif self.only and not self.in_lab(str(host)):
            data.server.error = f"{host}: {NOT_IN_LAB} (the gateway runs with --hosts-only)"
            logger.info("lab hosts only: connection to %s:%d from client %s refused (not in the hosts file)",
                        host, port, _peer(data.client.peername))  # fmt: skip


def _peer(peername: object) -> str:
    return str(peername[0]) if isinstance(peername, tuple) and peername else "?"
