"""A worker's side of its control channel with the admin process (``gateway run --workers N``):
lines on its stdin and stdout.

    parent → worker   sync N        someone changed the store: follow it now
                      counters N    what have you counted? (the admin plane's /metrics)
    worker → parent   ready NODE    serving (once)
                      ack N         followed everything committed before "sync N" was sent
                      counters N JSON  its counters since it started (``proxy/metrics.py``)
                      health JSON   its store became unreachable, or reachable again

The parent waits for every worker's ``ack`` before an admin API call that changed something
answers (``proxy/workers.py``). When the parent goes away its end closes; the worker then
stops as if it got SIGTERM, so no worker outlives its gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)


class _Lines(asyncio.Protocol):
    def __init__(self, on_line: Callable[[str], None], on_closed: Callable[[], None]) -> None:
        self._buffer = b""
        self._on_line = on_line
        self._on_closed = on_closed

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._on_line(line.decode("ascii", "replace").strip())

    def eof_received(self) -> bool | None:
        self._on_closed()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_closed()


class ControlChannel:
    def __init__(
        self,
        follow: Callable[[], object],
        transport: asyncio.BaseTransport,
        counters: Callable[[], object] = list,
    ) -> None:
        self._follow = follow
        self._counters = counters
        self._transport = transport
        self._out = sys.stdout.buffer

    @classmethod
    async def open(
        cls,
        follow: Callable[[], object],
        *,
        on_closed: Callable[[], None],
        counters: Callable[[], object] = list,
    ) -> ControlChannel:
        """``counters``: this worker's counters as JSON-able data (``samples_to_json``)."""
        loop = asyncio.get_running_loop()
        channel: ControlChannel | None = None

        def on_line(line: str) -> None:
            if channel is not None:
                channel._handle(line)

        transport, _ = await loop.connect_read_pipe(lambda: _Lines(on_line, on_closed), sys.stdin)
        channel = cls(follow, transport, counters)
        return channel

    def _handle(self, line: str) -> None:
        command, _, argument = line.partition(" ")
        if command == "counters" and argument.isdigit():
            self.send(f"counters {argument} {json.dumps(self._counters(), separators=(',', ':'))}")
            return
        if command != "sync":
            logger.warning("control channel: unknown command %r ignored", line[:40])
            return
        try:
            self._follow()
        except Exception:  # the follower logs store trouble itself; never leave the parent waiting
            logger.exception("following the store on the parent's request failed")
        self.send(f"ack {argument}")

    def send(self, line: str) -> None:
        try:
            self._out.write(line.encode("ascii") + b"\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):
            logger.info("control channel closed (pid %d)", os.getpid())

    def close(self) -> None:
        self._transport.close()
