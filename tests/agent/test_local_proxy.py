"""agent/local_proxy.py: the local proxy against a stand-in gateway proxy on loopback (asyncio +
h11), with real sockets: credentials added (the client's dropped), keep-alive, bodies, CONNECT
tunnels, the PAC file, a gateway that is down (502 naming it) or restarted (a new connection),
the connection limit, bad requests, and the command line's refusals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest

from agent import cli
from agent.local_proxy import Address, Limits, LocalProxy, StateCredentials
from agent.state import AgentState, load_state, save_state
from tests.policies.pac_eval import find_proxy

DEVICE = "0f6c7a2e9d3b4c18a5e1f2d3c4b5a697"
SECRET = "s3cr3t-device-secret"
AUTH = "Basic " + base64.b64encode(f"{DEVICE}:{SECRET}".encode()).decode()


@dataclass
class StandIn:
    """The gateway's explicit proxy, as far as the local proxy can tell: answers absolute-form
    requests with what it saw, and CONNECT with 200 and then an echo of the tunnel's bytes."""

    seen: list[dict[bytes, bytes]] = field(default_factory=list)
    targets: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    self.seen.append(dict(event.headers))
                    self.targets.append(event.target)
                    body = b""
                    while not isinstance(ev := await _next(conn, reader), h11.EndOfMessage):
                        assert isinstance(ev, h11.Data)
                        body += ev.data
                    if event.method == b"CONNECT":
                        writer.write(conn.send(h11.Response(status_code=200, headers=[])))
                        await writer.drain()
                        while data := await reader.read(65536):
                            writer.write(b"echo:" + data)
                            await writer.drain()
                        return
                    answer = b"%s %s auth=%s body=%s" % (
                        event.method, event.target, dict(event.headers).get(b"proxy-authorization", b"-"), body,
                    )  # fmt: skip
                    writer.write(
                        conn.send(
                            h11.Response(status_code=200, headers=[("Content-Length", str(len(answer)))])
                        )
                    )
                    writer.write(conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (OSError, h11.ProtocolError):
            return
        finally:
            writer.close()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(65536))
    return event


