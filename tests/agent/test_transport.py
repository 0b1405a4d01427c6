"""Transport: plain HTTP only to loopback; HTTPS only to the pinned certificate, checked on a real
TLS server on loopback before anything is sent; Basic auth; one-line errors from envelopes."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.errors import AgentError
from agent.transport import Credentials, Transport, is_loopback_host
from tests.support.pki import fingerprint, self_signed_server


class Echo:
    """A tiny v4-envelope server that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/client/v4/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        tail = request.match_info["tail"]
        if tail == "refuse":
            return web.json_response(
                {
                    "success": False,
                    "errors": [{"code": 1000, "message": "no such rule"}],
                    "messages": [],
                    "result": None,
                },
                status=400,
            )
        if tail == "auth":
            return web.json_response(
                {
                    "success": False,
                    "errors": [{"code": 10000, "message": "unknown device"}],
                    "messages": [],
                    "result": None,
                },
                status=401,
            )
        if tail == "html":
            return web.Response(text="<html>proxy error</html>", content_type="text/html", status=502)
        body = await request.json() if request.can_read_body else None
        return web.json_response({"success": True, "errors": [], "messages": [], "result": {"echo": body}})


async def _serve(app: web.Application, context: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, port


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[Echo, int, str]]:
    issued = self_signed_server("127.0.0.1")
    (tmp_path / "server.pem").write_text(issued.cert_pem())
    (tmp_path / "server.key").write_text(issued.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    echo = Echo()
    runner, port = await _serve(echo.app(), context)
    yield echo, port, fingerprint(issued.certificate)
    await runner.cleanup()


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[Echo, int]]:
    echo = Echo()
    runner, port = await _serve(echo.app(), None)
    yield echo, port
    await runner.cleanup()


async def test_https_with_the_right_pin_talks_and_sends_basic_auth(tls_server: tuple[Echo, int, str]) -> None:
    echo, port, pin = tls_server
    transport = Transport(
        f"https://127.0.0.1:{port}", fingerprint=pin.lower(), credentials=Credentials("dev-1", "s3")
    )
    result = await asyncio.to_thread(transport.post, "/agent/nonce", {"x": 1})
    assert result == {"echo": {"x": 1}}
    expected = "Basic " + base64.b64encode(b"dev-1:s3").decode()
    assert echo.seen == [("POST", "/client/v4/agent/nonce", expected)]


async def test_https_with_a_wrong_pin_is_refused_before_anything_is_sent(
    tls_server: tuple[Echo, int, str],
) -> None:
    echo, port, pin = tls_server
    wrong = ":".join(["00"] * 32)
    transport = Transport(
        f"https://127.0.0.1:{port}", fingerprint=wrong, credentials=Credentials("dev-1", "s3")
    )
    with pytest.raises(AgentError, match=rf"fingerprint {pin}, not the pinned {wrong}: refusing"):
        await asyncio.to_thread(transport.get, "/agent/posture_rules")
    assert echo.seen == []


async def test_https_to_a_plain_http_server_fails_with_one_line(http_server: tuple[Echo, int]) -> None:
    _, port = http_server
    transport = Transport(f"https://127.0.0.1:{port}", fingerprint=":".join(["00"] * 32))
    with pytest.raises(AgentError, match="TLS with https://127.0.0.1:.* failed|broke off"):
        await asyncio.to_thread(transport.get, "/x")


async def test_plain_http_on_loopback_works(http_server: tuple[Echo, int]) -> None:
    echo, port = http_server
    assert await asyncio.to_thread(Transport(f"http://127.0.0.1:{port}").get, "/ping") == {"echo": None}
    assert await asyncio.to_thread(Transport(f"http://localhost:{port}").get, "/ping") == {"echo": None}
    assert [s[2] for s in echo.seen] == [None, None]


@pytest.mark.parametrize(
    "url",
    ["http://example.com", "http://10.0.0.1:8081", "http://192.168.1.2", "http://localhost.example.com"],
)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    with pytest.raises(AgentError, match="refusing plain HTTP .* HTTPS only"):
        Transport(url)


def test_https_without_a_pin_is_refused() -> None:
    with pytest.raises(AgentError, match="no certificate fingerprint to pin"):
        Transport("https://gw.example")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.1.1.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


async def test_envelope_errors_become_one_line_with_the_status(http_server: tuple[Echo, int]) -> None:
    _, port = http_server
    transport = Transport(f"http://127.0.0.1:{port}", credentials=Credentials("dev-1", "s3"))
    with pytest.raises(AgentError, match=r"^no such rule \(HTTP 400\)$") as refused:
        await asyncio.to_thread(transport.get, "/refuse")
    assert refused.value.status == 400
    with pytest.raises(
        AgentError, match=r"unknown device \(HTTP 401\): was this device removed\? enroll again"
    ):
        await asyncio.to_thread(transport.get, "/auth")
    with pytest.raises(
        AgentError, match=r"did not answer GET /client/v4/html with JSON \(HTTP 502, text/html"
    ):
        await asyncio.to_thread(transport.get, "/html")


def test_a_closed_port_says_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AgentError, match="connection refused"):
        Transport(f"http://127.0.0.1:{port}").get("/x")


def test_credentials_never_show_the_secret() -> None:
    assert "s3cr3t" not in repr(Credentials("dev", "s3cr3t"))
