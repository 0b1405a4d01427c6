"""TLS session resumption on the proxy's connections to origin servers.

Stock mitmproxy makes every upstream connection a full handshake: it never offers a session
(pyOpenSSL client contexts cache nothing; the application has to hand a session to each new
connection). A full handshake costs the proxy the origin's certificate chain to parse and verify
and its signature to check; a resumed one costs neither.

``UpstreamSessions`` keeps, per upstream (the client ``SSL.Context``, which carries the
verification settings, the server address, the SNI and the offered ALPN), the session of the
last connection that completed its handshake, taken when that connection closes (a TLS 1.3
ticket arrives after the handshake), and offers it to the next connection to the same upstream.
A session is only ever offered with the same context and SNI that verified it, so resuming skips
no check that a full handshake would make. A server that refuses the session simply does a full
handshake; nothing else changes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from mitmproxy import connection
from OpenSSL import SSL

logger = logging.getLogger(__name__)

__all__ = ["SessionStats", "UpstreamSessions"]

DEFAULT_MAXSIZE = 1024

_Key = tuple[SSL.Context, tuple[str, int] | None, str | None, tuple[bytes, ...]]


@dataclass(frozen=True)
class SessionStats:
    offered: int
    """Upstream handshakes that were offered a stored session."""
    resumed: int
    """Of those, handshakes the server resumed (no certificate sent, none verified)."""
    stored: int
    """Upstreams with a session stored now."""


class UpstreamSessions:
    """Stores and offers upstream TLS sessions; event-loop thread only."""

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE) -> None:
        self._maxsize = maxsize
        self._sessions: OrderedDict[_Key, SSL.Session] = OrderedDict()
        self._open: dict[str, tuple[_Key, SSL.Connection, bool]] = {}
        self._offered = 0
        self._resumed = 0

    def start(self, server: connection.Server, ssl_conn: SSL.Connection) -> None:
        """Offer the stored session for this upstream to ``ssl_conn`` (before its handshake)."""
        if not self._maxsize:
            return
        key: _Key = (ssl_conn.get_context(), server.address, server.sni, tuple(server.alpn_offers))
        session = self._sessions.get(key)
        if session is not None:
            try:
                ssl_conn.set_session(session)
            except SSL.Error as e:  # OpenSSL refused it: a full handshake, as without a session
                logger.info("upstream %s: stored TLS session not usable (%s); dropped", server.address, e)
                del self._sessions[key]
                session = None
            else:
                self._sessions.move_to_end(key)
                self._offered += 1
        self._open[server.id] = (key, ssl_conn, session is not None)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "upstream %s (SNI %s): %s",
                server.address,
                server.sni,
                "offering a stored TLS session" if session else "no TLS session stored",
            )

    def established(self, server: connection.Server) -> None:
        """Count a resumption once the handshake is done."""
        entry = self._open.get(server.id)
        if entry is not None and entry[2]:
            if SSL._lib.SSL_session_reused(entry[1]._ssl) == 1:  # type: ignore[attr-defined]
                self._resumed += 1

    def closed(self, server: connection.Server) -> None:
        """Keep the session of a connection that completed its handshake, for the next one."""
        entry = self._open.pop(server.id, None)
        if entry is None or not server.tls_established:
            return
        key, ssl_conn, _ = entry
        session = ssl_conn.get_session()
        if session is None:
            return
        # The connection is over. Unless it sent close_notify, OpenSSL marks its session
        # unresumable when the connection is freed (SSL 3.0's rule; since TLS 1.1 an unclean close
        # no longer forbids resumption, RFC 5246 §7.2.1). Say it was shut down, so the session
        # stays usable; a session already spoilt by a fatal alert stays unresumable.
        ssl_conn.set_shutdown(ssl_conn.get_shutdown() | SSL.SENT_SHUTDOWN)
        if logger.isEnabledFor(logging.DEBUG):
            reused = SSL._lib.SSL_session_reused(ssl_conn._ssl) == 1  # type: ignore[attr-defined]
            logger.debug(
                "upstream %s (SNI %s) closed: its TLS session kept for the next one (resumed: %s)",
                server.address,
                server.sni,
                reused,
            )
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._maxsize:
            self._sessions.popitem(last=False)

    def clear(self) -> None:
        self._sessions.clear()

    def stats(self) -> SessionStats:
        return SessionStats(offered=self._offered, resumed=self._resumed, stored=len(self._sessions))
