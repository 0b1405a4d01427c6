"""A plain stdlib HTTPS client through an HTTP CONNECT proxy that keeps what the tests look at:
the leaf certificate the proxy presented, the negotiated ALPN, the status and the body."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509


class TunnelError(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    status: int
    body: str
    leaf: x509.Certificate
    alpn: str | None


def client_context(
    *cafiles: Path | str, verify: bool = True, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """Verifying (against exactly `cafiles`, no system roots) or non-verifying client context."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        for cafile in cafiles:
            ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn or ["http/1.1"])
    return ctx


def open_tunnel(proxy_port: int, host: str, port: int, *, timeout: float = 10) -> socket.socket:
    """TCP to the proxy on loopback, CONNECT host:port, return the socket once it answers 200."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    try:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise TunnelError(f"proxy closed during CONNECT; got {head!r}")
            head += chunk
            if len(head) > 65536:
                raise TunnelError("CONNECT response head too long")
        status_line = head.split(b"\r\n", 1)[0]
        if status_line.split()[1:2] != [b"200"]:
            raise TunnelError(f"CONNECT refused: {status_line!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def fetch(
    proxy_port: int,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    path: str = "/",
    timeout: float = 10,
) -> Fetched:
    """One new connection: CONNECT, TLS handshake with SNI=host, `GET path`, Connection: close."""
    raw = open_tunnel(proxy_port, host, port, timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
        if der is None:
            raise TunnelError("no peer certificate")
        alpn = tls.selected_alpn_protocol()
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 4 * 1024 * 1024:
                raise TunnelError("response larger than 4 MiB")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2:
        raise TunnelError(f"no HTTP response: {data[:200]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return Fetched(
        status=int(status_line[1]),
        body=body.decode(errors="replace"),
        leaf=x509.load_der_x509_certificate(der),
        alpn=alpn,
    )


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
