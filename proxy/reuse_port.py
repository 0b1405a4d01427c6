"""Listening sockets several processes share (``SO_REUSEPORT``): the workers of
``gateway run --workers N`` each listen on the same ports, and Linux spreads new connections
over them.

mitmproxy 12 binds its TCP listeners with a plain ``asyncio.start_server(handler, host, port)``
in ``mitmproxy/proxy/mode_servers.py`` (no way to pass a socket or ``reuse_port``), so a worker
hands that module an ``asyncio`` whose ``start_server`` sets ``reuse_port=True``, and nothing
else changes: the rest of asyncio, and every other module, are untouched. A socket can join a
port only if every socket on it set ``SO_REUSEPORT`` and (Linux) belongs to the same user, so
another user's process cannot steal connections. UDP listeners (WireGuard) are bound by
mitmproxy_rs without it: workers refuse WireGuard modes (``proxy/worker_launch.py``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import types
from typing import Any

from mitmproxy.proxy import mode_servers

logger = logging.getLogger(__name__)


class _ReusePortAsyncio(types.ModuleType):
    """``asyncio`` as mode_servers sees it: the same, but listeners set ``SO_REUSEPORT``."""

    def __init__(self) -> None:
        super().__init__("asyncio")

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await asyncio.start_server(*args, **kwargs)


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def enable() -> None:
    """From now on, mitmproxy's TCP listeners in this process share their port."""
    if not supported():
        raise OSError("SO_REUSEPORT is not available on this system: run with --workers 1")
    if not isinstance(getattr(mode_servers, "asyncio"), _ReusePortAsyncio):  # noqa: B009
        setattr(mode_servers, "asyncio", _ReusePortAsyncio())  # noqa: B010 - not a public attribute
        logger.debug("mitmproxy listeners set SO_REUSEPORT")
