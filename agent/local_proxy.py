"""``gateway agent proxy``: the agent's local proxy, as WARP's local proxy mode.

It listens on the device (``127.0.0.1:3128`` by default) and forwards every request it is given
(absolute-form HTTP, and CONNECT tunnels) to the gateway's explicit proxy, adding the device's
credentials (``Proxy-Authorization: Basic`` of device id and secret, from the 0600 state file).
A browser or tool pointed at it is the device, with no secret in its own settings (Chromium
refuses credentials in ``--proxy-server`` anyway). ``GET /proxy.pac`` on it is a PAC file naming
it. A client's own ``Proxy-Authorization`` is dropped, never passed on.

Every client connection gets its own connection to the gateway, opened when needed: after the
gateway restarts, the next request connects afresh (one retry for a request without a body whose
kept-alive connection turned out closed), and a gateway that cannot be reached gets a 502 page
naming it, at once. Bounded: at most ``Limits.max_connections`` clients at a time (more get 503),
and a timeout on every wait. Each request is logged as method, host and status; never a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h11

from agent.errors import AgentError
from agent.http_stream import HttpStream, StreamClosed, splice
from policies.pac import CONTENT_TYPE, PacFile

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:3128"
PAC_PATH = "/proxy.pac"
_DROPPED = frozenset({b"proxy-authorization", b"expect"})
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256  # clients at a time; more get 503
    connect_timeout: float = 10.0  # to the gateway
    head_timeout: float = 30.0  # a client's request head, once it started one
    idle_timeout: float = 120.0  # a kept-alive client connection between requests
    read_timeout: float = 300.0  # nothing from either side mid-message, or in a tunnel
    max_head_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class GatewayUnreachable(Exception):
    """The gateway's proxy could not be reached or did not answer; the message says why."""


