"""addons/sessions.py: upstream TLS sessions stored on close and offered per upstream, against a
real stdlib `ssl` server on loopback that reports whether each handshake was resumed."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mitmproxy import connection
from OpenSSL import SSL

from addons.sessions import UpstreamSessions
from tests.support.pki import issue_server, make_ca


@dataclass
class Origin:
    sock: socket.socket
    context: ssl.SSLContext
    resumed: list[bool] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    self.resumed.append(tls.session_reused)
                    tls.recv(100)
                    tls.sendall(b"pong")
            except (OSError, ssl.SSLError):
                continue


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    ca = make_ca("Sessions test CA")
    cert, key = issue_server(ca, ["origin.test", "other.test"]).write(tmp_path, "origin")
    (tmp_path / "ca.pem").write_text(ca.cert_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Origin(socket.create_server(("127.0.0.1", 0)), context)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not, on Linux)
    server.sock.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the origin's accept loop did not end"


@pytest.fixture
def client_context(tmp_path: Path, origin: Origin) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(str(tmp_path / "ca.pem"))
    ctx.set_verify(SSL.VERIFY_PEER, None)
    return ctx


def _exchange(sessions: UpstreamSessions, ctx: SSL.Context, port: int, sni: str) -> connection.Server:
    """One upstream connection as the proxy makes it: start (offer), handshake, a request and
    its answer (a TLS 1.3 ticket arrives with it), established, closed."""
    server = connection.Server(address=("127.0.0.1", port))
    server.sni = sni
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setblocking(True)  # pyOpenSSL on a socket with a timeout raises WantRead instead of waiting
    ssl_conn = SSL.Connection(ctx, raw)
    ssl_conn.set_tlsext_host_name(sni.encode())
    ssl_conn.set_connect_state()
    sessions.start(server, ssl_conn)
    ssl_conn.do_handshake()
    server.timestamp_tls_setup = time.time()
    sessions.established(server)
    ssl_conn.sendall(b"ping")
    assert ssl_conn.recv(100) == b"pong"
    raw.close()
    sessions.closed(server)
    return server


def test_sessions_are_offered_per_upstream_and_resumed(origin: Origin, client_context: SSL.Context) -> None:
    sessions = UpstreamSessions()
    for _ in range(3):
        _exchange(sessions, client_context, origin.port, "origin.test")
    assert origin.resumed == [False, True, True]
    _exchange(sessions, client_context, origin.port, "other.test")  # another SNI: its own session
    assert origin.resumed[-1] is False
    stats = sessions.stats()
    assert (stats.offered, stats.resumed, stats.stored) == (2, 2, 2)


def test_a_connection_that_never_completed_its_handshake_stores_nothing(
    origin: Origin, client_context: SSL.Context
) -> None:
    sessions = UpstreamSessions()
    server = connection.Server(address=("127.0.0.1", origin.port))
    server.sni = "origin.test"
    sessions.start(server, SSL.Connection(client_context))
    sessions.closed(server)  # no timestamp_tls_setup: the handshake did not complete
    assert sessions.stats().stored == 0


def test_a_session_openssl_refuses_is_dropped_not_raised(
    origin: Origin, client_context: SSL.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = UpstreamSessions()
    _exchange(sessions, client_context, origin.port, "origin.test")

    def refuse(self: SSL.Connection, session: SSL.Session) -> None:
        raise SSL.Error([("SSL routines", "", "refused for the test")])

    monkeypatch.setattr(SSL.Connection, "set_session", refuse)
    _exchange(sessions, client_context, origin.port, "origin.test")  # a full handshake, no error
    assert origin.resumed == [False, False]
    assert sessions.stats().offered == 0


def test_size_zero_turns_resumption_off(origin: Origin, client_context: SSL.Context) -> None:
    sessions = UpstreamSessions(maxsize=0)
    for _ in range(2):
        _exchange(sessions, client_context, origin.port, "origin.test")
    assert origin.resumed == [False, False]
