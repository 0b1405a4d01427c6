"""Transparent mode's one refusal of its own: a connection with nowhere to go.

mitmproxy takes a redirected connection's destination from the socket (``SO_ORIGINAL_DST``).
A client that reaches the transparent listener without a redirect rule (it connected to the
gateway's address itself) has the listener as its "original destination": forwarding it would
connect the gateway to itself, again and again. Such a connection is refused before any
upstream connection: mitmproxy's transparent layer then closes the client at once (no TLS
handshake or HTTP request has happened yet, so no page can carry the reason), and the log line
says who it was, where it went and why.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket

from mitmproxy import connection, ctx
from mitmproxy.proxy import server_hooks

logger = logging.getLogger(__name__)

NOT_REDIRECTED = (
    "no destination: this connection reached the gateway's transparent listener directly, not through "
    "a redirect rule (see gateway transparent rules), so there is nothing to forward it to"
)


class TransparentGuard:
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        client = data.client
        if client.proxy_mode.type_name != "transparent" or data.server.address is None:
            return
        if not self._is_own_listener(client, data.server.address):
            return
        data.server.error = NOT_REDIRECTED
        logger.warning(
            "transparent client %s: %s:%s is this listener itself (not redirected; SNI %r): refused",
            client.peername[0] if client.peername else "?",
            data.server.address[0],
            data.server.address[1],
            client.sni,
        )

    def _is_own_listener(self, client: connection.Client, address: tuple[str, int]) -> bool:
        host, port = str(address[0]), int(address[1])
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in proxyserver.servers:
            if server.mode != client.proxy_mode:
                continue
            for listen_host, listen_port, *_ in server.listen_addrs:
                if listen_port != port:
                    continue
                if listen_host == host or (_unspecified(listen_host) and _is_local(host)):
                    return True
        return False


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


@functools.lru_cache(maxsize=256)
def _is_local(host: str) -> bool:
    """Whether ``host`` is one of this machine's addresses: only those can be bound."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
        return True
    except OSError:
        return False