class LocalProxy:
    """The listener; ``credentials()`` gives the Proxy-Authorization value (re-read as it changes)."""

    def __init__(
        self, listen: Address, upstream: Address, credentials: Callable[[], str], *, limits: Limits = Limits()
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.credentials = credentials
        self.limits = limits
        self.active = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[object]] = set()

    async def start(self) -> Address:
        """Listen; the address actually bound (port 0 picks one)."""
        self._server = await asyncio.start_server(
            self._accept, self.listen.host, self.listen.port, limit=self.limits.max_head_bytes
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return Address(host, port)

    async def close(self) -> None:
        """Stop listening and end every client connection."""
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions)
        for task in sessions:
            task.cancel()
        if sessions:
            await asyncio.wait(sessions, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def pac(self, bound: Address) -> str:
        """A PAC file naming this proxy; the gateway's own host goes direct."""
        return PacFile(str(bound), direct_hosts=(self.upstream.host,)).render()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = HttpStream(reader, writer, h11.SERVER, max_head_bytes=self.limits.max_head_bytes)
        if self.active >= self.limits.max_connections:
            logger.warning("refused a client: %d connections already (the limit)", self.active)
            with contextlib.suppress(StreamClosed, h11.LocalProtocolError, h11.RemoteProtocolError):
                await asyncio.wait_for(client.next_event(self.limits.head_timeout), self.limits.head_timeout)
                await _page(client, 503, "Too many connections", "the local proxy is at its connection limit")
            await client.close()
            return
        self.active += 1
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            await _Session(self, client).run()
        except asyncio.CancelledError:  # close(): the connection ends here, quietly
            logger.debug("client connection closed: the local proxy stops")
        except Exception:  # a bug must not end the listener: log it with its traceback, close
            logger.exception("local proxy: internal error on a client connection")
        finally:
            self.active -= 1
            if task is not None:
                self._sessions.discard(task)
            await client.close()


class _Session:
    """One client connection: its requests in turn, and the gateway connection they share."""

    def __init__(self, proxy: LocalProxy, client: HttpStream) -> None:
        self.proxy = proxy
        self.limits = proxy.limits
        self.client = client
        self.upstream: HttpStream | None = None

    async def run(self) -> None:
        try:
            while True:
                event = await self.client.next_event(self.limits.idle_timeout)
                if not isinstance(event, h11.Request):
                    return  # closed between requests
                keep = await self._request(event)
                if not keep or not self.client.reusable():
                    return
        except h11.RemoteProtocolError as e:  # not HTTP: 400, when the client can still be told
            logger.info("bad request from a client: %s", e)
            if self.client.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(StreamClosed, h11.LocalProtocolError):
                    await _page(self.client, e.error_status_hint, "Bad request", str(e))
        except (StreamClosed, h11.LocalProtocolError) as e:
            logger.debug("client connection ended: %s", e)
        finally:
            if self.upstream is not None:
                await self.upstream.close()

    async def _request(self, request: h11.Request) -> bool:
        """Answer one request; False when the connection cannot go on."""
        target = request.target.decode("ascii", "replace")
        if request.method == b"CONNECT":
            return await self._tunnel(request, target)
        if target.startswith("/"):
            return await self._local(request, target)
        host = urlsplit(target).hostname or "?"
        try:
            status = await self._forward(request)
        except GatewayUnreachable as e:
            status = await self._unreachable(request, e)
        _log(request.method, host, status)
        return True

    # -- requests for the local proxy itself ---------------------------------------------------

    async def _local(self, request: h11.Request, target: str) -> bool:
        await self._drain_body()
        bound = Address(*self.client.writer.get_extra_info("sockname")[:2])
        if request.method in (b"GET", b"HEAD") and target.split("?")[0] == PAC_PATH:
            body = self.proxy.pac(bound).encode()
            await _respond(self.client, 200, body, CONTENT_TYPE, head=request.method == b"HEAD")
            status = 200
        else:
            status = 400 if target != "/" else 200
            await _page(self.client, status, "Gateway local proxy", (
                f"This is the device's local proxy to the gateway at {self.proxy.upstream}. Set it as "
                f"your HTTP and HTTPS proxy (http://{bound}), or use the PAC file http://{bound}{PAC_PATH}."
            ))  # fmt: skip
        _log(request.method, "local", status)
        return True

    async def _drain_body(self) -> None:
        while not isinstance(await self.client.next_event(self.limits.read_timeout), h11.EndOfMessage):
            pass

    # -- forwarding ------------------------------------------------------------------------

    def _headers(self, request: h11.Request) -> list[tuple[bytes, bytes]]:
        headers = [(n, v) for n, v in request.headers.raw_items() if n.lower() not in _DROPPED]
        headers.append((b"Proxy-Authorization", self.proxy.credentials().encode("latin-1")))
        return headers

    async def _gateway(self, *, fresh: bool = False) -> tuple[HttpStream, bool]:
        """A connection to the gateway: the kept-alive one, else a new one; True when reused."""
        if not fresh and self.upstream is not None and self.upstream.reusable():
            return self.upstream, True
        if self.upstream is not None and not fresh:
            await self.upstream.close()
            self.upstream = None
        up = self.proxy.upstream
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(up.host, up.port, limit=self.limits.max_head_bytes),
                self.limits.connect_timeout,
            )
        except TimeoutError:
            raise GatewayUnreachable(f"no connection within {self.limits.connect_timeout:g} s") from None
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise GatewayUnreachable(reason.lower()) from None
        stream = HttpStream(reader, writer, h11.CLIENT, max_head_bytes=self.limits.max_head_bytes)
        if not fresh:
            self.upstream = stream
        return stream, False

    async def _forward(self, request: h11.Request) -> int:
        """Send the request to the gateway and its answer back; the status sent."""
        bodiless = not any(n in _BODY_HEADERS for n, _ in request.headers)
        if bodiless:
            await self._drain_body()  # only the EndOfMessage h11 already holds: replayable
        elif self.client.conn.client_is_waiting_for_100_continue:
            await self.client.send(h11.InformationalResponse(status_code=100, headers=[]))
        outgoing = h11.Request(method=request.method, target=request.target, headers=self._headers(request))
        for attempt in (1, 2):
            gateway, reused = await self._gateway()
            try:
                await gateway.send(outgoing)
                if bodiless:
                    await gateway.send(h11.EndOfMessage())
                else:
                    await self._copy_body(self.client, gateway)
                response = await self._response_head(gateway)
                break
            except (StreamClosed, h11.RemoteProtocolError) as e:
                await gateway.close()
                self.upstream = None
                if attempt == 1 and reused and bodiless:  # the gateway closed it meanwhile (a restart)
                    logger.info("gateway connection closed (%s): trying a new one", e)
                    continue
                raise GatewayUnreachable(f"the connection failed: {e}") from None
        await self.client.send(_response(response))
        if response.status_code == 101:
            await splice(self.client, gateway, idle_timeout=self.limits.read_timeout)
            return 101
        await self._copy_body(gateway, self.client)
        return response.status_code

    async def _response_head(self, gateway: HttpStream) -> h11.Response | h11.InformationalResponse:
        while True:
            event = await gateway.next_event(self.limits.read_timeout)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return event
                continue  # 100 Continue was answered already; other 1xx are not passed on
            raise StreamClosed("the gateway closed the connection before it answered")

    async def _copy_body(self, src: HttpStream, dst: HttpStream) -> None:
        while True:
            event = await src.next_event(self.limits.read_timeout)
            if isinstance(event, h11.Data):
                await dst.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await dst.send(h11.EndOfMessage(headers=event.headers))
                return
            else:
                raise StreamClosed("the connection closed in the middle of a message")

    async def _tunnel(self, request: h11.Request, target: str) -> bool:
        host = target.rsplit(":", 1)[0].strip("[]") or "?"
        try:
            gateway, _ = await self._gateway(fresh=True)
        except GatewayUnreachable as e:
            _log(request.method, host, await self._unreachable(request, e))
            return False
        try:
            await gateway.send(
                h11.Request(method=b"CONNECT", target=request.target, headers=self._headers(request))
            )
            await gateway.send(h11.EndOfMessage())
            try:
                response = await self._response_head(gateway)
            except (StreamClosed, h11.RemoteProtocolError) as e:
                _log(request.method, host, await self._unreachable(request, GatewayUnreachable(str(e))))
                return False
            await self.client.send(_response(response))
            _log(request.method, host, response.status_code)
            if 200 <= response.status_code < 300:
                for stream, data in (
                    (gateway, self.client.trailing_data()),
                    (self.client, gateway.trailing_data()),
                ):
                    if data:
                        stream.writer.write(data)
                await splice(self.client, gateway, idle_timeout=self.limits.read_timeout)
            else:
                await self._copy_body(gateway, self.client)
            return False
        finally:
            await gateway.close()

    async def _unreachable(self, request: h11.Request, error: GatewayUnreachable) -> int:
        """The 502 page naming the gateway, when the client can still be answered."""
        logger.warning("the gateway at %s cannot be reached: %s", self.proxy.upstream, error)
        if self.client.conn.our_state is not h11.SEND_RESPONSE:
            raise StreamClosed(f"the gateway failed mid-answer: {error}")
        if self.client.conn.their_state is h11.SEND_BODY:
            with contextlib.suppress(StreamClosed, h11.RemoteProtocolError):
                await self._drain_body()
        message = (
            f"The local proxy could not reach the gateway at {self.proxy.upstream}: {error}. "
            "Is the gateway running, and is this the right address (gateway agent proxy --upstream)?"
        )
        await _page(self.client, 502, "Gateway unreachable", message, html_page=_wants_html(request))
        return 502