class Client:
    """A raw HTTP/1.1 client connection to the local proxy (h11 frames it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, target: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> tuple[h11.Response, bytes]:
        host = target.split("/")[2] if "://" in target else "127.0.0.1"
        all_headers = [("Host", host), *(headers or [])]
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=all_headers)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        response = await asyncio.wait_for(_next(self.conn, self.reader), 10)
        assert isinstance(response, h11.Response), response
        data = b""
        if method != "CONNECT" or response.status_code >= 300:
            while not isinstance(
                ev := await asyncio.wait_for(_next(self.conn, self.reader), 10), h11.EndOfMessage
            ):
                assert isinstance(ev, h11.Data), ev
                data += ev.data
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
        return response, data

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def gateway() -> AsyncIterator[StandIn]:
    stand_in = StandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


async def _local_proxy(upstream_port: int, **limits: float) -> tuple[LocalProxy, int]:
    proxy = LocalProxy(
        Address("127.0.0.1", 0), Address("127.0.0.1", upstream_port), lambda: AUTH, limits=Limits(**limits)
    )
    bound = await proxy.start()
    return proxy, bound.port


@pytest.fixture
async def local(gateway: StandIn) -> AsyncIterator[int]:
    assert gateway.server is not None
    proxy, port = await _local_proxy(gateway.server.sockets[0].getsockname()[1])
    yield port
    await proxy.close()


async def test_requests_carry_the_device_credentials_and_keep_alive(gateway: StandIn, local: int) -> None:
    client = await Client.open(local)
    try:
        for n in range(3):
            response, body = await client.request(
                "GET", f"http://example.com/{n}", headers=[("Proxy-Authorization", "Basic Zm9yZ2VkOnh4")]
            )
            assert response.status_code == 200
            assert body == f"GET http://example.com/{n} auth={AUTH} body=".encode()
    finally:
        await client.close()
    assert gateway.connections == 1, "one gateway connection for the client's kept-alive one"
    assert all(h[b"proxy-authorization"] == AUTH.encode() for h in gateway.seen)


async def test_request_bodies_go_through(local: int) -> None:
    client = await Client.open(local)
    try:
        response, body = await client.request("POST", "http://example.com/up", body=b"x" * 100_000)
        assert response.status_code == 200 and body.endswith(b"body=" + b"x" * 100_000)
        response, body = await client.request("PUT", "http://example.com/again", body=b"second")
        assert body.endswith(b"body=second")
    finally:
        await client.close()


async def test_connect_tunnels_bytes_both_ways(gateway: StandIn, local: int) -> None:
    client = await Client.open(local)
    try:
        response, _ = await client.request(
            "CONNECT", "example.com:443", headers=[("Proxy-Authorization", "x")]
        )
        assert response.status_code == 200
        client.writer.write(b"hello")
        await client.writer.drain()
        assert await asyncio.wait_for(client.reader.readexactly(10), 5) == b"echo:hello"
    finally:
        await client.close()
    assert gateway.targets[-1] == b"example.com:443"
    assert gateway.seen[-1][b"proxy-authorization"] == AUTH.encode()


@pytest.mark.serial  # a tight time bound: runs alone (tests/support/parallel.py)
@pytest.mark.parametrize(("accept", "kind"), [("text/html", "text/html"), ("*/*", "text/plain")])
async def test_gateway_down_is_502_naming_it_at_once(accept: str, kind: str) -> None:
    down = StandIn()
    port = await down.start()
    await down.stop()  # nobody listens there now
    proxy, local = await _local_proxy(port)
    try:
        client = await Client.open(local)
        started = asyncio.get_running_loop().time()
        response, body = await client.request("GET", "http://example.com/", headers=[("Accept", accept)])
        assert asyncio.get_running_loop().time() - started < 2
        assert response.status_code == 502
        assert dict(response.headers)[b"content-type"].decode().startswith(kind)
        assert f"gateway at 127.0.0.1:{port}".encode() in body and b"connection refused" in body, body
        response, body = await client.request("GET", "http://example.com/again")
        assert response.status_code == 502, "the client connection stays usable"
        await client.close()
        client = await Client.open(local)
        response, body = await client.request("CONNECT", "example.com:443")
        assert response.status_code == 502 and f"127.0.0.1:{port}".encode() in body
        await client.close()
    finally:
        await proxy.close()


async def test_gateway_restart_means_a_new_connection(gateway: StandIn, local: int) -> None:
    assert gateway.server is not None
    port = gateway.server.sockets[0].getsockname()[1]
    client = await Client.open(local)
    try:
        assert (await client.request("GET", "http://example.com/1"))[0].status_code == 200
        await gateway.stop()  # the kept-alive gateway connection is closed
        again = StandIn()
        await again.start(port)
        try:
            response, body = await client.request("GET", "http://example.com/2")
            assert response.status_code == 200 and body.startswith(b"GET http://example.com/2"), body
            assert again.connections == 1
        finally:
            await again.stop()
            gateway.server = None
    finally:
        await client.close()
    gateway.server = again.server


async def test_pac_file_names_the_local_proxy(local: int, gateway: StandIn) -> None:
    client = await Client.open(local)
    try:
        response, body = await client.request("GET", "/proxy.pac?odd=%zz")
    finally:
        await client.close()
    assert response.status_code == 200
    assert dict(response.headers)[b"content-type"] == b"application/x-ns-proxy-autoconfig"
    got = find_proxy(body.decode(), ["example.com", "127.0.0.1", "10.1.1.1"])
    assert got == {"example.com": f"PROXY 127.0.0.1:{local}", "127.0.0.1": "DIRECT", "10.1.1.1": "DIRECT"}
    assert gateway.connections == 0, "served locally"


async def test_other_local_paths_and_bad_requests_get_400(local: int) -> None:
    client = await Client.open(local)
    try:
        response, body = await client.request("GET", "/elsewhere")
        assert response.status_code == 400 and b"local proxy" in body
    finally:
        await client.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_connections_beyond_the_limit_get_503(gateway: StandIn) -> None:
    assert gateway.server is not None
    proxy, local = await _local_proxy(gateway.server.sockets[0].getsockname()[1], max_connections=1)
    first = await Client.open(local)
    second = await Client.open(local)
    try:
        assert (await first.request("GET", "http://example.com/a"))[0].status_code == 200
        response, body = await second.request("GET", "http://example.com/b")
        assert response.status_code == 503 and b"connection limit" in body
    finally:
        await first.close()
        await second.close()
        await proxy.close()


async def test_a_silent_client_is_let_go(gateway: StandIn) -> None:
    assert gateway.server is not None
    proxy, local = await _local_proxy(gateway.server.sockets[0].getsockname()[1], idle_timeout=0.2)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
        writer.close()
    finally:
        await proxy.close()


async def test_each_request_is_logged_without_credentials(
    local: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.local_proxy")
    client = await Client.open(local)
    try:
        await client.request("GET", "http://example.com/secret-path?q=1")
    finally:
        await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.local_proxy"]
    assert "GET example.com 200" in lines, lines
    assert not any(SECRET in line or AUTH in line or "secret-path" in line for line in lines)


def _state(path: Path, device: str, secret: str) -> None:
    save_state(path, AgentState(server="http://127.0.0.1:8081", fingerprint="", account_id="a",
                                device_id=device, device_secret=secret, name="laptop"))  # fmt: skip


def test_credentials_follow_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _state(path, DEVICE, SECRET)

    def read(file: Path) -> tuple[str, str]:
        state = load_state(file)
        return state.device_id, state.device_secret

    credentials = StateCredentials(path, read)
    assert credentials() == AUTH
    _state(path, "dev-2", "new-secret")
    assert credentials() == "Basic " + base64.b64encode(b"dev-2:new-secret").decode()
    path.write_text("not json")
    path.chmod(0o600)
    assert credentials() == "Basic " + base64.b64encode(b"dev-2:new-secret").decode(), "keeps the last good"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "0.0.0.0:3128"], "not a loopback address"),
        (["--listen", "192.0.2.1:3128"], "not a loopback address"),
        (["--listen", "nonsense"], "give HOST:PORT"),
        (["--max-connections", "0"], "at least 1"),
        (["--upstream", "gw:notaport"], "give HOST:PORT"),
    ],
)
def test_command_refuses_what_it_cannot_serve_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    state = tmp_path / "state.json"
    _state(state, DEVICE, SECRET)
    assert cli.main(["proxy", "--state", str(state), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway-agent: error: ") and message in err, err
