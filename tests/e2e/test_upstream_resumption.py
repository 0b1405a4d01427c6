"""Upstream TLS session resumption, counted at a real origin: `gateway run` resumes its TLS
sessions with an origin server instead of a full handshake per connection, keyed by SNI, and a
resumed connection still yields leaves with the origin certificate's names."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.pki import issue_server

from .gateway_process import GatewayProcess
from .origin import Origin
from .tunnel import client_context, fetch

pytestmark = pytest.mark.e2e

FETCHES = 6


@dataclass
class CountingOrigin:
    """A stdlib `ssl` HTTPS server on loopback that records, per connection, the SNI and
    whether the TLS session was resumed; one request per connection."""

    context: ssl.SSLContext
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    handshakes: list[tuple[str | None, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return  # closed: the test is over
            try:
                self._one(raw)
            except (OSError, ssl.SSLError) as e:
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")

    def _one(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        sni: list[str | None] = [None]

        def remember(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            sni[0] = name

        self.context.sni_callback = remember  # type: ignore[assignment]
        with self.context.wrap_socket(raw, server_side=True) as tls:
            with self.lock:
                self.handshakes.append((sni[0], tls.session_reused))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                head += chunk
            body = b"resumption origin"
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    def counts(self, sni: str) -> tuple[int, int]:
        """(full handshakes, resumed handshakes) for this SNI."""
        with self.lock:
            mine = [reused for name, reused in self.handshakes if name == sni]
        return mine.count(False), mine.count(True)


@pytest.fixture
def counting_origin(origin: Origin, tmp_path: Path) -> Iterator[CountingOrigin]:
    # Signed by the e2e origin CA, which the gateway trusts (--upstream-ca): origin.test resolves
    # to 127.0.0.1 in the lab hosts file.
    issued = issue_server(origin.ca, ["origin.test", "*.origin.test"])
    cert_path, key_path = issued.write(tmp_path, "counting-origin")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = CountingOrigin(context)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not, on Linux)
    server.sock.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the origin's accept loop did not end"


def _sans(leaf: x509.Certificate) -> list[str]:
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def test_upstream_tls_sessions_are_resumed_per_sni(
    gateway: GatewayProcess, counting_origin: CountingOrigin, tmp_path: Path
) -> None:
    bundle = tmp_path / "gateway-ca.pem"
    bundle.write_text(gateway.ca_pem())
    ctx = client_context(bundle)
    leaves = []
    for _ in range(FETCHES):
        got = fetch(gateway.proxy_port, "origin.test", counting_origin.port, ctx)
        assert got.status == 200 and "resumption origin" in got.body
        leaves.append(got.leaf)

    full, resumed = counting_origin.counts("origin.test")
    assert counting_origin.errors == []
    # The first connection makes the session; each one after offers the last one stored.
    assert (full, resumed) == (1, FETCHES - 1), counting_origin.handshakes
    # A resumed connection still knows the origin's certificate: its names reach every leaf.
    for leaf in leaves:
        assert _sans(leaf) == ["origin.test", "*.origin.test"], _sans(leaf)

    # Another SNI never gets origin.test's session: a full handshake first, then resumption.
    for _ in range(2):
        got = fetch(gateway.proxy_port, "www.origin.test", counting_origin.port, ctx)
        assert got.status == 200
    assert counting_origin.counts("www.origin.test") == (1, 1), counting_origin.handshakes