def _response(event: h11.Response | h11.InformationalResponse) -> h11.Response | h11.InformationalResponse:
    if isinstance(event, h11.InformationalResponse):
        return h11.InformationalResponse(status_code=event.status_code, headers=event.headers.raw_items(),
                                         reason=event.reason)  # fmt: skip
    return h11.Response(status_code=event.status_code, headers=event.headers.raw_items(), reason=event.reason)


def _wants_html(request: h11.Request) -> bool:
    return any(n == b"accept" and b"text/html" in v for n, v in request.headers)


async def _page(
    client: HttpStream, status: int, title: str, message: str, *, html_page: bool = False
) -> None:
    if html_page:
        body = (
            f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>\n"
        ).encode()
        await _respond(client, status, body, "text/html; charset=utf-8")
    else:
        await _respond(client, status, f"{title}\n{message}\n".encode(), "text/plain; charset=utf-8")


async def _respond(
    client: HttpStream, status: int, body: bytes, content_type: str, *, head: bool = False
) -> None:
    headers = [
        (b"Content-Type", content_type.encode()),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-cache"),
    ]
    await client.send(h11.Response(status_code=status, headers=headers))
    if not head:
        await client.send(h11.Data(data=body))
    await client.send(h11.EndOfMessage())


def _log(method: bytes, host: str, status: int) -> None:
    logger.info("%s %s %d", method.decode("ascii", "replace"), host, status)


class StateCredentials:
    """The Proxy-Authorization value from the agent's state file, read again when the file
    changes (``enroll --force`` makes new credentials); a file that became unreadable keeps the
    last good value, with a warning."""

    def __init__(self, path: Path, load: Callable[[Path], tuple[str, str]]) -> None:
        self._path = path
        self._load = load
        self._stamp: tuple[int, int] | None = None
        self._value = ""
        self.device_id = ""
        self()

    def __call__(self) -> str:
        try:
            info = os.stat(self._path)
            stamp = (info.st_mtime_ns, info.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp or not self._value:
            from base64 import b64encode

            try:
                self.device_id, secret = self._load(self._path)
            except AgentError as e:  # the first read's error reaches the caller
                if not self._value:
                    raise
                logger.warning("state file %s: %s; keeping the device credentials read before", self._path, e)
            else:
                raw = f"{self.device_id}:{secret}".encode()
                self._value = "Basic " + b64encode(raw).decode("ascii")
            self._stamp = stamp
        return self._value


def parse_address(value: str, *, option: str) -> Address:
    """``HOST:PORT`` (``[v6]:PORT``) of an option; AgentError saying what would do."""
    from urllib.parse import urlsplit as split

    wrong = AgentError(f"{option} {value}: give HOST:PORT (for example 127.0.0.1:3128)")
    try:
        parts = split("//" + value.strip().removeprefix("http://"))
        port = parts.port
    except ValueError:
        raise wrong from None
    if not parts.hostname or port is None or parts.path or parts.query or parts.username is not None:
        raise wrong
    return Address(parts.hostname, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(proxy: LocalProxy, ready: Callable[[Address], None]) -> None:
    """Listen until SIGINT or SIGTERM, then close (in the main thread's own event loop)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # Windows: Ctrl-C ends asyncio.run with KeyboardInterrupt
                pass
        try:
            bound = await proxy.start()
        except OSError as e:
            raise AgentError(f"--listen {proxy.listen}: cannot listen: {e.strerror or e}") from None
        ready(bound)
        await stop.wait()
        logger.info("signal: stopping the local proxy")
        await proxy.close()

    asyncio.run(main())
