"""Nothing is written into a TLS connection that can no longer be written to.

mitmproxy 12's ``TLSLayer.send_data`` hands data to ``SSL.Connection.sendall`` whatever the state
of the connection, and lets any ``SSL.Error`` but a clean or a system-call close escape: the whole
client connection then ends with "mitmproxy has crashed!" and a traceback at ERROR. That happens
when the handshake with an origin failed (its certificate refused) and the client sends a byte
that is not HTTP and closes at once, which is what ``echo | openssl s_client -proxy PROXY
-connect ORIGIN`` does, the usual way to look at the certificate a proxy shows: the TCP layer
forwards the byte to the upstream, whose TLS object is in OpenSSL's error state. Stock mitmdump
12.3.1 logs the same crash.

``install()`` makes ``send_data`` drop data for a connection that cannot be written to any more
(its handshake failed, or the proxy closed it), with a debug line, as mitmproxy's connection
handler drops writes to a transport that is closing. Every other write goes through stock's
``send_data`` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from mitmproxy import connection
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import tls

logger = logging.getLogger(__name__)

__all__ = ["STOCK_SEND_DATA", "install", "send_data"]

_SendData = Callable[[tls.TLSLayer, bytes], layer.CommandGenerator[None]]

STOCK_SEND_DATA: Final[_SendData] = tls.TLSLayer.send_data


def send_data(self: tls.TLSLayer, data: bytes) -> layer.CommandGenerator[None]:
    """Stock ``send_data``, unless the connection can no longer be written to."""
    if not self.conn.state & connection.ConnectionState.CAN_WRITE:
        logger.debug("%s: %d bytes for a closed TLS connection dropped", self.conn, len(data))
        return
    yield from STOCK_SEND_DATA(self, data)


def install() -> None:
    """From now on, TLS layers of this process drop data for connections they cannot write to."""
    if tls.TLSLayer.send_data is not send_data:
        tls.TLSLayer.send_data = send_data  # type: ignore[method-assign]
        logger.debug("TLS layers drop data for connections closed for writing")
