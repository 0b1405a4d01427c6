"""One HTTP/1.1 connection on asyncio streams, framed by h11 (sans-I/O), and the byte splice of
a tunnel. The local proxy (``agent/local_proxy.py``) holds one for the client and one for the
gateway; nothing here parses HTTP itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

import h11

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class StreamClosed(Exception):
    """The peer closed the connection, reset it, or sent nothing for too long."""


class HttpStream:
    """``role`` is ours: ``h11.SERVER`` towards a client, ``h11.CLIENT`` towards the gateway."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        role: type[h11.CLIENT] | type[h11.SERVER],
        *,
        max_head_bytes: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(role, max_incomplete_event_size=max_head_bytes)
        self.used = False  # a request or response has gone through it (reuse after a restart may fail)

    async def next_event(self, timeout: float) -> h11.Event | type[h11.PAUSED]:
        """The next event; h11.RemoteProtocolError on bad HTTP, StreamClosed on a closed, reset or
        silent peer (nothing for ``timeout`` seconds)."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return cast("h11.Event | type[h11.PAUSED]", event)
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except TimeoutError:
                raise StreamClosed(f"nothing received for {timeout:g} s") from None
            except OSError as e:
                raise StreamClosed(e.strerror or str(e)) from None
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except OSError as e:
                raise StreamClosed(e.strerror or str(e)) from None
        self.used = True

    def reusable(self) -> bool:
        """Ready for the next request/response cycle (keep-alive), and not closed by the peer."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return (
            self.conn.our_state is h11.IDLE
            and self.conn.their_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def trailing_data(self) -> bytes:
        """Bytes received after the head that switched protocols (CONNECT 2xx, 101)."""
        data, _closed = self.conn.trailing_data
        return bytes(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _Relay(asyncio.Protocol):
    """Takes over one side's transport for a tunnel: what arrives is written to the other side
    at once, from the event loop's read callback (no task wakes per chunk: a keep-alive request
    through the tunnel crosses this process twice). Flow control: when this side's send buffer is
    full, reading the other side pauses until it drains."""

    def __init__(self, own: asyncio.Transport, peer: asyncio.Transport, tunnel: _Tunnel) -> None:
        self.own, self.peer, self.tunnel = own, peer, tunnel
        self.stream_protocol = own.get_protocol()  # told of the connection's end, for wait_closed()

    def data_received(self, data: bytes) -> None:
        self.tunnel.last = time.monotonic()
        self.peer.write(data)

    def eof_received(self) -> bool:
        if not self.peer.is_closing() and self.peer.can_write_eof():
            self.peer.write_eof()
        self.tunnel.side_done()
        return True  # half-closed: the other direction may still carry data

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream_protocol.connection_lost(exc)
        self.tunnel.lost(exc)


class _Tunnel:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last = time.monotonic()
        self.done: asyncio.Future[None] = loop.create_future()
        self.open_sides = 2

    def side_done(self) -> None:
        self.open_sides -= 1
        if self.open_sides <= 0 and not self.done.done():
            self.done.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.debug("tunnel connection lost: %s", exc)
        if not self.done.done():
            self.done.set_result(None)


def _buffered(stream: HttpStream) -> bytes:
    """What the stream's reader holds and nobody has read yet (asyncio keeps it in ``_buffer``)."""
    buffer = getattr(stream.reader, "_buffer", None)
    if not buffer:
        return b""
    data = bytes(buffer)
    buffer.clear()
    return data


async def splice(a: HttpStream, b: HttpStream, *, idle_timeout: float) -> None:
    """Copy bytes both ways until both sides are done, either fails, or nothing moved either way
    for ``idle_timeout`` seconds (one direction may be quiet while the other streams); then the
    caller closes both. The two transports are handed to :class:`_Relay` protocols for the
    tunnel's life."""
    ta, tb = a.writer.transport, b.writer.transport
    if ta.is_closing() or tb.is_closing():
        return
    assert isinstance(ta, asyncio.Transport) and isinstance(tb, asyncio.Transport)
    tunnel = _Tunnel(asyncio.get_running_loop())
    for stream, peer in ((a, tb), (b, ta)):
        pending = _buffered(stream)
        if pending:
            peer.write(pending)
        if stream.reader.at_eof():
            if peer.can_write_eof():
                peer.write_eof()
            tunnel.side_done()
    ta.set_protocol(_Relay(ta, tb, tunnel))
    tb.set_protocol(_Relay(tb, ta, tunnel))
    ta.resume_reading()
    tb.resume_reading()
    try:
        while (quiet := time.monotonic() - tunnel.last) < idle_timeout:
            try:
                await asyncio.wait_for(asyncio.shield(tunnel.done), idle_timeout - quiet)
                return
            except TimeoutError:
                continue
        logger.info("tunnel idle for %g s: closing it", idle_timeout)
    finally:
        if not tunnel.done.done():
            tunnel.done.cancel()
