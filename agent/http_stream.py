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


async def splice(a: HttpStream, b: HttpStream, *, idle_timeout: float) -> None:
    """Copy bytes both ways until both sides are done, either fails, or nothing moved either way
    for ``idle_timeout`` seconds (one direction may be quiet while the other streams). One
    watchdog keeps the time, so that a read costs no timer of its own."""
    last = [time.monotonic()]

    async def pipe(src: HttpStream, dst: HttpStream) -> None:
        while data := await src.reader.read(READ_SIZE):
            last[0] = time.monotonic()
            dst.writer.write(data)
            await dst.writer.drain()
        if dst.writer.can_write_eof() and not dst.writer.is_closing():
            dst.writer.write_eof()

    async def watchdog() -> None:
        while (quiet := time.monotonic() - last[0]) < idle_timeout:
            await asyncio.sleep(idle_timeout - quiet)
        raise StreamClosed(f"tunnel idle for {idle_timeout:g} s")

    pipes = {asyncio.create_task(pipe(a, b)), asyncio.create_task(pipe(b, a))}
    tasks = [*pipes, asyncio.create_task(watchdog())]
    try:
        pending = set(tasks)
        while pipes & pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done):
                break
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, StreamClosed):
                await task
