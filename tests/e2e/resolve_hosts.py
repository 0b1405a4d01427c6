"""mitmproxy script for stock `mitmdump -s`: lab name resolution from a hosts file, for the test
that runs the gateway addon without `gateway run` (whose --hosts does the same job).

    mitmdump -s tests/e2e/resolve_hosts.py --set e2e_hosts=HOSTS_FILE
HOSTS_FILE lines: `IP name [name...]`; `*.suffix` matches every name under suffix."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import addonmanager, connection, ctx
from mitmproxy.proxy import server_hooks


class ResolveHosts:
    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}

    def load(self, loader: addonmanager.Loader) -> None:
        loader.add_option("e2e_hosts", str, "", "Hosts file used to resolve upstream names.")

    def configure(self, updated: set[str]) -> None:
        if "e2e_hosts" not in updated or not ctx.options.e2e_hosts:
            return
        self.exact.clear()
        self.suffixes.clear()
        for line in Path(ctx.options.e2e_hosts).read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            for name in fields[1:]:
                if name.startswith("*."):
                    self.suffixes[name[1:].lower()] = fields[0]
                else:
                    self.exact[name.lower()] = fields[0]

    def lookup(self, host: str) -> str | None:
        host = host.lower()
        if host in self.exact:
            return self.exact[host]
        for suffix, ip in self.suffixes.items():
            if host.endswith(suffix):
                return ip
        return None

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server: connection.Server = data.server
        if server.address is None:
            return
        host, port = server.address
        ip = self.lookup(str(host))
        if ip is not None:
            server.address = (ip, port)


addons = [ResolveHosts()]
